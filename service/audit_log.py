"""The tamper-evident audit log: an append-only chain where each entry carries the hash of
the one before it, so altering, removing or reordering any entry breaks every later link;
and each entry's hash is signed with a key the database does not hold
(``service.audit_signing``), so whoever can write the tables still cannot rewrite the tail
and recompute it unnoticed."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from service.audit_signing import PublicKey
from service.db import is_postgres
from service.settings import get_settings
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
    signer = get_settings().audit_signer
    if signer is not None:
        entry.signature = signer.sign(entry.id, entry.hash)
        entry.key_id = signer.public_key.key_id
    session.add(entry)
    return entry


@dataclass(frozen=True)
class ChainBreak:
    entry_id: int
    reason: str


@dataclass(frozen=True)
class Head:
    """The last entry checked: a verifier keeps it outside the database, so that a later
    verification can tell whether anything was cut off the end."""

    entry_id: int
    hash: str
    signature: str | None


@dataclass(frozen=True)
class Verification:
    checked: int  # entries whose links (and, with keys, signatures) were checked
    broken: ChainBreak | None  # the first break, or None
    head: Head | None
    signed: int  # entries whose signatures were checked (0 without keys)


def verify(
    session: Session, *, keys: list[PublicKey] | None = None, batch: int = 5000
) -> Verification:
    """Walk the whole chain, and with ``keys`` every signature: an entry signed by none of
    them, a signature that does not match, or an unsigned entry after a signed one (whose
    signature was stripped) is a break. Entries before the first signed one are vouched for
    by it (its hash covers theirs); with keys, a chain with no signed entry is a break."""
    by_id = {key.key_id: key for key in keys or []}
    prev_hash, expected_id, checked, after, signed = GENESIS, 1, 0, 0, 0
    head: Head | None = None

    def result(broken: ChainBreak | None) -> Verification:
        return Verification(checked, broken, head, signed)

    while True:
        rows = session.scalars(
            select(AuditLogEntry)
            .where(AuditLogEntry.id > after)
            .order_by(AuditLogEntry.id)
            .limit(batch)
        ).all()
        if not rows:
            if by_id and checked and not signed:
                return result(ChainBreak(expected_id - 1, "no entry is signed"))
            return result(None)
        for entry in rows:
            if entry.id != expected_id:
                return result(ChainBreak(expected_id, "entry missing (removed or reordered)"))
            if entry.prev_hash != prev_hash:
                return result(ChainBreak(entry.id, "link to the previous entry is broken"))
            if entry_hash(prev_hash, entry) != entry.hash:
                return result(ChainBreak(entry.id, "entry content was altered"))
            if by_id:
                problem = _signature_problem(entry, by_id, signed > 0)
                if problem:
                    return result(ChainBreak(entry.id, problem))
                signed += entry.signature is not None
            prev_hash, expected_id, checked, after = entry.hash, entry.id + 1, checked + 1, entry.id
            head = Head(entry.id, entry.hash, entry.signature)


def _signature_problem(
    entry: AuditLogEntry, keys: dict[str, PublicKey], after_signed: bool
) -> str | None:
    if entry.signature is None:
        return "entry is not signed, though earlier ones are" if after_signed else None
    key = keys.get(entry.key_id or "")
    if key is None:
        return f"entry is signed by key {entry.key_id}, which is not among the keys given"
    if not key.verifies(entry.id, entry.hash, entry.signature):
        return "signature does not match: the entry was rewritten"
    return None


def held_entry_problem(session: Session, held: dict[str, Any], keys: list[PublicKey]) -> str | None:
    """An entry a verifier holds from outside the database (a certificate's, as JSON): it
    must match its own hash, carry a signature by one of ``keys``, and still be in the
    chain as it was (not cut off the end nor rewritten). None when all holds."""
    try:
        entry = AuditLogEntry(
            id=int(held["id"]),
            at=datetime.fromisoformat(str(held["at"])),
            tenant_id=held.get("tenant_id"),
            action=held["action"],
            subject_type=held["subject_type"],
            subject_id=held["subject_id"],
            payload=held["payload"],
        )
        claimed, signature = str(held["hash"]), held.get("signature")
        prev_hash = str(held["prev_hash"])
    except (KeyError, TypeError, ValueError):
        return "is not an audit log entry"
    if entry_hash(prev_hash, entry) != claimed:
        return "does not match its own hash"
    key = {k.key_id: k for k in keys}.get(str(held.get("key_id")))
    if not signature or key is None or not key.verifies(entry.id, claimed, str(signature)):
        return "carries no valid signature by the keys given"
    stored = session.scalar(select(AuditLogEntry.hash).where(AuditLogEntry.id == entry.id))
    if stored != claimed:
        return "is no longer in the log as it was (removed or rewritten)"
    return None


def public_key() -> PublicKey | None:
    signer = get_settings().audit_signer
    return signer.public_key if signer is not None else None
