"""The thread that keeps a running job's lease (``service.jobs.lease.renew``) and carries
its progress to the job row (docs/architecture.md, rule 5)."""

from __future__ import annotations

import logging
import threading
from typing import Any

from service.jobs.lease import Attempt, LeaseLost, renew
from service.settings import get_settings

__all__ = ["Heartbeat"]

log = logging.getLogger(__name__)


class Heartbeat:
    """Renews the job's lease while it runs; ``lost`` once another attempt owns it."""

    def __init__(self, attempt: Attempt) -> None:
        self.attempt = attempt
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name="job-heartbeat")
        self._progress: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def report(self, stage: str, step: int, total: int) -> None:
        """The unlearners' progress callback: recorded on the next beat, cheap to call."""
        if self.lost.is_set():
            raise LeaseLost(self.attempt.job_id)
        with self._lock:
            self._progress = {"stage": stage, "step": step, "total": total}

    def _beat(self) -> None:
        lease = get_settings().job_lease_seconds
        interval = max(0.2, min(lease / 4, 10.0))
        while not self._stop.wait(interval):
            self.renew(lease)

    def renew(self, lease: float) -> None:
        with self._lock:
            progress, self._progress = self._progress, None
        try:
            if not renew(self.attempt, lease, progress):
                self.lost.set()
        except Exception:
            log.exception("heartbeat for job %s failed; retrying", self.attempt.job_id)
