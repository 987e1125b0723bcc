"""``celery-ws`` and ``celery ws``: one click group for both.

Celery loads this group through its ``celery.commands`` entry point on every
``celery`` invocation, so imports of the server stay inside the commands.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

import click

from ._version import __version__

if TYPE_CHECKING:
    from celery import Celery

    from .logs import LogFormat
    from .server.handlers import Revoke

__all__ = ["main", "ws"]


def _load_app(path: str) -> Celery:
    """Import ``module:app`` the way ``celery -A`` does, current directory first."""
    from celery.utils.imports import symbol_by_name

    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return symbol_by_name(path)
    except (ImportError, AttributeError) as exc:
        raise click.BadParameter(f"cannot import {path!r}: {exc}", param_hint="--app") from None


def _configure_logging(level: str, fmt: LogFormat = "text") -> None:
    from .logs import configure_logging

    configure_logging(level, fmt)


def _revoker(app: Celery) -> Revoke:
    async def revoke(task_id: str) -> None:
        await asyncio.to_thread(app.control.revoke, task_id)

    return revoke


@click.group(name="ws")
@click.version_option(__version__, message="celery-ws %(version)s")
def ws() -> None:
    """celery-ws: live progress and confirmations for Celery tasks over WebSockets."""


@ws.command()
@click.option(
    "--app",
    "app_path",
    metavar="MODULE:APP",
    help="Celery app: settings, revoking cancelled tasks, sending continuations of ask().",
)
@click.option("--host", help="Address to listen on [WEBSOCKET_HOST, default 127.0.0.1].")
@click.option("--port", type=int, help="Port to listen on [WEBSOCKET_PORT, default 8765].")
@click.option("--redis-url", help="Redis carrying the events [CELERY_WS_REDIS_URL].")
@click.option(
    "--insecure",
    is_flag=True,
    default=None,
    help="Allow open mode (no CELERY_WS_SECRET) on a non-loopback address.",
)
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]))
@click.option(
    "--log-format",
    default="text",
    show_default=True,
    type=click.Choice(["text", "json"]),
    envvar="CELERY_WS_LOG_FORMAT",
    help="json: one object per line (time, level, logger, message) [CELERY_WS_LOG_FORMAT].",
)
@click.option(
    "--workers",
    metavar="N|auto",
    help="Server processes sharing the port, under a supervisor; auto: one per CPU "
    "[CELERY_WS_WORKERS, default 1].",
)
@click.option("--supervisor-fd", type=int, hidden=True)  # set by the supervisor for its processes
@click.pass_context
def serve(
    ctx: click.Context,
    app_path: str | None,
    host: str | None,
    port: int | None,
    redis_url: str | None,
    insecure: bool | None,
    log_level: str,
    log_format: LogFormat,
    workers: str | None,
    supervisor_fd: int | None,
) -> None:
    """Run the WebSocket server (with --workers N: N of them on one port)."""
    from .exceptions import SettingsError
    from .server.manager import WebSocketManager
    from .settings import Settings

    _configure_logging(log_level, log_format)
    app = _load_app(app_path) if app_path else getattr(ctx.obj, "app", None)
    given = {"host": host, "port": port, "redis_url": redis_url, "insecure": insecure, "workers": workers}
    overrides = {k: v for k, v in given.items() if v is not None}
    try:
        settings = Settings.load(app.conf if app is not None else None, **overrides)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    if settings.workers > 1 and supervisor_fd is None:
        from .server.supervisor import Supervisor

        if settings.port == 0:
            raise click.ClickException(
                "--workers needs a fixed port: with port 0 each process would pick its own"
            )
        # the children run this very command line (same settings, same app), as supervised processes
        sys.exit(Supervisor([sys.executable, *sys.orig_argv[1:]], settings).run())

    async def run() -> None:
        from .server.continuations import celery_sender

        manager = WebSocketManager(
            settings=settings,
            revoke=_revoker(app) if app is not None else None,
            send_task=celery_sender(app) if app is not None else None,
        )
        try:
            server = await manager.start_server()
        except SettingsError as exc:
            await manager.stop_server()
            raise click.ClickException(str(exc)) from None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, server.close)
        if app is None:
            logging.getLogger(__name__).warning(
                "no --app: cancel works through progress() and confirm_step() only, "
                "and this replica sends no continuations of deferred questions (ask())"
            )
        supervised = None
        if supervisor_fd is not None:
            from .server.supervisor import SupervisorLink

            link = SupervisorLink(supervisor_fd)
            supervised = asyncio.create_task(link.run(manager.metrics, on_gone=server.close))
        await server.wait_closed()
        if supervised is not None:
            supervised.cancel()
        await manager.stop_server()

    asyncio.run(run())


@ws.command()
@click.option(
    "--url",
    default="http://127.0.0.1:8765",
    show_default=True,
    help="The server (http:// or ws://; /status is appended).",
)
@click.option("--timeout", default=5.0, show_default=True, help="Seconds to wait for the answer.")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON instead of a table.")
def status(url: str, timeout: float, as_json: bool) -> None:
    """Show a running server's figures (GET /status). Exits 1 when it cannot be reached."""
    import json
    import urllib.error
    import urllib.request
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url if "://" in url else f"http://{url}")
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    target = urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/status", "", ""))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy for a status probe
    try:
        with opener.open(target, timeout=timeout) as reply:
            figures = json.loads(reply.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        click.echo(f"celery-ws status: cannot read {target}: {getattr(exc, 'reason', exc)}", err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(figures, indent=2, sort_keys=True))
        return
    _print_status(target, figures)


def _print_status(target: str, figures: dict[str, Any]) -> None:
    def show(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.1f}" if not value.is_integer() else str(int(value))
        return str(value)

    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # rich comes with the [watch] and [demo] extras; plain columns without it
        width = max(map(len, figures), default=0)
        click.echo(target)
        for name, value in figures.items():
            click.echo(f"{name:<{width}}  {show(value)}")
        return
    table = Table(title=target, show_header=True)
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, value in figures.items():
        table.add_row(name, show(value))
    Console(width=max(80, len(target) + 10)).print(table)


@ws.command()
@click.argument("user_id")
@click.option("--ttl", type=int, help="Seconds until the token expires [CELERY_WS_TOKEN_TTL, default 3600].")
@click.option("--app", "app_path", metavar="MODULE:APP", help="Celery app whose app.conf holds the settings.")
@click.pass_context
def token(ctx: click.Context, user_id: str, ttl: int | None, app_path: str | None) -> None:
    """Mint a connection token for USER_ID (signed with CELERY_WS_SECRET).

    Settings as for serve: --app's (or celery -A's) app.conf, then the environment.
    """
    from .exceptions import SettingsError
    from .tokens import issue_token

    app = _load_app(app_path) if app_path else getattr(ctx.obj, "app", None)
    try:
        click.echo(issue_token(user_id, ttl=ttl, app=app))
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


@ws.command()
@click.argument("task_id", required=False)
@click.option("--user", "user_id", help="Watch this user's tasks (all of them) instead of one task.")
@click.option("--url", default="ws://127.0.0.1:8765", show_default=True, help="The celery-ws server.")
@click.option("--token", envvar="CELERY_WS_TOKEN", help="Connection token for token mode [CELERY_WS_TOKEN].")
@click.option("--yes", is_flag=True, help="Answer every question with yes (a typed one with its defaults).")
@click.option("--follow", is_flag=True, help="With --user: keep watching after a task ends, until Ctrl-C.")
def watch(
    task_id: str | None, user_id: str | None, url: str, token: str | None, yes: bool, follow: bool
) -> None:
    """Show TASK_ID's (or a user's) progress and answer its questions.

    Exits 0 when the task succeeded, 1 when it failed, 2 when it was cancelled
    (with --user: the first task that ends), 4 on connection or token errors,
    130 on Ctrl-C.
    """
    try:
        from .client.watch import EXIT_INTERRUPTED
        from .client.watch import watch as run_watch
    except ModuleNotFoundError as exc:  # rich is an extra: say which, not a traceback
        if (exc.name or "").partition(".")[0] != "rich":
            raise
        click.echo("celery-ws watch needs rich: pip install 'celery-ws[watch]'", err=True)
        sys.exit(1)

    if task_id is None and user_id is None and token is None:
        raise click.UsageError("give a TASK_ID, --user USER or --token TOKEN")
    try:
        code = asyncio.run(
            run_watch(url, task_id=task_id, user_id=user_id, token=token, yes=yes, follow=follow)
        )
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    sys.exit(code)


def main() -> None:
    ws(prog_name="celery-ws")
