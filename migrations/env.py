"""Alembic environment: the same migrations run on Postgres and SQLite."""

from alembic import context

from service.db import make_engine
from service.settings import get_settings
from service.tables import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or get_settings().resolved_database_url


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(_url())
    with engine.connect() as connection:
        _run(connection)
    engine.dispose()


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    sqlite = connection.dialect.name == "sqlite"
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=sqlite,
        compare_type=True,
    )
    if not sqlite:
        with context.begin_transaction():
            context.run_migrations()
        return
    # A batch migration on SQLite copies a table and DROPs the old one: with foreign keys on
    # (service.db turns them on for every connection) that DROP fails, or cascades into the
    # rows that point at the table (job events, versions). They go off for the migrations
    # and back on after; a PRAGMA inside a transaction does nothing, so whatever the
    # connection began is committed first.
    connection.commit()
    connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
    connection.commit()
    try:
        with context.begin_transaction():
            before = set(_broken_keys(connection))  # rows a database already had broken
            context.run_migrations()
            broken = [row for row in _broken_keys(connection) if row not in before]
            if broken:  # raised before the migration transaction commits
                raise RuntimeError(f"the migration broke foreign keys: {broken[:10]}")
    finally:
        connection.commit()
        connection.exec_driver_sql("PRAGMA foreign_keys=ON")
        connection.commit()


def _broken_keys(connection) -> list[tuple]:  # type: ignore[no-untyped-def]
    """(table, rowid, parent, key index) of every row whose foreign key points nowhere."""
    return [tuple(row) for row in connection.exec_driver_sql("PRAGMA foreign_key_check")]


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
