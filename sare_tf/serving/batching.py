"""Concurrent requests into one model call: an asyncio micro-batcher.

Requests submit their images and await their descriptors; one worker task takes what is
waiting (up to `max_batch` images, waiting at most `max_wait_ms` for more after the first),
groups images of equal size, runs the model once per group in a worker thread (TensorFlow
releases the GIL, so the event loop keeps accepting requests) and hands each request its rows.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np


class MicroBatcher:
    """Batches `submit` calls from concurrent requests into shared model calls.

    Args:
        run_batch: `images float32 [B, H, W, 3] -> descriptors [B, D]` (blocking).
        max_batch: images per model call at most.
        max_wait_ms: how long the first waiting request waits for others to join it.

    Attributes:
        stats: `{"requests", "images", "model_calls", "largest_batch"}` so far.
    """

    def __init__(self, run_batch, max_batch: int = 16, max_wait_ms: float = 5.0):
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError(
                f"`max_batch` must be >= 1 and `max_wait_ms` >= 0. "
                f"Received: max_batch={max_batch}, max_wait_ms={max_wait_ms}"
            )
        self.run_batch = run_batch
        self.max_batch = int(max_batch)
        self.max_wait = float(max_wait_ms) / 1000.0
        self.stats = {"requests": 0, "images": 0, "model_calls": 0, "largest_batch": 0}
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None

    async def submit(self, images: np.ndarray) -> np.ndarray:
        """Descriptors `[n, D]` of `images [n, H, W, 3]` (one request's images, one size)."""
        if self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._work())
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((np.asarray(images, np.float32), future))
        self.stats["requests"] += 1
        return await future

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            waiting = [await self._queue.get()]
            count = len(waiting[0][0])
            deadline = time.monotonic() + self.max_wait
            while count < self.max_batch:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
                waiting.append(item)
                count += len(item[0])
            for group in _by_size(waiting):
                await self._run(loop, group)

    def close(self) -> None:
        """Stops the worker (a version that is no longer served); nothing may be waiting."""
        if self._worker is not None and not self._worker.done():
            self._worker.cancel()
        self._worker = None

    def report(self) -> dict:
        """Settings and statistics (the server's status page)."""
        return {
            "max_batch": self.max_batch,
            "max_wait_ms": round(self.max_wait * 1000, 3),
            **self.stats,
        }

    async def _run(self, loop, group) -> None:
        images = np.concatenate([item[0] for item in group])
        try:
            descriptors = await loop.run_in_executor(None, self.run_batch, images)
        except Exception as error:  # the requests fail, the server goes on
            for _, future in group:
                if not future.done():
                    future.set_exception(error)
            return
        self.stats["model_calls"] += 1
        self.stats["images"] += len(images)
        self.stats["largest_batch"] = max(self.stats["largest_batch"], len(images))
        row = 0
        for request_images, future in group:
            if not future.done():
                future.set_result(descriptors[row : row + len(request_images)])
            row += len(request_images)


def _by_size(waiting):
    groups: dict[tuple, list] = {}
    for item in waiting:
        groups.setdefault(item[0].shape[1:], []).append(item)
    return list(groups.values())
