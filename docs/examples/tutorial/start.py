"""Start a task of tasks.py for alice and print its id:
``python start.py`` (import_rows) or ``python start.py clean_rows``."""

import sys

import tasks

task = getattr(tasks, sys.argv[1] if len(sys.argv) > 1 else "import_rows")
result = task.delay_for("alice", "orders.csv")  # alice sees this task's events
print(result.id)
