"""Prometheus series: HTTP by route template (no per-request labels) and the domain."""

from __future__ import annotations

import re

from tests.conftest import run_queued_jobs, train_keys


def _value(text: str, series: str) -> float:
    match = re.search(rf"^{re.escape(series)} ([0-9.e+-]+)$", text, re.MULTILINE)
    assert match, f"{series} not exposed"
    return float(match.group(1))


def test_http_and_domain_series(client, admin, ready_model):
    from service.jobs import dispatch

    keys = train_keys(client, admin, ready_model["dataset_id"], 3)
    ids = [
        client.post(
            "/v1/deletion-requests",
            headers=admin,
            json={"model_id": ready_model["id"], "subject_id": "s", "sample_keys": [k]},
        ).json()["id"]
        for k in keys
    ]
    client.get(f"/v1/deletion-requests/{ids[0]}", headers=admin)
    text = client.get("/metrics").text
    assert 'handler="/v1/deletion-requests/{request_id}"' in text
    assert ids[0] not in text, "no per-request label values"
    assert _value(text, 'unlearn_requests{status="pending"}') == 3
    assert _value(text, "unlearn_pending_requests") == 3
    assert _value(text, "unlearn_oldest_pending_request_age_seconds") >= 0
    assert 'http_request_duration_seconds_bucket{handler="/v1/deletion-requests"' in text

    client.post(f"/v1/models/{ready_model['id']}/flush", headers=admin)
    dispatch.dispatch_model(ready_model["id"])
    run_queued_jobs(ready_model["id"])
    text = client.get("/metrics").text
    assert _value(text, 'unlearn_requests{status="completed"}') == 3
    assert _value(text, "unlearn_pending_requests") == 0
    assert (
        _value(
            text,
            'unlearn_job_duration_seconds_count{kind="unlearn",outcome="succeeded",'
            'unlearner="finetune"}',
        )
        >= 1
    )
    assert _value(text, "unlearn_request_end_to_end_seconds_count") >= 3
    assert _value(text, "unlearn_batch_requests_count") >= 1
