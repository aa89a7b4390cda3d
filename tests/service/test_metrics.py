"""Prometheus series: HTTP by route template (no per-request labels) and the domain."""

from __future__ import annotations

import re

from tests.helpers.app import run_queued_jobs, train_keys


def _value(text: str, series: str) -> float:
    match = re.search(rf"^{re.escape(series)} ([0-9.e+-]+)$", text, re.MULTILINE)
    assert match, f"{series} not exposed"
    return float(match.group(1))


def test_http_and_domain_series(client, admin, ready_model, monkeypatch):
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
    # The head is audited now: open metrics count verdicts without naming the model ...
    assert ready_model["id"] not in text
    assert _value(text, 'unlearn_head_audit_verdicts{verdict="no_reference"}') == 1
    # ... and a scrape with the metrics token gets the per-model series.
    from tests.helpers.app import configure

    configure(monkeypatch, metrics_token="scrape-token-0123456789abcdef")
    scraped = client.get(
        "/metrics", headers={"Authorization": "Bearer scrape-token-0123456789abcdef"}
    )
    assert f'unlearn_head_audit_mia_auc{{model="{ready_model["id"]}"}}' in scraped.text


def test_open_metrics_name_no_model_and_a_token_unlocks_them(
    client, admin, ready_model, monkeypatch
):
    from tests.helpers.app import configure

    open_text = client.get("/metrics").text
    assert ready_model["id"] not in open_text
    assert 'unlearn_head_audit_verdicts{verdict="pass"}' in open_text
    configure(monkeypatch, metrics_token="scrape-token-0123456789abcdef")
    assert client.get("/metrics").status_code == 401
    wrong = client.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.headers["content-type"] == "application/problem+json"
    scraped = client.get(
        "/metrics", headers={"Authorization": "Bearer scrape-token-0123456789abcdef"}
    )
    assert scraped.status_code == 200 and "unlearn_pending_requests" in scraped.text


def test_every_series_an_alert_rule_reads_is_exposed(client):
    from pathlib import Path

    import yaml

    rules = yaml.safe_load(Path("deploy/alerts.yml").read_text())["groups"][0]["rules"]
    named = {name for rule in rules for name in re.findall(r"\bunlearn_[a-z_]+", rule["expr"])}
    assert "unlearn_callback_attempts_total" in named  # the give-ups' alert
    text = client.get("/metrics").text
    missing = [name for name in named if f"# TYPE {name} " not in text]
    assert missing == [], "alert rules read series /metrics does not expose"
