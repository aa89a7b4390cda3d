"""A ``train`` job: version 1 of a model, trained from scratch on its training samples."""

from __future__ import annotations

import time

from ml.evaluation import accuracies
from ml.training import train
from ml.unlearners import state_dict_of
from service.artifacts import store
from service.enums import VersionKind
from service.jobs import lifecycle
from service.jobs.lease import Attempt, fenced
from service.models import versions
from workers.heartbeat import Heartbeat
from workers.workload import load_workload

__all__ = ["run"]


def run(attempt: Attempt, heartbeat: Heartbeat) -> None:
    work = load_workload(attempt)
    sets, recipe = work.sets, work.settings.training
    if recipe is None:
        raise ValueError("the model has no training recipe; it waits for uploaded weights")
    started = time.monotonic()
    network = train(
        work.new_network(), sets.retain, recipe, device=work.device, progress=heartbeat.report
    )
    seconds = time.monotonic() - started
    heartbeat.report("evaluating", 0, 1)
    measured = accuracies(
        network,
        forget=sets.forget,
        retain=sets.retain,
        test=sets.test,
        audit_nonmembers=sets.audit_nonmembers,
        device=work.device,
    )
    result = lifecycle.NewVersion(
        kind=VersionKind.TRAINED,
        weights_sha256=store().put_tensors(state_dict_of(network)),
        accuracies=measured,
        seconds=seconds,
        timings={"evaluating": time.monotonic() - started - seconds},
        training=recipe.as_run_on(work.device).model_dump(mode="json"),
        generation=work.inputs.generation,
    )
    with fenced(attempt) as (session, job):
        model = versions.lock_model(session, attempt.model)
        lifecycle.publish(session, job=job, model=model, result=result)
