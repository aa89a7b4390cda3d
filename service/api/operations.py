import hmac

from fastapi import APIRouter, Request, Response
from sqlalchemy import text

from service import metrics, outbox
from service.db import session_scope
from service.errors import Unauthenticated, Unavailable
from service.settings import get_settings

router = APIRouter(tags=["operations"])


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
        down = {**checks, "database": "down"}
        raise Unavailable("the database is unreachable", retry_after=None, checks=down) from None
    checks["broker"] = outbox.broker_status()
    if checks["broker"] == "down":
        raise Unavailable("the broker is unreachable", retry_after=None, checks=checks)
    return {"status": "ready", **checks}


def metrics_endpoint(request: Request) -> Response:
    """Prometheus text. With ``UNLEARN_METRICS_TOKEN`` set, only a scrape bearing it is
    served, and it also gets the per-model series (they name model ids); without it the
    endpoint is open (docs/api.md) and serves aggregates only."""
    token = get_settings().metrics_token.get_secret_value()
    if token:
        offered = request.headers.get("authorization", "").partition(" ")[2].strip()
        if not hmac.compare_digest(offered.encode(), token.encode()):
            raise Unauthenticated("this /metrics needs 'Authorization: Bearer <metrics token>'")
    body = metrics.exposition(per_model=bool(token))
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")
