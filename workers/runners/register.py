"""A ``register`` job: a dataset's source indexed and stored in the background (a large
one, or one whose registration asked for ``Prefer: respond-async``). The work is the
service's (``service.datasets.service.register_in_job``, the same indexing and storing as a
registration in the request); the runner lends it the heartbeat for its progress."""

from __future__ import annotations

from service.datasets import service as datasets
from service.jobs.lease import Attempt
from workers.heartbeat import Heartbeat

__all__ = ["run"]


def run(attempt: Attempt, heartbeat: Heartbeat) -> None:
    datasets.register_in_job(attempt, heartbeat.report)
