"""What an ingest batch asks of the database and writes to it (``service.create_batch``),
set-based: a fixed handful of statements per batch, whatever its size.

:class:`BatchStorage` answers through the SQLAlchemy session and runs on any backend (the
embedded SQLite default). :class:`PostgresStorage` answers the same questions with SQL of
its own on the session's connection: every batch's values travel as array parameters of
a few fixed statements (in binary: psycopg's text form of an array costs several times
more CPU; a fixed statement is also one psycopg prepares after its first few uses on a
connection), and a batch's requests, their first events and their idempotency claims are
written by one statement.
That path carries the bursts; on it, the ORM's per-statement work (cache keys, compiled
parameters, bulk-insert bookkeeping) cost more than the database itself (profiled with
py-spy: docs/benchmarks.md).

Both write in the session's transaction, so the caller's commit (and its rollback) covers
everything, change stamps included.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, NamedTuple

from sqlalchemy import String, column, exists, func, insert, select, values
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from service import changes
from service.changes import Topic
from service.enums import RequestStatus, Split
from service.tables import (
    Dataset,
    DeletionRequest,
    IdempotencyKey,
    Model,
    RequestEvent,
    Sample,
    Tenant,
    Tombstone,
)

__all__ = ["ModelFacts", "SampleFacts", "Earlier", "BatchStorage", "PostgresStorage", "for_session"]

Pair = tuple[str, str]


class ModelFacts(NamedTuple):
    id: str
    tenant_id: str
    dataset_id: str
    head_version: int | None
    num_classes: int
    subject_key: str  # the tenant's (service.subjects)


class SampleFacts(NamedTuple):
    split: str
    forgotten: bool


class Earlier(NamedTuple):
    """An idempotency key's first use."""

    body_sha256: str
    response: dict[str, Any]


class BatchStorage:
    """The batch's questions and writes through the session (any backend)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def lock_keys(self, pairs: list[Pair]) -> None:
        """Serialise this batch with others holding the same idempotency keys: nothing to
        do here (SQLite serialises every writer; the unique index is the guarantee on any
        backend, :meth:`write`)."""

    def replays(self, pairs: list[Pair]) -> dict[Pair, Earlier]:
        """(tenant, key) -> its first use, for the pairs used before."""
        earlier: dict[Pair, Earlier] = {}
        for want in self._pair_tables(("tenant_id", "key"), pairs):
            rows = self.session.execute(
                select(
                    IdempotencyKey.tenant_id,
                    IdempotencyKey.key,
                    IdempotencyKey.body_sha256,
                    IdempotencyKey.response,
                ).join(
                    want,
                    (IdempotencyKey.tenant_id == want.c.tenant_id)
                    & (IdempotencyKey.key == want.c.key),
                )
            )
            earlier.update(((t, k), Earlier(sha, response)) for t, k, sha, response in rows)
        return earlier

    def models(self, model_ids: list[str]) -> dict[str, ModelFacts]:
        rows = self.session.execute(
            select(
                Model.id,
                Model.tenant_id,
                Model.dataset_id,
                Model.head_version,
                Dataset.num_classes,
                Tenant.subject_key,
            )
            .join(Dataset, Dataset.id == Model.dataset_id)
            .join(Tenant, Tenant.id == Model.tenant_id)
            .where(Model.id.in_(model_ids))
        )
        facts = {}
        for model_id, tenant_id, dataset_id, head, classes, key in rows:
            assert classes is not None, f"model {model_id} on a dataset that is not ready"
            facts[model_id] = ModelFacts(model_id, tenant_id, dataset_id, head, classes, key)
        return facts

    def samples(self, wanted: list[Pair]) -> dict[Pair, SampleFacts]:
        """(model id, key) -> the sample's split and whether that model forgot it, for every
        wanted pair that names a sample of the model's dataset."""
        found: dict[Pair, SampleFacts] = {}
        for want in self._pair_tables(("model_id", "key"), wanted):
            rows = self.session.execute(
                select(
                    want.c.model_id,
                    Sample.key,
                    Sample.split,
                    Tombstone.id.is_not(None),
                )
                .select_from(want)
                .join(Model, Model.id == want.c.model_id)
                .join(Sample, (Sample.dataset_id == Model.dataset_id) & (Sample.key == want.c.key))
                .outerjoin(
                    Tombstone,
                    (Tombstone.sample_id == Sample.id) & (Tombstone.model_id == want.c.model_id),
                )
            )
            found.update(((m, k), SampleFacts(split, bool(gone))) for m, k, split, gone in rows)
        return found

    def class_count(self, dataset_id: str, labels: list[int]) -> int:
        """Training samples of these classes."""
        return int(
            self.session.scalar(
                select(func.count()).where(
                    Sample.dataset_id == dataset_id,
                    Sample.split == Split.TRAIN,
                    Sample.label.in_(labels),
                )
            )
            or 0
        )

    def subject_keys(self, wanted: list[Pair]) -> dict[Pair, list[str]]:
        """(dataset id, subject digest) -> that subject's training keys in dataset order,
        for every wanted pair with some: one query per 5,000 subjects, not one each."""
        found: dict[Pair, list[str]] = {}
        for want in self._pair_tables(("dataset_id", "digest"), wanted):
            rows = self.session.execute(
                select(want.c.dataset_id, want.c.digest, Sample.key)
                .select_from(want)
                .join(
                    Sample,
                    (Sample.dataset_id == want.c.dataset_id)
                    & (Sample.subject_digest == want.c.digest),
                )
                .where(Sample.split == Split.TRAIN)
                .order_by(Sample.position)
            )
            for dataset_id, digest, key in rows:
                found.setdefault((dataset_id, digest), []).append(key)
        return found

    def record_subjects(self, dataset_ids: list[str]) -> set[str]:
        """Those of the datasets whose samples name subjects at all."""
        named = exists().where(Sample.dataset_id == Dataset.id, Sample.subject_digest.is_not(None))
        return set(
            self.session.scalars(select(Dataset.id).where(Dataset.id.in_(dataset_ids), named))
        )

    def claimed_classes(self, model_id: str) -> set[int]:
        """Classes of the model's class deletions that are forgotten or on their way (every
        status but failed and cancelled)."""
        statement = select(DeletionRequest.class_labels).where(
            DeletionRequest.model_id == model_id,
            DeletionRequest.class_labels.is_not(None),
            DeletionRequest.status.not_in([RequestStatus.FAILED, RequestStatus.CANCELLED]),
        )
        return {label for labels in self.session.scalars(statement) for label in labels or []}

    def write(self, rows: list[dict[str, Any]], claims: list[dict[str, Any]]) -> bool:
        """Insert the pending requests ``rows`` (columns of ``deletion_requests``) with their
        first events, then the idempotency ``claims`` (sorted: two batches never wait on
        each other crosswise). False when another transaction holds one of the claimed
        keys already (nothing is claimed for it; the caller rolls back)."""
        if rows:
            self.session.execute(insert(DeletionRequest).execution_options(render_nulls=True), rows)
            events = [
                {"request_id": row["id"], "status": row["status"], "at": row["created_at"]}
                for row in rows
            ]
            self.session.execute(insert(RequestEvent), events)
        self.session.flush()  # requests completed at once, added through the session
        if not claims:
            return True
        keys = IdempotencyKey.__table__
        dialect = postgresql if self.session.get_bind().dialect.name == "postgresql" else sqlite
        statement = (
            dialect.insert(keys)
            .on_conflict_do_nothing(index_elements=[keys.c.tenant_id, keys.c.key])
            .returning(keys.c.key)
        )
        return len(self.session.execute(statement, claims).all()) == len(claims)

    @staticmethod
    def _pair_tables(names: tuple[str, str], pairs: list[Pair]) -> list[Any]:
        """Pairs of strings as VALUES tables to join with, columns ``names``, one per 5,000
        pairs (SQLite limits bound parameters)."""
        first, second = names
        return [
            values(column(first, String), column(second, String), name="want")
            .data(pairs[start : start + 5000])
            .cte("want")
            for start in range(0, len(pairs), 5000)
        ]


_KEY_LOCKS = 0x494E4754  # pg advisory lock namespace (two-key form) of idempotency keys

_LOCK = (
    "SELECT pg_advisory_xact_lock(%s, slot) "
    "FROM unnest(%b::integer[]) WITH ORDINALITY AS s(slot, n) ORDER BY n"
)
_REPLAYS = (
    "SELECT k.tenant_id, k.key, k.body_sha256, k.response "
    "FROM unnest(%b::text[], %b::text[]) AS w(tenant_id, key) "
    "JOIN idempotency_keys k ON k.tenant_id = w.tenant_id AND k.key = w.key"
)
_MODELS = (
    "SELECT m.id, m.tenant_id, m.dataset_id, m.head_version, d.num_classes, t.subject_key "
    "FROM models m JOIN datasets d ON d.id = m.dataset_id JOIN tenants t ON t.id = m.tenant_id "
    "WHERE m.id = ANY(%b::text[])"
)
_SAMPLES = (
    "SELECT w.model_id, s.key, s.split, t.id IS NOT NULL "
    "FROM unnest(%b::text[], %b::text[]) AS w(model_id, key) "
    "JOIN models m ON m.id = w.model_id "
    "JOIN samples s ON s.dataset_id = m.dataset_id AND s.key = w.key "
    "LEFT JOIN tombstones t ON t.sample_id = s.id AND t.model_id = w.model_id"
)
# The requests, their first events and the claims in one statement. The claims' foreign
# keys are checked at the end of the statement, when the requests are in.
_REQUEST_COLUMNS = (
    "id, tenant_id, model_id, subject_digest, sample_keys, class_labels, already_forgotten, "
    "sample_count, callback_url, status, created_at, updated_at, due_at"
)
_WRITE = f"""
WITH requests AS (
    INSERT INTO deletion_requests ({_REQUEST_COLUMNS})
    SELECT id, tenant_id, model_id, subject_digest, sample_keys::jsonb, class_labels::jsonb,
           already_forgotten::jsonb, sample_count, callback_url, status, at, at, due_at
    FROM unnest(%(id)b::text[], %(tenant_id)b::text[], %(model_id)b::text[],
                %(subject_digest)b::text[], %(sample_keys)b::text[], %(class_labels)b::text[],
                %(already_forgotten)b::text[], %(sample_count)b::integer[],
                %(callback_url)b::text[], %(status)b::text[], %(at)b::timestamptz[],
                %(due_at)b::timestamptz[])
         AS r(id, tenant_id, model_id, subject_digest, sample_keys, class_labels,
              already_forgotten, sample_count, callback_url, status, at, due_at)
    RETURNING id, status, created_at
), events AS (
    INSERT INTO request_events (request_id, status, at)
    SELECT id, status, created_at FROM requests
), claimed AS (
    INSERT INTO idempotency_keys (tenant_id, key, body_sha256, request_id, response, created_at)
    SELECT tenant_id, key, body_sha256, request_id, response::jsonb, at
    FROM unnest(%(claim_tenant_id)b::text[], %(claim_key)b::text[],
                %(claim_body_sha256)b::text[], %(claim_request_id)b::text[],
                %(claim_response)b::text[], %(claim_at)b::timestamptz[])
         AS c(tenant_id, key, body_sha256, request_id, response, at)
    ORDER BY tenant_id, key
    ON CONFLICT (tenant_id, key) DO NOTHING
    RETURNING key
)
SELECT count(*) FROM claimed
"""
_JSON_COLUMNS = ("sample_keys", "class_labels", "already_forgotten")


class PostgresStorage(BatchStorage):
    """The same answers on Postgres, with array parameters and one write statement."""

    def lock_keys(self, pairs: list[Pair]) -> None:
        """Lock the batch's idempotency keys (transaction-scoped advisory locks, taken in
        one statement in a fixed order): a batch of another process holding one of them is
        waited for, and its answer is then read as a replay instead of racing it. The
        unique index stays the guarantee (:meth:`write`); the locks make its conflicts
        rare."""
        slots = sorted(
            {
                int.from_bytes(
                    hashlib.sha256(f"{tenant}\n{key}".encode()).digest()[:4], "big", signed=True
                )
                for tenant, key in pairs
            }
        )
        self._fetch(_LOCK, (_KEY_LOCKS, slots))

    def replays(self, pairs: list[Pair]) -> dict[Pair, Earlier]:
        tenants, keys = _columns(pairs)
        rows = self._fetch(_REPLAYS, (tenants, keys))
        return {(t, k): Earlier(sha, response) for t, k, sha, response in rows}

    def models(self, model_ids: list[str]) -> dict[str, ModelFacts]:
        return {row[0]: ModelFacts(*row) for row in self._fetch(_MODELS, (model_ids,))}

    def samples(self, wanted: list[Pair]) -> dict[Pair, SampleFacts]:
        models, keys = _columns(wanted)
        rows = self._fetch(_SAMPLES, (models, keys))
        return {(m, k): SampleFacts(split, gone) for m, k, split, gone in rows}

    def write(self, rows: list[dict[str, Any]], claims: list[dict[str, Any]]) -> bool:
        self.session.flush()  # requests completed at once, added through the session
        if not rows and not claims:
            return True
        params: dict[str, list[Any]] = {
            name: [row[name] for row in rows]
            for name in ("id", "tenant_id", "model_id", "subject_digest", "sample_count")
        }
        params |= {name: [json.dumps(row[name]) for row in rows] for name in _JSON_COLUMNS}
        params |= {
            "callback_url": [row["callback_url"] for row in rows],
            "status": [row["status"] for row in rows],
            "at": [row["created_at"] for row in rows],
            "due_at": [row["due_at"] for row in rows],
        }
        for name in ("tenant_id", "key", "body_sha256", "request_id"):
            params[f"claim_{name}"] = [claim[name] for claim in claims]
        params["claim_response"] = [json.dumps(claim["response"]) for claim in claims]
        params["claim_at"] = [claim["created_at"] for claim in claims]
        # The ORM did not see these rows: their tenants' request stamps advance at commit.
        for tenant_id in {row["tenant_id"] for row in rows}:
            changes.touch(self.session, tenant_id, Topic.REQUESTS)
        (claimed,) = self._fetch(_WRITE, params)[0]
        return int(claimed) == len(claims)

    def _fetch(self, sql: str, params: Any) -> list[Any]:
        """Run ``sql`` on the session's connection, in its transaction; its rows. SQL
        given to the driver as is: nothing to compile, and its errors still arrive as
        SQLAlchemy's (``ingest.settle`` tells a client's from the database's)."""
        return list(self.session.connection().exec_driver_sql(sql, params))


def _columns(pairs: list[Pair]) -> tuple[list[str], list[str]]:
    return [first for first, _ in pairs], [second for _, second in pairs]


def for_session(session: Session) -> BatchStorage:
    """The storage for this session's backend."""
    if session.get_bind().dialect.name == "postgresql":
        return PostgresStorage(session)
    return BatchStorage(session)
