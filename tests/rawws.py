"""A WebSocket client made of a bare socket, for attacks the ``websockets``
library would not let a test make: duplicate or missing headers, a handshake
that never finishes, a peer that never reads, frames of any shape.

It speaks just enough RFC 6455 to drive the server: the upgrade request, masked
client frames, and reading the server's unmasked frames.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
from collections.abc import Sequence

from tests.helpers import seconds

__all__ = ["RawSocket", "frame", "handshake_request"]

TEXT, CLOSE, PING, PONG = 0x1, 0x8, 0x9, 0xA


def handshake_request(
    host: str, port: int, path: str = "/", *, headers: Sequence[tuple[str, str]] = (), defaults: bool = True
) -> bytes:
    """An HTTP/1.1 upgrade request; ``headers`` come after the usual ones (which
    ``defaults=False`` leaves out), so a test can repeat any of them."""
    lines = [f"GET {path} HTTP/1.1"]
    if defaults:
        lines += [
            f"Host: {host}:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}",
            "Sec-WebSocket-Version: 13",
        ]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def frame(payload: bytes | str, opcode: int = TEXT) -> bytes:
    """One masked client frame (as RFC 6455 requires of clients)."""
    data = payload.encode() if isinstance(payload, str) else payload
    mask = os.urandom(4)
    size = len(data)
    if size < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    return header + mask + masked


class RawSocket:
    """One TCP connection to the server, spoken to byte by byte."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: str, port: int, *, receive_buffer: int | None = None) -> RawSocket:
        """Connect; ``receive_buffer`` shrinks the kernel's receive buffer, so a
        peer that does not read stops accepting bytes sooner."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 22)
        return cls(reader, writer)

    @classmethod
    async def upgraded(
        cls,
        host: str,
        port: int,
        path: str = "/",
        *,
        headers: Sequence[tuple[str, str]] = (),
        receive_buffer: int | None = None,
        timeout: float = seconds(5),
    ) -> RawSocket:
        """Open and finish the WebSocket handshake; raises if the server refuses."""
        raw = await cls.open(host, port, receive_buffer=receive_buffer)
        raw.writer.write(handshake_request(host, port, path, headers=headers))
        status, _ = await asyncio.wait_for(raw.read_response(), timeout)
        if status != 101:
            raw.abort()
            raise ConnectionError(f"handshake refused with HTTP {status}")
        return raw

    def send(self, payload: bytes | str, opcode: int = TEXT) -> None:
        self.writer.write(frame(payload, opcode))

    async def read_response(self) -> tuple[int, bytes]:
        """The HTTP status and head of the server's reply to the upgrade request."""
        head = await self.reader.readuntil(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), head

    async def recv(self, timeout: float = seconds(5)) -> tuple[int, bytes]:
        """The next frame's opcode and payload (uncompressed frames only)."""
        first, payload = await self.recv_frame(timeout)
        return first & 0x0F, payload

    async def recv_frame(self, timeout: float = seconds(5)) -> tuple[int, bytes]:
        """The next frame's first byte (FIN, RSV1-3 and opcode) and payload, as sent."""
        async with asyncio.timeout(timeout):
            first, second = await self.reader.readexactly(2)
            size = second & 0x7F
            if size == 126:
                (size,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif size == 127:
                (size,) = struct.unpack("!Q", await self.reader.readexactly(8))
            return first, await self.reader.readexactly(size)

    async def close_code(self, timeout: float = seconds(5)) -> int | None:
        """Read frames until the server's close frame; its code, or None when
        the connection ends without one."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    opcode, payload = await self.recv(timeout)
                    if opcode == CLOSE:
                        return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
        except (asyncio.IncompleteReadError, ConnectionError):
            return None

    def stop_reading(self) -> None:
        """Read nothing more: bytes pile up in the kernel's buffers, then the server's."""
        self.writer.transport.pause_reading()

    def abort(self) -> None:
        self.writer.transport.abort()
