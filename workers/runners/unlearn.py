"""An ``unlearn`` job: one batch of deletion requests becomes one new version.

Load the base version and the batch's forget set, run the model's unlearner (with class
deletion's masking, ``ml.unlearners.run_unlearner``), measure UA/RA/TA, write the weights
and artifacts to the store, then publish in one fenced transaction. The version's audit is
a job of its own, created by the publish (``service.lineage``).
"""

from __future__ import annotations

import time

from ml.evaluation import version_metrics
from ml.unlearners import run_unlearner
from service import lineage, metrics
from service.artifacts import store
from service.enums import VersionKind
from workers.inputs import load_inputs
from workers.lease import Heartbeat, JobClaim, fenced

__all__ = ["run"]


def run(job_claim: JobClaim, heartbeat: Heartbeat) -> None:
    if job_claim.unlearner is None:
        raise ValueError(f"job {job_claim.job_id} names no unlearner")
    inputs = load_inputs(job_claim)
    sets = inputs.sets
    if not len(sets.forget):  # every sample was forgotten before: complete without a version
        result = lineage.NewVersion(
            kind=VersionKind.UNLEARNED, weights_sha256=None, metrics={}, seconds=0.0
        )
    else:
        unlearner = job_claim.unlearner.build()
        context = inputs.unlearn_context(job_claim, heartbeat.report)
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
        evaluated = version_metrics(
            context.model,
            forget=sets.forget,
            retain=sets.retain,
            test=sets.test,
            holdout=sets.holdout,
            masked_classes=sets.masked_classes,
            device=inputs.device,
        )
        result = lineage.NewVersion(
            kind=VersionKind.UNLEARNED,
            weights_sha256=store().put_tensors(outcome.state_dict),
            metrics=evaluated,
            seconds=seconds,
            forgotten=sets.forgotten,
            artifacts={
                name: lineage.StoredArtifact(store().put_tensors(artifact.tensors), artifact.meta)
                for name, artifact in outcome.artifacts.items()
            },
            timings={**stages, "evaluating": time.monotonic() - started - seconds},
        )
    with fenced(job_claim) as (session, job):
        lineage.publish(
            session, job=job, model=lineage.lock_model(session, job_claim.model_id), result=result
        )
