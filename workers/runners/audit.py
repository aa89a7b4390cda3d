"""An ``audit`` job (queue ``audit``): audits one version on what it forgot, optionally
against models retrained without it, stores the report, and completes the version's
requests.

References are kept as versions of kind ``retrained`` outside the lineage (their parent is
the audited version), so a later audit of the same version reuses them instead of training
again. They train on every active training sample: the data the version should know.
"""

from __future__ import annotations

import time

from ml.audit import audit_version, evidence_statement, train_references
from ml.unlearners import state_dict_of
from service import metrics
from service.artifacts import store
from service.audits import service as audits
from service.jobs.inputs import release
from service.jobs.lease import Attempt, fenced
from service.models import versions
from workers.heartbeat import Heartbeat
from workers.workload import load_workload

__all__ = ["run"]


def run(attempt: Attempt, heartbeat: Heartbeat) -> None:
    number = attempt.base_version
    if number is None:
        raise ValueError(f"audit job {attempt.job_id} names no version")
    reference_kind = "retrain" if attempt.params.get("reference") == "retrain" else "none"
    work = load_workload(attempt)
    sets, policy = work.sets, work.settings.audit
    subject = audits.subject(attempt.model, number)
    network = work.load_version(number)
    parent = work.load_version(subject.parent) if subject.parent is not None else None
    started = time.monotonic()

    references, reference_numbers, reference_seconds = [], [], None
    if reference_kind == "retrain":
        k = policy.reference_seeds
        kept = subject.references[:k]
        references = [work.load_version(kept_number) for kept_number, _ in kept]
        reference_numbers = [kept_number for kept_number, _ in kept]
        trained_seconds = [seconds for _, seconds in kept if seconds]
        missing = k - len(references)
        if missing > 0:
            recipe = work.settings.training
            if recipe is None:
                raise ValueError("retrained references need the model's training recipe")
            seeds = [recipe.seed + 1 + i for i in range(len(references), k)]
            began = time.monotonic()
            fresh = train_references(
                build_model=work.new_network,
                retain=sets.retain,
                training=recipe,
                k=missing,
                device=work.device,
                seeds=seeds,
                progress=heartbeat.report,
            )
            each = (time.monotonic() - began) / missing
            shas = [store().put_tensors(state_dict_of(model)) for model in fresh]
            trainings = [  # as train_references ran them: the recipe with each one's seed
                recipe.model_copy(update={"seed": seed})
                .as_run_on(work.device)
                .model_dump(mode="json")
                for seed in seeds
            ]
            with fenced(attempt) as (session, _):
                reference_numbers += versions.new_references(
                    session,
                    model_id=attempt.model,
                    reference_of=number,
                    shas=shas,
                    trainings=trainings,
                    seconds_each=each,
                )
            trained_seconds += [each] * missing
            references += fresh
        reference_seconds = sum(trained_seconds) / len(trained_seconds) if trained_seconds else None

    report = audit_version(
        network,
        forget=sets.forget,
        retain=sets.retain,
        audit_nonmembers=sets.audit_nonmembers,
        test=sets.test,
        device=work.device,
        references=references,
        parent=parent,
        class_labels=sets.class_labels,
        masked_classes=sets.masked_classes,
        tolerances=policy.tolerances,
        gate_z=policy.gate_z,
        progress=heartbeat.report,
        seed=number,
    )
    seconds = time.monotonic() - started
    report.update(
        version=number,
        unchanged=subject.unchanged_reason is not None,
        unchanged_reason=subject.unchanged_reason,
        unlearning_seconds=subject.seconds,
        speedup_vs_reference=(
            reference_seconds / subject.seconds if reference_seconds and subject.seconds else None
        ),
    )
    if report.get("control") is not None:
        report["control"]["version"] = subject.parent
    if report.get("reference") is not None:
        report["reference"].update(
            version=reference_numbers[0] if reference_numbers else None,
            versions=reference_numbers,
            seconds=reference_seconds,
        )
    report["evidence"] = evidence_statement(report)
    metrics.AUDIT_DURATION.labels(reference_kind).observe(seconds)
    with fenced(attempt) as (session, job):
        audits.record(session, job=job, report=report, seconds=seconds)
    release(work.inputs, sets.forget)  # its requests may be complete: nothing reads it now
