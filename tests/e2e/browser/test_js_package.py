"""The npm package in clients/js/ against the file the server serves: one
source (``celery_ws/static/celery_ws/celery-ws.js``), its version the Python
package's, and TypeScript declarations that name everything the source
offers, so neither can drift. (``npm test`` in clients/js runs the package
against a real server.)"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import typing

import pytest

from celery_ws import __version__
from celery_ws.protocol import ErrorCode, EventType
from tests.helpers import seconds
from tests.processes import REPO

PACKAGE = REPO / "clients" / "js"
SOURCE = (REPO / "celery_ws" / "static" / "celery_ws" / "celery-ws.js").read_text()
TYPES = (PACKAGE / "celery-ws.d.ts").read_text()


def declared(name: str) -> bool:
    return re.search(rf"\b{re.escape(name)}\b", TYPES) is not None


def test_the_package_is_the_python_packages_version_with_both_builds():
    package = json.loads((PACKAGE / "package.json").read_text())
    assert package["name"] == "celery-ws"
    assert package["version"] == __version__
    assert package["type"] == "module"
    assert package["exports"]["."] == {
        "types": "./celery-ws.d.ts",
        "import": "./dist/celery-ws.mjs",
        "default": "./dist/celery-ws.mjs",
    }
    assert package["exports"]["./script"] == "./dist/celery-ws.js"
    assert package["types"] == "./celery-ws.d.ts"
    assert (PACKAGE / "package-lock.json").is_file()


def test_the_declarations_name_every_option_callback_method_and_export():
    options = set(re.findall(r"\bo\.(\w+)", SOURCE))
    callbacks = set(re.findall(r'"(on[A-Z]\w+)"', SOURCE))
    methods = {m for m in re.findall(r"Client\.prototype\.(\w+) =", SOURCE) if not m.startswith("_")}
    exports = set(re.findall(r"^    (\w+): \w+,$", SOURCE.split("  return {\n    Client: Client,")[1], re.M))
    assert {"token", "userId", "taskId", "lastEventId", "WebSocket"} <= options
    assert {"onProgress", "onConfirmationRequest", "onConfirmationClosed", "onDone", "onWaiting"} <= callbacks
    assert {"connect", "close", "subscribe", "confirm", "cancel", "isWaiting"} <= methods
    assert {"renderAnswerForm", "tokenExpiry", "workflowOf"} <= exports
    missing = sorted(n for n in options | callbacks | methods | exports | {"Client"} if not declared(n))
    assert missing == []


def test_the_declarations_name_every_error_code_and_event_type():
    client_codes = set(re.findall(r'code: "(\w+)"', SOURCE))
    client_codes |= set(re.findall(r'\d{4}: "(\w+)"', SOURCE))  # the close codes it reports
    assert {"handshake_refused", "policy_violation", "try_again_later", "unauthorized"} <= client_codes
    server_codes = set(typing.get_args(ErrorCode))
    events = {str(e) for e in EventType}
    missing = sorted(c for c in client_codes | server_codes | events if f'"{c}"' not in TYPES)
    assert missing == []


def test_the_builds_are_made_from_the_served_file():
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (Node 20 builds the npm package)")
    script = "import { build } from './clients/js/build.mjs';process.stdout.write(JSON.stringify(build()));"
    built = json.loads(
        subprocess.run(
            [node, "--input-type=module", "-e", script],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds(30),
        ).stdout
    )
    assert built["celery-ws.js"] == SOURCE
    module = built["celery-ws.mjs"]
    assert SOURCE.rstrip() in module
    assert "export default CeleryWS;" in module
    assert re.search(r"export const \{ .*\brenderAnswerForm\b.* \} = CeleryWS;", module)
