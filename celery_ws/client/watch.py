"""``celery-ws watch``: follow tasks from a terminal and answer their questions.

    celery-ws watch TASK_ID               # one task (and its continuations); exits with its outcome
    celery-ws watch --user alice          # alice's tasks; exits when the first one ends
    celery-ws watch --user alice --follow # ... or until Ctrl-C

Exit status: 0 the task succeeded, 1 it failed, 2 it was cancelled, 4 the
connection could not be made, was refused (bad token) or was given up on,
130 Ctrl-C. With ``--user`` (or a token and no task id) the first task that
ends decides the status, unless ``--follow`` keeps watching until Ctrl-C.

A task that asks with ``ask()`` does not end: it says ``task_waiting`` and a
continuation task carries on with the answer under its own id, its events
carrying the first task's id as ``workflow_id`` (see ``workflow.py``). The
watcher follows that workflow as one task: ``task_waiting`` is shown, not an
end, and the status is that of the workflow's terminal event.

Why it is built this way: the screen is a view of the event stream and the
keyboard is just another event source. Standard input is read by one daemon
thread that feeds a queue, so the event loop never blocks on it: progress
keeps arriving while a question waits, and a question answered in another tab
(``confirmation_answered``) or expired withdraws the prompt instead of
leaving a stale one. The client reconnects by itself, so a server restart
only shows as a line on the screen.

A typed question (``answer_model=``, its JSON Schema as ``answer_schema``)
is answered field by field after ``y`` (``form.py``): each line is checked as
it is typed (type, choices, bounds, required) and asked again until it fits;
what only the server can check comes back as ``invalid_answer`` naming the
fields, which are asked again. ``--yes`` sends a typed question's defaults.

What it draws and how it reads the keyboard is ``terminal.py``; everything
from the stream is shown literally there, never as Rich markup.
"""

from __future__ import annotations

import asyncio
import sys
from collections import deque
from typing import Any

from rich.console import Console
from rich.text import Text

from ..protocol import TERMINAL_EVENT_TYPES, EventType, ReplyType
from .connection import Client
from .form import FormField, assemble, form_fields
from .frames import Frame
from .terminal import LineReader, View, literal
from .workflow import TASK_CONTINUED, TASK_WAITING, Workflows

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
_PROMPT = "Proceed? [y/n] (a note may follow the answer) "
_YES = {"y", "yes"}
_NO = {"n", "no"}


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
        self.workflows = Workflows()
        self.prompting: Text | None = None  # the prompt on the screen, waiting for a line

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
        if not self._watched(frame):
            return None
        if self.workflows.repeated(frame):  # task_continued comes at least once
            return None
        ended = self.workflows.see(frame)
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
        elif (
            kind == ReplyType.ERROR and self.asking is not None and frame.get("callback_id") == self.asking[0]
        ):
            return None  # the reply to the answer being sent: _ask shows it
        elif kind == ReplyType.ERROR:
            self.view.line(
                Text("server error ", "red"), literal(f"{frame.get('code')}: {frame.get('message')}")
            )
        elif kind == TASK_WAITING:
            self.view.waiting(frame, after_prompt=self.prompting is not None)
            if self.prompting is not None:  # the notice broke the prompt's line: ask again below it
                self.view.console.print(self.prompting, end="")
        elif kind == TASK_CONTINUED:
            self.view.continued(frame)
        elif kind in TERMINAL_EVENT_TYPES and ended is None:  # a task whose workflow waits on an answer
            self.view.line(literal(f"{str(frame.get('task_id'))[:8]} {kind} (its workflow waits)", "dim"))
        elif kind in TERMINAL_EVENT_TYPES:
            self.view.outcome(frame)
            if not self.follow:
                return EXIT_CODES[str(kind)]
        return None

    def _watched(self, frame: Frame) -> bool:
        """Frames of no task, and with a task id: the task's own and its continuations'."""
        if self.task_id is None or frame.get("task_id") is None:
            return True
        return self.task_id in (frame.get("task_id"), frame.get("workflow_id"))

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
        callback_id = str(frame["callback_id"])
        form = form_fields(frame["answer_schema"]) if isinstance(frame.get("answer_schema"), dict) else []
        feedback: str | None
        values: dict[str, Any] | None = {}
        if self.yes:  # a typed question gets its defaults
            proceed, feedback = True, "approved with --yes"
            self.view.line("Proceed? [y/n] y (--yes)")
        else:
            answer = await self._prompt()
            if answer is None:
                self.view.line(Text("no more input: leaving the question unanswered", "yellow"))
                return
            proceed, feedback = answer
            if proceed and form:
                values = await self._fill(form, {})
        while values is not None:
            self.answered.add(callback_id)
            data = assemble(values) if proceed and form else None
            reply = await self.client.confirm(callback_id, proceed, feedback, data=data)
            if reply.get("type") == ReplyType.CONFIRMATION_RECEIVED:
                sent = f"sent: proceed={proceed}" + (f", feedback {feedback!r}" if feedback else "")
                self.view.line(literal(sent + (f", data {data!r}" if data is not None else "")))
                return
            self.answered.discard(callback_id)
            self.view.line(
                Text("answer refused", "red"), literal(f": {reply.get('code')}: {reply.get('message')}")
            )
            if reply.get("code") != "invalid_answer" or self.yes:
                return
            values = await self._fill(_named(form, reply.get("fields")), values)
        self.view.line(Text("no more input: leaving the question unanswered", "yellow"))

    async def _prompt(self) -> tuple[bool, str | None] | None:
        """``y``/``n``, optionally followed by feedback on the same line; None at end of input."""
        self.stdin.drain()
        while True:
            line = await self._readline(Text(_PROMPT))
            if line is None:
                return None
            word, _, feedback = line.strip().partition(" ")
            if word.lower() in _YES | _NO:
                return word.lower() in _YES, feedback.strip() or None

    async def _fill(self, form: list[FormField], values: dict[str, Any]) -> dict[str, Any] | None:
        """Ask each field of a typed question in turn, again until its line
        parses (type, choices, bounds); None at end of input."""
        for field in form:
            while True:
                line = await self._readline(literal(f"  {field.hint()}: "))
                if line is None:
                    return None
                try:
                    value = field.parse(line)
                except ValueError as exc:
                    self.view.line(literal(f"  {field.name} {exc}", "red"))
                    continue
                if value is None:
                    values.pop(field.name, None)
                else:
                    values[field.name] = value[0]
                break
        return values

    async def _readline(self, prompt: Text) -> str | None:
        self.view.console.print(prompt, end="")
        self.prompting = prompt
        try:
            return await self.stdin.readline()
        finally:
            self.prompting = None

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


def _named(form: list[FormField], names: Any) -> list[FormField]:
    """The fields an ``invalid_answer`` names (a nested object's name covers
    its fields); the whole form when it names none of them."""
    named = [str(name) for name in names or ()]
    chosen = [f for f in form if any(f.name == n or f.name.startswith(f"{n}.") for n in named)]
    return chosen or form


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
    """Watch a task (or a user's tasks) until it ends, continuations included;
    returns the exit status."""
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
