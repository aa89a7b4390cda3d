"""An ``audit`` job (queue ``audit``): audits one version on what it forgot, optionally
against models retrained without it, stores the report, and completes the version's
requests.

References are kept as versions of kind ``retrained`` outside the lineage (their parent is
the audited version), so a later audit of the same version reuses them instead of training
again. They train on every active training sample: the data the version should know.
"""

from __future__ import annotations

import time

from ml.audit import audit_version, train_references
from ml.unlearners import state_dict_of
from service import metrics
from service.artifacts import store
from service.audits import service as audits
from service.db import session_scope
from workers.inputs import load_inputs
from workers.lease import Heartbeat, JobClaim, fenced

__all__ = ["run"]


def run(job_claim: JobClaim, heartbeat: Heartbeat) -> None:
    number = job_claim.version
    if number is None:
        raise ValueError(f"audit job {job_claim.job_id} names no version")
    reference_kind = "retrain" if job_claim.params.get("reference") == "retrain" else "none"
    inputs = load_inputs(job_claim)
    sets, policy = inputs.sets, inputs.settings.audit
    with session_scope() as session:
        version = audits.version_or_raise(session, job_claim.model_id, number)
        existing = audits.reference_versions(session, job_claim.model_id, number)
    network = inputs.load_version(number)
    started = time.monotonic()

    references, reference_numbers, reference_seconds = [], [], None
    if reference_kind == "retrain":
        k = policy.reference_seeds
        references = [inputs.load_version(v.number) for v in existing[:k]]
        reference_numbers = [v.number for v in existing[:k]]
        trained_seconds = [v.seconds for v in existing[:k] if v.seconds]
        missing = k - len(references)
        if missing > 0:
            recipe = inputs.settings.training
            if recipe is None:
                raise ValueError("retrained references need the model's training recipe")
            seeds = [recipe.seed + 1 + i for i in range(len(references), k)]
            began = time.monotonic()
            fresh = train_references(
                build_model=inputs.new_network,
                retain=sets.retain,
                training=recipe,
                k=missing,
                device=inputs.device,
                seeds=seeds,
                progress=heartbeat.report,
            )
            each = (time.monotonic() - began) / missing
            shas = [store().put_tensors(state_dict_of(model)) for model in fresh]
            with fenced(job_claim) as (session, _):
                reference_numbers += audits.store_references(
                    session,
                    model_id=job_claim.model_id,
                    reference_of=number,
                    shas=shas,
                    seconds_each=each,
                )
            trained_seconds += [each] * missing
            references += fresh
        reference_seconds = sum(trained_seconds) / len(trained_seconds) if trained_seconds else None

    report = audit_version(
        network,
        forget=sets.forget,
        retain=sets.retain,
        holdout=sets.holdout,
        test=sets.test,
        device=inputs.device,
        references=references,
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
        unlearning_seconds=version.seconds,
        speedup_vs_reference=(
            reference_seconds / version.seconds if reference_seconds and version.seconds else None
        ),
    )
    if report.get("reference") is not None:
        report["reference"].update(
            version=reference_numbers[0] if reference_numbers else None,
            versions=reference_numbers,
            seconds=reference_seconds,
        )
    metrics.AUDIT_DURATION.labels(reference_kind).observe(seconds)
    with fenced(job_claim) as (session, job):
        audits.record(session, job=job, version_id=version.id, report=report, seconds=seconds)
