"""Hostile input by the thousand: schemathesis generates requests (valid and invalid) from
the served /openapi.json and sends them with an admin key. Zero 5xx, and every answer's
status, content type, headers and body conform to the document (so every error must be a
documented status with application/problem+json).

``make test`` sends a few hundred cases; ``make fuzz`` (UNLEARN_FUZZ_EXAMPLES=200) sends
thousands and prints the count.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.helpers.app import configure, create_dataset, create_model, make_key
from tests.helpers.live import LiveServer

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",  # input the schema forbids is refused, `false` for 0 too
    ]
)
EXAMPLES = int(os.environ.get("UNLEARN_FUZZ_EXAMPLES", "6"))


def known_objects(client, admin) -> dict[str, list[str | int]]:
    """Objects that exist, by path parameter: the fuzzer uses one half the time, so its
    calls get past 404 into the logic behind (a spare key stands in for keys: revoking or
    rotating it leaves the fuzzer's own key alone)."""
    from tests.helpers.app import run_queued_jobs, train_keys

    dataset = create_dataset(client, admin)
    model = create_model(client, admin, dataset["id"])
    run_queued_jobs(model["id"])
    keys = train_keys(client, admin, dataset["id"], 6)
    requests = [
        client.post(
            "/v1/deletion-requests",
            headers=admin,
            json={"model_id": model["id"], "subject_id": "s", "sample_keys": [key]},
        ).json()["id"]
        for key in keys[:3]
    ]
    spare = client.post("/v1/keys", headers=admin, json={"scopes": ["models:read"]}).json()
    jobs = [job["id"] for job in client.get("/v1/jobs", headers=admin).json()["items"]]
    return {
        "model_id": [model["id"]],
        "dataset_id": [dataset["id"]],
        "request_id": requests,
        "job_id": jobs,
        "key_id": [spare["id"]],
        "key": keys,
        "number": [1],
    }


def config_file(folder: Path, known: dict[str, list[str | int]]) -> Path:
    lines = []
    for name, values in known.items():
        lines.append(f"[dictionaries.{name}]\nvalues = {json.dumps(values)}\n")
    lines.append("[parameters]")
    for name in known:
        lines.append(f'"path.{name}" = {{ dictionary = "{name}", probability = 0.5 }}')
    # :bulk checks each item on its own and answers 200 with the invalid ones in `rejected`
    # (by index, with their problem): an item the schema forbids is refused, not the call.
    refused = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428"]
    statuses = json.dumps(["200", *refused, "429", "5XX"])
    lines.append('[[operations]]\ninclude-path = "/v1/deletion-requests:bulk"')
    lines.append(f"checks.negative_data_rejection.expected-statuses = {statuses}")
    path = folder / "schemathesis.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_api_survives_generated_input(client, admin, monkeypatch, tmp_path):
    # Limits that would only slow the fuzzer down (they have tests of their own).
    configure(monkeypatch, rate_limit_per_second=0, auth_failures_per_minute=0)
    admin = make_key(["admin"])
    config = config_file(tmp_path, known_objects(client, admin))
    with LiveServer() as live:
        report = tmp_path / "fuzz.ndjson"
        result = subprocess.run(
            [
                str(Path(sys.executable).with_name("st")),
                "--config-file",
                str(config),
                "run",
                f"http://127.0.0.1:{live.port}/openapi.json",
                "--header",
                admin["Authorization"].join(["Authorization: ", ""]),
                "--checks",
                CHECKS,
                "--max-examples",
                str(EXAMPLES),
                "--seed",
                os.environ.get("UNLEARN_FUZZ_SEED", "20261202"),
                "--phases",
                "examples,coverage,fuzzing",
                "--workers",
                "1",
                "--request-timeout",
                "30",
                "--generation-database",
                "none",
                "--no-color",
                "--report",
                "ndjson",
                "--report-ndjson-path",
                str(report),
            ],
            capture_output=True,
            text=True,
            timeout=3000,
        )
    output = result.stdout + result.stderr
    cases = _cases(output)
    print(f"\nschemathesis: {cases} test cases, exit code {result.returncode}")
    print(output[-4000:])
    assert result.returncode == 0, output[-20000:]
    assert cases >= 100


def _cases(output: str) -> int:
    match = re.search(r"Test cases:\s*\n?\s*(\d+) generated", output) or re.search(
        r"(\d+) generated", output
    )
    return int(match.group(1)) if match else 0
