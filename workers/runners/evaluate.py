"""An ``evaluate`` job: UA / RA / TA of a version that arrived without them (an upload),
measured like every published version's (``ml.evaluation``)."""

from __future__ import annotations

from ml.evaluation import version_metrics
from service import lineage
from workers.inputs import load_inputs
from workers.lease import Heartbeat, JobClaim, fenced

__all__ = ["run"]


def run(job_claim: JobClaim, heartbeat: Heartbeat) -> None:
    inputs = load_inputs(job_claim)  # no requests: D_f is empty, D_r every active sample
    sets = inputs.sets
    heartbeat.report("evaluating", 0, 1)
    metrics = version_metrics(
        inputs.load_version(job_claim.version),
        forget=sets.forget,
        retain=sets.retain,
        test=sets.test,
        holdout=sets.holdout,
        masked_classes=sets.masked_classes,
        device=inputs.device,
    )
    with fenced(job_claim) as (session, job):
        lineage.record_metrics(session, job=job, metrics=metrics)
