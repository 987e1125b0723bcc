"""A client that loops resumes, run as its own process by the tests:
``python -m tests.resume_flood PORT TOKEN USER LAST_EVENT_ID SECONDS``.

It subscribes with ``last_event_id`` again each time the server sends it
something; when the server closes the connection it reconnects (resuming at
connect) after 0.1 s, as a client's reconnect loop would, until SECONDS pass.
It prints how many replays it was served.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from tests.rawws import RawSocket


async def flood(port: int, token: str, user: str, since: str, seconds: float) -> int:
    """Replays served; the bytes are counted, not parsed, so that the server
    and not this client is what limits the pace."""
    resume = json.dumps({"action": "subscribe", "user_id": user, "last_event_id": since})
    replays = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            raw = await RawSocket.upgraded("127.0.0.1", port, f"/?token={token}&last_event_id={since}")
        except (ConnectionError, OSError, TimeoutError):
            await asyncio.sleep(0.1)
            continue
        try:
            async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                for _ in range(100_000):
                    raw.send(resume)
                    chunk = await raw.reader.read(1 << 20)
                    if not chunk:  # the server closed the connection
                        break
                    replays += chunk.count(b'"recovered"')
        except (ConnectionError, OSError, TimeoutError):
            pass
        finally:
            raw.abort()
        await asyncio.sleep(0.1)
    return replays


if __name__ == "__main__":
    port, token, user, since, seconds = sys.argv[1:6]
    print(asyncio.run(flood(int(port), token, user, since, float(seconds))))
