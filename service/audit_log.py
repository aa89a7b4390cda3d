"""The tamper-evident audit log: an append-only chain where each entry carries the hash of
the one before it, so altering, removing or reordering any entry breaks every later link."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from service.db import is_postgres
from service.tables import AuditLogEntry, utcnow

GENESIS = "0" * 64
_CHAIN_LOCK = 0x554E4C52  # pg advisory lock id: appends are serialised so the chain is linear


def entry_hash(prev_hash: str, entry: AuditLogEntry) -> str:
    body = {
        "id": entry.id,
        "at": entry.at.isoformat(),
        "tenant_id": entry.tenant_id,
        "action": entry.action,
        "subject_type": entry.subject_type,
        "subject_id": entry.subject_id,
        "payload": entry.payload,
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256((prev_hash + canonical).encode()).hexdigest()


def append(
    session: Session,
    *,
    tenant_id: str | None,
    action: str,
    subject_type: str,
    subject_id: str,
    payload: dict[str, Any],
) -> AuditLogEntry:
    """Append one entry in the caller's transaction (call it last: it holds the chain lock)."""
    if is_postgres(session):
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CHAIN_LOCK})
    last = session.execute(
        select(AuditLogEntry.id, AuditLogEntry.hash).order_by(AuditLogEntry.id.desc()).limit(1)
    ).first()
    prev_hash = last.hash if last else GENESIS
    entry = AuditLogEntry(
        id=(last.id + 1) if last else 1,
        at=utcnow().replace(microsecond=0),
        tenant_id=tenant_id,
        action=action,
        subject_type=subject_type,
        subject_id=subject_id,
        payload=payload,
        prev_hash=prev_hash,
        hash="",
    )
    entry.hash = entry_hash(prev_hash, entry)
    session.add(entry)
    return entry


@dataclass(frozen=True)
class ChainBreak:
    entry_id: int
    reason: str


def verify(session: Session, *, batch: int = 5000) -> tuple[int, ChainBreak | None]:
    """Walk the whole chain; return (entries checked, the first break or None)."""
    prev_hash, expected_id, checked, after = GENESIS, 1, 0, 0
    while True:
        rows = session.scalars(
            select(AuditLogEntry)
            .where(AuditLogEntry.id > after)
            .order_by(AuditLogEntry.id)
            .limit(batch)
        ).all()
        if not rows:
            return checked, None
        for entry in rows:
            if entry.id != expected_id:
                return checked, ChainBreak(expected_id, "entry missing (removed or reordered)")
            if entry.prev_hash != prev_hash:
                return checked, ChainBreak(entry.id, "link to the previous entry is broken")
            if entry_hash(prev_hash, entry) != entry.hash:
                return checked, ChainBreak(entry.id, "entry content was altered")
            prev_hash, expected_id, checked, after = entry.hash, entry.id + 1, checked + 1, entry.id
