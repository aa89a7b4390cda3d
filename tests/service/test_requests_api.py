"""Deletion requests over HTTP: success and error answers, idempotency, bad input that
changes nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from service.db import session_scope
from service.tables import AuditLogEntry, DeletionRequest, IdempotencyKey
from tests.helpers.app import train_keys


def _stored_counts() -> tuple[int, int, int]:
    with session_scope() as session:
        return (
            session.scalar(select(func.count()).select_from(DeletionRequest)) or 0,
            session.scalar(select(func.count()).select_from(IdempotencyKey)) or 0,
            session.scalar(select(func.count()).select_from(AuditLogEntry)) or 0,
        )


def _request(model, keys, subject="user-1"):
    return {"model_id": model["id"], "subject_id": subject, "sample_keys": keys}


def test_create_get_list_cancel(client, admin, ready_model):
    keys = train_keys(client, admin, ready_model["dataset_id"], 3)
    response = client.post("/v1/deletion-requests", headers=admin, json=_request(ready_model, keys))
    assert response.status_code == 202
    body = response.json()
    assert response.headers["Location"] == f"/v1/deletion-requests/{body['id']}"
    assert body["status"] == "pending" and body["sample_count"] == 3
    assert body["history"][0]["status"] == "pending" and body["job_id"] is None
    assert body["due_at"] > body["created_at"]

    fetched = client.get(f"/v1/deletion-requests/{body['id']}", headers=admin).json()
    assert fetched["id"] == body["id"]
    listed = client.get(
        "/v1/deletion-requests",
        headers=admin,
        params={"model_id": ready_model["id"], "status": "pending"},
    ).json()
    assert [item["id"] for item in listed["items"]] == [body["id"]]

    cancelled = client.post(f"/v1/deletion-requests/{body['id']}/cancel", headers=admin)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = client.post(f"/v1/deletion-requests/{body['id']}/cancel", headers=admin)
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"


def test_list_pagination_newest_first(client, admin, ready_model):
    keys = train_keys(client, admin, ready_model["dataset_id"], 5)
    ids = [
        client.post("/v1/deletion-requests", headers=admin, json=_request(ready_model, [k])).json()[
            "id"
        ]
        for k in keys
    ]
    page1 = client.get("/v1/deletion-requests", headers=admin, params={"limit": 2}).json()
    page2 = client.get(
        "/v1/deletion-requests", headers=admin, params={"limit": 2, "cursor": page1["next_cursor"]}
    ).json()
    page3 = client.get(
        "/v1/deletion-requests", headers=admin, params={"limit": 2, "cursor": page2["next_cursor"]}
    ).json()
    seen = [i["id"] for i in page1["items"] + page2["items"] + page3["items"]]
    assert seen == list(reversed(ids)) and page3["next_cursor"] is None
    bad = client.get("/v1/deletion-requests", headers=admin, params={"cursor": "%%%"})
    assert bad.status_code == 422
    too_many = client.get("/v1/deletion-requests", headers=admin, params={"limit": 501})
    assert too_many.status_code == 422


def test_idempotency(client, admin, ready_model):
    keys = train_keys(client, admin, ready_model["dataset_id"], 2)
    headers = {**admin, "Idempotency-Key": "abc-123"}
    first = client.post("/v1/deletion-requests", headers=headers, json=_request(ready_model, keys))
    second = client.post("/v1/deletion-requests", headers=headers, json=_request(ready_model, keys))
    assert first.status_code == second.status_code == 202
    assert first.json() == second.json()
    assert _stored_counts()[0] == 1
    other = client.post(
        "/v1/deletion-requests", headers=headers, json=_request(ready_model, keys[:1])
    )
    assert other.status_code == 422
    assert "Idempotency-Key" in other.json()["detail"]
    assert _stored_counts()[0] == 1


def test_a_single_key_never_names_a_bulk_item(client, admin, ready_model):
    keys = train_keys(client, admin, ready_model["dataset_id"], 2)
    a, b = _request(ready_model, keys[:1]), _request(ready_model, keys[1:])

    def bulk(key: str, body: dict) -> dict:
        answer = client.post(
            "/v1/deletion-requests:bulk",
            headers={**admin, "Idempotency-Key": key},
            json={"requests": [body]},
        )
        [item] = answer.json()["accepted"]
        return item

    def single(key: str, body: dict):
        return client.post(
            "/v1/deletion-requests", headers={**admin, "Idempotency-Key": key}, json=body
        )

    # "k#0" on a single request is a key of its own, not bulk call k's item 0: with the
    # item's body it stores a request (no replay), with another body it is no reuse (no 422).
    item = bulk("k", a)
    same = single("k#0", a)
    assert same.status_code == 202 and same.json()["id"] != item["id"]
    bulk("j", a)
    other = single("j#0", b)
    assert other.status_code == 202, other.text
    assert _stored_counts()[:2] == (4, 4)
    assert bulk("k", a)["id"] == item["id"]  # the bulk call itself still replays
    assert single("k#0", a).json()["id"] == same.json()["id"]  # and so does the single
    assert _stored_counts()[:2] == (4, 4)


@pytest.mark.parametrize("key", ["k\x1f0", "k\n", "\x00", "k\x7f"])
def test_an_idempotency_key_with_control_characters_is_refused(key):
    from service.deletion_requests import service as requests
    from service.deletion_requests.schemas import DeletionRequestCreate
    from service.errors import InvalidInput

    spec = DeletionRequestCreate.model_validate(
        {"model_id": "m", "subject_id": "s", "sample_keys": ["a"]}
    )
    with pytest.raises(InvalidInput):
        requests.submission(tenant_id="t", spec=spec, idempotency_key=key)
    with pytest.raises(InvalidInput):
        requests.bulk_submissions(tenant_id="t", items=[], idempotency_key=key)
    assert requests.submission(tenant_id="t", spec=spec, idempotency_key="k\t0").idempotency_key


def test_bad_input_changes_nothing(client, admin, ready_model, monkeypatch):
    dataset_id = ready_model["dataset_id"]
    keys = train_keys(client, admin, dataset_id, 2)
    holdout = client.get(
        f"/v1/datasets/{dataset_id}/samples", headers=admin, params={"split": "holdout", "limit": 2}
    ).json()["items"]
    test_split = client.get(
        f"/v1/datasets/{dataset_id}/samples", headers=admin, params={"split": "test", "limit": 1}
    ).json()["items"]
    before = _stored_counts()
    cases = [
        (_request(ready_model, keys + ["nope/1", "nope/2"]), 422, ["nope/1", "nope/2"]),
        (_request(ready_model, [keys[0], keys[0]]), 422, [keys[0]]),
        (
            _request(ready_model, [holdout[0]["key"], test_split[0]["key"]]),
            422,
            [holdout[0]["key"], test_split[0]["key"]],
        ),
        ({**_request(ready_model, keys), "model_id": "no-such-model"}, 404, []),
        ({"model_id": ready_model["id"], "subject_id": "x"}, 422, []),
        ({**_request(ready_model, keys), "class_labels": [1]}, 422, []),
        (
            {
                **_request(ready_model, []),
            },
            422,
            [],
        ),
        ({**_request(ready_model, keys), "callback_url": "not a url"}, 422, []),
        ({"model_id": ready_model["id"], "subject_id": "x", "class_labels": [99]}, 422, []),
    ]
    for body, status, listed in cases:
        response = client.post("/v1/deletion-requests", headers=admin, json=body)
        assert response.status_code == status, (body, response.text)
        problem = response.json()
        assert response.headers["content-type"] == "application/problem+json"
        assert problem["status"] == status and problem["title"] and problem["type"]
        for key in listed:
            assert key in response.text
    malformed = client.post(
        "/v1/deletion-requests",
        headers={**admin, "Content-Type": "application/json"},
        content=b"{not json",
    )
    assert malformed.status_code == 422
    assert malformed.json()["errors"]
    assert _stored_counts() == before


def test_oversized_key_list_is_413(client, admin, ready_model, monkeypatch):
    monkeypatch.setenv("UNLEARN_MAX_KEYS_PER_REQUEST", "5")
    from service.settings import get_settings

    get_settings.cache_clear()
    before = _stored_counts()
    keys = train_keys(client, admin, ready_model["dataset_id"], 6)
    response = client.post("/v1/deletion-requests", headers=admin, json=_request(ready_model, keys))
    assert response.status_code == 413
    big_body = client.post(
        "/v1/deletion-requests", headers=admin, json=_request(ready_model, ["k" * 100] * 30_000)
    )
    assert big_body.status_code == 413
    assert _stored_counts() == before


def test_bulk(client, admin, ready_model):
    keys = train_keys(client, admin, ready_model["dataset_id"], 3)
    response = client.post(
        "/v1/deletion-requests:bulk",
        headers=admin,
        json={
            "requests": [
                _request(ready_model, keys[:1]),
                _request(ready_model, ["missing/1"]),
                {"model_id": ready_model["id"]},
                _request(ready_model, keys[1:]),
            ]
        },
    )
    assert response.status_code == 200
    body = response.json()
    assert len(body["accepted"]) == 2
    assert [(r["index"], r["problem"]["status"]) for r in body["rejected"]] == [(1, 422), (2, 422)]
    too_many = client.post(
        "/v1/deletion-requests:bulk",
        headers=admin,
        json={"requests": [_request(ready_model, keys[:1])] * 101},
    )
    assert too_many.status_code == 413


def test_already_forgotten_keys_need_no_work(client, admin, ready_model):
    from tests.helpers.app import run_queued_jobs

    keys = train_keys(client, admin, ready_model["dataset_id"], 2)
    first = client.post("/v1/deletion-requests", headers=admin, json=_request(ready_model, keys))
    client.post(f"/v1/models/{ready_model['id']}/flush", headers=admin)
    from service.jobs import dispatch

    dispatch.dispatch_model(ready_model["id"])
    run_queued_jobs(ready_model["id"])
    assert (
        client.get(f"/v1/deletion-requests/{first.json()['id']}", headers=admin).json()["status"]
        == "completed"
    )
    again = client.post("/v1/deletion-requests", headers=admin, json=_request(ready_model, keys))
    assert again.status_code == 202
    body = again.json()
    assert sorted(body["already_forgotten"]) == sorted(keys)
    assert body["status"] == "completed" and body["result_version"] == 2


def test_retry_failed_request(client, admin, ready_model, key_for):
    keys = train_keys(client, admin, ready_model["dataset_id"], 1)
    created = client.post(
        "/v1/deletion-requests", headers=admin, json=_request(ready_model, keys)
    ).json()
    assert (
        client.post(f"/v1/deletion-requests/{created['id']}/retry", headers=admin).status_code
        == 409
    )
    with session_scope() as session:
        from service.states import move_request

        request = session.get(DeletionRequest, created["id"])
        request.error = "boom"
        move_request(session, request, "failed")
    writer = key_for(["requests:write", "requests:read"])
    assert (
        client.post(f"/v1/deletion-requests/{created['id']}/retry", headers=writer).status_code
        == 403
    )
    retried = client.post(f"/v1/deletion-requests/{created['id']}/retry", headers=admin)
    assert retried.status_code == 200
    assert retried.json()["status"] == "pending" and retried.json()["error"] is None
