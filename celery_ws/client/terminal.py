"""The terminal side of ``celery-ws watch``: what it draws and how it reads
the keyboard, apart from what it does with the event stream (``watch.py``).

Everything that comes from the stream (messages, step names, results, error
texts, ids) is shown through :func:`literal`: task text often carries user
data, so it must never be read as Rich markup (``[/b]`` would crash the view,
``[link=...]`` plant a hyperlink) nor reach the terminal's control sequences.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import threading
from dataclasses import dataclass, field

from rich.console import Console
from rich.panel import Panel
from rich.pretty import Pretty
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TaskProgressColumn, TextColumn
from rich.text import Text

from ..protocol import EventType
from .frames import Frame
from .workflow import workflow_of

__all__ = ["LineReader", "View", "literal"]

#: C0 and C1 control characters but newline and tab: ESC starts the sequences
#: that clear the screen, move the cursor or open a hyperlink (OSC 8)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _short(frame: Frame, length: int = 8) -> str:
    """The workflow a frame belongs to (its first task's id), ``length`` characters of it (0: all)."""
    workflow = str(workflow_of(frame))
    return workflow[:length] if length else workflow


def literal(value: object, style: str = "") -> Text:
    """``value`` shown exactly as it is: never read as markup, and with its
    control characters written out (``\\x1b``), so a task's text can neither
    restyle nor link the view, nor drive the terminal."""
    return Text(_CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", str(value)), style=style)


class LineReader:
    """Lines typed on standard input, as an asyncio queue.

    One daemon thread does blocking ``os.read`` calls: a thread still waiting
    at exit neither delays it nor holds ``sys.stdin``'s lock, and it works for
    terminals, pipes and files alike (``loop.add_reader`` refuses files)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lines: asyncio.Queue[str | None] = asyncio.Queue()  # None: end of input
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        loop = asyncio.get_running_loop()

        def put(line: str | None) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody is asking
                loop.call_soon_threadsafe(self.lines.put_nowait, line)

        def read() -> None:
            pending = b""
            while True:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:
                    chunk = b""
                if not chunk:
                    if pending:
                        put(pending.decode(errors="replace"))
                    put(None)
                    return
                pending += chunk
                while b"\n" in pending:
                    line, pending = pending.split(b"\n", 1)
                    put(line.decode(errors="replace").rstrip("\r"))

        self._thread = threading.Thread(target=read, name="celery-ws-watch-stdin", daemon=True)
        self._thread.start()

    def drain(self) -> None:
        """Forget lines typed before a question was asked."""
        while not self.lines.empty():
            if self.lines.get_nowait() is None:
                self.lines.put_nowait(None)
                return

    async def readline(self) -> str | None:
        self.start()
        return await self.lines.get()


@dataclass
class View:
    """Progress bars per task, step results and outcomes as lines and panels.

    A task's continuations (``ask()``) are shown as that task: under the
    first task's id (the ``workflow_id`` they carry), on its bar.

    Bars are paused (left on screen) before anything else is printed, and
    redrawn from the last known values afterwards."""

    console: Console
    _progress: Progress | None = None
    _bars: dict[str, TaskID] = field(default_factory=dict)
    _last: dict[str, tuple[float, float | None, str]] = field(default_factory=dict)

    def progress(self, frame: Frame) -> None:
        task_id = _short(frame, 0)
        current, total = float(frame.get("current") or 0), frame.get("total")
        label = literal(f"{task_id[:8]} {frame.get('message') or ''}".rstrip()).plain
        self._last[task_id] = (current, float(total) if total is not None else None, label)
        if not self.console.is_terminal:
            percent = frame.get("progress")
            shown = f"{current:g}/{total:g}" if total is not None else f"{current:g}"
            self.line(
                literal(task_id[:8], "cyan"),
                literal(
                    f" progress {shown}"
                    + (f" ({percent}%)" if percent is not None else "")
                    + f" {frame.get('message') or ''}"
                ),
            )
            return
        self._draw(task_id)

    def _draw(self, task_id: str) -> None:
        current, total, label = self._last[task_id]
        if self._progress is None:
            self._progress = Progress(
                TextColumn("{task.description}", markup=False),
                BarColumn(),
                MofNCompleteColumn(),
                TaskProgressColumn(),
                console=self.console,
            )
            self._progress.start()
        if task_id not in self._bars:
            # rich annotates add_task's completed as int, but keeps it as a float (as update() takes it)
            self._bars[task_id] = self._progress.add_task(label, total=total, completed=current)  # type: ignore[arg-type]
        self._progress.update(
            self._bars[task_id], description=label, completed=current, total=total, refresh=True
        )

    def pause(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._bars.clear()

    def line(self, *parts: str | Text) -> None:
        """One line of ``parts``: our own fixed words as strings (never markup
        either), anything from the stream as ``literal`` text."""
        self.pause()
        self.console.print(Text.assemble(*parts))

    def step_result(self, frame: Frame) -> None:
        title = f"{_short(frame)} step {frame.get('step')} [{frame.get('status') or ''}]"
        self._panel(frame, title, "\nresult: ")

    def question(self, frame: Frame) -> None:
        self._panel(frame, f"{_short(frame)} asks (step {frame.get('step')})", "\n", "yellow")

    def _panel(self, frame: Frame, title: str, before_result: str, border_style: str = "none") -> None:
        """A step's message, and its result's repr, in a box."""
        body = str(frame.get("message") or "")
        if frame.get("result") is not None:
            body += f"{before_result}{frame.get('result')!r}"
        self.pause()
        self.console.print(
            Panel(literal(body), title=literal(title), border_style=border_style, expand=False)
        )

    def outcome(self, frame: Frame) -> None:
        kind, task = frame.get("type"), _short(frame)
        if kind == EventType.TASK_SUCCEEDED:
            self.line(literal(f"{task} succeeded", "green"))
            self.console.print(Pretty(frame.get("result")))  # a repr: control characters come out escaped
        elif kind == EventType.TASK_FAILED:
            self.line(
                literal(f"{task} failed", "red"),
                literal(f": {frame.get('error_code')}: {frame.get('error_message')}"),
            )
        else:
            self.line(
                literal(f"{task} cancelled", "yellow"),
                literal(f" ({frame.get('reason') or ''} by {frame.get('requested_by')})"),
            )

    def waiting(self, frame: Frame, *, after_prompt: bool = False) -> None:
        """The workflow waits for the person's answer (``task_waiting``): not an end."""
        self.line("\n" if after_prompt else "", literal(f"{_short(frame)} waiting for your answer", "yellow"))

    def continued(self, frame: Frame) -> None:
        self.line(literal(f"{_short(frame)} continues with the answer", "dim"))
