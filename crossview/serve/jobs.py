"""A bounded queue of locate jobs: ``workers`` run at once, at most ``queue`` more wait; the rest are turned away.

A request takes a :class:`Ticket` (:meth:`JobQueue.admit`) before its upload is read, so uploads on disk and
threads waiting for a worker are bounded too; the ticket is given back when its job ends (or, when no job was
submitted, when the request ends). :meth:`JobQueue.retry_after_s` estimates when a turned-away request may find
room, from the running mean duration of recent jobs.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class Ticket:
    """A place in the queue; :meth:`release` (idempotent) gives it back."""

    def __init__(self, queue: JobQueue):
        self._queue, self._held = queue, True

    def release(self) -> None:
        with self._queue._lock:
            if self._held:
                self._held = False
                self._queue._admitted -= 1


class JobQueue:
    """``workers`` threads run jobs; ``workers + queue`` tickets exist; ``expected_s`` seeds the duration mean."""

    def __init__(self, workers: int = 1, queue: int = 4, expected_s: float = 5.0):
        if workers < 1 or queue < 0:
            raise ValueError(f"workers must be at least 1 and queue at least 0 (got {workers}, {queue})")
        self.workers, self.capacity = int(workers), int(workers) + int(queue)
        self._lock = threading.Lock()
        self._admitted = self._running = self._done = 0
        self._mean_s = float(expected_s)
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="crossview-locate")

    def admit(self) -> Ticket | None:
        """A ticket, or None when ``workers + queue`` requests are already in (the caller answers 503)."""
        with self._lock:
            if self._admitted >= self.capacity:
                return None
            self._admitted += 1
        return Ticket(self)

    def submit(self, ticket: Ticket, fn: Callable[[], T]) -> Future[T]:
        """Run ``fn`` on a worker; ``ticket`` is released when it ends (or is cancelled before it starts)."""

        def run() -> T:
            t0 = time.monotonic()
            with self._lock:
                self._running += 1
            try:
                return fn()
            finally:
                with self._lock:
                    self._running -= 1
                    self._done += 1
                    self._mean_s += 0.3 * (time.monotonic() - t0 - self._mean_s)

        future = self._pool.submit(run)
        future.add_done_callback(lambda _: ticket.release())
        return future

    def retry_after_s(self) -> int:
        """Seconds until a place is likely free: the mean job time x the jobs ahead per worker (1 to 600)."""
        with self._lock:
            ahead = max(1, self._admitted - self.workers + 1)
            return int(min(600, max(1, math.ceil(self._mean_s * ahead / self.workers))))

    def stats(self) -> dict[str, Any]:
        """Admitted, running and waiting requests, the capacity, jobs done and the mean job duration (s)."""
        with self._lock:
            return {"admitted": self._admitted, "running": self._running,
                    "waiting": max(0, self._admitted - self._running), "capacity": self.capacity,
                    "done": self._done, "mean_s": round(self._mean_s, 3)}

    def shutdown(self) -> None:
        """Stop taking jobs; jobs not started are cancelled."""
        self._pool.shutdown(wait=False, cancel_futures=True)
