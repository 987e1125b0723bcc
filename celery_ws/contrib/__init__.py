"""Integrations with web frameworks, each in its own subpackage and each
needing its framework only when imported (``celery_ws.contrib.django``:
``pip install 'celery-ws[django]'``). Nothing else in celery_ws imports them."""

__all__: list[str] = []
