"""Alembic upgrade to head, from code (``unlearnd migrate`` and the embedded default)."""

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

import migrations
from service.settings import get_settings

VERSION_TABLE = "alembic_version"  # Alembic's default, which env.py keeps


def alembic_config(url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    config.set_main_option("sqlalchemy.url", url or get_settings().resolved_database_url)
    return config


def upgrade(url: str | None = None) -> None:
    settings = get_settings()
    if (url or settings.resolved_database_url).startswith("sqlite"):
        settings.state_dir.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(url), "head")


@dataclass(frozen=True)
class MigrationState:
    """The database's Alembic revision against this code's head. ``behind``: the database
    lacks migrations this code needs (``unlearnd migrate``); a revision this code does not
    know (a newer release migrated it) is ``ahead``."""

    current: str | None
    head: str
    state: str  # "at_head" | "behind" | "ahead"


def _current_revision(connection: Connection) -> str | None:
    """The database's revision, read from Alembic's table directly: a MigrationContext
    logs a line each time, and readiness probes ask every few seconds."""
    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    return connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


@lru_cache(maxsize=1)
def _scripts() -> ScriptDirectory:
    """The migrations this code ships (read once: they do not change under a process)."""
    return ScriptDirectory.from_config(alembic_config("sqlite://"))


def migration_state(connection: Connection) -> MigrationState:
    script = _scripts()
    head = script.get_current_head() or ""
    current = _current_revision(connection)
    if current == head:
        return MigrationState(current, head, "at_head")
    try:
        known = current is None or script.get_revision(current) is not None
    except CommandError:
        known = False
    return MigrationState(current, head, "behind" if known else "ahead")
