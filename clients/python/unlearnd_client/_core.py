"""What the sync and the async client share: every operation, written once, without I/O.

An operation is a generator. It yields a :class:`Call` (send this) or a :class:`Sleep`
(wait this long) and is sent back the outcome of each: the ``httpx.Response``, or the
``httpx.TransportError`` the call raised (None after a sleep). Its return value is the
operation's result. ``Client`` and ``AsyncClient`` only drive it: they send calls with their
transport and sleep with their clock, so requests, retries, pagination and polling are the
same code in both.
"""

from __future__ import annotations

import email.utils
import random
import time
import uuid
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, TypeAlias, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from unlearnd_client.errors import WaitTimeout, error_for
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

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

RETRIED_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    params: dict[str, Any] | None = None
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    idempotent: bool = False  # may be sent again after the connection broke mid-call


@dataclass(frozen=True)
class Sleep:
    seconds: float


Outcome: TypeAlias = "httpx.Response | httpx.TransportError | None"
Operation: TypeAlias = Generator["Call | Sleep", Outcome, T]
PageOperation: TypeAlias = Callable[[str | None], "Operation[Page[Any]]"]


def _segment(value: str | int) -> str:
    return quote(str(value), safe="")


def _query(**values: Any) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not None}


def retry_after(response: httpx.Response) -> float | None:
    """The seconds ``Retry-After`` asks for (delta-seconds or an HTTP date), or None."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class Core:
    """Requests, retries and results of every operation, shared by both clients.

    Retries: a 429 or 503 answer is retried (the service stored nothing) after the
    ``Retry-After`` it carries, or an exponential backoff with jitter when it carries
    none; a connection that could not be opened is retried too, and one that broke
    mid-call only for an idempotent call (a read, or a create with its idempotency key).
    At most ``max_retries`` retries; a ``Retry-After`` longer than ``max_retry_wait``
    raises at once rather than waiting less than the service asked.
    """

    def __init__(
        self, *, max_retries: int = 3, max_retry_wait: float = 60.0, backoff: float = 0.5
    ) -> None:
        self.max_retries = max_retries
        self.max_retry_wait = max_retry_wait
        self.backoff = backoff

    # -- the shared machinery ------------------------------------------------------------

    def _backoff(self, attempt: int) -> float:
        return float(min(self.max_retry_wait, self.backoff * 2**attempt * random.uniform(1, 2)))

    def send(self, call: Call) -> Operation[httpx.Response]:
        """``call``, retried as the class says; the final answer, error or not."""
        attempt = 0
        while True:
            outcome = yield call
            if isinstance(outcome, httpx.TransportError):
                never_sent = isinstance(outcome, httpx.ConnectError | httpx.ConnectTimeout)
                if attempt >= self.max_retries or not (never_sent or call.idempotent):
                    raise outcome
                wait = self._backoff(attempt)
            elif isinstance(outcome, httpx.Response):
                if outcome.status_code not in RETRIED_STATUSES or attempt >= self.max_retries:
                    return outcome
                asked = retry_after(outcome)
                if asked is not None and asked > self.max_retry_wait:
                    return outcome
                wait = self._backoff(attempt) if asked is None else asked
            else:  # pragma: no cover - a driver's bug
                raise TypeError(f"a call's outcome cannot be {outcome!r}")
            attempt += 1
            yield Sleep(wait)

    def fetch(self, call: Call, model: type[M]) -> Operation[M]:
        """``call``'s answer as ``model``; an error answer raises its ``ApiError``."""
        response = yield from self.send(call)
        if response.is_error:
            raise error_for(response)
        return model.model_validate_json(response.content)

    def poll(
        self, request_id: str, *, timeout: float, interval: float
    ) -> Operation[DeletionRequest]:
        """The request once its status is terminal (completed, cancelled or failed),
        read every ``interval`` seconds; ``WaitTimeout`` after ``timeout`` seconds. Each
        read after the first sends the last ``ETag`` back (``If-None-Match``): while
        nothing changed the service answers 304 without building the body."""
        deadline = time.monotonic() + timeout
        path = f"/v1/deletion-requests/{_segment(request_id)}"
        request: DeletionRequest | None = None
        etag: str | None = None
        while True:
            headers = {"If-None-Match": etag} if etag and request else {}
            response = yield from self.send(Call("GET", path, headers=headers, idempotent=True))
            if response.status_code != 304 or request is None:
                if response.is_error or response.status_code == 304:
                    raise error_for(response)
                request = DeletionRequest.model_validate_json(response.content)
                etag = response.headers.get("etag")
            if request.done:
                return request
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeout(request_id, request.status, timeout)
            yield Sleep(min(interval, remaining))

    # -- the operations --------------------------------------------------------------------

    def me(self) -> Operation[Caller]:
        return self.fetch(Call("GET", "/v1/me", idempotent=True), Caller)

    def create_dataset(
        self,
        name: str,
        source: dict[str, Any],
        holdout_fraction: float,
        seed: int | None,
        respond_async: bool = False,
    ) -> Operation[Dataset]:
        body = _query(name=name, source=source, holdout_fraction=holdout_fraction, seed=seed)
        headers = {"Prefer": "respond-async"} if respond_async else {}
        return self.fetch(Call("POST", "/v1/datasets", json=body, headers=headers), Dataset)

    def poll_dataset(
        self, dataset_id: str, *, timeout: float, interval: float
    ) -> Operation[Dataset]:
        """The dataset once its registration is over (ready or failed), read every
        ``interval`` seconds; ``WaitTimeout`` after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            dataset = yield from self.get_dataset(dataset_id)
            if dataset.done:
                return dataset
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeout(dataset_id, dataset.status, timeout, what="dataset")
            yield Sleep(min(interval, remaining))

    def create_webhook(
        self, url: str, events: list[str], model_id: str | None, description: str
    ) -> Operation[Webhook]:
        body = {"url": url, "events": events, "model_id": model_id, "description": description}
        return self.fetch(Call("POST", "/v1/webhooks", json=body), Webhook)

    def refresh_dataset(self, dataset_id: str) -> Operation[Refresh]:
        path = f"/v1/datasets/{_segment(dataset_id)}/refresh"
        return self.fetch(Call("POST", path), Refresh)

    def get_dataset(self, dataset_id: str) -> Operation[Dataset]:
        path = f"/v1/datasets/{_segment(dataset_id)}"
        return self.fetch(Call("GET", path, idempotent=True), Dataset)

    def list_datasets(self, *, limit: int | None, cursor: str | None) -> Operation[Page[Dataset]]:
        return self._page("/v1/datasets", Dataset, limit=limit, cursor=cursor)

    def list_samples(
        self,
        dataset_id: str,
        *,
        split: str | None,
        state: str | None,
        limit: int | None,
        cursor: str | None,
    ) -> Operation[Page[Sample]]:
        path = f"/v1/datasets/{_segment(dataset_id)}/samples"
        return self._page(path, Sample, split=split, state=state, limit=limit, cursor=cursor)

    def create_model(self, spec: dict[str, Any]) -> Operation[Model]:
        return self.fetch(Call("POST", "/v1/models", json=spec), Model)

    def get_model(self, model_id: str) -> Operation[Model]:
        path = f"/v1/models/{_segment(model_id)}"
        return self.fetch(Call("GET", path, idempotent=True), Model)

    def list_models(self, *, limit: int | None, cursor: str | None) -> Operation[Page[Model]]:
        return self._page("/v1/models", Model, limit=limit, cursor=cursor)

    def flush_model(self, model_id: str) -> Operation[int]:
        call = Call("POST", f"/v1/models/{_segment(model_id)}/flush")
        response = yield from self.send(call)
        if response.is_error:
            raise error_for(response)
        return int(response.json()["pending_requests"])

    def get_version(self, model_id: str, number: int) -> Operation[Version]:
        path = f"/v1/models/{_segment(model_id)}/versions/{_segment(number)}"
        return self.fetch(Call("GET", path, idempotent=True), Version)

    def list_versions(
        self, model_id: str, *, limit: int | None, cursor: str | None
    ) -> Operation[Page[Version]]:
        path = f"/v1/models/{_segment(model_id)}/versions"
        return self._page(path, Version, limit=limit, cursor=cursor)

    def create_deletion_request(
        self,
        *,
        model_id: str,
        subject_id: str,
        sample_keys: list[str] | None,
        class_labels: list[int] | None,
        callback_url: str | None,
        idempotency_key: str | None,
    ) -> Operation[DeletionRequest]:
        body = _query(
            model_id=model_id,
            subject_id=subject_id,
            sample_keys=sample_keys,
            class_labels=class_labels,
            callback_url=callback_url,
        )
        # One key per call, made here and sent with every retry: a retry after a lost
        # answer returns the stored request instead of storing a second one.
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        call = Call("POST", "/v1/deletion-requests", json=body, headers=headers, idempotent=True)
        return self.fetch(call, DeletionRequest)

    def create_deletion_requests(
        self, requests: list[dict[str, Any]], *, idempotency_key: str | None
    ) -> Operation[BulkResult]:
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        call = Call(
            "POST",
            "/v1/deletion-requests:bulk",
            json={"requests": requests},
            headers=headers,
            idempotent=True,
        )
        return self.fetch(call, BulkResult)

    def get_deletion_request(self, request_id: str) -> Operation[DeletionRequest]:
        path = f"/v1/deletion-requests/{_segment(request_id)}"
        return self.fetch(Call("GET", path, idempotent=True), DeletionRequest)

    def list_deletion_requests(
        self,
        *,
        model_id: str | None,
        status: str | None,
        subject_id: str | None,
        limit: int | None,
        cursor: str | None,
    ) -> Operation[Page[DeletionRequest]]:
        return self._page(
            "/v1/deletion-requests",
            DeletionRequest,
            model_id=model_id,
            status=status,
            subject_id=subject_id,
            limit=limit,
            cursor=cursor,
        )

    def cancel_deletion_request(self, request_id: str) -> Operation[DeletionRequest]:
        path = f"/v1/deletion-requests/{_segment(request_id)}/cancel"
        return self.fetch(Call("POST", path), DeletionRequest)

    def get_certificate(self, request_id: str) -> Operation[Certificate]:
        path = f"/v1/deletion-requests/{_segment(request_id)}/certificate"
        return self.fetch(Call("GET", path, idempotent=True), Certificate)

    def get_job(self, job_id: str) -> Operation[Job]:
        return self.fetch(Call("GET", f"/v1/jobs/{_segment(job_id)}", idempotent=True), Job)

    def list_jobs(
        self,
        *,
        model_id: str | None,
        status: str | None,
        limit: int | None,
        cursor: str | None,
        dataset_id: str | None = None,
    ) -> Operation[Page[Job]]:
        return self._page(
            "/v1/jobs",
            Job,
            model_id=model_id,
            dataset_id=dataset_id,
            status=status,
            limit=limit,
            cursor=cursor,
        )

    def _page(self, path: str, item: type[M], **query: Any) -> Operation[Page[M]]:
        call = Call("GET", path, params=_query(**query), idempotent=True)
        return self.fetch(call, Page[item])  # type: ignore[valid-type]
