"""The documentation's code is real: each file a page includes (with the
snippets extension, ``--8<-- "path"``) is run here the way the page tells a
reader to run it, and a page's Python that is not included names the tested
file it is an excerpt of, as README's does."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from celery_ws.client import Client
from celery_ws.testing.redis_server import free_port
from tests.helpers import seconds
from tests.processes import http_get, wait_until_ok

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"
INCLUDE = re.compile(r'^-{2}8<-{2} "(?P<path>[^"]+)"$', re.M)
#: a fenced block: ```js, or ```{.python title="..."} (the form ruff's Markdown formatting leaves
#: alone: it would reformat a snippet's include line as Python)
FENCE = re.compile(
    r"(?:<!-- example: (?P<path>\S+) -->\n)?```(?:\{\s*\.)?(?P<language>\w*)[^\n]*\n(?P<code>.*?)```", re.S
)
TUTORIAL_USER = "alice"  # start.py's
TUTORIAL_DB = 7  # the tutorial's own Redis database: its worker takes Celery's default queue


def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def included(page: Path) -> set[Path]:
    """The files a page includes; a name resolves as the snippets extension's
    base_path does (docs/examples first, then the repository)."""
    found = set()
    for match in INCLUDE.finditer(page.read_text()):
        name = match["path"].partition(":")[0]
        found.add(next((base / name for base in (EXAMPLES, ROOT) if (base / name).is_file()), Path(name)))
    return found


def test_every_example_file_is_shown_and_every_include_exists():
    shown = set().union(*map(included, pages()))
    assert all(path.is_file() for path in shown), sorted(map(str, shown))
    examples = {path for path in EXAMPLES.rglob("*.py") if "__pycache__" not in path.parts}
    assert examples <= shown, f"example files no page shows: {sorted(map(str, examples - shown))}"


def test_python_on_pages_is_included_or_an_excerpt_of_a_tested_file():
    """Python is included or marked ``<!-- example: path -->`` (then it is an
    excerpt of that file, whatever its language)."""
    for page in pages():
        for fence in FENCE.finditer(page.read_text()):
            code = fence["code"].strip()
            if INCLUDE.fullmatch(code) or (fence["language"] != "python" and not fence["path"]):
                continue
            assert fence["path"], f"{page}: a Python block neither included nor marked <!-- example: -->"
            source = _unindented((ROOT / fence["path"]).read_text())
            assert _unindented(code + "\n") in source, f"{page}: a snippet drifted from {fence['path']}"


def _unindented(code: str) -> str:
    return "\n".join(line.strip() for line in code.splitlines()) + "\n"


# -- the tutorial, run as a reader runs it ----------------------------------------------


@dataclass
class Project:
    """A directory holding the tutorial's files, and the commands it runs there."""

    path: Path
    env: dict[str, str]
    port: int

    def spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        with (self.path / f"{name}.log").open("wb") as log:
            return subprocess.Popen(
                [*args],
                cwd=self.path,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*args], cwd=self.path, env=self.env, capture_output=True, text=True, timeout=seconds(60)
        )

    def watch(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``celery-ws watch``, told the port the server took (the tutorial's is the default, 8765)."""
        return self.run(script("celery-ws"), "watch", *args, "--url", f"ws://127.0.0.1:{self.port}")

    def log(self, name: str) -> str:
        return (self.path / f"{name}.log").read_text(errors="replace")[-3000:]


def script(name: str) -> str:
    """A command of this virtual environment, as a reader's shell finds it on PATH."""
    return str(Path(sys.executable).parent / name)


def reader_env(**extra: str) -> dict[str, str]:
    """This environment without celery-ws' and Celery's settings: a reader's shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_WS_", "WEBSOCKET_", "CELERY_"))}
    return {**env, **extra}


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(seconds(15))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(seconds(5))


@pytest.fixture(scope="module")
def tutorial(tmp_path_factory: pytest.TempPathFactory, celery_ws_redis_url: str) -> Iterator[Project]:
    """The tutorial's directory with ``celery-ws serve --app tasks:app`` and
    ``celery -A tasks worker`` running in it, on a Redis of its own database."""
    path = tmp_path_factory.mktemp("tutorial")
    for name in ("tasks.py", "start.py"):
        shutil.copy(EXAMPLES / "tutorial" / name, path / name)
    env = reader_env(REDIS_URL=f"{celery_ws_redis_url.rsplit('/', 1)[0]}/{TUTORIAL_DB}", PYTHONUNBUFFERED="1")
    project = Project(path, env, free_port())
    server = project.spawn(
        "serve", script("celery-ws"), "serve", "--app", "tasks:app", "--port", str(project.port)
    )
    worker = project.spawn("worker", script("celery"), "-A", "tasks", "worker", "--loglevel=INFO")
    try:
        assert wait_until_ok(f"http://127.0.0.1:{project.port}/readyz", server), project.log("serve")
        yield project
    finally:
        stop(worker)
        stop(server)


def test_tutorial_watch_shows_the_task_to_its_end(tutorial: Project):
    started = tutorial.run(sys.executable, "start.py")
    assert started.returncode == 0, started.stderr
    task_id = started.stdout.strip()
    watched = tutorial.watch(task_id)
    assert watched.returncode == 0, watched.stdout + watched.stderr + tutorial.log("worker")
    assert "succeeded" in watched.stdout
    assert "imported" in watched.stdout


def test_tutorial_page_is_served(tutorial: Project):
    status, body = http_get(f"http://127.0.0.1:{tutorial.port}/?user={TUTORIAL_USER}")
    assert status == 200
    assert b"celery-ws.js" in body


async def test_tutorial_question_is_answered_as_the_page_answers_it(tutorial: Project):
    async with Client(f"ws://127.0.0.1:{tutorial.port}", timeout=seconds(30)) as page:
        await page.subscribe(user_id=TUTORIAL_USER)
        started = await asyncio.to_thread(tutorial.run, sys.executable, "start.py", "clean_rows")
        assert started.returncode == 0, started.stderr
        task_id = started.stdout.strip()
        question = await page.wait_for(lambda f: f.get("callback_id") is not None and f["task_id"] == task_id)
        assert question["message"] == "10 rows are bad. Delete them?"
        await page.confirm(question["callback_id"], True, "go ahead")
        done = await page.wait_for_event("task_succeeded", task_id=task_id)
    assert done["result"] == {"deleted": 10, "feedback": "go ahead", "by": TUTORIAL_USER}


def test_tutorial_watch_answers_with_yes(tutorial: Project):
    started = tutorial.run(sys.executable, "start.py", "clean_rows")
    task_id = started.stdout.strip()
    watched = tutorial.watch(task_id, "--yes")
    assert watched.returncode == 0, watched.stdout + watched.stderr
    assert "Delete them?" in watched.stdout
    assert "'deleted': 10" in watched.stdout or '"deleted": 10' in watched.stdout


# -- the Flask guide's application, beside the tutorial's tasks.py --------------------

FLASK_SECRET = "flask-guide-secret-0123456789abcdefghijkl"
FLASK_SCRIPT = """
import json
from flask_app import app

http = app.test_client()
out = {"anonymous": http.get("/ws-token").status_code, "to_login": http.get("/").status_code}
http.get("/login", query_string={"user": USER})
out["grant"] = http.get("/ws-token").get_json()
out["started"] = http.post("/tasks", json={"path": "orders.csv"}).get_json()
out["page"] = http.get("/").get_data(as_text=True)
print(json.dumps(out))
"""


async def test_flask_guide_mints_tokens_and_starts_tasks_for_its_user(tutorial: Project):
    import flask  # noqa: F401  (the guide's app imports it; the test extra installs it)

    from celery_ws import Settings
    from celery_ws.tokens import TokenVerifier

    shutil.copy(EXAMPLES / "flask_app.py", tutorial.path / "flask_app.py")
    user = "flask-" + os.urandom(4).hex()
    env = {**tutorial.env, "CELERY_WS_SECRET": FLASK_SECRET, "FLASK_SECRET_KEY": "test"}
    async with Client(f"ws://127.0.0.1:{tutorial.port}", timeout=seconds(30)) as watcher:
        await watcher.subscribe(user_id=user)
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", f"USER = {user!r}\n" + FLASK_SCRIPT],
            cwd=tutorial.path,
            env=env,
            capture_output=True,
            text=True,
            timeout=seconds(60),
        )
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout.strip().splitlines()[-1])
        finished = await watcher.wait_for_event("task_succeeded", task_id=out["started"]["task_id"])
    assert (out["anonymous"], out["to_login"]) == (401, 302)
    grant = out["grant"]
    assert set(grant) == {"token", "url", "expires_at"}
    assert grant["url"] == "ws://127.0.0.1:8765/"  # no CELERY_WS_PUBLIC_URL: the development default
    assert TokenVerifier(Settings.load(secret=FLASK_SECRET)).verify(grant["token"]).user_id == user
    assert finished["result"] == {"imported": 20}
    assert 'src="http://127.0.0.1:8765/celery-ws.js"' in out["page"]
    assert 'new CeleryWS.Client("ws://127.0.0.1:8765/", {' in out["page"]


# -- the Kubernetes guide's manifest ---------------------------------------------------


def test_kubernetes_probes_answer_on_the_port_the_command_listens_on(tutorial: Project):
    import yaml

    from celery_ws.cli import ws
    from celery_ws.settings import Settings

    documents = list(yaml.safe_load_all((EXAMPLES / "kubernetes" / "deployment.yaml").read_text()))
    pod = next(d for d in documents if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    program, command, *options = container["args"]
    assert (program, command) == ("celery-ws", "serve")
    ws.commands["serve"].make_context("serve", list(options))  # options serve accepts
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert int(options[options.index("--port") + 1]) == ports["ws"]
    defaults = Settings.model_fields
    shutdown = defaults["close_timeout"].default + defaults["auth_timeout"].default + 1
    assert pod["terminationGracePeriodSeconds"] >= shutdown
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        check = container[probe]["httpGet"]
        assert (check["path"], check["port"]) == (path, "ws")
        status, body = http_get(f"http://127.0.0.1:{tutorial.port}{path}")
        assert status == 200, body


# -- the queues guide: blocking questions on a threads worker of their own ---------------

SEND_TO_QUESTIONS = 'from tasks import clean_rows; print(clean_rows.apply_async_for("alice", ("orders.csv",), queue="questions").id)'


async def test_queues_guide_sends_blocking_questions_to_the_threads_worker(tutorial: Project):
    assert SEND_TO_QUESTIONS in (DOCS / "how-to" / "queues.md").read_text()
    questions = tutorial.spawn(
        "questions", script("celery"), "-A", "tasks", "worker", "-P", "threads", "-c", "50", "-Q", "questions",
        "-n", "questions@%h", "--loglevel=INFO",  # INFO: the log names the tasks it received
    )  # fmt: skip
    try:
        async with Client(f"ws://127.0.0.1:{tutorial.port}", timeout=seconds(30)) as page:
            await page.subscribe(user_id=TUTORIAL_USER)
            sent = await asyncio.to_thread(tutorial.run, sys.executable, "-c", SEND_TO_QUESTIONS)
            assert sent.returncode == 0, sent.stderr
            task_id = sent.stdout.strip()
            question = await page.wait_for(
                lambda f: f.get("callback_id") is not None and f["task_id"] == task_id
            )
            await page.confirm(question["callback_id"], False)
            done = await page.wait_for_event("task_succeeded", task_id=task_id)
    finally:
        stop(questions)
    assert done["result"]["deleted"] == 0
    assert f"tasks.clean_rows[{task_id}] received" in tutorial.log("questions")
    assert task_id not in tutorial.log("worker")


# -- the reference pages name everything the code has -----------------------------------


def test_api_reference_documents_every_public_name():
    import celery_ws

    pages = "".join(path.read_text() for path in (DOCS / "reference" / "api").glob("*.md"))
    documented = set(re.findall(r"^::: celery_ws\.(\w+)$", pages, re.M))
    assert set(celery_ws.__all__) - {"__version__"} <= documented


def test_protocol_and_errors_pages_name_every_action_event_and_error_code():
    from typing import get_args

    from celery_ws.protocol import ACTIONS, ErrorCode, EventType, ReplyType

    protocol = (DOCS / "reference" / "protocol.md").read_text()
    errors = (DOCS / "reference" / "errors.md").read_text()
    assert [a for a in ACTIONS if f"| `{a}` |" not in protocol] == []
    assert [e.value for e in EventType if f"`{e.value}`" not in protocol] == []
    assert [
        r.value for r in ReplyType if f'"{r.value}"' not in protocol and f"`{r.value}`" not in protocol
    ] == []
    assert [code for code in get_args(ErrorCode) if f"| `{code}` |" not in errors] == []


# -- the testing guide: the tutorial's tasks tested with the plugin ---------------------


def test_testing_guide_tests_pass_with_the_plugin(tmp_path: Path):
    """``python -m pytest test_tasks.py`` beside tasks.py, as the guide runs it:
    the plugin starts its own redis-server and worker and answers the questions."""
    for name in ("tasks.py", "test_tasks.py"):
        shutil.copy(EXAMPLES / "tutorial" / name, tmp_path / name)
    env = reader_env()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_tasks.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=seconds(90),
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "3 passed" in done.stdout


def test_the_tutorials_steps_add_up_to_its_tasks_py():
    """A reader who copies each step's part of tasks.py gets the whole file."""
    import ast

    source = (EXAMPLES / "tutorial" / "tasks.py").read_text()
    sections = dict(re.findall(r"# --8<-- \[start:(\w+)\]\n(.*?)# --8<-- \[end:\1\]", source, re.S))
    steps = re.findall(r'--8<-- "tutorial/tasks\.py:(\w+)"', (DOCS / "tutorial.md").read_text())
    whole = ast.parse(source)
    whole.body = whole.body[1:]  # the module's docstring, which no step shows
    shown = "\n".join(sections[step].rstrip() for step in steps)
    assert ast.dump(ast.parse(shown)) == ast.dump(whole)
