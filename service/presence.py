"""Which workers are alive, and on which device: every worker process tree writes a beat
(its name, queues and device) every :data:`BEAT_SECONDS`; ``/readyz`` and ``/metrics`` list
the ones seen within :data:`SEEN_SECONDS`, per queue.

Beats travel through the broker's Redis, each under its own key that expires after
:data:`SEEN_SECONDS`, so a worker that stops beating drops out by itself. The embedded
default keeps them in this process (its worker runs here). With another broker, nothing
is recorded and :func:`seen` says so (``None``)."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict, dataclass
from functools import lru_cache

import redis

from service import outbox
from service.settings import get_settings

__all__ = ["BEAT_SECONDS", "SEEN_SECONDS", "WorkerBeat", "record", "forget", "seen", "by_queue"]

log = logging.getLogger(__name__)

SEEN_SECONDS = 60
BEAT_SECONDS = 15
KEY_PREFIX = "unlearnd:worker:"


@dataclass(frozen=True)
class WorkerBeat:
    """One worker process tree: ``device`` is None for one that runs no jobs (dispatch,
    callbacks)."""

    name: str
    queues: tuple[str, ...]
    device: str | None
    torch: str | None
    cuda: str | None
    at: float  # time.time() of the beat


_local: dict[str, WorkerBeat] = {}
_local_lock = threading.Lock()


@lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def _redis_url() -> str | None:
    """The Redis beats go through; "" for the embedded default; None for a broker that is
    not Redis."""
    url = get_settings().broker_url
    if not url:
        return ""
    return url if url.startswith(("redis://", "rediss://", "unix://")) else None


def record(beat: WorkerBeat) -> None:
    """Note ``beat``; raises when Redis is away (the caller logs and beats again)."""
    url = _redis_url()
    if url == "":
        with _local_lock:
            _local[beat.name] = beat
    elif url is not None:
        payload = json.dumps({**asdict(beat), "queues": list(beat.queues)})
        _client(url).set(KEY_PREFIX + beat.name, payload, ex=SEEN_SECONDS)


def seen(now: float | None = None) -> list[WorkerBeat] | None:
    """The workers that beat within :data:`SEEN_SECONDS`, by name; None when this broker
    carries no beats. Raises when Redis is away."""
    now = time.time() if now is None else now
    url = _redis_url()
    if url is None:
        return None
    if url == "":
        with _local_lock:
            beats = list(_local.values())
    else:
        client = _client(url)
        keys = sorted(client.scan_iter(match=KEY_PREFIX + "*", count=500))
        beats = []
        for raw in client.mget(keys) if keys else []:
            if raw is None:  # expired between the scan and the read
                continue
            fields = json.loads(raw)
            beats.append(WorkerBeat(**{**fields, "queues": tuple(fields["queues"])}))
    return sorted(
        (beat for beat in beats if now - beat.at <= SEEN_SECONDS), key=lambda beat: beat.name
    )


def by_queue(beats: list[WorkerBeat], now: float | None = None) -> dict[str, list[dict]]:
    """``beats`` listed under every queue of the service (an empty list: no worker)."""
    now = time.time() if now is None else now
    listed: dict[str, list[dict]] = {queue: [] for queue in outbox.QUEUES}
    for beat in beats:
        entry = {
            "name": beat.name,
            "device": beat.device,
            "torch": beat.torch,
            "cuda": beat.cuda,
            "seen_seconds_ago": round(max(0.0, now - beat.at), 1),
        }
        for queue in beat.queues:
            listed.setdefault(queue, []).append(entry)
    return listed


def forget(name: str) -> None:
    """Drop ``name``'s beat (a worker that stops cleanly), so it is not listed for the rest
    of the minute. Raises when Redis is away."""
    url = _redis_url()
    if url == "":
        with _local_lock:
            _local.pop(name, None)
    elif url is not None:
        _client(url).delete(KEY_PREFIX + name)


def forget_local() -> None:
    """Drop the in-process beats (an embedded runner that stopped; tests)."""
    with _local_lock:
        _local.clear()
