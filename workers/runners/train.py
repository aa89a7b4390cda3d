"""A ``train`` job: version 1 of a model, trained from scratch on its training samples."""

from __future__ import annotations

import time

from ml.evaluation import version_metrics
from ml.training import train
from ml.unlearners import state_dict_of
from service import lineage
from service.artifacts import store
from service.enums import VersionKind
from workers.inputs import load_inputs
from workers.lease import Heartbeat, JobClaim, fenced

__all__ = ["run"]


def run(job_claim: JobClaim, heartbeat: Heartbeat) -> None:
    inputs = load_inputs(job_claim)
    sets, recipe = inputs.sets, inputs.settings.training
    if recipe is None:
        raise ValueError("the model has no training recipe; it waits for uploaded weights")
    started = time.monotonic()
    network = train(
        inputs.new_network(), sets.retain, recipe, device=inputs.device, progress=heartbeat.report
    )
    seconds = time.monotonic() - started
    heartbeat.report("evaluating", 0, 1)
    metrics = version_metrics(
        network,
        forget=sets.forget,
        retain=sets.retain,
        test=sets.test,
        holdout=sets.holdout,
        device=inputs.device,
    )
    result = lineage.NewVersion(
        kind=VersionKind.TRAINED,
        weights_sha256=store().put_tensors(state_dict_of(network)),
        metrics=metrics,
        seconds=seconds,
        timings={"evaluating": time.monotonic() - started - seconds},
    )
    with fenced(job_claim) as (session, job):
        lineage.publish(
            session, job=job, model=lineage.lock_model(session, job_claim.model_id), result=result
        )
