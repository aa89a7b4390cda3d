"""Subjects as the tenant's HMAC digest, never in clear.

A deletion request names the person it is for (``subject_id``: a product's user id).
The service keeps and answers only ``subject_digest``: HMAC-SHA256 of that id keyed with
the tenant's subject key, a random 32-byte secret made with the tenant (``tenants.subject_key``).
A bare hash would not do: user ids are guessable (``user-8812``), and anyone holding a
list of unsalted digests could reverse them by hashing candidates. Keyed, the digests in
responses, logs, certificates, exports and callbacks cannot be tested against guesses
without the key; two tenants' digests of the same id differ, so they cannot be joined.

What it does not protect: whoever can read the ``tenants`` table holds the keys and can
test guesses against the digests of that database (they still cannot list the subjects).
A client that needs the id back keeps its own mapping; to find a subject's requests it
asks with the id (``?subject_id=``), which is digested here with the same key.
"""

from __future__ import annotations

import hashlib
import hmac

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.tables import Tenant

__all__ = ["subject_digest", "tenant_key"]


def subject_digest(key: str, subject_id: str) -> str:
    """HMAC-SHA256 of ``subject_id`` under the tenant's ``key``, hex. Surrounding
    whitespace is not part of an id (a manifest's cells are read stripped): ``"user-1 "``
    is ``"user-1"``, so a request finds the samples of the person it names."""
    return hmac.new(bytes.fromhex(key), subject_id.strip().encode(), hashlib.sha256).hexdigest()


def tenant_key(session: Session, tenant_id: str) -> str:
    key = session.scalar(select(Tenant.subject_key).where(Tenant.id == tenant_id))
    if key is None:  # every tenant has one (migration 0009); a missing tenant has no requests
        raise LookupError(f"tenant {tenant_id} has no subject key")
    return key
