"""Prometheus series. Counters and histograms are observed where things happen; the
domain's gauges (requests by status, pending, oldest age) are read from the database at
scrape time, so every process agrees. Multiprocess mode is on when
``PROMETHEUS_MULTIPROC_DIR`` is set (``unlearnd`` sets it before importing this)."""

from __future__ import annotations

import os
from collections.abc import Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector
from sqlalchemy import func, select

from service.enums import RequestStatus

HTTP_REQUESTS = Counter(
    "http_requests_total",
    "HTTP requests by method, route template and status",
    ["method", "handler", "status"],
)
HTTP_DURATION = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency by method and route template",
    ["method", "handler"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BATCH_SIZE = Histogram(
    "unlearn_batch_requests",
    "Deletion requests per dispatched batch",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 5000),
)
INGEST_BATCH = Histogram(
    "unlearn_ingest_batch_requests",
    "Deletion requests stored per ingest transaction (group commit)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
BATCH_SAMPLES = Histogram(
    "unlearn_batch_samples",
    "Samples named per dispatched batch",
    buckets=(1, 10, 100, 1000, 10_000, 100_000),
)
JOB_DURATION = Histogram(
    "unlearn_job_duration_seconds",
    "Job run time by kind, unlearner and outcome",
    ["kind", "unlearner", "outcome"],
    buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200),
)
JOB_STAGE_SECONDS = Histogram(
    "unlearn_job_stage_seconds",
    "Seconds spent per job stage (cache update, unlearning, ...)",
    ["stage", "unlearner"],
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
JOB_FAILURES = Counter(
    "unlearn_job_failures_total",
    "Job attempts that failed, by kind and reason",
    ["kind", "reason"],
)
CALLBACK_ATTEMPTS = Counter(
    "unlearn_callback_attempts_total",
    "Delivery attempts of callbacks and webhook events, by outcome: delivered, retrying "
    "(failed, another attempt is scheduled), gave_up (failed, attempts or retry window spent), "
    "refused (the target resolves to an address callbacks may not reach; not retried)",
    ["outcome"],
)
AUDIT_DURATION = Histogram(
    "unlearn_audit_duration_seconds",
    "Audit run time (reference training excluded)",
    ["reference"],
    buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1800),
)
# Set once by a process that runs jobs (workers.device); "max" so that the process tree's
# files in multiprocess mode give one series, not one per pid.
WORKER_INFO = Gauge(
    "unlearn_worker_info",
    "The device this process runs jobs on, and its torch build (always 1)",
    ["device", "torch", "cuda"],
    multiprocess_mode="max",
)
REQUEST_END_TO_END = Histogram(
    "unlearn_request_end_to_end_seconds",
    "From a request's creation to its completion",
    buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 86400, 7 * 86400, 30 * 86400),
)


class DomainCollector(Collector):
    """Gauges read from the database on each scrape, and the workers seen per queue
    (``service.presence``). Per-model series name model ids, so they are served only to an
    authenticated scrape (``per_model``)."""

    def __init__(self, *, per_model: bool) -> None:
        self.per_model = per_model

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from service.db import session_scope
        from service.tables import DeletionRequest, utcnow

        by_status = GaugeMetricFamily(
            "unlearn_requests", "Deletion requests by status", labels=["status"]
        )
        pending = GaugeMetricFamily("unlearn_pending_requests", "Deletion requests pending")
        oldest = GaugeMetricFamily(
            "unlearn_oldest_pending_request_age_seconds", "Age of the oldest pending request"
        )
        head_audits: list[tuple[str, dict]] = []
        try:
            with session_scope() as session:
                head_audits = _head_audits(session)
                counts = dict(
                    session.execute(
                        select(DeletionRequest.status, func.count()).group_by(
                            DeletionRequest.status
                        )
                    ).all()
                )
                first = session.scalar(
                    select(func.min(DeletionRequest.created_at)).where(
                        DeletionRequest.status == RequestStatus.PENDING
                    )
                )
                backlog = _queue_backlog(session, counts.get(RequestStatus.PENDING.value, 0))
                deliveries = _callback_deliveries(session)
                per_model = _pending_per_model(session) if self.per_model else None
        except Exception:  # a scrape must not fail because the database is away
            return
        for status in RequestStatus:
            by_status.add_metric([status.value], counts.get(status.value, 0))
        pending.add_metric([], counts.get(RequestStatus.PENDING.value, 0))
        oldest.add_metric([], (utcnow() - first).total_seconds() if first else 0.0)
        yield from (by_status, pending, oldest, backlog, deliveries)
        yield from _queue_workers()
        if per_model is not None:
            yield per_model
            yield from _audit_gauges(head_audits)
        else:
            yield _verdict_counts(head_audits)


def _queue_backlog(session, pending_requests: int) -> GaugeMetricFamily:  # type: ignore[no-untyped-def]
    """Work a queue's workers owe: live jobs not yet finished (gpu, audit), callback
    deliveries pending (callbacks), requests pending dispatch (control)."""
    from service import outbox
    from service.callbacks.service import PENDING
    from service.enums import JobStatus
    from service.tables import CallbackDelivery, Job

    family = GaugeMetricFamily(
        "unlearn_queue_backlog",
        "Work waiting for (or held by) the workers of a queue: jobs queued or running "
        "(gpu, audit), callback deliveries pending (callbacks), requests pending (control)",
        labels=["queue"],
    )
    work = dict.fromkeys(outbox.QUEUES, 0)
    jobs = session.execute(
        select(Job.kind, func.count())
        .where(Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))
        .group_by(Job.kind)
    ).all()
    for kind, count in jobs:
        work[outbox.queue_for(kind)] += count
    work[outbox.CALLBACKS] = session.scalar(
        select(func.count()).where(CallbackDelivery.status == PENDING)
    )
    work[outbox.CONTROL] = pending_requests
    for queue, count in work.items():
        family.add_metric([queue], float(count or 0))
    return family


def _callback_deliveries(session) -> GaugeMetricFamily:  # type: ignore[no-untyped-def]
    from service.callbacks.service import DELIVERED, FAILED, PENDING
    from service.tables import CallbackDelivery

    family = GaugeMetricFamily(
        "unlearn_callback_deliveries",
        "Callback deliveries by status (pending, delivered, failed: attempts spent)",
        labels=["status"],
    )
    counts = dict(
        session.execute(
            select(CallbackDelivery.status, func.count()).group_by(CallbackDelivery.status)
        ).all()
    )
    for status in (PENDING, DELIVERED, FAILED):
        family.add_metric([status], float(counts.get(status, 0)))
    return family


def _pending_per_model(session) -> GaugeMetricFamily:  # type: ignore[no-untyped-def]
    from service.tables import DeletionRequest

    family = GaugeMetricFamily(
        "unlearn_model_pending_requests",
        "Deletion requests pending, per model (the backlog of its next batch)",
        labels=["model"],
    )
    rows = session.execute(
        select(DeletionRequest.model_id, func.count())
        .where(DeletionRequest.status == RequestStatus.PENDING)
        .group_by(DeletionRequest.model_id)
    ).all()
    for model_id, count in rows:
        family.add_metric([model_id], float(count))
    return family


def _queue_workers() -> Iterator[GaugeMetricFamily]:
    """Workers seen in the last minute per queue; nothing when beats cannot be read (a
    broker other than Redis, Redis away), so an alert on it does not fire on a guess."""
    from service import outbox, presence

    try:
        beats = presence.seen()
    except Exception:
        return
    if beats is None:
        return
    family = GaugeMetricFamily(
        "unlearn_queue_workers",
        "Workers that beat within the last minute, per queue they consume",
        labels=["queue"],
    )
    for queue, workers in presence.by_queue(beats).items():
        if queue in outbox.QUEUES:
            family.add_metric([queue], float(len(workers)))
    yield family


def exposition(*, include_domain: bool = True, per_model: bool = False) -> bytes:
    """The text format for this process (all processes' files in multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = CollectorRegistry()
        for collector in list(REGISTRY._collector_to_names):  # type: ignore[attr-defined]
            registry.register(collector)
    if include_domain:
        registry.register(DomainCollector(per_model=per_model))
    return generate_latest(registry)


VERDICT_VALUE = {"pass": 1.0, "fail": 0.0, "inconclusive": -0.5, "no_reference": -1.0}


def _head_audits(session) -> list[tuple[str, dict]]:  # type: ignore[no-untyped-def,type-arg]
    """(model id, latest audit report of its head version) for every audited head."""
    from service.tables import Audit, Model, ModelVersion

    latest = (
        select(Model.id, Audit.report)
        .join(
            ModelVersion,
            (ModelVersion.model_id == Model.id) & (ModelVersion.number == Model.head_version),
        )
        .join(Audit, Audit.version_id == ModelVersion.id)
        .order_by(Model.id, Audit.created_at.desc())
    )
    seen: dict[str, dict] = {}  # type: ignore[type-arg]
    for model_id, report in session.execute(latest):
        seen.setdefault(model_id, report)
    return list(seen.items())


def _verdict_counts(head_audits) -> GaugeMetricFamily:  # type: ignore[no-untyped-def]
    """How many models' head versions pass, fail or lack a reference, without naming them."""
    family = GaugeMetricFamily(
        "unlearn_head_audit_verdicts",
        "Models by their head version's audit verdict",
        labels=["verdict"],
    )
    verdicts = [report.get("verdict") for _, report in head_audits]
    for verdict in VERDICT_VALUE:
        family.add_metric([verdict], float(verdicts.count(verdict)))
    return family


def _audit_gauges(head_audits) -> Iterator[GaugeMetricFamily]:  # type: ignore[no-untyped-def]
    families = {
        name: GaugeMetricFamily(f"unlearn_head_audit_{name}", help_text, labels=["model"])
        for name, help_text in [
            ("mia_auc", "Loss-attack AUC on the head version's forget set"),
            ("mia_efficacy", "MIA-efficacy on the head version's forget set"),
            ("frm", "FRM of the head version against retrained references"),
            (
                "verdict",
                "Audit verdict of the head version: "
                "1 pass, 0 fail, -0.5 inconclusive, -1 no reference",
            ),
        ]
    }
    for model_id, report in head_audits:
        values = {
            "mia_auc": report.get("metrics", {}).get("mia_auc"),
            "mia_efficacy": report.get("metrics", {}).get("mia_efficacy"),
            "frm": report.get("frm"),
            "verdict": VERDICT_VALUE.get(report.get("verdict", ""), None),
        }
        for name, value in values.items():
            if value is not None:
                families[name].add_metric([model_id], float(value))
    yield from families.values()
