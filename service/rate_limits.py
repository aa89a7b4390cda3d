"""Rate limits: a GCRA token bucket per key (``key:<id>``) and per client address for failed
authentications (``auth-fail:<address>``).

Every API process shares one budget through Redis when a Redis broker is configured; the
embedded default keeps it in process. If Redis stops answering, limits fall back to this
process's own bucket for a few seconds rather than refusing or stalling requests: the broker
carries nudges, it is not allowed to take the API down (docs/architecture.md, rule 1).

GCRA (the generic cell rate algorithm) stores one number per bucket, the theoretical
arrival time (TAT): a call at ``now`` is allowed when ``max(TAT, now) + T - now <= burst * T``
(T = 1 / rate), and moves the TAT on by T.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

import redis
import redis.asyncio
from redis.commands.core import AsyncScript

log = logging.getLogger(__name__)

__all__ = ["Rate", "Limiter", "LocalLimiter", "RedisLimiter", "limiter_for"]


@dataclass(frozen=True)
class Rate:
    per_second: float
    burst: int

    @property
    def interval(self) -> float:
        return 1.0 / self.per_second


class Limiter(Protocol):
    async def take(self, bucket: str, rate: Rate, *, consume: bool = True) -> float:
        """0 when a call is allowed now (and counted, unless ``consume`` is false);
        otherwise the seconds until it would be."""
        ...


class LocalLimiter:
    """Buckets in this process (the embedded default, and the fallback while Redis is away)."""

    MAX_BUCKETS = 100_000

    def __init__(self) -> None:
        self._tats: dict[str, float] = {}
        self._lock = threading.Lock()

    async def take(self, bucket: str, rate: Rate, *, consume: bool = True) -> float:
        return self.take_now(bucket, rate, consume=consume)

    def take_now(self, bucket: str, rate: Rate, *, consume: bool = True) -> float:
        now = time.monotonic()
        with self._lock:
            tat = max(self._tats.get(bucket, now), now)
            excess = tat + rate.interval - now - rate.burst * rate.interval
            if excess > 0:
                return excess
            if consume:
                if len(self._tats) >= self.MAX_BUCKETS:
                    self._forget_idle(now)
                self._tats[bucket] = tat + rate.interval
            return 0.0

    def _forget_idle(self, now: float) -> None:
        for bucket in [b for b, tat in self._tats.items() if tat <= now]:
            del self._tats[bucket]


# KEYS[1] bucket; ARGV interval, burst, consume. Redis's own clock, so every API process
# agrees whatever its host's clock says. Returns the excess in seconds as a string (a Lua
# number would be truncated to an integer), "0" when allowed.
_GCRA = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local excess = tat + interval - now - tonumber(ARGV[2]) * interval
if excess > 0 then return tostring(excess) end
if ARGV[3] == '1' then
  local ttl = math.ceil((tat + interval - now) * 1000)
  redis.call('SET', KEYS[1], tostring(tat + interval), 'PX', ttl)
end
return '0'
"""


class RedisLimiter:
    """Buckets shared by every API process through Redis, asked without blocking the event
    loop (redis' asyncio client: one per loop, since its connections belong to one)."""

    PREFIX = "unlearnd:rate:"
    FALLBACK_SECONDS = 5.0

    def __init__(self, url: str) -> None:
        self._url = url
        self._scripts: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncScript] = (
            weakref.WeakKeyDictionary()
        )
        self._local = LocalLimiter()
        self._redis_back_at = 0.0

    def _script(self) -> AsyncScript:
        loop = asyncio.get_running_loop()
        script = self._scripts.get(loop)
        if script is None:
            client = redis.asyncio.Redis.from_url(
                self._url, socket_timeout=0.25, socket_connect_timeout=0.25
            )
            script = self._scripts[loop] = client.register_script(_GCRA)
        return script

    async def take(self, bucket: str, rate: Rate, *, consume: bool = True) -> float:
        if time.monotonic() < self._redis_back_at:
            return self._local.take_now(bucket, rate, consume=consume)
        try:
            excess = await self._script()(
                keys=[self.PREFIX + bucket],
                args=[repr(rate.interval), rate.burst, "1" if consume else "0"],
            )
        except redis.RedisError as error:
            log.warning(
                "rate limits: Redis unavailable (%s); limiting in process for %.0f s",
                type(error).__name__,
                self.FALLBACK_SECONDS,
            )
            self._redis_back_at = time.monotonic() + self.FALLBACK_SECONDS
            return self._local.take_now(bucket, rate, consume=consume)
        return float(excess)


@lru_cache(maxsize=4)
def limiter_for(broker_url: str) -> Limiter:
    """Redis when the broker is Redis, this process otherwise (one per broker URL)."""
    if broker_url.startswith(("redis://", "rediss://", "unix://")):
        return RedisLimiter(broker_url)
    return LocalLimiter()
