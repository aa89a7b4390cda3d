"""What ``serve`` does before it listens: migrate the embedded database, make sure an admin
key exists, and (``UNLEARN_DEMO_MODEL``) register the digits demo model."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select

from service import keys
from service.db import session_scope
from service.settings import get_settings
from service.tables import Model

DEMO_TENANT = "default"


def prepare(*, announce: Callable[[str], None]) -> None:
    settings = get_settings()
    if settings.resolved_database_url.startswith("sqlite"):
        from service.migrate import upgrade

        upgrade()
    with session_scope() as session:
        if not keys.any_key_exists(session):
            if settings.bootstrap_admin_key:
                keys.create_key_from_plaintext(
                    session,
                    tenant_name=DEMO_TENANT,
                    scopes=["admin"],
                    plaintext=settings.bootstrap_admin_key,
                )
                announce("installed UNLEARN_BOOTSTRAP_ADMIN_KEY as the admin key of 'default'")
            else:
                _, plaintext = keys.create_key(
                    session, tenant_name=DEMO_TENANT, scopes=["admin"], name="first admin"
                )
                announce(f"created the first admin key (shown once): {plaintext}")
    if settings.demo_model:
        register_demo(announce)


def register_demo(announce: Callable[[str], None]) -> None:
    from service.datasets import service as datasets
    from service.datasets.schemas import DatasetCreate
    from service.models import service as models
    from service.models.schemas import ModelCreate

    with session_scope() as session:
        tenant = keys.get_or_create_tenant(session, DEMO_TENANT)
        session.commit()
        if session.scalar(select(Model).where(Model.tenant_id == tenant.id, Model.name == "demo")):
            return
        dataset = datasets.register(
            session,
            tenant_id=tenant.id,
            spec=DatasetCreate.model_validate(
                {
                    "name": "digits",
                    "source": {"kind": "builtin", "name": "sklearn-digits"},
                    "holdout_fraction": 0.1,
                }
            ),
        )
        model = models.create(
            session,
            tenant_id=tenant.id,
            spec=ModelCreate.model_validate(
                {
                    "name": "demo",
                    "dataset_id": dataset.id,
                    "architecture": {"name": "small_cnn", "params": {}},
                    "unlearner": {"name": "finetune", "params": {}},
                    "batching": {"max_requests": 10, "max_wait_seconds": 30},
                    "training": {"epochs": 15},
                }
            ),
        )
        announce(f"demo model 'demo' ({model.id}) on dataset 'digits' ({dataset.id}): training")
