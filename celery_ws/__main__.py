"""``python -m celery_ws``: the ``celery-ws`` command, for container entry points."""

from .cli import main

main()
