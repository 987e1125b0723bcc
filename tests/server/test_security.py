"""Attacks on a token-mode server. Each asserts that nothing leaked and nothing
changed, and that a well-behaved client on the same server still gets its
events afterwards."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from celery_ws import Publisher, Settings, SettingsError, WebSocketManager, issue_token
from celery_ws.client import Client
from celery_ws.protocol import message_event
from celery_ws.server.connection import Expiries
from celery_ws.testing import ServerThread
from tests import tasks
from tests.helpers import read_until_closed, seconds

SECRET = "s3cret-for-tests-only-0123456789abcdef"
OLD_SECRET = "previous-secret-still-valid-0123456789"
OTHER_KEY = "somebody-elses-key-0123456789abcdefgh"


@pytest.fixture(scope="module")
def settings(celery_ws_redis_url) -> Settings:
    return Settings.load(
        redis_url=celery_ws_redis_url,
        secret=SECRET,
        previous_secrets=OLD_SECRET,
        auth_timeout=0.5,
        rate_limit=50,
        rate_burst=100,
        write_buffer_limit=65_536,
        max_message_size=65_536,
        max_connections_per_user=5,
    )


@pytest.fixture(scope="module")
def secure(settings, celery_ws_revoke) -> Iterator[ServerThread]:
    server = ServerThread(settings, revoke=celery_ws_revoke).start()
    yield server
    server.stop()


def token_for(user: str, settings: Settings, ttl: float = 60, **claims) -> str:
    return issue_token(user, ttl=ttl, settings=settings, **claims)


async def authenticated(secure: ServerThread, user: str, settings: Settings, **options: Any) -> Client:
    """A client logged in as ``user``, past the frames that follow the login."""
    options.setdefault("timeout", seconds(10))
    client = await Client(f"{secure.url}/?token={token_for(user, settings)}", **options).__aenter__()
    await client.wait_for_event("authenticated")
    await client.wait_for_event("subscription_confirmed")
    return client


async def assert_still_serving(secure, settings, publisher, user):
    """A well-behaved client connects and gets its own events."""
    client = await authenticated(secure, user + "-good", settings)
    try:
        publisher.send_to_user(user + "-good", {"type": "still_here"})
        await client.wait_for_event("still_here")
    finally:
        await client.close()


async def closed_with(url: str, *, first: str | None = None, headers=None) -> tuple[int, list]:
    received = []
    async with connect(url, proxy=None, additional_headers=headers) as ws:
        if first is not None:
            await ws.send(first)
        received += await read_until_closed(ws)
        return ws.close_code, received


# -- authentication -----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["query", "header", "first_message"])
async def test_a_valid_token_names_the_connection_user(secure, settings, user, how):
    token = token_for(user, settings)
    url = f"{secure.url}/?token={token}" if how == "query" else secure.url
    headers = {"Authorization": f"Bearer {token}"} if how == "header" else None
    async with Client(url, additional_headers=headers, timeout=seconds(10)) as client:
        if how == "first_message":
            await client.send({"action": "auth", "token": token})
        welcome = await client.wait_for_event("authenticated")
        assert welcome["user_id"] == user
        assert welcome["expires_at"] > time.time()


def _forged(user: str) -> dict[str, str]:
    now = int(time.time())
    claims = {"sub": user, "exp": now + 60}
    return {
        "expired": jwt.encode({"sub": user, "exp": now - 60}, SECRET, algorithm="HS256"),
        "other key": jwt.encode(claims, OTHER_KEY, algorithm="HS256"),
        "alg none": jwt.encode(claims, None, algorithm="none"),
        "no exp": jwt.encode({"sub": user}, SECRET, algorithm="HS256"),
        "malformed": "not.a.jwt",
        "bad sub": jwt.encode({"sub": "../etc/passwd", "exp": now + 60}, SECRET, algorithm="HS256"),
    }


@pytest.mark.parametrize(
    "kind", ["missing", "expired", "other key", "alg none", "no exp", "malformed", "bad sub"]
)
async def test_bad_tokens_are_closed_with_4401_before_any_event(secure, settings, publisher, user, kind):
    if kind == "missing":
        code, received = await closed_with(secure.url)
    else:
        code, received = await closed_with(f"{secure.url}/?token={_forged(user)[kind]}")
    assert code == 4401
    assert received == []
    await assert_still_serving(secure, settings, publisher, user)


async def test_first_frame_must_be_auth(secure):
    code, received = await closed_with(secure.url, first=json.dumps({"action": "subscribe", "user_id": "x"}))
    assert (code, received) == (4401, [])


async def test_rotated_secret_still_accepted(secure, settings, user):
    old = Settings.load(redis_url=settings.redis_url, secret=OLD_SECRET)
    async with Client(f"{secure.url}/?token={token_for(user, old)}", timeout=seconds(10)) as client:
        assert (await client.wait_for_event("authenticated"))["user_id"] == user


async def test_token_expiring_while_connected_ends_the_connection(secure, settings, user):
    token = jwt.encode({"sub": user, "exp": int(time.time()) + 2}, SECRET, algorithm="HS256")
    async with Client(f"{secure.url}/?token={token}", timeout=seconds(10)) as client:
        await client.wait_for_event("authenticated")
        # 2 s plus the verifier's 5 s leeway at most
        await asyncio.wait_for(client.closed.wait(), seconds(10))
    assert client.connection.close_code == 4401


class _Peer:
    def __init__(self) -> None:
        self.closed: tuple[int, str] | None = None

    def close_soon(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


async def test_expiries_close_at_the_second_and_skip_what_closed_first():
    """One timer per second of expiry, whatever the number of connections in
    it; a connection that closed before its token expired is left alone."""
    expiries = Expiries()
    soon = int(time.time()) + 1
    stays, leaves, later = _Peer(), _Peer(), _Peer()
    due = expiries.add(stays, soon)
    assert expiries.add(leaves, soon) is due
    expiries.add(later, soon + 60)
    assert len(expiries._due) == 2  # a timer each
    due.discard(leaves)  # closed before its token expired
    await asyncio.sleep(soon - time.time() + 0.2)
    assert stays.closed == (4401, "Token expired")
    assert leaves.closed is None and later.closed is None


# -- authorization ------------------------------------------------------------------------


@pytest.mark.usefixtures("worker")
async def test_b_cannot_see_answer_or_cancel_a_task_of_a(secure, settings, publisher, user):
    alice, bob = user + "-a", user + "-b"
    a = await authenticated(secure, alice, settings)
    b = await authenticated(secure, bob, settings)
    try:
        result = tasks.ask.delay_for(alice)
        request = await a.wait_for(lambda f: f.get("task_id") == result.id and f.get("callback_id"))

        for frame in (
            {"action": "subscribe", "user_id": alice},
            {"action": "subscribe", "task_id": result.id},
        ):
            reply = await b.request(frame, "subscription_confirmed")
            assert reply["type"] == "error"
            assert reply["code"] == "forbidden"
        answer = await b.confirm(request["callback_id"], False, "hijack")
        assert answer["code"] == "forbidden"
        cancel = await b.cancel(result.id)
        assert cancel["code"] == "forbidden"

        await asyncio.sleep(0.3)
        assert not result.ready()  # still waiting for its owner
        reply = await a.confirm(request["callback_id"], True, "mine")
        assert reply["type"] == "confirmation_received"
        done = await a.wait_for_event("task_succeeded", task_id=result.id)
        assert done["result"]["answered_by"] == alice
        assert done["result"]["feedback"] == "mine"
        leaked = [
            f
            for f in b.frames
            if f.get("type") != "error" and (f.get("task_id") == result.id or f.get("user_id") == alice)
        ]
        assert leaked == []
    finally:
        await a.close()
        await b.close()


@pytest.mark.usefixtures("worker")
async def test_assignee_may_answer_and_sees_the_question(secure, settings, user):
    owner, reviewer = user + "-owner", user + "-reviewer"
    o = await authenticated(secure, owner, settings)
    r = await authenticated(secure, reviewer, settings)
    try:
        result = tasks.ask.delay_for(owner, assignees=[reviewer])
        request = await r.wait_for(lambda f: f.get("callback_id") is not None)
        assert request["task_id"] == result.id
        denied = await o.confirm(request["callback_id"], True)
        assert denied["code"] == "forbidden"  # the owner is not an assignee here
        assert (await r.confirm(request["callback_id"], True, "approved"))["type"] == "confirmation_received"
        done = await o.wait_for_event("task_succeeded", task_id=result.id)
        assert done["result"]["answered_by"] == reviewer
        # both see the question closed: the owner's copy and the reviewer's
        for client in (o, r):
            closed = await client.wait_for_event("confirmation_answered", callback_id=request["callback_id"])
            assert closed["answered_by"] == reviewer
    finally:
        await o.close()
        await r.close()


async def test_per_user_connection_limit(secure, settings, user):
    clients = [await authenticated(secure, user, settings) for _ in range(settings.max_connections_per_user)]
    try:
        code, received = await closed_with(f"{secure.url}/?token={token_for(user, settings)}")
        assert code == 1013
        assert received == []
    finally:
        for client in clients:
            await client.close()


# -- hostile input ------------------------------------------------------------------------


async def test_ten_mib_frame_closes_only_that_connection(secure, settings, publisher, user):
    async with connect(f"{secure.url}/?token={token_for(user, settings)}", proxy=None, max_size=None) as ws:
        await ws.recv()
        await ws.send("x" * (10 << 20))
        await read_until_closed(ws)
        assert ws.close_code == 1009
    await assert_still_serving(secure, settings, publisher, user)


async def test_message_burst_is_rate_limited_then_closed(secure, settings, publisher, user):
    async with connect(f"{secure.url}/?token={token_for(user, settings)}", proxy=None) as ws:
        await ws.recv()
        ping = json.dumps({"action": "ping"})
        try:
            for _ in range(10_000):
                await ws.send(ping)
        except ConnectionClosed:
            pass  # closed while still sending: fine
        replies = [json.loads(message) for message in await read_until_closed(ws)]
        assert ws.close_code == 1008
    types = {r["type"] for r in replies}
    assert "pong" in types
    assert {"error"} <= types
    assert {r["code"] for r in replies if r["type"] == "error"} == {"rate_limited"}
    await assert_still_serving(secure, settings, publisher, user)


async def test_invalid_utf8_text_frame_closes_with_1007(secure, settings, publisher, user):
    async with connect(f"{secure.url}/?token={token_for(user, settings)}", proxy=None) as ws:
        await ws.recv()
        await ws.send(b'{"action": "ping", "x": "\xff\xfe"}', text=True)
        await ws.wait_closed()
        assert ws.close_code == 1007
    await assert_still_serving(secure, settings, publisher, user)


async def test_deeply_nested_json_is_an_error_not_a_crash(secure, settings, publisher, user):
    client = await authenticated(secure, user, settings)
    try:
        for depth in (1_000, 30_000):  # 60 KB: just under the frame size limit
            start = len(client.frames)
            await client.connection.send("[" * depth + "]" * depth)
            reply = await client.wait_for(lambda f: f.get("type") == "error", start=start)
            assert reply["code"] in ("invalid_json", "invalid_message")
    finally:
        await client.close()
    await assert_still_serving(secure, settings, publisher, user)


WRONG_TYPES = [1, 1.5, True, None, "text", [], {}, ["a"], {"a": 1}]
FIELDS = {
    "subscribe": {"user_id": "u", "task_id": "t", "last_event_id": "0-0"},
    "unsubscribe": {"user_id": "u", "task_id": "t"},
    "confirm": {"callback_id": "c", "proceed": True, "feedback": "f"},
    "cancel": {"task_id": "t", "user_id": "u"},
}

OPTIONAL = {
    ("subscribe", "user_id"),
    ("subscribe", "task_id"),
    ("subscribe", "last_event_id"),
    ("unsubscribe", "user_id"),
    ("unsubscribe", "task_id"),
    ("confirm", "feedback"),
    ("cancel", "user_id"),
}


async def test_wrong_types_for_every_field_are_refused(secure, settings, publisher, user):
    client = await authenticated(secure, user, settings)
    try:
        for action, fields in FIELDS.items():
            for field, good in fields.items():
                for wrong in WRONG_TYPES:
                    if type(wrong) is type(good) or (wrong is None and (action, field) in OPTIONAL):
                        continue
                    frame = {"action": action, **fields, field: wrong}
                    start = len(client.frames)
                    await client.send(frame)
                    reply = await client.wait_for(lambda f: True, start=start)
                    assert reply["type"] == "error", (frame, reply)
                    assert reply["code"] in ("invalid_message", "forbidden"), (frame, reply)
                    await asyncio.sleep(0.025)  # stay under the rate limit
    finally:
        await client.close()
    await assert_still_serving(secure, settings, publisher, user)


async def test_client_that_never_reads_is_dropped_and_others_get_everything(
    secure, settings, publisher, user
):
    victim = user + "-fast"
    slow = await Client(f"{secure.url}/?token={token_for(user, settings)}", timeout=seconds(10)).__aenter__()
    fast = await authenticated(secure, victim, settings, keep_frames=None)  # asserts on all 10,000
    await slow.wait_for_event("authenticated")
    slow.connection.transport.pause_reading()
    try:
        for start in range(0, 10_000, 1_000):
            # incompressible padding: permessage-deflate must not hide the backlog
            await asyncio.to_thread(
                publisher.emit_many,
                [
                    message_event(
                        {"type": "bulk", "n": n, "pad": secrets.token_urlsafe(1500)}, user_id=target
                    )
                    for n in range(start, start + 1_000)
                    for target in (user, victim)
                ],
            )
        last = await fast.wait_for_event("bulk", n=9_999, timeout=seconds(60))
        assert [f["n"] for f in fast.frames if f.get("type") == "bulk"] == list(range(10_000))
        dropped = secure.call(lambda: secure.manager.get_status()["slow_clients_dropped"])
        assert dropped >= 1
        assert last["user_id"] == victim
    finally:
        slow.connection.transport.resume_reading()
        await slow.close()
        await fast.close()


# -- configuration guards -----------------------------------------------------------------


async def test_open_mode_refuses_a_public_address_without_insecure(celery_ws_redis_url):
    manager = WebSocketManager(host="0.0.0.0", port=0, settings=Settings.load(redis_url=celery_ws_redis_url))
    with pytest.raises(SettingsError, match="--insecure"):
        await manager.start_server()
    allowed = WebSocketManager(
        host="0.0.0.0", port=0, settings=Settings.load(redis_url=celery_ws_redis_url, insecure=True)
    )
    await allowed.start_server()
    await allowed.stop_server()


async def test_origin_allow_list(celery_ws_redis_url):
    settings = Settings.load(redis_url=celery_ws_redis_url, allowed_origins="https://app.example")
    server = ServerThread(settings).start()
    try:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(server.url, proxy=None, origin="https://evil.example"):
                pass
        assert refused.value.response.status_code == 403
        async with connect(server.url, proxy=None, origin="https://app.example") as ws:
            await ws.send(json.dumps({"action": "ping"}))
            assert json.loads(await ws.recv())["type"] == "pong"
        async with connect(server.url, proxy=None) as ws:  # non-browser clients send no Origin
            await ws.send(json.dumps({"action": "ping"}))
            assert json.loads(await ws.recv())["type"] == "pong"
        own_page = f"http://127.0.0.1:{server.manager.port}"  # the built-in page, from this server
        async with connect(server.url, proxy=None, origin=own_page) as ws:
            await ws.send(json.dumps({"action": "ping"}))
            assert json.loads(await ws.recv())["type"] == "pong"
        with pytest.raises(InvalidStatus) as other_port:  # a listed host, another port: another origin
            async with connect(server.url, proxy=None, origin="https://app.example:8443"):
                pass
        assert other_port.value.response.status_code == 403
    finally:
        server.stop()


async def test_rs256_tokens_with_a_public_key(celery_ws_redis_url, user):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    settings = Settings.load(
        redis_url=celery_ws_redis_url, jwt_algorithm="RS256", jwt_public_key=public, jwt_audience="shop"
    )
    server = ServerThread(settings).start()
    try:
        good = issue_token(user, settings=settings, private_key=private)
        async with Client(f"{server.url}/?token={good}", timeout=seconds(10)) as client:
            assert (await client.wait_for_event("authenticated"))["user_id"] == user
        wrong_audience = issue_token(user, settings=settings, private_key=private, aud="other")
        code, _ = await closed_with(f"{server.url}/?token={wrong_audience}")
        assert code == 4401
        hs_forgery = (
            jwt.encode({"sub": user, "exp": int(time.time()) + 60, "aud": "shop"}, public, algorithm="HS256")
            if False
            else "x.y.z"
        )
        code, _ = await closed_with(f"{server.url}/?token={hs_forgery}")
        assert code == 4401
    finally:
        server.stop()


def test_redis_password_in_the_url_is_used(tmp_path):
    from celery_ws.testing.redis_server import RedisServer

    with RedisServer(password="pw-for-test") as redis_server:
        publisher = Publisher(redis_server.url)
        assert publisher.send_to_user("u", {"type": "hello"})
        publisher.close()
        wrong = Publisher(redis_server.url.replace("pw-for-test", "wrong"))
        with pytest.raises(Exception, match=r"(?i)auth|password|invalid"):
            wrong.send_to_user("u", {"type": "hello"})
        wrong.close()


async def test_two_thousand_connections_over_the_limit(celery_ws_redis_url, user):
    limit, extra = 100, 2_000
    server = ServerThread(Settings.load(redis_url=celery_ws_redis_url, max_connections=limit)).start()
    held = []
    try:
        for _ in range(limit):
            held.append(await connect(server.url, proxy=None))  # noqa: PERF401 (the finally closes a partial list)

        async def rejected() -> int | None:
            try:
                async with connect(server.url, proxy=None, open_timeout=seconds(30)):
                    return 101
            except InvalidStatus as exc:
                return exc.response.status_code

        codes = []
        for batch in range(0, extra, 250):
            codes += await asyncio.gather(*(rejected() for _ in range(min(250, extra - batch))))
        assert codes == [503] * extra
        await held[0].send(json.dumps({"action": "ping"}))
        assert json.loads(await held[0].recv())["type"] == "pong"
        status = server.call(server.manager.get_status)
        assert status["active_connections"] == limit
        assert status["connections_rejected_server_full"] == extra
    finally:
        for ws in held:
            await ws.close()
    try:
        async with Client(server.url, timeout=seconds(10)) as client:  # room again once clients leave
            assert (await client.ping())["type"] == "pong"
    finally:
        server.stop()
