"""Engine and sessions. One engine per process, created lazily, safe after fork; on
Postgres also an async engine per event loop (psycopg's async driver) for the ingest path."""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session, sessionmaker

from service import changes
from service.settings import get_settings

_engine: Engine | None = None
_engine_pid: int | None = None
_sessionmaker: sessionmaker[Session] | None = None


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str) -> Engine:
    # Parameters are client data (subject ids, sample keys): never in an error or a log.
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, hide_parameters=True
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # No pre-ping: it costs a round trip per checkout; a dead connection surfaces as a
    # 503 once and is replaced. A short connect timeout makes an unreachable database a
    # fast 503 rather than a hung request.
    return create_engine(
        url,
        pool_size=10,
        max_overflow=20,
        pool_recycle=1800,
        hide_parameters=True,
        connect_args={"connect_timeout": 3},
    )


def get_engine() -> Engine:
    """The process's engine; a forked child (Celery prefork) gets a fresh pool."""
    global _engine, _engine_pid, _sessionmaker
    if _engine is None or _engine_pid != os.getpid():
        if _engine is not None:
            _engine.dispose(close=False)
        settings = get_settings()
        if settings.resolved_database_url.startswith("sqlite"):
            settings.state_dir.mkdir(parents=True, exist_ok=True)
        _engine = make_engine(settings.resolved_database_url)
        _engine_pid = os.getpid()
        _sessionmaker = sessionmaker(bind=_engine, expire_on_commit=False)
        changes.install(_sessionmaker)
    return _engine


def reset_engine() -> None:
    """Forget the engines (tests switch databases; settings changed)."""
    global _engine, _sessionmaker
    if _engine is not None:
        _engine.dispose()
    _engine = None
    _sessionmaker = None
    for _, engine, _ in list(_async.values()):
        engine.sync_engine.dispose(close=False)  # its loop closes its connections
    _async.clear()


class TrackedSession(Session):
    """The session class behind async sessions: change stamps are kept for it as for the
    sync factory's sessions (``service.changes``)."""


changes.install(TrackedSession)

# Async engines are bound to the loop they were made on: one per live loop (a served
# process has one; tests open a loop per client), dropped with it.
_async: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, tuple[str, AsyncEngine, async_sessionmaker[AsyncSession]]
] = weakref.WeakKeyDictionary()


def async_session() -> AsyncSession | None:
    """A session on this loop's async engine (Postgres over psycopg's async driver); None
    on SQLite, whose driver has no async side (callers run sync sessions in a thread)."""
    url = get_settings().resolved_database_url
    if not url.startswith("postgresql"):
        return None
    loop = asyncio.get_running_loop()
    made = _async.get(loop)
    if made is None or made[0] != url:
        if made is not None:
            made[1].sync_engine.dispose(close=False)
        engine = create_async_engine(
            url,
            # One connection per ingest batch in flight (UNLEARN_INGEST_BATCHES_IN_FLIGHT).
            pool_size=get_settings().ingest_batches_in_flight,
            max_overflow=2,
            pool_recycle=1800,
            hide_parameters=True,
            connect_args={"connect_timeout": 3},
        )
        made = (
            url,
            engine,
            async_sessionmaker(engine, expire_on_commit=False, sync_session_class=TrackedSession),
        )
        _async[loop] = made
    return made[2]()


async def close_async_engine() -> None:
    """Close this loop's async engine, if it has one (at shutdown)."""
    made = _async.pop(asyncio.get_running_loop(), None)
    if made is not None:
        await made[1].dispose()


def new_session() -> Session:
    get_engine()
    assert _sessionmaker is not None
    return _sessionmaker()


@contextmanager
def session_scope() -> Iterator[Session]:
    """Commit on success, roll back on error, always close (for workers and the CLI)."""
    session = new_session()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def on_commit(session: Session, callback) -> None:  # type: ignore[no-untyped-def]
    """Run ``callback()`` once the session's current transaction commits (never on rollback).

    Used to enqueue Celery messages only after the rows they point at are visible.
    """
    callbacks = session.info.setdefault("on_commit", [])
    callbacks.append(callback)
    if not session.info.get("on_commit_hooked"):
        session.info["on_commit_hooked"] = True
        event.listen(session, "after_commit", _run_on_commit)
        event.listen(session, "after_rollback", _drop_on_commit)


def _run_on_commit(session: Session) -> None:
    callbacks = session.info.pop("on_commit", [])
    for callback in callbacks:
        callback()


def _drop_on_commit(session: Session) -> None:
    session.info.pop("on_commit", None)


def unreachable(error: BaseException) -> str | None:
    """One line an operator can act on when ``error`` says the database cannot be used (down,
    unknown, refusing us): its address without the password and the driver's first line,
    instead of a hundred lines of traceback. None for any other error."""
    if not isinstance(error, OperationalError):
        return None
    url = make_url(get_settings().resolved_database_url).render_as_string(hide_password=True)
    cause = str(getattr(error, "orig", error)).strip().splitlines() or ["no reason given"]
    return f"cannot use the database at {url}: {cause[0]}"
