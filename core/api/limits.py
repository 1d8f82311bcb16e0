"""Images a minute per API key: a sliding window in this server process.

    rate = RateLimit(lambda: 600)
    rate.wait(key_id)          # 0.0, or the seconds until the key may be answered again
    rate.take(key_id, n)       # counts n images when they fit in the minute (0.0), else the seconds to wait

The count is this process's (a restart forgets it, which only gives a minute's allowance again), like a demo
link's (core.workspace.share). It bounds what one key's holder can spend of the server's CPU; the images waiting
for one model are bounded separately (core.api.batching).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable

WINDOW = 60.0


class RateLimit:
    def __init__(self, per_minute: Callable[[], int]):
        self._per_minute = per_minute
        self._uses: dict[str, collections.deque[tuple[float, int]]] = collections.defaultdict(collections.deque)
        self._lock = threading.Lock()

    def _used(self, key_id: str, now: float) -> int:
        window = self._uses[key_id]
        while window and now - window[0][0] >= WINDOW:
            window.popleft()
        return sum(n for _, n in window)

    def _until_room(self, key_id: str, now: float, need: int) -> float:
        """Seconds until ``need`` more images fit in the key's minute (the window already pruned to ``now``)."""
        window, limit = self._uses[key_id], self._per_minute()
        used = sum(n for _, n in window)
        for at, n in window:
            used -= n
            if used + need <= limit:
                return max(0.1, WINDOW - (now - at))
        return WINDOW

    def wait(self, key_id: str, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            return 0.0 if self._used(key_id, now) < self._per_minute() else self._until_room(key_id, now, 1)

    def take(self, key_id: str, n: int, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            limit = self._per_minute()
            if self._used(key_id, now) + n > limit:
                return WINDOW if n > limit else self._until_room(key_id, now, n)
            self._uses[key_id].append((now, n))
            return 0.0
