"""The undocumented parts of websockets and redis-py that celery-ws relies on
are still there: checked on a real server connection and a real Redis, so an
upgrade that removes one fails here, naming it, rather than somewhere in the
fan-out, a close or the bus."""

from __future__ import annotations

import asyncio
import collections
import json
from importlib.metadata import version
from typing import Any

import pytest
import redis
from websockets.asyncio.client import connect
from websockets.server import ServerProtocol

from celery_ws.connections import _PackedByHiredis, _WrittenInPlace, async_client, sync_client
from celery_ws.server import redisconn, wsconn
from celery_ws.server.manager import WebSocketManager
from celery_ws.settings import Settings
from tests.helpers import seconds


def _fail_if_missing(package: str, missing: list[str], module: str) -> None:
    if missing:
        pytest.fail(
            "\n".join(
                f"{package} {version(package)} no longer has {name}: {module} uses it "
                "(its docstring says what for)"
                for name in missing
            )
        )


async def test_websockets_internals_are_there(celery_ws_settings: Settings) -> None:
    async with WebSocketManager("127.0.0.1", 0, settings=celery_ws_settings, compression=True) as manager:
        async with connect(f"ws://127.0.0.1:{manager.port}") as client:  # offers permessage-deflate
            (peer,) = manager.policy.live
            _fail_if_missing("websockets", wsconn.missing_internals(peer), "celery_ws/server/wsconn.py")
        async with asyncio.timeout(seconds(5)):
            await client.wait_closed()
        # the check itself names what is gone
        del peer.send_in_progress
        assert wsconn.missing_internals(peer) == ["ServerConnection.send_in_progress"]


async def test_a_connection_gets_every_attribute_in_init(celery_ws_settings: Settings) -> None:
    """CPython 3.11 keeps a connection's attributes in a compact array (about
    300 bytes) only when every connection sets the same ones, fewer than 30,
    before the next connection exists; one set later, in ``connection_made()``,
    gave every connection a dict of its own when many were accepted at once
    (1.3 KiB more each). A websockets release that adds attributes fails here."""
    async with (
        WebSocketManager("127.0.0.1", 0, settings=celery_ws_settings) as manager,
        connect(f"ws://127.0.0.1:{manager.port}"),
    ):
        (peer,) = manager.policy.live
        fresh = type(peer)(ServerProtocol(), manager._server)  # made, not connected
        assert list(vars(peer)) == list(vars(fresh))
        assert len(vars(peer)) < 30


async def test_an_admitted_connection_keeps_no_handshake(celery_ws_settings: Settings) -> None:
    """Once admitted, an idle connection's parser is a frame parser, which
    holds no handshake request, and the connection still reads frames."""
    async with (
        WebSocketManager("127.0.0.1", 0, settings=celery_ws_settings) as manager,
        connect(f"ws://127.0.0.1:{manager.port}") as client,
    ):
        async with asyncio.timeout(seconds(5)):
            while not manager.registry.sessions:
                await asyncio.sleep(0.01)
        (peer,) = manager.registry.sessions
        assert peer.response is None
        assert wsconn.handshake_forgotten(peer), (
            "websockets' parser is not made as forget_handshake() expects"
        )
        await client.send(json.dumps({"action": "subscribe", "user_id": "u1"}))
        async with asyncio.timeout(seconds(5)):
            assert json.loads(await client.recv())["type"] == "subscription_confirmed"


def test_the_frame_queue_behaves_as_the_deque_it_replaces() -> None:
    """websockets' SimpleQueue uses its deque as append, popleft, and
    extendleft(reversed(items)) to put frames back in front."""
    ours, theirs = wsconn._FrameQueue(), collections.deque()
    for queue in (ours, theirs):
        queue.append(1)
        queue.append(2)
        queue.extendleft(reversed([8, 9]))
        queue.append(3)
    assert list(ours) == list(theirs) == [8, 9, 1, 2, 3]
    assert [ours.popleft() for _ in range(5)] == [theirs.popleft() for _ in range(5)]
    assert not ours and len(ours) == 0


async def test_redis_raw_connection_api_is_there(celery_ws_redis_url: str) -> None:
    client = async_client(celery_ws_redis_url, blocking=True)
    try:
        _fail_if_missing("redis", redisconn.missing_internals(client), "celery_ws/server/redisconn.py")
        connection = redisconn.RawConnection(client)
        await connection.connect()
        try:
            # two commands written before either reply is read, replies paired in order
            await connection.send("ECHO", "first")
            await connection.send("ECHO", "second")
            assert [await connection.reply(), await connection.reply()] == [b"first", b"second"]
            # a burst: the first reply awaited, the rest taken as they are already
            # parsed (the bus routes a burst of messages this way), none lost or repeated
            for n in range(50):
                await connection.send("ECHO", str(n))
            replies = [await connection.reply(), *connection.buffered()]
            deadline = asyncio.get_running_loop().time() + seconds(5)
            while len(replies) < 50 and asyncio.get_running_loop().time() < deadline:
                replies += [await connection.reply(), *connection.buffered()]
            assert replies == [str(n).encode() for n in range(50)]
            assert connection.buffered() == []
        finally:
            await connection.close()
    finally:
        await client.aclose()


def test_commands_packed_by_hiredis_are_what_redis_py_packs(celery_ws_redis_url: str) -> None:
    """celery-ws' sync clients pack commands with hiredis directly
    (``connections._PackedByHiredis``); the bytes must be redis-py's own, and
    redis-py must still pack through ``pack_command``/``pack_commands``."""
    client = sync_client(celery_ws_redis_url)
    try:
        packed_class = client.connection_pool.connection_class
        assert issubclass(packed_class, _PackedByHiredis)
        commands = [
            ("CLIENT SETNAME", "packed"),
            ("EVAL", "return ARGV", 0, 1795714773.8362062, 86400, -3, "", "é ü", b"\x00\xff"),
            ("SET", "cws:{0}:user:{u0}:events", b'{"id":"1-0"}', "EX", 60),
        ]
        ours, theirs = packed_class(), redis.connection.Connection()
        assert b"".join(ours.pack_commands(commands)) == b"".join(theirs.pack_commands(commands))
        for command in commands:
            assert b"".join(ours.pack_command(*command)) == b"".join(theirs.pack_command(*command))
        # and on a real Redis: a two-word command, a script's arguments as sent
        client.execute_command("CLIENT SETNAME", "packed")
        assert client.client_getname() == "packed"
        with client.pipeline(transaction=False) as pipe:
            pipe.eval("return ARGV", 0, 1.5, 7, "é")
            pipe.echo(b"\x00\xff")
            assert pipe.execute() == [[b"1.5", b"7", "é".encode()], b"\x00\xff"]
    finally:
        client.close()


async def test_async_commands_are_written_without_a_task_of_their_own(celery_ws_redis_url: str) -> None:
    """An asyncio client with a socket timeout writes each command in place
    (``connections._WrittenInPlace``): no Task per command, as redis-py's
    ``asyncio.wait_for()`` makes on Python 3.11, and the same bytes as redis-py
    packs. A connection Redis closed is replaced by the client's retry."""
    client = async_client(celery_ws_redis_url)
    admin = redis.Redis.from_url(celery_ws_redis_url)
    loop = asyncio.get_running_loop()
    made: list[Any] = []

    def counting(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
        made.append(coro)
        return asyncio.Task(coro, loop=loop, **kwargs)

    try:
        connection_class = client.connection_pool.connection_class
        assert issubclass(connection_class, _WrittenInPlace)
        assert issubclass(connection_class, _PackedByHiredis)
        command = ("EVAL", "return ARGV", 0, 1.5, "é", b"\x00\xff")
        theirs = redis.asyncio.connection.Connection()
        assert connection_class().pack_command(*command) == theirs.pack_command(*command)
        await client.set("written", "in place")  # connected
        ours = await client.client_id()  # the pool's one connection
        loop.set_task_factory(counting)
        try:
            assert await client.get("written") == b"in place"
            async with client.pipeline(transaction=False) as pipe:
                pipe.echo("one").echo("two")
                assert await pipe.execute() == [b"one", b"two"]
        finally:
            loop.set_task_factory(None)
        # redis-py's own write (and its pool) run as tasks of their own
        assert [coro.__qualname__ for coro in made if "send" in coro.__qualname__] == []
        assert admin.client_kill_filter(_id=ours) == 1
        assert await client.get("written") == b"in place"
    finally:
        await client.aclose()
        admin.close()
