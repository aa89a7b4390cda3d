"""The thread that tells the service this worker is alive, which queues it serves and on
which device (``service.presence``), every ``BEAT_SECONDS`` until it stops."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

from service import presence

__all__ = ["PresenceBeat"]

log = logging.getLogger(__name__)


class PresenceBeat:
    """Beats for one worker process tree: ``device`` is the ``torch.device`` text its jobs
    run on (None when it runs no jobs), ``build`` torch's version and CUDA."""

    def __init__(
        self,
        queues: tuple[str, ...],
        device: str | None,
        build: tuple[str, str] | None = None,
        *,
        interval: float = presence.BEAT_SECONDS,
    ) -> None:
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.queues, self.device, self.build = queues, device, build
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        torch_version, cuda = self.build or (None, None)
        try:
            presence.record(
                presence.WorkerBeat(
                    self.name, self.queues, self.device, torch_version, cuda, time.time()
                )
            )
        except Exception as error:  # Redis away: the next beat tries again
            log.warning("presence beat failed (%s); retrying in %.0f s", error, self.interval)

    def start(self) -> PresenceBeat:
        if self._thread is None:
            self._stop.clear()
            self.beat()
            self._thread = threading.Thread(target=self._run, name="presence-beat", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop beating and drop this worker's beat: a clean stop is no longer listed."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        try:
            presence.forget(self.name)
        except Exception as error:  # Redis away: the beat expires by itself
            log.warning("could not drop the presence beat (%s)", error)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()
