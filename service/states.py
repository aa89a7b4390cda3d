"""The one place where requests and jobs change state (docs/architecture.md, rule 8).

Each move is checked against the allowed-transitions table and writes its event row in
the caller's transaction, with the callback delivery that announces it (if the request
has a callback URL).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from service.callbacks import service as callbacks
from service.enums import JobStatus, RequestStatus
from service.tables import DeletionRequest, Job, JobEvent, RequestEvent, utcnow

R, J = RequestStatus, JobStatus

# A request: pending -> batched (in a job) -> unlearning (its job runs) -> auditing (its
# version is published; the version's audit job is queued or running) -> completed (the
# audit is stored). A request that needs no new version completes from pending (every key
# already forgotten) or from unlearning (forgotten by another batch meanwhile).
REQUEST_TRANSITIONS: dict[RequestStatus, frozenset[RequestStatus]] = {
    R.PENDING: frozenset({R.BATCHED, R.CANCELLED, R.COMPLETED, R.FAILED}),
    R.BATCHED: frozenset({R.UNLEARNING, R.PENDING, R.COMPLETED, R.FAILED}),
    R.UNLEARNING: frozenset({R.AUDITING, R.BATCHED, R.COMPLETED, R.FAILED}),
    R.AUDITING: frozenset({R.COMPLETED}),  # the data is out of the published version
    R.FAILED: frozenset({R.PENDING}),  # an admin's retry
    R.COMPLETED: frozenset(),
    R.CANCELLED: frozenset(),
}

# A job: queued -> running (train, unlearn, cache) or auditing (an audit job) -> succeeded;
# a failed attempt goes back to queued until the attempts are spent, then failed.
JOB_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    J.QUEUED: frozenset({J.RUNNING, J.AUDITING, J.FAILED}),
    J.RUNNING: frozenset({J.SUCCEEDED, J.QUEUED, J.FAILED}),
    J.AUDITING: frozenset({J.SUCCEEDED, J.QUEUED, J.FAILED}),
    J.SUCCEEDED: frozenset(),
    J.FAILED: frozenset(),
}


class IllegalTransition(RuntimeError):
    pass


def move_request(
    session: Session,
    request: DeletionRequest,
    to: RequestStatus,
    *,
    detail: str | None = None,
    at: datetime | None = None,
) -> RequestEvent:
    current = RequestStatus(request.status)
    if to not in REQUEST_TRANSITIONS[current]:
        raise IllegalTransition(f"deletion request {request.id}: {current} -> {to}")
    at = at or utcnow()
    request.status = to
    request.updated_at = at
    if to == R.COMPLETED:
        request.completed_at = at
    event = RequestEvent(request_id=request.id, status=to, detail=detail, at=at)
    session.add(event)
    callbacks.schedule(session, request, to, at)  # announced only if this commits
    return event


def move_job(session: Session, job: Job, to: JobStatus, *, detail: str | None = None) -> None:
    current = JobStatus(job.status)
    if to not in JOB_TRANSITIONS[current]:
        raise IllegalTransition(f"job {job.id}: {current} -> {to}")
    job.status = to
    if to in (J.SUCCEEDED, J.FAILED):
        job.finished_at = utcnow()
    session.add(JobEvent(job_id=job.id, status=to, detail=detail))
