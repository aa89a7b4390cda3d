from fastapi import APIRouter, Response
from sqlalchemy import text

from service import metrics, outbox
from service.db import session_scope
from service.errors import DomainError

router = APIRouter(tags=["operations"])


class Unavailable(DomainError):
    status, title, slug = 503, "Service unavailable", "unavailable"


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "database or broker unreachable"}})
def readyz() -> dict[str, str]:
    checks = {"database": "ok"}
    try:
        with session_scope() as session:
            session.execute(text("SELECT 1"))
    except Exception:
        raise Unavailable(
            "the database is unreachable", checks={**checks, "database": "down"}
        ) from None
    checks["broker"] = outbox.broker_status()
    if checks["broker"] == "down":
        raise Unavailable("the broker is unreachable", checks=checks)
    return {"status": "ready", **checks}


def metrics_endpoint() -> Response:
    return Response(metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")
