"""Change stamps: per tenant and per kind of row, a counter that every committed change
advances. Polled reads build their ETag from the stamps they show, so answering
``If-None-Match`` costs one indexed lookup instead of building the body.

The stamps are kept by the session itself, so no write path has to remember them:
``after_flush`` notes which (tenant, topic) each flushed row belongs to, an ORM bulk
``update()``/``delete()``/``insert()`` is noted in ``do_orm_execute``, and ``before_commit``
advances the noted stamps in the same transaction as the change. A change and its stamp
therefore commit together; the stamp row's lock orders concurrent writers of one tenant
and topic, so a stamp read after a commit is never older than the data it vouches for.

The lock is taken at commit, in a fixed order, and held only while committing: writers of
one tenant and topic queue behind each other's commit, so a write path built for throughput
should put many rows in one transaction (it then queues once per batch).

A write that bypasses the ORM session (raw SQL on a connection) must call :func:`touch`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Any

from sqlalchemy import bindparam, event, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.session import ORMExecuteState

from service.tables import (
    Audit,
    ChangeStamp,
    DeletionRequest,
    Job,
    Model,
    ModelVersion,
    VersionArtifact,
)

__all__ = ["Topic", "install", "touch", "read"]


class Topic(StrEnum):
    """What a polled read shows; one stamp per tenant and topic."""

    MODELS = "models"
    VERSIONS = "versions"
    REQUESTS = "requests"
    JOBS = "jobs"
    AUDITS = "audits"


# The rows each topic covers. Request and job events are absent on purpose: every event
# is written with a change of its request or job (``service.states``, rule 8).
TOPICS: dict[type[Any], Topic] = {
    Model: Topic.MODELS,
    ModelVersion: Topic.VERSIONS,
    VersionArtifact: Topic.VERSIONS,  # a version's artifacts are part of its body
    DeletionRequest: Topic.REQUESTS,
    Job: Topic.JOBS,
    Audit: Topic.AUDITS,
}

_NOTED = "changes.noted"


def touch(session: Session, tenant_id: str, *topics: Topic) -> None:
    """Advance these stamps when the session's transaction commits."""
    noted: set[tuple[str, Topic]] = session.info.setdefault(_NOTED, set())
    noted.update((tenant_id, topic) for topic in topics)


def read(session: Session, *, tenant_id: str, topics: Sequence[Topic]) -> tuple[int, ...]:
    """The current stamps of ``topics`` (0 for a topic never changed), in that order."""
    rows = dict(
        session.execute(
            select(ChangeStamp.topic, ChangeStamp.stamp).where(
                ChangeStamp.tenant_id == tenant_id, ChangeStamp.topic.in_(list(topics))
            )
        ).all()
    )
    return tuple(rows.get(topic, 0) for topic in topics)


def install(factory: sessionmaker[Session] | type[Session]) -> None:
    """Keep the stamps for every session this factory (or session class) makes."""
    event.listen(factory, "after_flush", _note_flushed)
    event.listen(factory, "do_orm_execute", _note_bulk)
    event.listen(factory, "before_commit", _advance)
    event.listen(factory, "after_rollback", _forget)


def _tenant_of(session: Session, row: Any) -> str:
    if isinstance(row, Model | DeletionRequest | Job):
        return row.tenant_id
    if isinstance(row, ModelVersion):
        model = session.get(Model, row.model_id)
        assert model is not None, f"version {row.id} of an unknown model"
        return model.tenant_id
    version = session.get(ModelVersion, row.version_id)  # an artifact's or an audit's
    assert version is not None, f"{type(row).__name__} {row.id} of an unknown version"
    return _tenant_of(session, version)


def _note_flushed(session: Session, _flush_context: Any) -> None:
    # In after_flush the new/dirty/deleted sets and attribute histories are still those of
    # the flush that just ran.
    changed = [*session.new, *session.deleted]
    changed += [row for row in session.dirty if session.is_modified(row)]
    for row in changed:
        topic = TOPICS.get(type(row))
        if topic is not None:
            touch(session, _tenant_of(session, row), topic)


def _note_bulk(state: ORMExecuteState) -> None:
    if not (state.is_update or state.is_delete or state.is_insert) or state.bind_mapper is None:
        return
    table = state.bind_mapper.class_
    topic = TOPICS.get(table)
    if topic is None:
        return
    if not hasattr(table, "tenant_id"):
        raise TypeError(
            f"a bulk write to {table.__name__} cannot name its tenant; "
            "write rows through the session or call service.changes.touch"
        )
    for tenant_id in _bulk_tenants(state, table):
        touch(state.session, tenant_id, topic)


def _bulk_tenants(state: ORMExecuteState, table: Any) -> Iterable[str]:
    if state.is_insert:
        params = state.parameters or {}
        rows = [params] if isinstance(params, Mapping) else list(params)
        tenants = {row.get("tenant_id") for row in rows}
        if not all(isinstance(tenant_id, str) for tenant_id in tenants):
            raise TypeError(f"a bulk insert into {table.__name__} must give tenant_id per row")
        return {str(tenant_id) for tenant_id in tenants}
    where = state.statement.whereclause  # type: ignore[attr-defined]
    statement = select(table.tenant_id).distinct()
    return state.session.scalars(statement if where is None else statement.where(where)).all()


def _advance(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint: the outer commit advances everything noted
    session.flush()  # before_commit runs before commit's own flush; note that one too
    noted = session.info.pop(_NOTED, None)
    if not noted:
        return
    # Rows in a fixed order, so two writers never wait on each other crosswise.
    rows = [{"tenant_id": t, "topic": str(topic)} for t, topic in sorted(noted)]
    dialect = session.get_bind().dialect.name
    session.connection().execute(_ADVANCE[dialect], rows)


def _advance_statement(dialect: Any) -> Any:
    """Upsert one stamp, plus one. Built once per dialect and run for each noted stamp:
    its compiled form is cached (a multi-row statement built per commit was compiled
    anew each time, which cost more than the rest of a small ingest batch)."""
    stamps = ChangeStamp.__table__
    statement = dialect.insert(stamps).values(
        tenant_id=bindparam("tenant_id"), topic=bindparam("topic"), stamp=1
    )
    return statement.on_conflict_do_update(
        index_elements=[stamps.c.tenant_id, stamps.c.topic],
        set_={"stamp": stamps.c.stamp + 1},
    )


_ADVANCE = {"postgresql": _advance_statement(postgresql), "sqlite": _advance_statement(sqlite)}


def _forget(session: Session) -> None:
    session.info.pop(_NOTED, None)
