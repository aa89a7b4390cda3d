"""A ``cache`` job: the configured unlearner's per-version artifacts (PGU's SVD cache),
built over every active training sample with the job's version's forward passes, so that
version becomes the cache's basis."""

from __future__ import annotations

import time

from service.artifacts import StoredArtifact, store
from service.jobs import lifecycle
from service.jobs.lease import Attempt, fenced
from workers.heartbeat import Heartbeat
from workers.workload import load_workload

__all__ = ["run"]


def run(attempt: Attempt, heartbeat: Heartbeat) -> None:
    if attempt.unlearner is None:
        raise ValueError(f"job {attempt.job_id} names no unlearner")
    work = load_workload(attempt)  # a cache job names no requests: D_r is every active sample
    context = work.unlearn_context(attempt, heartbeat.report)
    started = time.monotonic()
    artifacts = attempt.unlearner.build().prepare(context)
    seconds = time.monotonic() - started
    stored = {
        name: StoredArtifact(store().put_tensors(artifact.tensors), artifact.meta)
        for name, artifact in artifacts.items()
    }
    with fenced(attempt) as (session, job):
        lifecycle.finish_cache(session, job=job, artifacts=stored, seconds=seconds)
