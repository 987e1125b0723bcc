"""``celery-ws serve --workers N``: N server processes on one port, under a supervisor.

One server process uses one core. The supervisor starts N children as fresh
interpreters running the same command line (so they read the same settings,
import the same ``--app`` and log the same way), nothing of asyncio or Redis
being forked. They listen with ``SO_REUSEPORT`` and the kernel spreads new
connections over them; each one is a whole server, as a replica on its own
port would be, so a client may land on any of them.

The supervisor holds no connection. It forwards SIGTERM and SIGINT to every
child (each closes its connections with 1001, as one server does), waits for
them a bounded time, kills what is left, and restarts a child that dies
unexpectedly, after a delay that doubles while children keep dying soon after
their start. A child that exits before it listens, while none ever did, means
the configuration cannot start (a key that cannot verify tokens, a port held
by another program): the supervisor stops and exits with that child's status
instead of restarting it for ever.

Each child keeps one end of a socket pair with the supervisor (see
:class:`SupervisorLink`): it writes a line once it listens, and it stops as on
SIGTERM when the other end closes, that is when the supervisor died without
stopping it (SIGKILL, the OOM killer), so no child serves on unsupervised.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from prometheus_client.multiprocess import mark_process_dead

from ..settings import Settings
from .metrics import SHARED_DIR_VARIABLE, Metrics

__all__ = ["SUPERVISOR_FD_OPTION", "Supervisor", "SupervisorLink"]

logger = logging.getLogger(__name__)

#: the ``celery-ws serve`` option that makes a process a supervised child: the
#: number of its end of the socket pair
SUPERVISOR_FD_OPTION = "--supervisor-fd"

_READY = b"listening\n"
#: the first restart's delay; it doubles for each child that dies within
#: _STEADY seconds of its start, up to _BACKOFF_MAX
_BACKOFF_FIRST = 0.5
_BACKOFF_MAX = 30.0
_STEADY = 30.0
#: how long a child's stop may take beyond its close and handshake timeouts
#: (stopping its background tasks, closing Redis)
_STOP_MARGIN = 10.0
_KILL_WAIT = 5.0
#: how often a child writes its connection count where the others read it
_REFRESH_INTERVAL = 1.0


@dataclass
class _Child:
    process: asyncio.subprocess.Process
    listening: asyncio.Task[bool]
    link: asyncio.StreamWriter
    started: float = field(default_factory=lambda: asyncio.get_running_loop().time())


class Supervisor:
    """Runs ``settings.workers`` copies of ``command`` (a ``celery-ws serve``
    command line) on one port until SIGTERM or SIGINT; :meth:`run` returns the
    exit status: 0 when every child stopped cleanly, 1 when one had to be
    killed or failed, a child's own status when the configuration cannot start.
    """

    def __init__(self, command: Sequence[str], settings: Settings) -> None:
        self.command = [*command]
        self.workers = settings.workers
        self.address = f"ws://{settings.host}:{settings.port}"
        self.stop_timeout = settings.close_timeout + settings.auth_timeout + _STOP_MARGIN
        self._signal = signal.SIGTERM
        self._failed: int | None = None
        self._any_listened = False
        self._children: dict[int, _Child] = {}

    def run(self) -> int:
        return asyncio.run(self._run())

    async def _run(self) -> int:
        self._stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop, sig)
        with tempfile.TemporaryDirectory(prefix="celery-ws-metrics-") as shared:
            logger.info("celery-ws supervising %d server processes on %s", self.workers, self.address)
            slots = [asyncio.create_task(self._keep(number, shared)) for number in range(1, self.workers + 1)]
            for slot in slots:
                slot.add_done_callback(self._slot_ended)
            await self._stopping.wait()
            logger.info("stopping %d server processes (%s)", len(self._children), self._signal.name)
            for child in self._children.values():
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(self._signal)
            _, late = await asyncio.wait(slots, timeout=self.stop_timeout)
            for child in self._children.values():
                logger.warning(
                    "server process %d did not stop in %.0f s: killed", child.process.pid, self.stop_timeout
                )
                with contextlib.suppress(ProcessLookupError):
                    child.process.kill()
            if late:
                await asyncio.wait(late, timeout=_KILL_WAIT)
            statuses = [slot.result() for slot in slots if slot.done() and slot.exception() is None]
        if self._failed is not None:
            return self._failed
        return 0 if not late and all(status in (None, 0) for status in statuses) else 1

    def _slot_ended(self, slot: asyncio.Task[int | None]) -> None:
        """A slot ends when the supervisor stops; one that failed (a child that
        could not be started) stops it."""
        if not slot.cancelled() and (exc := slot.exception()) is not None:
            logger.error("cannot run a server process: %s", exc, exc_info=exc)
            self._failed = 1
            self._stopping.set()

    def _stop(self, sig: signal.Signals) -> None:
        if not self._stopping.is_set():
            self._signal = sig
            self._stopping.set()

    async def _keep(self, number: int, shared: str) -> int | None:
        """Keep one child running in slot ``number`` until the supervisor stops;
        the last child's exit status, None when none was running then."""
        loop = asyncio.get_running_loop()
        quick_deaths = 0
        while True:
            child = await self._spawn(shared)
            self._children[number] = child
            stopping = asyncio.create_task(self._stopping.wait())
            exited = asyncio.create_task(child.process.wait())
            await asyncio.wait({stopping, exited}, return_when="FIRST_COMPLETED")
            stopping.cancel()
            status = await exited  # when stopping: once it stopped, or was killed (_run)
            listened = await child.listening
            del self._children[number]
            child.link.close()
            mark_process_dead(child.process.pid, shared)  # type: ignore[no-untyped-call]
            if self._stopping.is_set():
                return status
            if not listened and not self._any_listened:
                logger.error(
                    "server process %d exited (%s) before it listened: stopping",
                    child.process.pid,
                    _describe(status),
                )
                self._failed = status if status > 0 else 1
                self._stopping.set()
                return status
            quick_deaths = quick_deaths + 1 if loop.time() - child.started < _STEADY else 1
            delay = min(_BACKOFF_MAX, _BACKOFF_FIRST * 2 ** (quick_deaths - 1))
            logger.warning(
                "server process %d exited unexpectedly (%s): starting another in %.1f s",
                child.process.pid,
                _describe(status),
                delay,
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stopping.wait()
            if self._stopping.is_set():
                return None

    async def _spawn(self, shared: str) -> _Child:
        ours, theirs = socket.socketpair()
        try:
            fd = theirs.fileno()
            process = await asyncio.create_subprocess_exec(
                *self.command,
                SUPERVISOR_FD_OPTION,
                str(fd),
                pass_fds=(fd,),
                env={**os.environ, SHARED_DIR_VARIABLE: shared},
            )
        finally:
            theirs.close()
        reader, writer = await asyncio.open_connection(sock=ours)
        listening = asyncio.create_task(self._listening(reader))
        logger.info("started server process %d", process.pid)
        return _Child(process, listening, writer)

    async def _listening(self, reader: asyncio.StreamReader) -> bool:
        """Whether the child said it listens; False when it closed its end first."""
        if await reader.readline() == _READY:
            self._any_listened = True
            return True
        return False


class SupervisorLink:
    """A supervised child's end of its socket pair (``--supervisor-fd``)."""

    def __init__(self, fd: int) -> None:
        self._sock = socket.socket(fileno=fd)

    async def run(self, metrics: Metrics, on_gone: Callable[[], None]) -> None:
        """Tell the supervisor this process listens; then, until the supervisor
        is gone, write this process's connection count for the others'
        ``/metrics`` every second; then call ``on_gone`` (stop serving)."""
        reader, writer = await asyncio.open_connection(sock=self._sock)
        try:
            writer.write(_READY)
            await writer.drain()
            gone = asyncio.create_task(reader.read())  # the supervisor never writes: this ends at its exit
            while not gone.done():
                metrics.refresh()
                await asyncio.wait({gone}, timeout=_REFRESH_INTERVAL)
            logger.warning("the supervisor is gone: stopping")
            on_gone()
        finally:
            writer.close()


def _describe(status: int) -> str:
    if status < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-status).name}"
    return f"status {status}"
