"""Publishing from a web app or a script: no worker, no WebSocket, just Redis.

CELERY_WS_REDIS_URL=redis://127.0.0.1:6379/0 python -m examples.publish TASK_ID
"""

from __future__ import annotations

import os
import sys

from celery_ws import Publisher, TaskStepResult, UserConfirmation


def main(task_id: str) -> UserConfirmation:
    publisher = Publisher(os.environ.get("CELERY_WS_REDIS_URL", "redis://127.0.0.1:6379/0"))
    publisher.broadcast({"type": "system_notification", "message": "Maintenance in 5 minutes"})
    publisher.send_to_user("user_123", {"type": "personal_notification", "message": "Your export is ready"})
    publisher.send_to_task(task_id, {"type": "note", "message": "Queued behind 3 others"})
    answer = publisher.notify_user(
        TaskStepResult(step="review", message="Ship it?", status="waiting"),
        "user_123",
        task_id,
        step=1,
        timeout=60,
        default=False,
    )
    publisher.close()
    return answer


if __name__ == "__main__":
    print(main(sys.argv[1] if len(sys.argv) > 1 else "task_456"))
