"""The server side: an asyncio process on ``websockets`` that reads events from
Redis and delivers them to the connections of the people they belong to.

Nothing here imports Celery's worker machinery or ``celery_ws.worker``.
"""

from .manager import WebSocketManager

__all__ = ["WebSocketManager"]
