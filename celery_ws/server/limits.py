"""Per-connection message rate limiting."""

from __future__ import annotations

import time

__all__ = ["TokenBucket"]


class TokenBucket:
    """Allows ``rate`` messages per second on average and bursts of ``burst``.

    ``strikes`` counts messages refused since the bucket last had room: a
    client that keeps sending into a full bucket is abusive, not bursty.
    """

    __slots__ = ("burst", "rate", "strikes", "_stamp", "_tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self.strikes = 0
        self._tokens = float(burst)
        self._stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            self.strikes = 0
            return True
        self.strikes += 1
        return False
