"""An ``evaluate`` job: UA / RA / TA of a version that arrived without them (an upload),
measured like every published version's (``ml.evaluation``)."""

from __future__ import annotations

from ml.evaluation import accuracies
from service.jobs import lifecycle
from service.jobs.lease import Attempt, fenced
from workers.heartbeat import Heartbeat
from workers.workload import load_workload

__all__ = ["run"]


def run(attempt: Attempt, heartbeat: Heartbeat) -> None:
    work = load_workload(attempt)  # no requests: D_f is empty, D_r every active sample
    sets = work.sets
    heartbeat.report("evaluating", 0, 1)
    measured = accuracies(
        work.load_version(attempt.base_version),
        forget=sets.forget,
        retain=sets.retain,
        test=sets.test,
        audit_nonmembers=sets.audit_nonmembers,
        masked_classes=sets.masked_classes,
        device=work.device,
    )
    with fenced(attempt) as (session, job):
        lifecycle.finish_evaluation(session, job=job, accuracies=measured)
