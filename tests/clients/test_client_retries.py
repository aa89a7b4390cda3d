"""The client's retry policy and error mapping, against scripted answers (httpx's
MockTransport): what the live tests cannot make the service do on demand."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import httpx
import pytest

from unlearnd_client import AsyncClient, Client, InvalidInput, RateLimited, WaitTimeout
from unlearnd_client._core import retry_after

BASE = "http://unlearnd.test"
REQUEST = {
    "id": "r1",
    "model_id": "m1",
    "subject_digest": "0" * 64,
    "status": "pending",
    "sample_count": 1,
    "sample_keys": ["train/1"],
    "class_labels": None,
    "already_forgotten": [],
    "callback_url": None,
    "created_at": "2026-01-01T00:00:00Z",
    "due_at": "2026-01-31T00:00:00Z",
    "completed_at": None,
    "job_id": None,
    "result_version": None,
    "error": None,
    "history": [],
}
PROBLEM = {
    "type": "https://unlearnd.dev/problems/rate-limited",
    "title": "Too many requests",
    "status": 429,
    "detail": "slow down",
}


def scripted(
    answers: list[httpx.Response | Exception], seen: list[httpx.Request]
) -> Callable[[httpx.Request], httpx.Response]:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return handle


def client(
    answers: list[httpx.Response | Exception], seen: list[httpx.Request], **options: float
) -> Client:
    http = httpx.Client(base_url=BASE, transport=httpx.MockTransport(scripted(answers, seen)))
    return Client(BASE, "key", http=http, **options)  # type: ignore[arg-type]


def test_a_create_retries_503_and_429_with_one_idempotency_key_it_made():
    seen: list[httpx.Request] = []
    answers: list[httpx.Response | Exception] = [
        httpx.Response(503, json=PROBLEM, headers={"Retry-After": "0"}),
        httpx.Response(429, json=PROBLEM, headers={"Retry-After": "0"}),
        httpx.Response(202, json=REQUEST),
    ]
    with client(answers, seen) as api:
        created = api.create_deletion_request("m1", "s", sample_keys=["train/1"])
    assert created.id == "r1" and created.status == "pending"
    keys = {request.headers["idempotency-key"] for request in seen}
    assert len(seen) == 3 and len(keys) == 1
    assert uuid.UUID(keys.pop()).version == 4
    with client([httpx.Response(202, json=REQUEST)] * 2, seen) as api:
        api.create_deletion_request("m1", "s", sample_keys=["train/1"])
        api.create_deletion_request("m1", "s", sample_keys=["train/1"])
    assert seen[-1].headers["idempotency-key"] != seen[-2].headers["idempotency-key"]


def test_retry_after_is_waited_for(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr("unlearnd_client.client.time.sleep", slept.append)
    seen: list[httpx.Request] = []
    answers: list[httpx.Response | Exception] = [
        httpx.Response(429, json=PROBLEM, headers={"Retry-After": "7"}),
        httpx.Response(200, json={"tenant": "acme", "scopes": ["admin"]}),
    ]
    with client(answers, seen) as api:
        assert api.me().tenant == "acme"
    assert slept == [7.0]


def test_a_retry_after_over_the_cap_or_spent_retries_raise_the_problem(monkeypatch):
    monkeypatch.setattr("unlearnd_client.client.time.sleep", lambda seconds: None)
    seen: list[httpx.Request] = []
    long_wait = httpx.Response(
        429, json=PROBLEM, headers={"Retry-After": "120", "X-Request-ID": "abc"}
    )
    with client([long_wait], seen, max_retry_wait=60) as api, pytest.raises(RateLimited) as raised:
        api.me()
    assert len(seen) == 1
    assert raised.value.status == 429 and raised.value.detail == "slow down"
    assert raised.value.problem == PROBLEM and raised.value.request_id == "abc"
    always = [httpx.Response(429, json=PROBLEM, headers={"Retry-After": "1"})] * 3
    with client(always, seen, max_retries=2) as api, pytest.raises(RateLimited):
        api.me()
    assert len(seen) == 1 + 3


def test_a_broken_connection_is_retried_only_where_a_repeat_is_harmless(monkeypatch):
    monkeypatch.setattr("unlearnd_client.client.time.sleep", lambda seconds: None)
    seen: list[httpx.Request] = []
    answers: list[httpx.Response | Exception] = [
        httpx.ReadError("reset"),
        httpx.Response(200, json=REQUEST),
    ]
    with client(answers, seen) as api:  # a read: retried
        assert api.get_deletion_request("r1").id == "r1"
    assert len(seen) == 2
    with client([httpx.ReadError("reset")], seen) as api, pytest.raises(httpx.ReadError):
        api.cancel_deletion_request("r1")  # may have been done: not repeated
    assert len(seen) == 3
    answers = [httpx.ConnectError("refused"), httpx.Response(200, json=REQUEST)]
    with client(answers, seen) as api:  # never reached the service: retried
        assert api.cancel_deletion_request("r1").id == "r1"
    assert len(seen) == 5


def test_a_problem_body_becomes_the_exception_of_its_status():
    problem = {
        "type": "t",
        "title": "Invalid input",
        "status": 422,
        "detail": "bad",
        "errors": [{"loc": ["body", "sample_keys"], "msg": "unknown key"}],
    }
    seen: list[httpx.Request] = []
    answers: list[httpx.Response | Exception] = [httpx.Response(422, json=problem)]
    with client(answers, seen) as api, pytest.raises(InvalidInput) as raised:
        api.create_deletion_request("m1", "s", sample_keys=["nope"])
    assert raised.value.errors == problem["errors"] and "bad" in str(raised.value)


def test_path_segments_are_escaped():
    seen: list[httpx.Request] = []
    with client([httpx.Response(200, json=REQUEST)], seen) as api:
        api.get_deletion_request("../models")
    assert seen[0].url.raw_path == b"/v1/deletion-requests/..%2Fmodels"


def test_retry_after_reads_seconds_and_http_dates():
    assert retry_after(httpx.Response(429, headers={"Retry-After": "3"})) == 3.0
    assert retry_after(httpx.Response(429, headers={"Retry-After": "soon"})) is None
    past = "Wed, 21 Oct 2015 07:28:00 GMT"
    assert retry_after(httpx.Response(429, headers={"Retry-After": past})) == 0.0
    assert retry_after(httpx.Response(429)) is None


def test_the_async_client_retries_the_same_way():
    seen: list[httpx.Request] = []
    answers: list[httpx.Response | Exception] = [
        httpx.Response(503, json=PROBLEM, headers={"Retry-After": "0"}),
        httpx.Response(202, json=REQUEST),
    ]

    async def go() -> str:
        transport = httpx.MockTransport(scripted(answers, seen))
        http = httpx.AsyncClient(base_url=BASE, transport=transport)
        async with AsyncClient(BASE, "key", http=http) as api:
            return (await api.create_deletion_request("m1", "s", sample_keys=["k"])).id

    assert asyncio.run(go()) == "r1"
    assert len(seen) == 2
    assert seen[0].headers["idempotency-key"] == seen[1].headers["idempotency-key"]


def test_wait_for_polls_until_a_terminal_status_or_its_timeout(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr("unlearnd_client.client.time.sleep", slept.append)
    seen: list[httpx.Request] = []
    statuses = ["pending", "batched", "unlearning", "completed"]
    answers: list[httpx.Response | Exception] = [
        httpx.Response(200, json={**REQUEST, "status": status}) for status in statuses
    ]
    with client(answers, seen) as api:
        assert api.wait_for("r1", timeout=60, interval=0.5).status == "completed"
    assert len(seen) == 4 and slept == [0.5, 0.5, 0.5]
    clock = iter(range(0, 1000, 10))  # each reading of the clock is 10 s later
    monkeypatch.setattr("unlearnd_client._core.time.monotonic", lambda: next(clock))
    always = [httpx.Response(200, json=REQUEST)] * 10
    with client(always, seen) as api, pytest.raises(WaitTimeout) as waited:
        api.wait_for("r1", timeout=25, interval=1)
    assert waited.value.status == "pending" and waited.value.request_id == "r1"
    assert len(seen) == 4 + 3


def test_wait_for_sends_the_etag_back_and_keeps_the_request_on_304(monkeypatch):
    monkeypatch.setattr("unlearnd_client.client.time.sleep", lambda seconds: None)
    seen: list[httpx.Request] = []
    answers: list[httpx.Response | Exception] = [
        httpx.Response(200, json=REQUEST, headers={"ETag": 'W/"a"'}),
        httpx.Response(304, headers={"ETag": 'W/"a"'}),
        httpx.Response(200, json={**REQUEST, "status": "cancelled"}, headers={"ETag": 'W/"b"'}),
    ]
    with client(answers, seen) as api:
        assert api.wait_for("r1", interval=0).status == "cancelled"
    assert [r.headers.get("if-none-match") for r in seen] == [None, 'W/"a"', 'W/"a"']


def test_a_registration_by_a_job_is_waited_for_until_ready_or_failed(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr("unlearnd_client.client.time.sleep", slept.append)
    seen: list[httpx.Request] = []
    registering = {
        "id": "d1",
        "name": "lake",
        "source": {"kind": "manifest", "path": "lake.csv"},
        "holdout_fraction": 0.1,
        "seed": 0,
        "status": "registering",
        "error": None,
        "job_id": "j1",
        "num_classes": None,
        "input_shape": None,
        "counts": None,
        "generation": 1,
        "created_at": "2026-01-01T00:00:00Z",
    }
    ready = {
        **registering,
        "status": "ready",
        "num_classes": 10,
        "input_shape": [1, 8, 8],
        "counts": {"train": 9, "holdout": 1, "test": 0},
    }
    answers: list[httpx.Response | Exception] = [
        httpx.Response(202, json=registering),
        httpx.Response(200, json=registering),
        httpx.Response(200, json=ready),
    ]
    with client(answers, seen) as api:
        made = api.create_dataset("lake", registering["source"], respond_async=True)
        assert made.status == "registering" and made.counts is None and not made.done
        done = api.wait_for_dataset(made.id, timeout=60, interval=0.5)
    assert done.status == "ready" and done.counts == ready["counts"]
    assert seen[0].headers["prefer"] == "respond-async" and slept == [0.5]
    clock = iter(range(0, 1000, 10))
    monkeypatch.setattr("unlearnd_client._core.time.monotonic", lambda: next(clock))
    with (
        client([httpx.Response(200, json=registering)] * 5, seen) as api,
        pytest.raises(WaitTimeout, match="dataset d1 still 'registering'"),
    ):
        api.wait_for_dataset("d1", timeout=15, interval=1)


def test_jobs_are_listed_by_dataset():
    seen: list[httpx.Request] = []
    empty = {"items": [], "next_cursor": None}
    with client([httpx.Response(200, json=empty)], seen) as api:
        assert api.list_jobs(dataset_id="d1").items == []
    assert seen[0].url.params["dataset_id"] == "d1" and "model_id" not in seen[0].url.params
