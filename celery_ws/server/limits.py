"""Client message rate limiting, charged by the work a frame causes.

Most frames cost one token. A resume costs more: one ``subscribe`` with a
``last_event_id`` may replay a thousand events (about 10 ms of server CPU), so
every frame sent back beyond the first costs :data:`REPLAY_COST` of a token,
and a client that resumes in a loop runs out like any flood.
"""

from __future__ import annotations

import time
from collections.abc import Hashable

__all__ = ["REPLAY_COST", "RateLimits", "TokenBucket"]

#: tokens charged per frame sent in reply beyond the first (a replayed event)
REPLAY_COST = 0.1


class TokenBucket:
    """Allows ``rate`` messages per second on average and bursts of ``burst``.

    ``strikes`` counts messages refused since the bucket last had room: a
    client that keeps sending into a full bucket is abusive, not bursty.
    """

    __slots__ = ("_stamp", "_tokens", "burst", "rate", "strikes")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self.strikes = 0
        self._tokens = float(burst)
        self._stamp = time.monotonic()

    def _refill(self) -> float:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        return self._tokens

    def take(self) -> bool:
        if self._refill() >= 1.0:
            self._tokens -= 1.0
            self.strikes = 0
            return True
        self.strikes += 1
        return False

    def charge(self, tokens: float) -> None:
        """Take ``tokens`` for work already done; the bucket may go into debt,
        and then refuses until the rate has paid it back."""
        self._refill()
        self._tokens -= tokens

    @property
    def in_debt(self) -> bool:
        return self._refill() < 1.0

    @property
    def full(self) -> bool:
        return self._refill() >= self.burst


class RateLimits:
    """The buckets of one server, by who sends.

    The connections of one token identity share a bucket, so closing and
    reopening a connection does not refill it; a connection without one
    (open mode) has its own, forgotten when it closes. A bucket that has filled
    up again is the same as a new one, so idle ones are pruned as the table grows.
    """

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[Hashable, TokenBucket] = {}
        self._prune_at = 64

    def bucket(self, key: Hashable) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._prune_at:
                self._prune()
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst)
        return bucket

    def forget(self, key: Hashable) -> None:
        self._buckets.pop(key, None)

    def _prune(self) -> None:
        self._buckets = {key: bucket for key, bucket in self._buckets.items() if not bucket.full}
        self._prune_at = max(64, 2 * len(self._buckets))
