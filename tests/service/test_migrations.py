"""Migrations that can refuse: what they say when the data stands in their way."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import create_engine, text

from service.migrate import alembic_config


def test_tenant_names_differing_by_case_stop_the_upgrade_and_are_named(sqlite_env, tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    command.upgrade(alembic_config(url), "0007")
    engine = create_engine(url)
    with engine.begin() as connection:
        for i, name in enumerate(["Acme", "acme", "globex"]):
            connection.execute(
                text("INSERT INTO tenants (id, name, created_at) VALUES (:id, :name, :at)"),
                {"id": f"t{i}", "name": name, "at": "2026-01-01 00:00:00"},
            )
    with pytest.raises(RuntimeError, match="differ only by case: acme;"):
        command.upgrade(alembic_config(url), "head")
    with engine.begin() as connection:
        connection.execute(text("UPDATE tenants SET name = 'acme-eu' WHERE id = 't0'"))
    command.upgrade(alembic_config(url), "head")
    with engine.begin() as connection, pytest.raises(Exception, match="UNIQUE"):
        connection.execute(
            text("INSERT INTO tenants (id, name, created_at) VALUES ('t9', 'GLOBEX', '2026')")
        )
    engine.dispose()
