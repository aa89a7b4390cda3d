"""What ``serve`` does before it listens: migrate the embedded database, make sure an admin
key exists, and (``UNLEARN_DEMO_MODEL``) register the digits demo model."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db import session_scope
from service.keys import service as keys
from service.settings import get_settings
from service.tables import Model

DEMO_TENANT = "default"


class RefusedToStart(RuntimeError):
    """Serving now would be unsafe; the message says what the operator must do."""


def prepare(*, announce: Callable[[str], None]) -> None:
    settings = get_settings()
    if settings.resolved_database_url.startswith("sqlite"):
        from service.migrate import upgrade

        upgrade()
    bootstrap_key = settings.bootstrap_admin_key.get_secret_value()
    with session_scope() as session:
        if settings.environment == "production":
            _refuse_development_keys(session)
        if not keys.any_key_exists(session):
            if bootstrap_key:
                keys.create_key_from_plaintext(
                    session, tenant_name=DEMO_TENANT, scopes=["admin"], plaintext=bootstrap_key
                )
                announce("installed UNLEARN_BOOTSTRAP_ADMIN_KEY as the admin key of 'default'")
            else:
                _, plaintext = keys.create_key(
                    session, tenant_name=DEMO_TENANT, scopes=["admin"], name="first admin"
                )
                announce(f"created the first admin key (shown once): {plaintext}")
        elif bootstrap_key and not keys.is_stored(session, bootstrap_key):
            announce(
                "UNLEARN_BOOTSTRAP_ADMIN_KEY was NOT installed: keys already exist, and it only "
                "seeds an empty database. Create keys with `unlearnd keys create` or rotate "
                "them with `unlearnd keys rotate`."
            )
    if settings.demo_model:
        register_demo(announce)


def _refuse_development_keys(session: Session) -> None:
    """Production never serves while a published development key is stored unrevoked:
    authentication refuses it anyway, and the operator should know it is there."""
    found = keys.stored_development_keys(session)
    if found:
        ids = ", ".join(key.id for key in found)
        raise RefusedToStart(
            f"a development API key is stored ({ids}); production refuses it. "
            f"Revoke it with `unlearnd keys revoke <id>` before serving."
        )


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
