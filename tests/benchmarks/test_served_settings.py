"""The benchmarks serve the production configuration: it must be one production accepts
(a missing audit signing key once stopped `make bench` at its first server)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks.api_ingest import service_settings
from service.settings import Settings


def test_the_measured_servers_settings_are_valid_in_production(monkeypatch, tmp_path: Path):
    env = service_settings("postgresql+psycopg://u@127.0.0.1/db", "redis://127.0.0.1/15", tmp_path)
    for name in list(os.environ):
        if name.startswith("UNLEARN_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.environment == "production" and settings.audit_signer is not None
    monkeypatch.delenv("UNLEARN_AUDIT_SIGNING_KEY")
    with pytest.raises(ValueError, match="UNLEARN_AUDIT_SIGNING_KEY"):
        Settings()
