"""``celery-ws watch``: follow tasks from a terminal and answer their questions.

    celery-ws watch TASK_ID               # one task; exits with its outcome
    celery-ws watch --user alice          # alice's tasks; exits when the first one ends
    celery-ws watch --user alice --follow # ... or until Ctrl-C

Exit status: 0 the task succeeded, 1 it failed, 2 it was cancelled, 4 the
connection could not be made, was refused (bad token) or was given up on,
130 Ctrl-C. With ``--user`` (or a token and no task id) the first task that
ends decides the status, unless ``--follow`` keeps watching until Ctrl-C.

Why it is built this way: the screen is a view of the event stream and the
keyboard is just another event source. Standard input is read by one daemon
thread that feeds a queue, so the event loop never blocks on it: progress
keeps arriving while a question waits, and a question answered in another tab
(``confirmation_answered``) or expired withdraws the prompt instead of
leaving a stale one. The client reconnects by itself, so a server restart
only shows as a line on the screen.

Everything that comes from the stream (messages, step names, results, error
texts, ids) is shown through ``literal``: task text often carries user data,
so it must never be read as Rich markup (``[/b]`` would crash the view,
``[link=...]`` plant a hyperlink) nor reach the terminal's control sequences.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
import threading
from collections import deque
from dataclasses import dataclass, field

from rich.console import Console
from rich.panel import Panel
from rich.pretty import Pretty
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TaskProgressColumn, TextColumn
from rich.text import Text

from ..protocol import TERMINAL_EVENT_TYPES, EventType, ReplyType
from .connection import Client
from .frames import Frame

__all__ = ["EXIT_CODES", "watch"]

EXIT_CODES: dict[str, int] = {
    EventType.TASK_SUCCEEDED: 0,
    EventType.TASK_FAILED: 1,
    EventType.TASK_CANCELLED: 2,
}
EXIT_CONNECTION = 4
EXIT_INTERRUPTED = 130
_STATUS_POLL = 0.25  # seconds between checks of the connection state, for the status line
_REPLY_GRACE = 2.0  # seconds an answer already sent may take to be confirmed before the watcher exits
_YES = {"y", "yes"}
_NO = {"n", "no"}
#: C0 and C1 control characters but newline and tab: ESC starts the sequences
#: that clear the screen, move the cursor or open a hyperlink (OSC 8)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


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

    Bars are paused (left on screen) before anything else is printed, and
    redrawn from the last known values afterwards."""

    console: Console
    _progress: Progress | None = None
    _bars: dict[str, TaskID] = field(default_factory=dict)
    _last: dict[str, tuple[float, float | None, str]] = field(default_factory=dict)

    def progress(self, frame: Frame) -> None:
        task_id = str(frame.get("task_id"))
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
        title = f"{str(frame.get('task_id'))[:8]} step {frame.get('step')} [{frame.get('status') or ''}]"
        self._panel(frame, title, "\nresult: ")

    def question(self, frame: Frame) -> None:
        self._panel(frame, f"{str(frame.get('task_id'))[:8]} asks (step {frame.get('step')})", "\n", "yellow")

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
        kind, task = frame.get("type"), str(frame.get("task_id"))[:8]
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


class Watcher:
    def __init__(
        self, client: Client, view: View, stdin: LineReader, *, task_id: str | None, yes: bool, follow: bool
    ) -> None:
        self.client = client
        self.view = view
        self.stdin = stdin
        self.task_id = task_id
        self.yes = yes
        self.follow = follow
        self.questions: deque[Frame] = deque()
        self.asking: tuple[str, asyncio.Task[None]] | None = None  # callback_id, prompt
        self.answered: set[str] = set()  # answered from here: their confirmation_answered is ours

    async def run(self) -> int:
        status = asyncio.create_task(self._connection_status())
        try:
            async for frame in self.client.events():
                outcome = await self.handle(frame)
                if outcome is not None:
                    return outcome
        finally:
            status.cancel()
            if self.asking is not None:
                callback_id, prompt = self.asking
                if callback_id in self.answered:  # our answer is on its way: let it report
                    await asyncio.wait([prompt], timeout=_REPLY_GRACE)
                prompt.cancel()
            self.view.pause()
        reason = self.client.auth_error or "the connection closed"
        self.view.line(literal(reason, "red"))
        return EXIT_CONNECTION

    async def handle(self, frame: Frame) -> int | None:
        kind = frame.get("type")
        if self.task_id is not None and frame.get("task_id") not in (None, self.task_id):
            return None
        if kind == EventType.TASK_PROGRESS:
            self.view.progress(frame)
        elif kind == EventType.TASK_STEP_RESULT and frame.get("callback_id"):
            self.questions.append(frame)
            self._next_question()
        elif kind == EventType.TASK_STEP_RESULT:
            self.view.step_result(frame)
        elif kind in (EventType.CONFIRMATION_ANSWERED, EventType.CONFIRMATION_EXPIRED):
            self._withdraw(frame)
        elif kind in (EventType.TASK_SENT, EventType.TASK_STARTED, EventType.TASK_RETRYING):
            extra = frame.get("reason") if kind == EventType.TASK_RETRYING else frame.get("name") or ""
            self.view.line(literal(f"{str(frame.get('task_id'))[:8]} {kind} {extra}", "dim"))
        elif kind == ReplyType.ERROR:
            self.view.line(
                Text("server error ", "red"), literal(f"{frame.get('code')}: {frame.get('message')}")
            )
        elif kind in TERMINAL_EVENT_TYPES:
            self.view.outcome(frame)
            if not self.follow:
                return EXIT_CODES[str(kind)]
        return None

    # -- questions ------------------------------------------------------------------

    def _next_question(self) -> None:
        if self.asking is None and self.questions:
            frame = self.questions.popleft()
            prompt = asyncio.create_task(self._ask(frame))
            self.asking = (str(frame["callback_id"]), prompt)
            prompt.add_done_callback(self._asked)

    def _asked(self, prompt: asyncio.Task[None]) -> None:
        if not prompt.cancelled() and prompt.exception() is not None:
            self.view.line(literal(f"could not answer: {prompt.exception()!r}", "red"))
        self.asking = None
        self._next_question()

    def _withdraw(self, frame: Frame) -> None:
        callback_id = frame.get("callback_id")
        if callback_id in self.answered:
            return
        self.questions = deque(q for q in self.questions if q.get("callback_id") != callback_id)
        if self.asking is not None and self.asking[0] == callback_id and callback_id not in self.answered:
            self.asking[1].cancel()
            how = (
                "expired"
                if frame.get("type") == EventType.CONFIRMATION_EXPIRED
                else f"answered by {frame.get('answered_by')} (proceed={frame.get('proceed')})"
            )
            self.view.line("\n", literal(f"the question was {how}", "yellow"))
        elif frame.get("type") == EventType.CONFIRMATION_EXPIRED:
            self.view.line(literal(f"a question of {str(frame.get('task_id'))[:8]} expired", "yellow"))

    async def _ask(self, frame: Frame) -> None:
        self.view.question(frame)
        feedback: str | None
        if self.yes:
            proceed, feedback = True, "approved with --yes"
            self.answered.add(str(frame["callback_id"]))
            self.view.line("Proceed? [y/n] y (--yes)")
        else:
            answer = await self._prompt()
            if answer is None:
                self.view.line(Text("no more input: leaving the question unanswered", "yellow"))
                return
            proceed, feedback = answer
        self.answered.add(str(frame["callback_id"]))
        reply = await self.client.confirm(str(frame["callback_id"]), proceed, feedback)
        if reply.get("type") == ReplyType.CONFIRMATION_RECEIVED:
            sent = f"sent: proceed={proceed}" + (f", feedback {feedback!r}" if feedback else "")
            self.view.line(literal(sent))
        else:
            self.view.line(
                Text("answer refused", "red"), literal(f": {reply.get('code')}: {reply.get('message')}")
            )

    async def _prompt(self) -> tuple[bool, str | None] | None:
        """``y``/``n``, optionally followed by feedback on the same line; None at end of input."""
        self.stdin.drain()
        while True:
            self.view.console.print(Text("Proceed? [y/n] (a note may follow the answer) "), end="")
            line = await self.stdin.readline()
            if line is None:
                return None
            word, _, feedback = line.strip().partition(" ")
            if word.lower() in _YES | _NO:
                return word.lower() in _YES, feedback.strip() or None

    async def _connection_status(self) -> None:
        """A line when the connection drops and when it is back."""
        was_up, reconnects = True, self.client.reconnects
        while not self.client.closed.is_set():
            up = self.client.connected.is_set()
            if was_up and not up:
                self.view.line(Text("connection lost, reconnecting...", "yellow"))
            if self.client.reconnects != reconnects:
                reconnects = self.client.reconnects
                self.view.line(Text("reconnected", "green"))
            was_up = up
            await asyncio.sleep(_STATUS_POLL)


async def watch(
    url: str,
    *,
    task_id: str | None = None,
    user_id: str | None = None,
    token: str | None = None,
    yes: bool = False,
    follow: bool = False,
    console: Console | None = None,
    stdin_fd: int | None = None,
) -> int:
    """Watch a task (or a user's tasks) until it ends; returns the exit status."""
    console = console or Console(highlight=False)
    view = View(console)
    try:
        client = await Client(url, token=token, reconnect=True).__aenter__()
    except Exception as exc:
        view.line(literal(f"cannot connect to {url}", "red"), literal(f": {exc}"))
        return EXIT_CONNECTION
    try:
        if task_id is not None or user_id is not None:
            try:
                reply = await client.subscribe(user_id=None if task_id else user_id, task_id=task_id)
            except TimeoutError:
                view.line(literal(f"no subscription: {client.auth_error or 'no reply'}", "red"))
                return EXIT_CONNECTION
            if reply.get("type") != ReplyType.SUBSCRIPTION_CONFIRMED:
                view.line(Text("subscribe refused", "red"), literal(f": {reply.get('message')}"))
                return EXIT_CONNECTION
        who = f"task {task_id}" if task_id else f"user {user_id or '(from the token)'}"
        view.line(literal(f"Watching {who} on {url}" + (" (answering yes)" if yes else "")))
        final = (reply.get("state") or {}).get("final") if task_id is not None else None
        if final is not None and not follow:  # it ended before we came: say how, and go
            view.outcome(final)
            return EXIT_CODES.get(str(final.get("type")), EXIT_CONNECTION)
        stdin = LineReader(sys.stdin.fileno() if stdin_fd is None else stdin_fd)
        return await Watcher(client, view, stdin, task_id=task_id, yes=yes, follow=follow).run()
    finally:
        await client.close()
