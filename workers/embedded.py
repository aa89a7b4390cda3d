"""The embedded default's worker: the same commands as Celery, run on threads of the
serving process. One thread runs tasks one at a time (as one GPU worker would), another
delivers callbacks (a slow receiver must not hold up jobs), and one ticks the dispatcher
and the sweeper like beat does."""

from __future__ import annotations

import logging
import queue
import threading
from functools import lru_cache

from service import outbox
from service.settings import get_settings
from workers import device
from workers.commands import COMMANDS
from workers.presence import PresenceBeat

log = logging.getLogger(__name__)


Tasks = queue.Queue[tuple[str, list[str]]]


class EmbeddedRunner:
    def __init__(self) -> None:
        self._tasks: Tasks = queue.Queue()
        self._callbacks: Tasks = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._presence: PresenceBeat | None = None

    def send(self, task: str, args: list[str], queue_name: str) -> str | None:
        """``service.outbox``'s sender: callbacks on their own thread, every other kind on
        one queue, in order of sending."""
        (self._callbacks if queue_name == outbox.CALLBACKS else self._tasks).put((task, args))
        return None

    def start(self) -> None:
        if self._threads:
            return
        self._stop.clear()
        self._threads = [
            threading.Thread(
                target=self._work, args=(self._tasks,), name="unlearnd-worker", daemon=True
            ),
            threading.Thread(
                target=self._work, args=(self._callbacks,), name="unlearnd-callbacks", daemon=True
            ),
            threading.Thread(target=self._tick, name="unlearnd-beat", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        # Seen on /readyz like a Celery worker: every queue, the device serve announced.
        chosen = device.announced()
        self._presence = PresenceBeat(
            outbox.QUEUES,
            str(chosen) if chosen is not None else None,
            device.build() if chosen is not None else None,
        ).start()

    def stop(self) -> None:
        self._stop.set()
        self._tasks.put(("", []))
        self._callbacks.put(("", []))
        for thread in self._threads:
            thread.join(timeout=30)
        self._threads = []
        if self._presence is not None:
            self._presence.stop()
            self._presence = None

    def _work(self, tasks: Tasks) -> None:
        while not self._stop.is_set():
            task, args = tasks.get()
            if not task:
                continue
            try:
                COMMANDS[task](*args)
            except Exception:
                log.exception("embedded task %s%s failed", task, tuple(args))

    def _tick(self) -> None:
        settings = get_settings()
        interval = min(settings.dispatch_interval_seconds, settings.sweep_interval_seconds)
        while not self._stop.wait(interval):
            self.send(outbox.DISPATCH, [], outbox.CONTROL)
            self.send(outbox.SWEEP, [], outbox.CONTROL)


@lru_cache
def runner() -> EmbeddedRunner:
    return EmbeddedRunner()
