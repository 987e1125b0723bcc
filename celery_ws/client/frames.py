"""What a client remembers of the frames it received, and waiting for the next.

A client that follows a user for days (``celery-ws watch --follow``) must not
keep every frame it ever saw, so :class:`Frames` keeps only the newest
``maxlen``. Readers therefore never hold an index into what is kept, which
shifts as old frames fall off the front: every frame received gets the next
*position* (0, 1, 2, ...), kept or not, and a reader remembers the position it
has reached. It resumes there, or at the oldest frame still kept if its
position fell off meanwhile; so it misses nothing that is still kept and sees
every new frame.

:class:`SeenEvents` is the other half of memory: which event ids arrived, in a
bounded window, so a replay that overlaps what a client already has shows up
once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from typing import Any, overload

from ..protocol import event_order

__all__ = ["Frame", "Frames", "SeenEvents"]

Frame = dict[str, Any]

#: how many event ids are remembered for de-duplication (a replay is at most
#: the server's history, 1000 events per user or task by default)
_SEEN_IDS = 10_000


class Frames(Sequence[Frame]):
    """The newest ``maxlen`` frames received, oldest first (all of them when
    ``maxlen`` is None).

    Reads like a list (``len``, indexing, slicing, iteration); iterating walks a
    snapshot, so a frame arriving while the caller awaits inside the loop
    changes nothing. :attr:`received` counts every frame received, kept or not:
    it is the position the next frame will get (see ``Client.wait_for``).
    """

    def __init__(self, maxlen: int | None) -> None:
        if maxlen is not None and maxlen < 1:
            raise ValueError(f"keep_frames must be at least 1, or None to keep every frame (got {maxlen})")
        self._kept: deque[Frame] = deque(maxlen=maxlen)
        self._changed = asyncio.Event()
        #: frames received so far, including those no longer kept
        self.received = 0

    @property
    def maxlen(self) -> int | None:
        return self._kept.maxlen

    def __len__(self) -> int:
        return len(self._kept)

    @overload
    def __getitem__(self, index: int) -> Frame: ...

    @overload
    def __getitem__(self, index: slice) -> list[Frame]: ...

    def __getitem__(self, index: int | slice) -> Frame | list[Frame]:
        if isinstance(index, slice):
            return list(self._kept)[index]
        return self._kept[index]

    def __iter__(self) -> Iterator[Frame]:
        return iter(list(self._kept))

    def __repr__(self) -> str:
        return f"<Frames kept={len(self)} maxlen={self.maxlen} received={self.received}>"

    def append(self, frame: Frame) -> None:
        """Keep ``frame`` (dropping the oldest beyond ``maxlen``) and wake every reader."""
        self._kept.append(frame)
        self.received += 1
        self._changed.set()

    def wake(self) -> None:
        """Wake every reader without a frame, to look at ``more()`` again."""
        self._changed.set()

    async def follow(self, position: int, more: Callable[[], bool]) -> AsyncGenerator[Frame, None]:
        """Every frame kept from ``position`` on, then each new one as it arrives.

        Once the kept frames are used up, ``more()`` decides whether to wait for
        the next (False ends the iteration; it may raise instead)."""
        while True:
            while (found := self._at(position)) is not None:
                position, frame = found
                yield frame
                position += 1
            if not more():
                return
            # no await since _at() came up empty: nothing can have arrived unseen
            self._changed.clear()
            await self._changed.wait()

    def _at(self, position: int) -> tuple[int, Frame] | None:
        """The frame at ``position``, or the oldest kept after it when it is no
        longer kept, with its position; None when not received yet."""
        first = self.received - len(self._kept)
        position = max(position, first)
        if position >= self.received:
            return None
        return position, self._kept[position - first]


class SeenEvents:
    """Event ids received (the newest ``window``), and the highest of them."""

    def __init__(self, window: int = _SEEN_IDS) -> None:
        self._ids: set[str] = set()
        self._order: deque[str] = deque()
        self._window = window
        #: the highest event id received: where a resumed subscription continues
        self.last: str | None = None

    def first_time(self, event_id: str) -> bool:
        """Whether ``event_id`` is new; remember it either way."""
        if event_id in self._ids:
            return False
        self._ids.add(event_id)
        self._order.append(event_id)
        if len(self._order) > self._window:
            self._ids.discard(self._order.popleft())
        with contextlib.suppress(ValueError):  # not a stream id: kept out of ``last``
            if self.last is None or event_order(event_id) > event_order(self.last):
                self.last = event_id
        return True
