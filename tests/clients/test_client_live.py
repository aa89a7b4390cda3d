"""The client against the service served over real sockets (uvicorn in this process, on
Postgres): a request's whole life through the client, sync and async, pagination, and a
rate limit the client waits out."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from tests.helpers.app import DIGITS, FAST_TRAINING, configure, make_key, run_queued_jobs
from tests.helpers.callbacks import Receiver, deliver_sent
from tests.helpers.live import LiveServer
from unlearnd_client import (
    AsyncClient,
    Client,
    Conflict,
    NotFound,
    RateLimited,
    WaitTimeout,
    WebhookVerificationError,
    verify_webhook,
)

MODEL = {
    "unlearner": {"name": "finetune", "params": {"epochs": 1}},
    "batching": {"max_requests": 100, "max_wait_seconds": 3600},
    "training": FAST_TRAINING,
}


@pytest.fixture
def live(env) -> Iterator[LiveServer]:
    with LiveServer() as server:
        yield server


@pytest.fixture
def api(live) -> Iterator[Client]:
    key = make_key(["admin"])["Authorization"].removeprefix("Bearer ")
    with Client(live.url, key) as client:
        yield client


def _ready_model(api: Client) -> tuple[str, list[str]]:
    """A trained digits MLP and some of its training keys."""
    dataset = api.create_dataset("digits", DIGITS, holdout_fraction=0.1)
    model = api.create_model(
        "digits-mlp", dataset.id, {"name": "mlp", "params": {"hidden": [32]}}, **MODEL
    )
    assert model.status == "training"
    run_queued_jobs(model.id)
    assert api.get_model(model.id).head_version == 1
    job = next(api.iter_jobs(model_id=model.id))
    assert job.kind == "train" and job.status == "succeeded"
    train = api.list_samples(dataset.id, split="train", limit=20).items
    assert all(sample.split == "train" and sample.state == "active" for sample in train)
    return model.id, [sample.key for sample in train]


def _unlearn_in_background(model_id: str) -> threading.Thread:
    """Batch and unlearn what is pending, in a thread, while the test polls."""
    from service.jobs import dispatch

    def work() -> None:
        time.sleep(0.3)
        dispatch.dispatch_model(model_id)
        run_queued_jobs(model_id)

    thread = threading.Thread(target=work)
    thread.start()
    return thread


def test_a_request_submitted_waited_for_and_certified(api, sent_messages, monkeypatch):
    configure(monkeypatch, callback_allowed_networks="127.0.0.0/8")
    receiver = Receiver()  # the serving stack's endpoint, on 127.0.0.1
    model_id, keys = _ready_model(api)
    hook = api.create_webhook(receiver.url, ["model.version_published"], model_id=model_id)
    assert hook.secret and hook.secret.startswith("whsec_")
    request = api.create_deletion_request(model_id, "user-1", sample_keys=keys[:2])
    assert request.status == "pending" and request.sample_count == 2
    assert api.flush_model(model_id) == 1
    worker = _unlearn_in_background(model_id)
    done = api.wait_for(request.id, timeout=120, interval=0.2)
    worker.join()
    assert done.status == "completed" and done.result_version == 2
    assert done.source_erasable is True  # the digits' rows could now go from a source
    assert [entry.status for entry in done.history][-1] == "completed"
    dataset_id = api.get_model(model_id).dataset_id
    refreshed = api.refresh_dataset(dataset_id)  # the shipped digits never grow
    assert refreshed.dataset.generation == 1 and sum(refreshed.added.values()) == 0
    assert refreshed.vanished == [] and refreshed.changed_count == 0
    forgotten = list(api.iter_samples(dataset_id, state="forgotten", limit=1))
    assert sorted(sample.key for sample in forgotten) == sorted(keys[:2])
    # The serving stack heard of version 2, and the standardwebhooks library vouches for it.
    deliver_sent(sent_messages)
    ((headers, body),) = receiver.received
    receiver.close()
    event = verify_webhook(hook.secret, body, headers)
    assert event["event"] == "model.version_published" and event["version"] == 2
    assert event["deletion_request_ids"] == [request.id]
    with pytest.raises(WebhookVerificationError):
        verify_webhook(hook.secret, body.replace(b'"version":2', b'"version":3'), headers)
    certificate = api.get_certificate(request.id)
    assert certificate.request["id"] == request.id and certificate.audit_log_entries_consistent
    assert len(certificate.sample_key_digests) == 2
    versions = list(api.iter_versions(model_id, limit=1))
    assert [v.number for v in versions] == [2, 1] and versions[0].parent == 1
    jobs = api.list_jobs(model_id=model_id, status="succeeded")
    assert {job.kind for job in jobs.items} >= {"train", "unlearn"}


def test_pages_are_followed_to_the_last_and_errors_raise_their_problem(api):
    model_id, keys = _ready_model(api)
    made = [
        api.create_deletion_request(model_id, f"user-{n}", sample_keys=[keys[n]]).id
        for n in range(5)
    ]
    first = api.list_deletion_requests(model_id=model_id, limit=2)
    assert len(first.items) == 2 and first.next_cursor is not None
    listed = [r.id for r in api.iter_deletion_requests(model_id=model_id, limit=2)]
    assert sorted(listed) == sorted(made) and len(listed) == 5
    assert [r.id for r in api.iter_deletion_requests(subject_id="user-3")] == [made[3]]
    dataset_id = api.get_model(model_id).dataset_id
    assert list(api.iter_samples(dataset_id, state="forgotten", limit=2)) == []
    statuses: list[int] = []
    api._http.event_hooks["response"].append(lambda response: statuses.append(response.status_code))
    with pytest.raises(WaitTimeout) as waited:
        api.wait_for(made[1], timeout=0.6, interval=0.1)
    assert waited.value.status == "pending"
    assert statuses[0] == 200 and len(statuses) >= 3 and set(statuses[1:]) == {304}
    cancelled = api.cancel_deletion_request(made[0])
    assert cancelled.status == "cancelled" and api.wait_for(made[0], timeout=1).done
    with pytest.raises(Conflict) as conflict:
        api.cancel_deletion_request(made[0])
    assert conflict.value.status == 409 and conflict.value.problem["status"] == 409
    with pytest.raises(NotFound):
        api.get_deletion_request("no-such-request")


def test_a_repeated_idempotency_key_answers_the_first_request(api):
    model_id, keys = _ready_model(api)
    first = api.create_deletion_request(model_id, "u", sample_keys=[keys[0]], idempotency_key="k1")
    again = api.create_deletion_request(model_id, "u", sample_keys=[keys[0]], idempotency_key="k1")
    assert again.id == first.id
    assert len(api.list_deletion_requests(model_id=model_id).items) == 1


def test_the_async_client_drives_the_same_life(api, live):
    model_id, keys = _ready_model(api)
    key = api._http.headers["authorization"].removeprefix("Bearer ")

    async def go() -> tuple[str, str, list[str], int]:
        async with AsyncClient(live.url, key) as client:
            request = await client.create_deletion_request(model_id, "u", sample_keys=keys[:1])
            bulk = await client.create_deletion_requests(
                [
                    {"model_id": model_id, "subject_id": "v", "sample_keys": [keys[1]]},
                    {"model_id": model_id, "subject_id": "w", "sample_keys": ["no/such/key"]},
                ]
            )
            assert [r.index for r in bulk.rejected] == [1] and len(bulk.accepted) == 1
            await client.flush_model(model_id)
            worker = _unlearn_in_background(model_id)
            done = await client.wait_for(request.id, timeout=120, interval=0.2)
            await asyncio.to_thread(worker.join)
            certificate = await client.get_certificate(request.id)
            listed = [r.id async for r in client.iter_deletion_requests(limit=1)]
            versions = [v.number async for v in client.iter_versions(model_id)]
            return done.status, certificate.request["id"], listed, len(versions)

    status, certified, listed, versions = asyncio.run(go())
    assert status == "completed" and certified in listed and len(listed) == 2
    assert versions == 2


def test_a_rate_limit_is_waited_out_after_retry_after(monkeypatch, env):
    configure(monkeypatch, **env, rate_limit_per_second=1, rate_limit_burst=1)
    key = make_key(["admin"])["Authorization"].removeprefix("Bearer ")
    with LiveServer() as server:
        with Client(server.url, key) as api:
            assert api.me().tenant == "acme"
            started = time.monotonic()
            assert api.me().tenant == "acme"  # answered 429 first, then retried
            assert time.monotonic() - started >= 0.9
        with Client(server.url, key, max_retries=0) as impatient:
            with pytest.raises(RateLimited) as limited:
                impatient.me()
            assert limited.value.status == 429 and limited.value.detail
