"""``celery-ws watch`` in a pseudo-terminal, against a real server, worker and
Redis: it draws progress, shows step results, prompts, sends the typed answer
(a typed question's form field by field, checked as it is typed, and asked
again where the server refuses it) and exits with the task's outcome."""

from __future__ import annotations

import asyncio
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any, Literal

import pytest
from celery import shared_task
from pydantic import BaseModel, Field

from celery_ws import ProgressTask, TaskStepResult
from celery_ws.testing.redis_server import free_port
from tests import tasks
from tests.helpers import seconds
from tests.processes import REPO

pytestmark = pytest.mark.usefixtures("worker")

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")
STEP_TIMEOUT = seconds(20)
EXIT_TIMEOUT = seconds(20)


class Terminal:
    """A child process on a pseudo-terminal; everything it printed, as plain text."""

    def __init__(self, argv: list[str]) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_WS_", "WEBSOCKET_"))}
        env.update(TERM="xterm-256color", COLUMNS="100", LINES="40", PYTHONUNBUFFERED="1")
        self.master, slave = os.openpty()
        self.process = subprocess.Popen(
            argv, cwd=REPO, env=env, stdin=slave, stdout=slave, stderr=slave, start_new_session=True
        )
        os.close(slave)
        self.raw = b""

    @property
    def screen(self) -> str:
        return ANSI.sub("", self.raw.decode(errors="replace"))

    def _pump(self, seconds: float) -> None:
        ready, _, _ = select.select([self.master], [], [], seconds)
        if ready:
            try:
                self.raw += os.read(self.master, 65536)
            except OSError:  # EIO: the child closed the terminal
                time.sleep(seconds)

    def expect(self, text: str, timeout: float = STEP_TIMEOUT, times: int = 1) -> None:
        """Wait until ``text`` was shown (``times`` times in all)."""
        deadline = time.monotonic() + timeout
        while self.screen.count(text) < times:
            if time.monotonic() > deadline or self.process.poll() is not None:
                self._pump(0.1)
                if self.screen.count(text) >= times:
                    return
                raise AssertionError(
                    f"{text!r} not shown (exit {self.process.poll()}); screen:\n{self.screen}"
                )
            self._pump(0.1)

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def wait(self, timeout: float = EXIT_TIMEOUT) -> int:
        deadline = time.monotonic() + timeout
        while self.process.poll() is None and time.monotonic() < deadline:
            self._pump(0.1)
        for _ in range(5):  # what is still in the terminal's buffer
            self._pump(0.02)
        if self.process.poll() is None:
            raise AssertionError(f"watch did not exit; screen:\n{self.screen}")
        return self.process.returncode

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(seconds(5))
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(seconds(5))
        os.close(self.master)


@pytest.fixture
def terminal() -> Iterator[list[Terminal]]:
    opened: list[Terminal] = []
    yield opened
    for term in opened:
        term.close()


def watch(terminal: list[Terminal], *args: str) -> Terminal:
    term = Terminal([sys.executable, "-m", "celery_ws", "watch", *args])
    terminal.append(term)
    return term


def test_watch_a_user_answer_the_prompt_and_exit_0(celery_ws_server, user, terminal):
    term = watch(terminal, "--user", user, "--url", celery_ws_server.url)
    term.expect("Watching user")  # subscribed
    result = tasks.report_and_ask.delay_for(user, 5)
    term.expect("Proceed?")
    term.type("y looks good\n")
    assert term.wait() == 0
    screen = term.screen
    assert "5/5" in screen and "checking" in screen, screen  # the progress bar, complete
    assert "validation" in screen and "all rows valid" in screen, screen  # the step result
    assert "Write the rows?" in screen and "sent: proceed=True" in screen, screen
    assert "succeeded" in screen and "looks good" in screen, screen  # the result carries the feedback
    assert result.get(timeout=seconds(10))["feedback"] == "looks good"


def test_watch_a_task_with_yes(celery_ws_server, user, terminal):
    result = tasks.ask.delay_for(user)
    term = watch(terminal, result.id, "--url", celery_ws_server.url, "--yes")
    assert term.wait() == 0  # the open question is re-sent on subscribe and answered
    assert "Continue?" in term.screen
    assert "(--yes)" in term.screen
    assert result.get(timeout=seconds(10))["proceed"] is True


def test_refusing_still_exits_0_and_a_failed_task_exits_1(celery_ws_server, user, terminal):
    term = watch(terminal, "--user", user, "--url", celery_ws_server.url)
    term.expect("Watching user")
    result = tasks.ask.delay_for(user)
    term.expect("Proceed?")
    term.type("maybe\n")  # not an answer: asked again
    term.type("n\n")
    assert term.wait() == 0
    assert result.get(timeout=seconds(10))["proceed"] is False

    term = watch(terminal, "--user", user, "--url", celery_ws_server.url)
    term.expect("Watching user")
    tasks.fail.delay_for(user)
    assert term.wait() == 1
    assert "failed" in term.screen
    assert "ValueError" in term.screen


def test_a_cancelled_task_exits_2(celery_ws_server, user, terminal, celery_ws_client):
    result = tasks.spin.delay_for(user)
    term = watch(terminal, result.id, "--url", celery_ws_server.url)
    term.expect("Watching task")

    async def cancel() -> None:  # from elsewhere: the owner's other tab
        async with celery_ws_client(user_id=user) as client:
            await client.wait_for_event("task_progress", task_id=result.id)
            assert (await client.cancel(result.id))["type"] == "cancel_received"

    asyncio.run(cancel())
    assert term.wait() == 2
    assert "cancelled" in term.screen


def test_unreachable_server_exits_4(terminal):
    term = watch(terminal, "--user", "nobody", "--url", f"ws://127.0.0.1:{free_port()}")
    assert term.wait() == 4
    assert "cannot connect" in term.screen


@pytest.mark.usefixtures("worker")
def test_watching_a_task_that_already_ended_exits_at_once(celery_ws_server, celery_ws_client, user):
    async def fail_while_connected() -> str:
        # connected before the task starts: a new connection is not sent the
        # user's past events, and the worker may fail the task at once
        async with celery_ws_client(user_id=user) as client:
            task_id = tasks.fail.delay_for(user).id
            await client.wait_for_event("task_failed", task_id=task_id)
        return task_id

    task_id = asyncio.run(fail_while_connected())
    done = subprocess.run(
        [sys.executable, "-m", "celery_ws", "watch", task_id, "--url", celery_ws_server.url],
        capture_output=True,
        text=True,
        timeout=seconds(30),
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "failed" in done.stdout


#: task text as users' data can make it: Rich markup that would crash the view
#: or plant a link, terminal sequences that would plant a hyperlink (OSC 8) or
#: clear the screen
HOSTILE = (
    "[/b] [link=https://evil.example]x[/link] [bold red]red "
    "\x1b]8;;https://evil.example\x1b\\y\x1b]8;;\x1b\\ \x1b[2J"
)
#: the same text as the watcher must show it: as it is, control characters written out
SHOWN = (
    "[/b] [link=https://evil.example]x[/link] [bold red]red "
    "\\x1b]8;;https://evil.example\\x1b\\y\\x1b]8;;\\x1b\\ \\x1b[2J"
)


def assert_nothing_reached_the_terminal(term: Terminal) -> None:
    """No hyperlink (OSC 8, which Rich's [link] markup also emits), no cleared
    screen, no traceback."""
    assert b"\x1b]8;" not in term.raw and b"\x1b[2J" not in term.raw, term.raw
    assert "Traceback" not in term.screen, term.screen


def test_task_text_is_shown_literally(celery_ws_server, user, terminal):
    term = watch(terminal, "--user", user, "--url", celery_ws_server.url, "--yes")
    term.expect("Watching user")
    result = tasks.say_everywhere.delay_for(user, HOSTILE)
    assert term.wait() == 0  # the progress message did not crash the view
    assert_nothing_reached_the_terminal(term)
    screen = term.screen
    assert "Importing" in screen and "asks (step" in screen and "(--yes)" in screen, screen
    for part in SHOWN.split():  # in the step result, the question and the result, wrapped where they are
        assert part in screen, (part, screen)
    assert result.get(timeout=seconds(10)) == HOSTILE


def test_error_texts_are_shown_literally(celery_ws_server, user, terminal):
    term = watch(terminal, "--user", user, "--url", celery_ws_server.url)
    term.expect("Watching user")
    tasks.fail_saying.delay_for(user, HOSTILE)
    assert term.wait() == 1
    assert_nothing_reached_the_terminal(term)
    lines = " ".join(term.screen.split())  # the lines as read, whatever the terminal wrapped
    assert f"task_retrying RuntimeError: {SHOWN}" in lines, lines
    assert f"failed: ValueError: {SHOWN}" in lines, lines


class Address(BaseModel):
    city: str = Field(description="where the rows go")
    zip_code: str = Field(pattern=r"^\d{5}$")  # not checked as typed: the server refuses it


class Shipping(BaseModel):
    rows: int = Field(ge=1, le=100, description="how many rows to write")
    ratio: float = Field(0.5, gt=0, lt=1)
    mode: Literal["append", "replace"] = "append"
    dry_run: bool = False
    note: str | None = None
    ship_to: Address


@shared_task(base=ProgressTask, bind=True)
def ask_shipping(self: ProgressTask) -> dict[str, Any] | None:
    answer = self.confirm(
        TaskStepResult(step="ship", message="Ship how?", status="waiting"),
        timeout=seconds(60),
        answer_model=Shipping,
    )
    return answer.data.model_dump() if answer.proceed else None


def test_a_typed_question_is_asked_field_by_field(celery_ws_server, user, terminal):
    term = watch(terminal, "--user", user, "--url", celery_ws_server.url)
    term.expect("Watching user")
    result = ask_shipping.delay_for(user)
    term.expect("Proceed?")
    term.type("y\n")
    for prompt, lines, told in [
        (
            "rows (integer, at least 1, at most 100, required): how many rows to write",
            ["many", "500", "12"],
            ["rows must be a whole number", "rows must be at most 100"],
        ),
        ("ratio (number, more than 0, less than 1) [0.5]", [""], []),  # the default
        (
            "mode (one of: append, replace) [append]",
            ["merge", "replace"],
            ["mode must be one of: append, replace"],
        ),
        ("dry_run (boolean, y/n) [n]", ["y"], []),
        ("note (string)", [""], []),  # optional: left out
        (
            "ship_to.city (string, required): where the rows go",
            ["", "Lyon"],
            ["ship_to.city a value is required"],
        ),
        ("ship_to.zip_code (string, required)", ["abc"], []),
    ]:
        term.expect(prompt)
        for line in lines:
            term.type(line + "\n")
        for message in told:
            term.expect(message)
    # the pattern is the server's to check: refused, naming the field, and asked again
    term.expect("ship_to.zip_code (string, required)", times=2)
    lines = " ".join(term.screen.split())  # the lines as read, whatever the terminal wrapped
    assert (
        "answer refused: invalid_answer: The answer does not fit the form: ship_to.zip_code: 'abc'" in lines
    )
    assert "server error" not in lines  # the refusal is told once, by the prompt
    term.type("69001\n")
    assert term.wait() == 0, term.screen
    assert "sent: proceed=True" in term.screen
    assert result.get(timeout=seconds(10)) == {
        "rows": 12,
        "ratio": 0.5,
        "mode": "replace",
        "dry_run": True,
        "note": None,
        "ship_to": {"city": "Lyon", "zip_code": "69001"},
    }
