"""Watch a user's tasks from Python and approve every question they ask.

python -m examples.watch ws://127.0.0.1:8765 user_123
"""

from __future__ import annotations

import asyncio
import sys

from celery_ws.client import Client


async def watch(url: str, user_id: str) -> str:
    async with Client(url) as client:
        await client.subscribe(user_id=user_id)
        async for event in client.events():
            if event["type"] == "task_step_result" and event.get("callback_id"):
                await client.confirm(event["callback_id"], proceed=True, feedback="ok")
            if event["type"] in ("task_succeeded", "task_failed", "task_cancelled"):
                return event["type"]
    return "disconnected"


if __name__ == "__main__":
    print(asyncio.run(watch(sys.argv[1], sys.argv[2])))
