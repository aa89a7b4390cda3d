from fastapi import APIRouter, Response
from sqlalchemy import text

from service import metrics
from service.db import session_scope
from service.errors import DomainError
from service.settings import get_settings

router = APIRouter(tags=["operations"])


class Unavailable(DomainError):
    status, title, slug = 503, "Service unavailable", "unavailable"


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "database or broker unreachable"}})
def readyz() -> dict[str, str]:
    checks = {"database": "ok", "broker": "embedded"}
    try:
        with session_scope() as session:
            session.execute(text("SELECT 1"))
    except Exception:
        raise Unavailable(
            "the database is unreachable", checks={**checks, "database": "down"}
        ) from None
    settings = get_settings()
    if not settings.embedded_worker:
        try:
            from workers.celery_app import app

            with app.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1, timeout=2)
            checks["broker"] = "ok"
        except Exception:
            raise Unavailable(
                "the broker is unreachable", checks={**checks, "broker": "down"}
            ) from None
    return {"status": "ready", **checks}


def metrics_endpoint() -> Response:
    return Response(metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")
