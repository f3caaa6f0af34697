"""Bounded load: at most `max_in_flight` requests at work, at most `max_queued` waiting for a
slot, each for at most `queue_timeout_s`; anything beyond is refused at once (HTTP 503 with
Retry-After), before its body is read, so memory stays bounded however many clients call.
TF Serving answers UNAVAILABLE the same way when its batching queue is full."""

from __future__ import annotations

import asyncio
import contextlib


class Overloaded(RuntimeError):
    """The server is at its bounds; the message says which one. The client should retry later."""


class Admission:
    """A gate in front of the model: `async with admission.slot(): ...`.

    Args:
        max_in_flight: requests admitted at once.
        max_queued: requests waiting for a slot at once (more are refused at once).
        queue_timeout_s: how long a request waits for a slot before it is refused.

    Attributes:
        stats: counts of `admitted`, `refused_queue_full`, `refused_timeout` so far.
    """

    def __init__(self, max_in_flight: int = 32, max_queued: int = 64, queue_timeout_s: float = 1.0):
        if max_in_flight < 1 or max_queued < 0 or queue_timeout_s < 0:
            raise ValueError(
                "--max-in-flight must be >= 1, --max-queued >= 0 and --queue-timeout-ms >= 0. "
                f"Received: {max_in_flight}, {max_queued}, {queue_timeout_s * 1000:g} ms"
            )
        self.max_in_flight = int(max_in_flight)
        self.max_queued = int(max_queued)
        self.queue_timeout_s = float(queue_timeout_s)
        self.in_flight = 0
        self.queued = 0
        self.stats = {"admitted": 0, "refused_queue_full": 0, "refused_timeout": 0}
        self._semaphore: asyncio.Semaphore | None = None

    def settings(self) -> dict:
        return {
            "max_in_flight": self.max_in_flight,
            "max_queued": self.max_queued,
            "queue_timeout_ms": round(self.queue_timeout_s * 1000, 3),
        }

    @contextlib.asynccontextmanager
    async def slot(self):
        """Holds one of the `max_in_flight` slots for the body of the `with` block.

        Raises:
            Overloaded: the waiting queue is full, or no slot freed within the timeout.
        """
        if self._semaphore is None:  # made on the serving event loop
            self._semaphore = asyncio.Semaphore(self.max_in_flight)
        if self._semaphore.locked():
            if self.queued >= self.max_queued:
                self.stats["refused_queue_full"] += 1
                raise Overloaded(
                    f"The server is at its limit of {self.max_in_flight} requests in flight and "
                    f"{self.max_queued} waiting; retry later."
                )
            self.queued += 1
            try:
                await asyncio.wait_for(self._semaphore.acquire(), self.queue_timeout_s)
            except TimeoutError:
                self.stats["refused_timeout"] += 1
                raise Overloaded(
                    f"No request slot freed within {self.queue_timeout_s * 1000:g} ms "
                    f"({self.max_in_flight} in flight); retry later."
                ) from None
            finally:
                self.queued -= 1
        else:
            await self._semaphore.acquire()
        self.in_flight += 1
        self.stats["admitted"] += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            self._semaphore.release()
