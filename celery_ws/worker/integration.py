"""``CeleryWS(app)``: attach celery-ws to a Celery application."""

from __future__ import annotations

import atexit
import os
import threading
import weakref
from typing import Any, ClassVar

from celery import Celery

from ..publisher import Outgoing, Publisher
from ..settings import Settings
from . import signals
from .emitter import Emitter

__all__ = ["CeleryWS"]

_FLUSH_AT_EXIT = 2.0


class CeleryWS:
    """Connects celery-ws' signal handlers and holds its settings for ``app``.

    Settings come from ``app.conf`` (``ws_*`` keys) and the environment, read
    when first needed so that ``app.config_from_object`` may run after this.
    Calling it twice for one app is harmless.

    Args:
        app: the Celery application whose tasks report to their owners.
        **settings: explicit settings (see :class:`~celery_ws.settings.Settings`),
            ranked above the environment and ``app.conf``.
    """

    _by_app: ClassVar[weakref.WeakKeyDictionary[Celery, CeleryWS]] = weakref.WeakKeyDictionary()

    def __init__(self, app: Celery, **settings: Any) -> None:
        self.app = app
        self._overrides = settings
        self._settings: Settings | None = None
        self._lock = threading.Lock()
        self._emitter: Emitter | None = None
        self._publisher: Publisher | None = None
        CeleryWS._by_app[app] = self
        signals.connect()

    @classmethod
    def for_app(cls, app: Celery | None) -> CeleryWS | None:
        return cls._by_app.get(app) if app is not None else None

    @classmethod
    def for_task_name(cls, name: str) -> CeleryWS | None:
        """For publish signals, which name the task but not its app: the attached
        app that knows the task, the current app first when several do."""
        from celery import current_app

        candidates = [ws for ws in cls._by_app.values() if name in ws.app.tasks]
        for ws in candidates:
            if ws.app is current_app._get_current_object():
                return ws
        return candidates[0] if candidates else None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = Settings.load(self.app.conf, **self._overrides)
        return self._settings

    def emitter(self) -> Emitter:
        """This process' emitter (a new one after a fork)."""
        emitter = self._emitter
        if emitter is None or emitter.pid != os.getpid():
            with self._lock:
                emitter = self._emitter
                if emitter is None or emitter.pid != os.getpid():
                    emitter = self._emitter = Emitter(self.settings)
                    atexit.register(emitter.flush, _FLUSH_AT_EXIT)
        return emitter

    def _announce(self, outgoing: list[Outgoing]) -> None:
        """A question's closing events, queued without waking the writer: the
        task that waited goes on at once, and they are stored within
        ``progress_interval`` or before the task's next event, whichever comes first."""
        emitter = self.emitter()
        for event, route_by_task, callback_id in outgoing:
            emitter.emit(event, callback_id=callback_id, route_by_task=route_by_task, wake=False)

    def _links(self, task_id: str) -> dict[str, str] | None:
        """``workflow_id``/``parent_task_id`` of a continuation running in this process."""
        emitter = self._emitter
        return emitter.links(task_id) if emitter is not None and emitter.pid == os.getpid() else None

    def publisher(self) -> Publisher:
        """A publisher for this process; redis-py resets its pools after a fork."""
        if self._publisher is None:
            with self._lock:
                if self._publisher is None:
                    self._publisher = Publisher(
                        settings=self.settings, announce=self._announce, links=self._links
                    )
        return self._publisher
