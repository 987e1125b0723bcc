"""A Django project using celery-ws: sign in, start an import, follow it live,
answer its typed question or cancel it. Run it with ``python -m examples.django_app``.

As in any Django + Celery project, the package imports its Celery app so that
``task.delay()`` in a view finds it (``celery.py``).
"""

from .celery import app as celery_app

__all__ = ["celery_app"]
