"""Structured logs: one JSON object per line, carrying the id of the HTTP request or job it
belongs to. What they never carry: SQL parameters (engines hide them), raw URLs (the access
log names the route template, not the path or query; callback URLs are not logged, httpx's
request lines included), API keys, sample keys, and subject ids (only their keyed digest,
``subject_digest``: service.subjects)."""

from __future__ import annotations

import json
import logging
import logging.config
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

__all__ = ["JsonFormatter", "context", "config", "configure"]

# The HTTP request id or the job id of the work in hand (copied into worker threads).
context: ContextVar[dict[str, str] | None] = ContextVar("unlearnd_log_context", default=None)

_RECORD_FIELDS = set(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "context",
}
_make_record = logging.getLogRecordFactory()


def _record_with_context(*args: Any, **kwargs: Any) -> logging.LogRecord:
    # The context is read when the record is made, in the thread and task that made it.
    record = _make_record(*args, **kwargs)
    record.context = context.get() or {}
    return record


if getattr(_make_record, "__name__", "") != "_record_with_context":
    logging.setLogRecordFactory(_record_with_context)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, "context", {}),
        }
        for name, value in record.__dict__.items():
            if name not in _RECORD_FIELDS and not name.startswith("_") and name != "color_message":
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=True)


def config(*, level: str = "INFO", access_log: bool = True) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for every process (uvicorn applies it in each of its
    worker processes too). uvicorn's own access log is off: it logs raw paths and query
    strings, which carry subject ids and sample keys; ours is ``unlearnd.access``."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "service.logs.JsonFormatter"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [], "propagate": False, "level": "CRITICAL"},
            "unlearnd.access": {"level": "INFO" if access_log else "WARNING"},
            # httpx logs every request's URL at INFO: a callback URL's query string may
            # carry the receiver's token.
            "httpx": {"level": "WARNING"},
            "httpcore": {"level": "WARNING"},
        },
    }


def configure(*, access_log: bool = True) -> dict[str, Any]:
    settings = config(access_log=access_log)
    logging.config.dictConfig(settings)
    return settings
