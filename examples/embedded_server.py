"""The server inside an asyncio application, with the seed design's API.

python -m examples.embedded_server
"""

from __future__ import annotations

import asyncio

from celery_ws import TaskStepResult, UserConfirmation, WebSocketManager


async def main(port: int = 8765, answer_timeout: float = 60) -> UserConfirmation:
    step_result = TaskStepResult(
        step="data_validation",
        result={"errors": 5},
        completed=True,
        message="Data validation completed, found 5 errors",
        status="completed",
    )
    manager = WebSocketManager(host="127.0.0.1", port=port)
    await manager.start_server()
    await manager.broadcast_message({"type": "system_notification", "message": "hello"})
    await manager.send_to_user("user_123", {"type": "personal_notification", "message": "hi"})
    heartbeat = asyncio.create_task(manager.send_heartbeat("user_123", "task_456", interval=30))
    confirmation = await manager.notify_user(step_result, "user_123", "task_456", 1, timeout=answer_timeout)
    print(manager.get_connection_count(), manager.get_status())
    heartbeat.cancel()
    await manager.stop_server()  # clients see close code 1001 and reconnect elsewhere
    return confirmation


if __name__ == "__main__":
    print(asyncio.run(main()))
