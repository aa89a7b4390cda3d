"""The request register: every deletion request of a tenant as CSV, for the person who
answers for erasure (a record of what was asked, when it was due and done, and what
evidence backs it). Subjects appear as their keyed digest only (``service.subjects``).

Rows are read a page at a time, oldest first, each page in a session of its own, so an
export of any size streams in bounded memory and never holds a transaction open while
the client reads.

``evidence`` says what backs a completed request: the verdict of its version's latest
audit (``pass``, ``fail``, ``inconclusive``, ``no_reference``), ``not_audited`` when no
audit of that version is stored, or ``already_forgotten`` when the model had forgotten
every sample before (no new version). It is empty for a request not completed.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from service.db import session_scope
from service.deletion_requests import service as requests
from service.enums import RequestStatus
from service.pagination import paginate
from service.tables import Audit, DeletionRequest, ModelVersion, utcnow

__all__ = ["COLUMNS", "Register", "export"]

COLUMNS = (
    "request_id",
    "subject_digest",
    "model_id",
    "status",
    "received_at",
    "due_at",
    "completed_at",
    "met_deadline",
    "result_version",
    "evidence",
)
PAGE = 1000


@dataclass(frozen=True)
class Register:
    """An export under way: its row count, fixed when it starts, and its lines."""

    rows: int
    lines: Iterator[str]


def export(
    *,
    tenant_id: str,
    model_id: str | None = None,
    status: RequestStatus | None = None,
    subject_id: str | None = None,
) -> Register:
    """The requests received until now, oldest first. The count and the first page are
    read here, before anything is sent: a refusal or a database error is the answer's
    status, not a register cut short behind a 200; the count lets a reader tell a
    transfer that broke off later."""
    as_of = utcnow()
    with session_scope() as session:
        statement = _statement(session, tenant_id, model_id, status, subject_id, as_of)
        total = session.scalar(select(func.count()).select_from(statement.subquery())) or 0
        first, cursor = _page(session, statement, None)
    lines = _lines(first, cursor, tenant_id, model_id, status, subject_id, as_of)
    return Register(int(total), lines)


def _statement(
    session: Session,
    tenant_id: str,
    model_id: str | None,
    status: RequestStatus | None,
    subject_id: str | None,
    as_of: datetime,
) -> Select[Any]:
    asked = requests.filtered(
        session, tenant_id=tenant_id, model_id=model_id, status=status, subject_id=subject_id
    )
    return asked.where(DeletionRequest.created_at <= as_of)


def _page(
    session: Session, statement: Select[Any], cursor: str | None
) -> tuple[list[str], str | None]:
    rows, next_cursor = paginate(
        session,
        statement,
        order=(DeletionRequest.created_at, DeletionRequest.id),
        limit=PAGE,
        cursor=cursor,
        descending=False,
    )
    verdicts = _verdicts(session, rows)
    return [_line(_row(request, verdicts)) for request in rows], next_cursor


def _lines(
    first: list[str],
    cursor: str | None,
    tenant_id: str,
    model_id: str | None,
    status: RequestStatus | None,
    subject_id: str | None,
    as_of: datetime,
) -> Iterator[str]:
    yield _line(COLUMNS)
    yield from first
    while cursor is not None:
        with session_scope() as session:
            statement = _statement(session, tenant_id, model_id, status, subject_id, as_of)
            lines, cursor = _page(session, statement, cursor)
        yield from lines


def _verdicts(
    session: Session, requests: list[DeletionRequest]
) -> dict[tuple[str, int], str | None]:
    """(model id, version) -> the verdict of that version's latest audit, for the
    completed requests' versions that have one."""
    wanted = {
        (r.model_id, r.result_version)
        for r in requests
        if r.status == RequestStatus.COMPLETED and r.job_id and r.result_version is not None
    }
    if not wanted:
        return {}
    versions: dict[str, tuple[str, int]] = {}
    for model_id in {model for model, _ in wanted}:
        numbers = [number for model, number in wanted if model == model_id]
        found = session.execute(
            select(ModelVersion.id, ModelVersion.number).where(
                ModelVersion.model_id == model_id, ModelVersion.number.in_(numbers)
            )
        )
        versions.update({version_id: (model_id, number) for version_id, number in found})
    latest: dict[tuple[str, int], str | None] = {}
    audits = session.execute(
        select(Audit.version_id, Audit.verdict)
        .where(Audit.version_id.in_(list(versions)))
        .order_by(Audit.created_at, Audit.id)
    )
    for version_id, verdict in audits:
        latest[versions[version_id]] = verdict  # a later audit overwrites an earlier one
    return latest


def _row(request: DeletionRequest, verdicts: dict[tuple[str, int], str | None]) -> list[str]:
    completed = request.status == RequestStatus.COMPLETED
    if not completed:
        evidence = ""
    elif not request.job_id:
        evidence = "already_forgotten"
    else:
        evidence = verdicts.get((request.model_id, request.result_version or 0)) or "not_audited"
    met = request.completed_at is not None and request.completed_at <= request.due_at
    return [
        request.id,
        request.subject_digest,
        request.model_id,
        str(request.status),
        request.created_at.isoformat(),
        request.due_at.isoformat(),
        request.completed_at.isoformat() if request.completed_at else "",
        ("yes" if met else "no") if completed else "",
        str(request.result_version) if request.result_version is not None else "",
        evidence,
    ]


def _line(values: list[str] | tuple[str, ...]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(values)
    return buffer.getvalue()
