"""Concurrent requests to one model, answered in shared batches.

    batcher = Batcher(max_batch=32, max_wait=0.004)
    answers = await batcher.answers(run_path, arrays)  # (probabilities, "none of these" score, flag) per array
    probs = await batcher.probabilities(run_path, arrays)    # rows of class probabilities, one per array

Every request's decoded images go into its model's queue; one task per model takes what is waiting (up to
``max_batch`` images, waiting at most ``max_wait`` seconds for more once the first arrived) and runs one forward
pass for all of them (``Run.outputs``: the probabilities and the "none of these" scores together). The forward
passes of all models run on one thread: TensorFlow already spreads one pass over every core, and two at once would
only fight for them. While a batch runs, the next one fills, so N clients together get close to the model's own
batched throughput rather than N single-image passes.

The model is taken from ``core.model.predict``'s one bounded cache (``load_run``: loaded once per process, least
recently used evicted within ``CLASSIFIER_MODEL_CACHE_MB``) at every batch, so this module holds no model itself
and an evicted model's memory is freed. At most ``max_pending`` images wait per model; beyond that ``Busy``.
TensorFlow is imported with the first batch, not with the server.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.util.errors import UserError

MAX_BATCH = 32
MAX_WAIT = 0.004  # seconds a batch waits for more images once its first arrived
MAX_PENDING = 512  # images waiting for one model


class Busy(UserError):
    """Too many images are waiting for this model."""


# One image's answer: its probabilities, its "none of these" score and flag (both None: the run cannot say)
Answer = tuple[np.ndarray, float | None, bool | None]


@dataclass
class _Queue:
    items: list[tuple[np.ndarray, asyncio.Future]] = field(default_factory=list)  # each future: an Answer
    task: asyncio.Task | None = None


class Batcher:
    def __init__(self, max_batch: int = MAX_BATCH, max_wait: float = MAX_WAIT, max_pending: int = MAX_PENDING):
        self.max_batch, self.max_wait, self.max_pending = max_batch, max_wait, max_pending
        self._queues: dict[str, _Queue] = {}
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="forward")
        self.batches = 0  # forward passes run, and images in them: for the health page and the benchmark
        self.images = 0
        self._lock = threading.Lock()

    def pending(self) -> int:
        return sum(len(q.items) for q in self._queues.values())

    async def probabilities(self, run_path: str | Path, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Class probabilities for each array: ``answers``' first parts."""
        return [row for row, _, _ in await self.answers(run_path, arrays)]

    async def answers(self, run_path: str | Path, arrays: list[np.ndarray]) -> list[Answer]:
        """(probabilities, "none of these" score, flag) for each array (the run's input), computed in batches shared
        with other requests; the score and flag are None for a run that cannot say.

        Raises:
            Busy: more than ``max_pending`` images wait for this model.
            UserError: the model cannot be loaded.
        """
        if not arrays:
            return []
        key = str(run_path)
        queue = self._queues.setdefault(key, _Queue())
        if len(queue.items) + len(arrays) > self.max_pending:
            raise Busy("The server has too many images waiting for this model; try again in a few seconds.")
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in arrays]
        queue.items.extend(zip(arrays, futures, strict=True))
        if queue.task is None or queue.task.done():
            queue.task = asyncio.create_task(self._serve(key, queue))
        return list(await asyncio.gather(*futures))

    async def _serve(self, key: str, queue: _Queue) -> None:
        loop = asyncio.get_running_loop()
        while queue.items:
            if len(queue.items) < self.max_batch:
                await asyncio.sleep(self.max_wait)  # let the other clients' images join this pass
            batch, queue.items = queue.items[: self.max_batch], queue.items[self.max_batch :]
            try:
                answers = await loop.run_in_executor(self._pool, self._forward, key, [a for a, _ in batch])
            except Exception as exc:  # a model that cannot load: every waiting request hears why
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for answer, (_, fut) in zip(answers, batch, strict=True):
                if not fut.done():  # a client that went away
                    fut.set_result(answer)

    def _forward(self, key: str, arrays: list[np.ndarray]) -> list[Answer]:
        from core.model import predict  # TensorFlow: with the first batch, not with the server

        run = predict.load_run(key)  # the cached run: its model and its "none of these" state together
        probs, scores, flags = run.outputs(np.stack(arrays))
        with self._lock:
            self.batches += 1
            self.images += len(arrays)
        if scores is None:
            return [(row, None, None) for row in probs]
        return [(row, float(s), bool(f)) for row, s, f in zip(probs, scores, flags, strict=True)]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
