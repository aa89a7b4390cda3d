"""One runner per job kind: what a worker does with a claimed job, from its inputs to the
fenced transaction that records the outcome. ``workers.commands.run_job`` picks the runner
by the job's kind and never knows more about it."""

from __future__ import annotations

from collections.abc import Callable

from service.enums import JobKind
from service.jobs.lease import Attempt
from workers.heartbeat import Heartbeat
from workers.runners import audit, cache, evaluate, register, train, unlearn

__all__ = ["Runner", "RUNNERS"]

Runner = Callable[[Attempt, Heartbeat], None]

RUNNERS: dict[JobKind, Runner] = {
    JobKind.TRAIN: train.run,
    JobKind.UNLEARN: unlearn.run,
    JobKind.CACHE: cache.run,
    JobKind.AUDIT: audit.run,
    JobKind.EVALUATE: evaluate.run,
    JobKind.REGISTER: register.run,
}
