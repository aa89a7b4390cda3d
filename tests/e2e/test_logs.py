"""A full run's logs carry no personal data: `unlearnd serve`, `worker` and `beat` as
processes (Postgres, Redis), a deletion request through to completion with its callbacks,
reads that name the subject and the samples in paths and query strings; then every log
line of every process is JSON, and none holds a subject id or a sample key (the subject
appears only as its SHA-256)."""

from __future__ import annotations

import hashlib
import json
import os
import uuid

import httpx
import numpy as np
import pytest

from tests.helpers.callbacks import Receiver
from tests.helpers.network import free_port
from tests.helpers.processes import Processes, wait_for

pytestmark = pytest.mark.slow


def test_a_full_run_logs_no_subject_ids_and_no_sample_keys(env, redis_url, tmp_path):
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    marker = uuid.uuid4().hex[:10]
    subject = f"subject-{marker}"
    keys = np.array([f"sample-{marker}-{i:04d}" for i in range(300)])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6)).astype("float32")
    np.savez(
        os.path.join(env["data_root"], "people.npz"), x=x, y=(x[:, 0] > 0).astype(int), keys=keys
    )
    port = free_port()
    admin_key = "logs-drill-" + uuid.uuid4().hex
    settings = {
        **env,
        "broker_url": redis_url,
        "bootstrap_admin_key": admin_key,
        "dispatch_interval_seconds": "0.5",
        "sweep_interval_seconds": "1",
        "callback_allowed_networks": "127.0.0.0/8",
    }
    logs = tmp_path / "logs"
    logs.mkdir()
    processes = Processes(settings, logs)
    receiver = Receiver()
    try:
        processes.start("serve", "--port", str(port))
        processes.start("worker", "--queues", "gpu,audit,control,callbacks")
        processes.start("beat")
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {admin_key}", "X-Request-ID": f"trace-{marker}"}

        def up() -> bool:
            try:
                return httpx.get(f"{base}/healthz").status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, 60, "serve")
        with httpx.Client(base_url=base, headers=headers, timeout=30) as api:
            dataset = api.post(
                "/v1/datasets",
                json={"name": "people", "source": {"kind": "npz", "path": "people.npz"}},
            ).json()
            model = api.post(
                "/v1/models",
                json={
                    "name": "m",
                    "dataset_id": dataset["id"],
                    "architecture": {"name": "mlp", "params": {"hidden": [16]}},
                    "training": {"epochs": 2},
                },
            ).json()
            wait_for(
                lambda: api.get(f"/v1/models/{model['id']}").json()["status"] == "ready", 120, "v1"
            )
            listed = api.get(
                f"/v1/datasets/{dataset['id']}/samples", params={"split": "train", "limit": 3}
            )
            named = [item["key"] for item in listed.json()["items"]]
            request = api.post(
                "/v1/deletion-requests",
                json={
                    "model_id": model["id"],
                    "subject_id": subject,
                    "sample_keys": named,
                    "callback_url": receiver.url,
                },
            )
            assert request.status_code == 202, request.text
            refused = api.post(
                "/v1/deletion-requests",
                json={
                    "model_id": model["id"],
                    "subject_id": subject,
                    "sample_keys": [f"nope-{marker}"],
                },
            )
            assert refused.status_code == 422
            assert (
                api.get("/v1/deletion-requests", params={"subject_id": subject}).status_code == 200
            )
            assert api.get(f"/v1/datasets/{dataset['id']}/samples/{named[0]}").status_code == 200
            api.post(f"/v1/models/{model['id']}/flush")
            request_id = request.json()["id"]
            wait_for(
                lambda: (
                    api.get(f"/v1/deletion-requests/{request_id}").json()["status"] == "completed"
                ),
                180,
                "the request to complete",
            )
            wait_for(lambda: len(receiver.received) >= 4, 60, "the callbacks")
    finally:
        processes.stop_all()
        receiver.close()
    lines = [
        line
        for path in sorted(logs.glob("*.log"))
        for line in path.read_text(errors="replace").splitlines()
        if line.strip()
    ]
    text = "\n".join(lines)
    assert subject not in text, "a subject id reached a log"
    assert f"sample-{marker}" not in text and f"nope-{marker}" not in text, (
        "a sample key reached a log"
    )
    assert admin_key not in text, "an API key reached a log"
    # The keyed digest does (not vacuous), never the bare hash of the id, which a guess reverses.
    assert request.json()["subject_digest"] in text
    assert hashlib.sha256(subject.encode()).hexdigest() not in text
    records = [json.loads(line) for line in lines if line.startswith("{")]
    access = [r for r in records if r.get("logger") == "unlearnd.access"]
    assert any(r.get("request_id") == f"trace-{marker}" for r in access)
    assert any(r.get("job_id") for r in records), "job logs carry their job id"
    assert any(r.get("delivery_id") for r in records), "callback logs carry their delivery id"
    # The API's logs are JSON throughout; the plain lines are the operator's start-up
    # announcements on stdout (Celery prints a plain banner too).
    served = (logs / "serve-0.log").read_text().splitlines()
    plain = [line for line in served if line.strip() and not line.startswith("{")]
    assert plain[0] == "installed UNLEARN_BOOTSTRAP_ADMIN_KEY as the admin key of 'default'"
    assert len(plain) == 2 and plain[1].startswith("admin dashboard: http://")
