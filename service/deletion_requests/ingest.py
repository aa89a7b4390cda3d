"""The ingest path's group commit: handlers hand checked submissions to this process's
batcher, which stores many of them in one transaction (``service.create_batch``) and answers
each caller once that transaction has committed. A 202 still means "committed"; a burst
costs one commit, one change-stamp update and a fixed handful of queries per batch instead
of per request.

Up to ``UNLEARN_INGEST_BATCHES_IN_FLIGHT`` batches run at once per event loop; whatever
arrives meanwhile forms the next one (up to ``UNLEARN_INGEST_BATCH_MAX`` requests, after an
optional ``UNLEARN_INGEST_BATCH_WAIT_MS`` of lingering). On Postgres the batch runs on the loop
itself, over psycopg's async driver (the domain code runs in SQLAlchemy's greenlet bridge,
``AsyncSession.run_sync``); on SQLite, whose driver has no async side, in a worker thread.

What a caller can be answered: its request, a replay of its idempotency key's first
answer, its own problem (batch-mates' problems never reach it), or 503 when the database
failed during its batch, in which case nothing of that batch was stored.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import deque
from typing import Any

from sqlalchemy.exc import DBAPIError

from service import db, metrics
from service.deletion_requests import service
from service.deletion_requests.schemas import BulkRejection, BulkResult, DeletionRequestRead
from service.deletion_requests.service import Outcome, Submission
from service.errors import DomainError, Unavailable, client_error
from service.settings import get_settings

__all__ = ["Batcher", "submit", "submit_bulk", "close"]

log = logging.getLogger(__name__)


class Batcher:
    def __init__(self, *, max_size: int, wait_seconds: float, in_flight: int = 2) -> None:
        self.max_size = max_size
        self.wait_seconds = wait_seconds
        self.in_flight = in_flight
        self._queue: deque[tuple[Submission, asyncio.Future[dict[str, Any]]]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._claimed: set[tuple[str, str]] = set()  # idempotency keys of running batches

    async def submit(self, item: Submission) -> dict[str, Any]:
        """The request's JSON once committed; raises its problem otherwise."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="ingest-batcher")
        self._wake.set()
        return await future

    async def close(self) -> None:
        for task in (self._task, *self._running):
            if task is not None:
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        for _, future in self._queue:
            if not future.done():
                future.set_exception(Unavailable("the server is shutting down"))
        self._queue.clear()

    async def _run(self) -> None:
        """Start a batch whenever requests wait and fewer than ``in_flight`` batches run:
        while one batch waits on the database, the next one is being built."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self.wait_seconds > 0:
                await asyncio.sleep(self.wait_seconds)
            while self._queue and len(self._running) < self.in_flight:
                batch = self._take()
                if not batch:
                    break  # every waiting request repeats a running batch's key
                task = asyncio.create_task(self._commit(batch))
                self._running.add(task)
                task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._wake.set()

    async def _commit(self, batch: list[tuple[Submission, asyncio.Future[dict[str, Any]]]]) -> None:
        metrics.INGEST_BATCH.observe(len(batch))
        claimed = {_pair(item) for item, _ in batch if item.idempotency_key is not None}
        self._claimed |= claimed
        outcomes: list[Outcome | _Failed]
        try:
            outcomes = list(await settle([item for item, _ in batch]))
        except Exception as error:  # a bug of ours: every caller answers 500
            log.exception("ingest batch failed")
            outcomes = [_Failed(error)] * len(batch)
        finally:
            self._claimed -= claimed
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if future.done():  # the caller went away
                continue
            if isinstance(outcome, dict):
                future.set_result(outcome)
            else:
                future.set_exception(outcome.error if isinstance(outcome, _Failed) else outcome)

    def _take(self) -> list[tuple[Submission, asyncio.Future[dict[str, Any]]]]:
        """The next batch: callers still waiting, at most one per idempotency key and none
        whose key a running batch holds (a repeat waits for a later batch, where it meets
        the first one's answer)."""
        batch: list[tuple[Submission, asyncio.Future[dict[str, Any]]]] = []
        held: list[tuple[Submission, asyncio.Future[dict[str, Any]]]] = []
        seen: set[tuple[str, str]] = set()
        while self._queue and len(batch) < self.max_size:
            item, future = self._queue.popleft()
            if future.done():  # the caller went away before its request was stored
                continue
            if item.idempotency_key is not None:
                pair = _pair(item)
                if pair in seen or pair in self._claimed:
                    held.append((item, future))
                    continue
                seen.add(pair)
            batch.append((item, future))
        self._queue.extendleft(reversed(held))
        return batch


def _pair(item: Submission) -> tuple[str, str]:
    return item.tenant_id, item.idempotency_key or ""


class _Failed:
    def __init__(self, error: Exception) -> None:
        self.error = error


async def settle(items: list[Submission]) -> list[Outcome]:
    """Each item's outcome. A value the database refused (a client's, 422) is found by
    running the items one by one, so its batch-mates are unaffected; any other database
    error answers every item 503 (its transaction rolled back: none is stored)."""
    try:
        return await _execute(items)
    except DBAPIError as error:
        refused = client_error(error)
        if refused is not None:
            if len(items) == 1:
                return [refused]
            return [outcome for item in items for outcome in await settle([item])]
        log.warning("ingest batch of %d rolled back: %s", len(items), type(error.orig).__name__)
        return [Unavailable("the database failed; nothing was stored")] * len(items)


async def _execute(items: list[Submission]) -> list[Outcome]:
    session = db.async_session()
    if session is None:
        return await asyncio.to_thread(_in_thread, items)
    async with session:
        return await session.run_sync(service.create_batch, items)


def _in_thread(items: list[Submission]) -> list[Outcome]:
    session = db.new_session()
    try:
        return service.create_batch(session, items)
    finally:
        session.close()


# One batcher per event loop (a served process has one; each test client its own).
_batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Batcher] = (
    weakref.WeakKeyDictionary()
)


def _batcher() -> Batcher:
    loop = asyncio.get_running_loop()
    batcher = _batchers.get(loop)
    if batcher is None:
        settings = get_settings()
        batcher = Batcher(
            max_size=settings.ingest_batch_max,
            wait_seconds=settings.ingest_batch_wait_ms / 1000,
            in_flight=settings.ingest_batches_in_flight,
        )
        _batchers[loop] = batcher
    return batcher


async def submit(item: Submission) -> dict[str, Any]:
    """Store one request through this loop's batcher; its JSON once committed."""
    return await _batcher().submit(item)


async def submit_bulk(
    *, tenant_id: str, items: list[dict[str, Any]], idempotency_key: str | None = None
) -> BulkResult:
    """``:bulk``: every valid item goes to the batcher at once (they share its next batch);
    the answer lists what was accepted and, by index, the problem of each item that was
    not. An item whose batch failed in the database is listed with its 503, so the answer
    always says what was stored; when no item was stored for that reason the call is 503."""
    checked = service.bulk_submissions(
        tenant_id=tenant_id, items=items, idempotency_key=idempotency_key
    )
    batcher = _batcher()
    pending = {
        index: batcher.submit(item)
        for index, item in enumerate(checked)
        if isinstance(item, Submission)
    }
    results = dict(
        zip(pending, await asyncio.gather(*pending.values(), return_exceptions=True), strict=True)
    )
    accepted, rejected = [], []
    for index, item in enumerate(checked):
        outcome: Any = results.get(index, item)
        if isinstance(outcome, dict):
            accepted.append(DeletionRequestRead.model_validate(outcome))
        elif isinstance(outcome, DomainError):
            rejected.append(BulkRejection(index=index, problem=outcome.problem()))
        else:
            raise outcome
    if not accepted and any(isinstance(results.get(r.index), Unavailable) for r in rejected):
        raise Unavailable("the database failed; nothing was stored")
    return BulkResult(accepted=accepted, rejected=rejected)


async def close() -> None:
    """Stop this loop's batcher and close its async engine (at shutdown)."""
    batcher = _batchers.pop(asyncio.get_running_loop(), None)
    if batcher is not None:
        await batcher.close()
    await db.close_async_engine()
