"""The worker side: runs inside Celery processes, writes to Redis only.

Nothing here imports ``websockets`` or the server package.
"""

from .confirm import confirm_step
from .deferred import final_result
from .integration import CeleryWS
from .ownership import OWNER_HEADER, owner_of
from .task import ProgressTask

__all__ = ["OWNER_HEADER", "CeleryWS", "ProgressTask", "confirm_step", "final_result", "owner_of"]
