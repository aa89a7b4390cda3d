import hmac
from typing import Any

from fastapi import APIRouter, Request, Response

from service import metrics
from service.errors import Unauthenticated
from service.readiness import readiness
from service.settings import get_settings

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={
        503: {
            "description": "database or broker unreachable, or the database is behind "
            "this release's migrations (run `unlearnd migrate`)"
        }
    },
)
def readyz() -> dict[str, Any]:
    """Version, database (and its migration against this release's head), broker, and the
    workers seen in the last minute per queue with their devices (docs/operations.md)."""
    return readiness()


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
