"""A ``cache`` job: the configured unlearner's per-version artifacts (PGU's SVD cache),
built over every active training sample with the job's version's forward passes, so that
version becomes the cache's basis."""

from __future__ import annotations

import time

from service import lineage
from service.artifacts import store
from workers.inputs import load_inputs
from workers.lease import Heartbeat, JobClaim, fenced

__all__ = ["run"]


def run(job_claim: JobClaim, heartbeat: Heartbeat) -> None:
    if job_claim.unlearner is None:
        raise ValueError(f"job {job_claim.job_id} names no unlearner")
    inputs = load_inputs(job_claim)  # a cache job names no requests: D_r is every active sample
    context = inputs.unlearn_context(job_claim, heartbeat.report)
    started = time.monotonic()
    artifacts = job_claim.unlearner.build().prepare(context)
    seconds = time.monotonic() - started
    stored = {
        name: lineage.StoredArtifact(store().put_tensors(artifact.tensors), artifact.meta)
        for name, artifact in artifacts.items()
    }
    with fenced(job_claim) as (session, job):
        lineage.attach_artifacts(session, job=job, artifacts=stored, seconds=seconds)
