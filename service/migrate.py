"""Alembic upgrade to head, from code (``unlearnd migrate`` and the embedded default)."""

from pathlib import Path

from alembic import command
from alembic.config import Config

import migrations
from service.settings import get_settings


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
