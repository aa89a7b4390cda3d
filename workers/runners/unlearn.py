"""An ``unlearn`` job: one batch of deletion requests becomes one new version.

Load the base version and the batch's forget set, run the model's unlearner (with class
deletion's masking, ``ml.unlearners.run_unlearner``), measure UA/RA/TA, write the weights
and artifacts to the store, then publish in one fenced transaction. The version's audit is
a job of its own, created by the publish (``service.jobs.lifecycle``).
"""

from __future__ import annotations

import time

from ml.evaluation import accuracies
from ml.unlearners import run_unlearner
from service import metrics
from service.artifacts import StoredArtifact, store
from service.enums import VersionKind
from service.jobs import lifecycle
from service.jobs.lease import Attempt, fenced
from service.models import versions
from workers.heartbeat import Heartbeat
from workers.workload import load_workload

__all__ = ["run"]


def run(attempt: Attempt, heartbeat: Heartbeat) -> None:
    if attempt.unlearner is None:
        raise ValueError(f"job {attempt.job_id} names no unlearner")
    work = load_workload(attempt)
    sets = work.sets
    if not len(sets.forget):  # every sample was forgotten before: complete without a version
        result = lifecycle.NewVersion(
            kind=VersionKind.UNLEARNED, weights_sha256=None, accuracies={}, seconds=0.0
        )
    else:
        unlearner = attempt.unlearner.build()
        context = work.unlearn_context(attempt, heartbeat.report)
        started = time.monotonic()
        outcome = run_unlearner(unlearner, context, masked_classes=sets.masked_classes)
        seconds = time.monotonic() - started
        stages = {  # the method's own timings, e.g. PGU's cache update
            name.removesuffix("_seconds"): float(value)
            for name, value in outcome.info.items()
            if name.endswith("_seconds") and isinstance(value, int | float)
        }
        for stage, value in stages.items():
            metrics.JOB_STAGE_SECONDS.labels(stage, unlearner.name).observe(value)
        heartbeat.report("evaluating", 0, 1)
        measured = accuracies(
            context.model,
            forget=sets.forget,
            retain=sets.retain,
            test=sets.test,
            audit_nonmembers=sets.audit_nonmembers,
            masked_classes=sets.masked_classes,
            device=work.device,
        )
        result = lifecycle.NewVersion(
            kind=VersionKind.UNLEARNED,
            weights_sha256=store().put_tensors(outcome.state_dict),
            accuracies=measured,
            seconds=seconds,
            forgotten=sets.forgotten,
            artifacts={
                name: StoredArtifact(store().put_tensors(artifact.tensors), artifact.meta)
                for name, artifact in outcome.artifacts.items()
            },
            timings={**stages, "evaluating": time.monotonic() - started - seconds},
            report=outcome.report(),
            training=outcome.training.model_dump(mode="json") if outcome.training else None,
        )
    with fenced(attempt) as (session, job):
        model = versions.lock_model(session, attempt.model)
        lifecycle.publish(session, job=job, model=model, result=result)
