"""Requests- and tokens-per-minute limiting, and retry backoff.

Two token buckets refill continuously at rpm/60 and tpm/60 per second, so a
run never bursts past the provider's per-minute quota. A 429 with a retry
delay pauses every caller, not just the one that saw it: the quota is shared.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable


class RateLimiter:
    def __init__(
        self,
        rpm: int | None,
        tpm: int | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        self.rpm = rpm
        self.tpm = tpm
        self._clock = clock
        self._sleep = sleep
        now = clock()
        self._requests = float(rpm or 0)
        self._tokens = float(tpm or 0)
        self._updated = now
        self._paused_until = now
        self._lock = asyncio.Lock()

    def _refill(self, now: float) -> None:
        elapsed = now - self._updated
        self._updated = now
        if self.rpm:
            self._requests = min(self.rpm, self._requests + elapsed * self.rpm / 60)
        if self.tpm:
            self._tokens = min(self.tpm, self._tokens + elapsed * self.tpm / 60)

    def _wait_needed(self, now: float, tokens: int) -> float:
        wait = self._paused_until - now
        if self.rpm and self._requests < 1:
            wait = max(wait, (1 - self._requests) * 60 / self.rpm)
        if self.tpm:
            need = min(tokens, self.tpm)  # a single huge request must still get through
            if self._tokens < need:
                wait = max(wait, (need - self._tokens) * 60 / self.tpm)
        return wait

    async def acquire(self, tokens: int = 0) -> None:
        """Wait until one request of about `tokens` tokens fits the quota; callers go first come, first served."""
        async with self._lock:
            while True:
                now = self._clock()
                self._refill(now)
                wait = self._wait_needed(now, tokens)
                if wait <= 0:
                    break
                await self._sleep(wait)
            if self.rpm:
                self._requests -= 1
            if self.tpm:
                self._tokens -= min(tokens, self.tpm)

    def settle(self, estimated: int, actual: int) -> None:
        """Correct the token bucket once the real token count is known."""
        if self.tpm:
            self._tokens -= actual - min(estimated, self.tpm)

    def pause(self, seconds: float) -> None:
        self._paused_until = max(self._paused_until, self._clock() + seconds)


def backoff_delay(
    retry_no: int, base_s: float, max_s: float, retry_after: float | None,
    rng: random.Random | None = None,
) -> float:
    """Exponential backoff with jitter (half fixed, half random), never shorter
    than the server's requested delay."""
    rng = rng or random
    ceiling = min(max_s, base_s * 2**retry_no)
    delay = ceiling / 2 + rng.uniform(0, ceiling / 2)
    return max(delay, retry_after or 0.0)
