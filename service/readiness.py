"""What ``/readyz`` reports: this release's version, the database (reachable, and migrated
to the head this code needs), the broker, and the workers seen in the last minute per
queue with their devices (``service.presence``). Unreachable database or broker, or a
database behind this code's migrations, is :class:`Unavailable` (503); no worker on a queue
is reported, not refused: the API serves without workers, and alerts say when work waits
for one (deploy/alerts.yml)."""

from __future__ import annotations

import logging
import time
from typing import Any

from service import outbox, presence
from service.db import session_scope
from service.errors import Unavailable
from service.version import VERSION

__all__ = ["readiness"]

log = logging.getLogger(__name__)


def readiness() -> dict[str, Any]:
    # Alembic on first use: importing it logs its plugins, which a worker (that imports the
    # app but never answers /readyz) should not.
    from service.migrate import migration_state

    checks: dict[str, Any] = {"version": VERSION, "database": "ok"}
    try:
        with session_scope() as session:
            state = migration_state(session.connection())
    except Exception:
        down = {**checks, "database": "down"}
        raise Unavailable("the database is unreachable", retry_after=None, checks=down) from None
    checks["migration"] = {"current": state.current, "head": state.head, "state": state.state}
    if state.state == "behind":
        raise Unavailable(
            f"the database is at migration {state.current or 'none'}, this release needs "
            f"{state.head}: run `unlearnd migrate`",
            retry_after=None,
            checks=checks,
        )
    checks["broker"] = outbox.broker_status()
    if checks["broker"] == "down":
        raise Unavailable("the broker is unreachable", retry_after=None, checks=checks)
    checks["workers"] = _workers()
    return {"status": "ready", **checks}


def _workers() -> dict[str, Any] | str:
    """Per queue, the workers seen in the last minute; "unknown" when beats cannot be read
    (a broker other than Redis, or Redis away)."""
    now = time.time()
    try:
        beats = presence.seen(now)
    except Exception as error:
        log.warning("readyz: worker beats unreadable (%s)", error)
        return "unknown"
    return "unknown" if beats is None else presence.by_queue(beats, now)
