"""``Client`` and ``AsyncClient``: the same operations (``unlearnd_client._core``), driven
by a blocking or an asyncio transport. Nothing here but sending, sleeping and the methods'
signatures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, TypeVar

import httpx

from unlearnd_client._core import Call, Core, Operation, PageOperation, Sleep
from unlearnd_client.models import (
    BulkResult,
    Caller,
    Certificate,
    Dataset,
    DeletionRequest,
    Job,
    Model,
    Page,
    Refresh,
    Sample,
    Version,
    Webhook,
)

__all__ = ["AsyncClient", "Client"]

T = TypeVar("T")
DEFAULT_TIMEOUT = 30.0


def _headers(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}", "User-Agent": "unlearnd-client-python/0.1"}


def _request(http: httpx.Client | httpx.AsyncClient, call: Call) -> httpx.Request:
    return http.build_request(
        call.method, call.path, params=call.params, json=call.json, headers=call.headers
    )


class Client:
    """The unlearnd API over a blocking connection pool; use it as a context manager or
    ``close()`` it. ``http`` replaces the ``httpx.Client`` it makes (its base URL and
    headers are then yours to set)."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = 3,
        max_retry_wait: float = 60.0,
        http: httpx.Client | None = None,
    ) -> None:
        self._core = Core(max_retries=max_retries, max_retry_wait=max_retry_wait)
        self._http = http or httpx.Client(
            base_url=base_url, headers=_headers(api_key), timeout=timeout
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _run(self, operation: Operation[T]) -> T:
        outcome: Any = None
        try:
            while True:
                step = operation.send(outcome)
                if isinstance(step, Sleep):
                    time.sleep(step.seconds)
                    outcome = None
                    continue
                try:
                    outcome = self._http.send(_request(self._http, step))
                except httpx.TransportError as error:
                    outcome = error
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    def _iterate(self, page: PageOperation) -> Iterator[Any]:
        cursor: str | None = None
        while True:
            answer = self._run(page(cursor))
            yield from answer.items
            if answer.next_cursor is None:
                return
            cursor = answer.next_cursor

    def me(self) -> Caller:
        """The key's tenant and scopes."""
        return self._run(self._core.me())

    def create_dataset(
        self,
        name: str,
        source: dict[str, Any],
        *,
        holdout_fraction: float = 0.1,
        seed: int | None = None,
        respond_async: bool = False,
    ) -> Dataset:
        """Register a dataset: ``ready`` when the service indexed it in the call, else
        ``registering`` by a job (a large source, or ``respond_async``: ``Prefer:
        respond-async``); ``wait_for_dataset`` waits for the job."""
        return self._run(
            self._core.create_dataset(name, source, holdout_fraction, seed, respond_async)
        )

    def wait_for_dataset(
        self, dataset_id: str, *, timeout: float = 600.0, interval: float = 2.0
    ) -> Dataset:
        """The dataset once ready or failed (``WaitTimeout`` after ``timeout`` seconds);
        it is read every ``interval`` seconds."""
        return self._run(self._core.poll_dataset(dataset_id, timeout=timeout, interval=interval))

    def create_webhook(
        self,
        url: str,
        events: list[str],
        *,
        model_id: str | None = None,
        description: str = "",
    ) -> Webhook:
        """Subscribe ``url`` to ``events`` (of one model, or every model); the answer
        carries the ``secret`` its deliveries are signed with, shown this once."""
        return self._run(self._core.create_webhook(url, events, model_id, description))

    def get_dataset(self, dataset_id: str) -> Dataset:
        return self._run(self._core.get_dataset(dataset_id))

    def refresh_dataset(self, dataset_id: str) -> Refresh:
        """New keys in the source join the dataset as its next generation; changed or
        vanished active samples are reported, not taken."""
        return self._run(self._core.refresh_dataset(dataset_id))

    def list_datasets(
        self, *, limit: int | None = None, cursor: str | None = None
    ) -> Page[Dataset]:
        return self._run(self._core.list_datasets(limit=limit, cursor=cursor))

    def iter_datasets(self, *, limit: int | None = None) -> Iterator[Dataset]:
        return self._iterate(lambda cursor: self._core.list_datasets(limit=limit, cursor=cursor))

    def list_samples(
        self,
        dataset_id: str,
        *,
        split: str | None = None,
        state: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[Sample]:
        """A dataset's samples (``split``: train, holdout, test; ``state``: active,
        forgotten), in dataset order."""
        return self._run(
            self._core.list_samples(
                dataset_id, split=split, state=state, limit=limit, cursor=cursor
            )
        )

    def iter_samples(
        self,
        dataset_id: str,
        *,
        split: str | None = None,
        state: str | None = None,
        limit: int | None = None,
    ) -> Iterator[Sample]:
        return self._iterate(
            lambda cursor: self._core.list_samples(
                dataset_id, split=split, state=state, limit=limit, cursor=cursor
            )
        )

    def create_model(
        self, name: str, dataset_id: str, architecture: dict[str, Any], **spec: Any
    ) -> Model:
        """``spec``: the rest of ``POST /v1/models`` (unlearner, batching, training, ...)."""
        body = {"name": name, "dataset_id": dataset_id, "architecture": architecture, **spec}
        return self._run(self._core.create_model(body))

    def get_model(self, model_id: str) -> Model:
        return self._run(self._core.get_model(model_id))

    def list_models(self, *, limit: int | None = None, cursor: str | None = None) -> Page[Model]:
        return self._run(self._core.list_models(limit=limit, cursor=cursor))

    def iter_models(self, *, limit: int | None = None) -> Iterator[Model]:
        return self._iterate(lambda cursor: self._core.list_models(limit=limit, cursor=cursor))

    def flush_model(self, model_id: str) -> int:
        """Batch what is pending now; the number of pending requests."""
        return self._run(self._core.flush_model(model_id))

    def get_version(self, model_id: str, number: int) -> Version:
        return self._run(self._core.get_version(model_id, number))

    def list_versions(
        self, model_id: str, *, limit: int | None = None, cursor: str | None = None
    ) -> Page[Version]:
        return self._run(self._core.list_versions(model_id, limit=limit, cursor=cursor))

    def iter_versions(self, model_id: str, *, limit: int | None = None) -> Iterator[Version]:
        return self._iterate(
            lambda cursor: self._core.list_versions(model_id, limit=limit, cursor=cursor)
        )

    def create_deletion_request(
        self,
        model_id: str,
        subject_id: str,
        *,
        sample_keys: list[str] | None = None,
        class_labels: list[int] | None = None,
        callback_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> DeletionRequest:
        """Submit one request (at most one of ``sample_keys`` and ``class_labels``; neither:
        every training sample of the subject, in a dataset with subjects). An
        ``Idempotency-Key`` is made when none is given and reused by every retry."""
        return self._run(
            self._core.create_deletion_request(
                model_id=model_id,
                subject_id=subject_id,
                sample_keys=sample_keys,
                class_labels=class_labels,
                callback_url=callback_url,
                idempotency_key=idempotency_key,
            )
        )

    def create_deletion_requests(
        self, requests: list[dict[str, Any]], *, idempotency_key: str | None = None
    ) -> BulkResult:
        """Submit many requests in one call (``:bulk``); see ``BulkResult.rejected``."""
        return self._run(
            self._core.create_deletion_requests(requests, idempotency_key=idempotency_key)
        )

    def get_deletion_request(self, request_id: str) -> DeletionRequest:
        return self._run(self._core.get_deletion_request(request_id))

    def list_deletion_requests(
        self,
        *,
        model_id: str | None = None,
        status: str | None = None,
        subject_id: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[DeletionRequest]:
        return self._run(
            self._core.list_deletion_requests(
                model_id=model_id,
                status=status,
                subject_id=subject_id,
                limit=limit,
                cursor=cursor,
            )
        )

    def iter_deletion_requests(
        self,
        *,
        model_id: str | None = None,
        status: str | None = None,
        subject_id: str | None = None,
        limit: int | None = None,
    ) -> Iterator[DeletionRequest]:
        return self._iterate(
            lambda cursor: self._core.list_deletion_requests(
                model_id=model_id,
                status=status,
                subject_id=subject_id,
                limit=limit,
                cursor=cursor,
            )
        )

    def cancel_deletion_request(self, request_id: str) -> DeletionRequest:
        return self._run(self._core.cancel_deletion_request(request_id))

    def get_certificate(self, request_id: str) -> Certificate:
        return self._run(self._core.get_certificate(request_id))

    def wait_for(
        self, request_id: str, *, timeout: float = 600.0, interval: float = 2.0
    ) -> DeletionRequest:
        """The request once completed, cancelled or failed (``WaitTimeout`` after
        ``timeout`` seconds); it is read every ``interval`` seconds."""
        return self._run(self._core.poll(request_id, timeout=timeout, interval=interval))

    def get_job(self, job_id: str) -> Job:
        return self._run(self._core.get_job(job_id))

    def list_jobs(
        self,
        *,
        model_id: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        dataset_id: str | None = None,
    ) -> Page[Job]:
        return self._run(
            self._core.list_jobs(
                model_id=model_id, status=status, limit=limit, cursor=cursor, dataset_id=dataset_id
            )
        )

    def iter_jobs(
        self,
        *,
        model_id: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        dataset_id: str | None = None,
    ) -> Iterator[Job]:
        return self._iterate(
            lambda cursor: self._core.list_jobs(
                model_id=model_id, status=status, limit=limit, cursor=cursor, dataset_id=dataset_id
            )
        )


class AsyncClient:
    """``Client``'s operations for asyncio: each method is a coroutine, each ``iter_*`` an
    async iterator. Use it as an async context manager or ``await aclose()``."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = 3,
        max_retry_wait: float = 60.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self._core = Core(max_retries=max_retries, max_retry_wait=max_retry_wait)
        self._http = http or httpx.AsyncClient(
            base_url=base_url, headers=_headers(api_key), timeout=timeout
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _run(self, operation: Operation[T]) -> T:
        outcome: Any = None
        try:
            while True:
                step = operation.send(outcome)
                if isinstance(step, Sleep):
                    await asyncio.sleep(step.seconds)
                    outcome = None
                    continue
                try:
                    outcome = await self._http.send(_request(self._http, step))
                except httpx.TransportError as error:
                    outcome = error
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    async def _iterate(self, page: PageOperation) -> AsyncIterator[Any]:
        cursor: str | None = None
        while True:
            answer = await self._run(page(cursor))
            for item in answer.items:
                yield item
            if answer.next_cursor is None:
                return
            cursor = answer.next_cursor

    async def me(self) -> Caller:
        return await self._run(self._core.me())

    async def create_dataset(
        self,
        name: str,
        source: dict[str, Any],
        *,
        holdout_fraction: float = 0.1,
        seed: int | None = None,
        respond_async: bool = False,
    ) -> Dataset:
        """Register a dataset: ``ready`` when the service indexed it in the call, else
        ``registering`` by a job (a large source, or ``respond_async``: ``Prefer:
        respond-async``); ``wait_for_dataset`` waits for the job."""
        return await self._run(
            self._core.create_dataset(name, source, holdout_fraction, seed, respond_async)
        )

    async def wait_for_dataset(
        self, dataset_id: str, *, timeout: float = 600.0, interval: float = 2.0
    ) -> Dataset:
        """The dataset once ready or failed (``WaitTimeout`` after ``timeout`` seconds);
        it is read every ``interval`` seconds."""
        return await self._run(
            self._core.poll_dataset(dataset_id, timeout=timeout, interval=interval)
        )

    async def create_webhook(
        self,
        url: str,
        events: list[str],
        *,
        model_id: str | None = None,
        description: str = "",
    ) -> Webhook:
        return await self._run(self._core.create_webhook(url, events, model_id, description))

    async def get_dataset(self, dataset_id: str) -> Dataset:
        return await self._run(self._core.get_dataset(dataset_id))

    async def refresh_dataset(self, dataset_id: str) -> Refresh:
        return await self._run(self._core.refresh_dataset(dataset_id))

    async def list_datasets(
        self, *, limit: int | None = None, cursor: str | None = None
    ) -> Page[Dataset]:
        return await self._run(self._core.list_datasets(limit=limit, cursor=cursor))

    def iter_datasets(self, *, limit: int | None = None) -> AsyncIterator[Dataset]:
        return self._iterate(lambda cursor: self._core.list_datasets(limit=limit, cursor=cursor))

    async def list_samples(
        self,
        dataset_id: str,
        *,
        split: str | None = None,
        state: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[Sample]:
        return await self._run(
            self._core.list_samples(
                dataset_id, split=split, state=state, limit=limit, cursor=cursor
            )
        )

    def iter_samples(
        self,
        dataset_id: str,
        *,
        split: str | None = None,
        state: str | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[Sample]:
        return self._iterate(
            lambda cursor: self._core.list_samples(
                dataset_id, split=split, state=state, limit=limit, cursor=cursor
            )
        )

    async def create_model(
        self, name: str, dataset_id: str, architecture: dict[str, Any], **spec: Any
    ) -> Model:
        body = {"name": name, "dataset_id": dataset_id, "architecture": architecture, **spec}
        return await self._run(self._core.create_model(body))

    async def get_model(self, model_id: str) -> Model:
        return await self._run(self._core.get_model(model_id))

    async def list_models(
        self, *, limit: int | None = None, cursor: str | None = None
    ) -> Page[Model]:
        return await self._run(self._core.list_models(limit=limit, cursor=cursor))

    def iter_models(self, *, limit: int | None = None) -> AsyncIterator[Model]:
        return self._iterate(lambda cursor: self._core.list_models(limit=limit, cursor=cursor))

    async def flush_model(self, model_id: str) -> int:
        return await self._run(self._core.flush_model(model_id))

    async def get_version(self, model_id: str, number: int) -> Version:
        return await self._run(self._core.get_version(model_id, number))

    async def list_versions(
        self, model_id: str, *, limit: int | None = None, cursor: str | None = None
    ) -> Page[Version]:
        return await self._run(self._core.list_versions(model_id, limit=limit, cursor=cursor))

    def iter_versions(self, model_id: str, *, limit: int | None = None) -> AsyncIterator[Version]:
        return self._iterate(
            lambda cursor: self._core.list_versions(model_id, limit=limit, cursor=cursor)
        )

    async def create_deletion_request(
        self,
        model_id: str,
        subject_id: str,
        *,
        sample_keys: list[str] | None = None,
        class_labels: list[int] | None = None,
        callback_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> DeletionRequest:
        return await self._run(
            self._core.create_deletion_request(
                model_id=model_id,
                subject_id=subject_id,
                sample_keys=sample_keys,
                class_labels=class_labels,
                callback_url=callback_url,
                idempotency_key=idempotency_key,
            )
        )

    async def create_deletion_requests(
        self, requests: list[dict[str, Any]], *, idempotency_key: str | None = None
    ) -> BulkResult:
        return await self._run(
            self._core.create_deletion_requests(requests, idempotency_key=idempotency_key)
        )

    async def get_deletion_request(self, request_id: str) -> DeletionRequest:
        return await self._run(self._core.get_deletion_request(request_id))

    async def list_deletion_requests(
        self,
        *,
        model_id: str | None = None,
        status: str | None = None,
        subject_id: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[DeletionRequest]:
        return await self._run(
            self._core.list_deletion_requests(
                model_id=model_id,
                status=status,
                subject_id=subject_id,
                limit=limit,
                cursor=cursor,
            )
        )

    def iter_deletion_requests(
        self,
        *,
        model_id: str | None = None,
        status: str | None = None,
        subject_id: str | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[DeletionRequest]:
        return self._iterate(
            lambda cursor: self._core.list_deletion_requests(
                model_id=model_id,
                status=status,
                subject_id=subject_id,
                limit=limit,
                cursor=cursor,
            )
        )

    async def cancel_deletion_request(self, request_id: str) -> DeletionRequest:
        return await self._run(self._core.cancel_deletion_request(request_id))

    async def get_certificate(self, request_id: str) -> Certificate:
        return await self._run(self._core.get_certificate(request_id))

    async def wait_for(
        self, request_id: str, *, timeout: float = 600.0, interval: float = 2.0
    ) -> DeletionRequest:
        return await self._run(self._core.poll(request_id, timeout=timeout, interval=interval))

    async def get_job(self, job_id: str) -> Job:
        return await self._run(self._core.get_job(job_id))

    async def list_jobs(
        self,
        *,
        model_id: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        dataset_id: str | None = None,
    ) -> Page[Job]:
        return await self._run(
            self._core.list_jobs(
                model_id=model_id, status=status, limit=limit, cursor=cursor, dataset_id=dataset_id
            )
        )

    def iter_jobs(
        self,
        *,
        model_id: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        dataset_id: str | None = None,
    ) -> AsyncIterator[Job]:
        return self._iterate(
            lambda cursor: self._core.list_jobs(
                model_id=model_id, status=status, limit=limit, cursor=cursor, dataset_id=dataset_id
            )
        )
