"""The ``celery_ws`` template tag library."""

__all__: list[str] = []
