"""The embedded default's worker: the same task bodies as Celery, run on threads of the
serving process. One thread runs jobs one at a time (as one GPU worker would); one ticks the
dispatcher and the sweeper like beat does."""

from __future__ import annotations

import logging
import queue
import threading
from functools import lru_cache

from service.settings import get_settings

log = logging.getLogger(__name__)


class EmbeddedRunner:
    def __init__(self) -> None:
        self._tasks: queue.Queue[tuple[str, list[str]]] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def submit(self, task: str, args: list[str]) -> None:
        self._tasks.put((task, args))

    def start(self) -> None:
        if self._threads:
            return
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._work, name="unlearnd-worker", daemon=True),
            threading.Thread(target=self._tick, name="unlearnd-beat", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._tasks.put(("", []))
        for thread in self._threads:
            thread.join(timeout=30)
        self._threads = []

    def _work(self) -> None:
        from workers.tasks import TASK_BODIES

        while not self._stop.is_set():
            task, args = self._tasks.get()
            if not task:
                continue
            try:
                TASK_BODIES[task](*args)
            except Exception:
                log.exception("embedded task %s%s failed", task, tuple(args))

    def _tick(self) -> None:
        from workers.queue import DISPATCH, SWEEP

        settings = get_settings()
        interval = min(settings.dispatch_interval_seconds, settings.sweep_interval_seconds)
        while not self._stop.wait(interval):
            self.submit(DISPATCH, [])
            self.submit(SWEEP, [])


@lru_cache
def runner() -> EmbeddedRunner:
    return EmbeddedRunner()
