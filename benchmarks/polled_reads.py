"""What a dashboard's poll costs the server: each polled read answered in full (200, no
``If-None-Match``) and answered 304 to an unchanged poll, against one ``unlearnd serve`` on
a scratch Postgres database holding one tenant with many deletion requests.

The requests and jobs are written straight into the tables (fast, and no worker runs), in
a mix like a service that has run for a while: most completed, some cancelled, pending,
failed or auditing. Each read is polled ``--polls`` times one after the other from this
process; the table gives the latency percentiles seen here and the server's CPU time per
poll (from /proc, so Linux only), which is what an open dashboard tab costs.

    python -m benchmarks.polled_reads --requests 50000 --polls 200
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, insert

from benchmarks.api_ingest import _free_port, _server_cpu_seconds, scratch_database, served
from service.tables import DeletionRequest, Job, RequestEvent

ADMIN_KEY = "bench-admin-key-0123456789abcdef"
STATUS_MIX = {
    "completed": 0.70,
    "cancelled": 0.08,
    "pending": 0.15,
    "failed": 0.03,
    "auditing": 0.04,
}


def populate(database_url: str, tenant_id: str, model_id: str, count: int) -> None:
    """``count`` requests (one event each) and one succeeded job per 100 of them."""
    rng = random.Random(0)
    now = datetime.now(UTC)
    statuses, weights = zip(*STATUS_MIX.items(), strict=True)
    engine = create_engine(database_url)
    with engine.begin() as connection:
        for start in range(0, count, 5000):
            requests, events = [], []
            for serial in range(start, min(start + 5000, count)):
                created = now - timedelta(seconds=rng.uniform(0, 20 * 86400))
                request_id = str(uuid.uuid4())
                status = rng.choices(statuses, weights)[0]
                requests.append(
                    {
                        "id": request_id,
                        "tenant_id": tenant_id,
                        "model_id": model_id,
                        "subject_id": f"user-{serial}",
                        "sample_keys": [f"train/{rng.randrange(1500):05d}"],
                        "already_forgotten": [],
                        "sample_count": 1,
                        "status": status,
                        "created_at": created,
                        "updated_at": created,
                        "due_at": created + timedelta(days=30),
                    }
                )
                events.append({"request_id": request_id, "status": status, "at": created})
            connection.execute(insert(DeletionRequest.__table__), requests)
            connection.execute(insert(RequestEvent.__table__), events)
        jobs = [
            {
                "id": str(uuid.uuid4()),
                "tenant_id": tenant_id,
                "model_id": model_id,
                "kind": "unlearn",
                "status": "succeeded",
                "request_ids": [],
                "sample_count": 100,
                "attempts": 1,
                "progress": {},
                "timings": {"queued": 1.0, "unlearning": 5.0},
                "params": {},
                "created_at": now - timedelta(seconds=rng.uniform(0, 20 * 86400)),
            }
            for _ in range(max(1, count // 100))
        ]
        connection.execute(insert(Job.__table__), jobs)
    engine.dispose()


def measure(client: httpx.Client, pid: int, url: str, polls: int) -> dict[str, Any]:
    first = client.get(url)
    first.raise_for_status()
    etag = first.headers["ETag"]
    row: dict[str, Any] = {"url": url, "bytes": len(first.content)}
    for label, headers, expected in [
        ("200", {}, 200),
        ("304", {"If-None-Match": etag}, 304),
    ]:
        for _ in range(5):  # warm-up
            client.get(url, headers=headers)
        latencies = []
        cpu_before = _server_cpu_seconds(pid)
        for _ in range(polls):
            started = time.perf_counter()
            response = client.get(url, headers=headers)
            latencies.append(time.perf_counter() - started)
            if response.status_code != expected:
                raise RuntimeError(f"{url}: {response.status_code}, expected {expected}")
        cpu = (_server_cpu_seconds(pid) - cpu_before) / polls
        latencies.sort()
        row[label] = {
            "p50": latencies[len(latencies) // 2] * 1000,
            "p95": latencies[int(len(latencies) * 0.95) - 1] * 1000,
            "cpu": cpu * 1000,
        }
    return row


def report(rows: list[dict[str, Any]], args: argparse.Namespace, command: str) -> str:
    lines = [
        f"`{command}`: {args.requests} deletion requests, {args.polls} sequential polls per "
        "cell, one `unlearnd serve` on Postgres",
        "",
        "| read | body bytes | 200 p50 ms | 200 p95 ms | 200 server CPU ms | "
        "304 p50 ms | 304 p95 ms | 304 server CPU ms | CPU 200/304 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        full, cached = row["200"], row["304"]
        ratio = full["cpu"] / cached["cpu"] if cached["cpu"] else float("nan")
        read = row["url"].replace(row["model_id"], "{id}")
        lines.append(
            f"| `{read}` | {row['bytes']:,} | {full['p50']:.1f} | {full['p95']:.1f} | "
            f"{full['cpu']:.1f} | {cached['p50']:.1f} | {cached['p95']:.1f} | "
            f"{cached['cpu']:.1f} | {ratio:.1f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.polled_reads", description=__doc__)
    parser.add_argument("--requests", type=int, default=50_000, help="deletion requests stored")
    parser.add_argument("--polls", type=int, default=200, help="polls per read and answer")
    parser.add_argument("--output", type=Path, default=None, help="also write the table here")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("UNLEARN_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"),
        help="a Postgres database to connect to for CREATE/DROP DATABASE",
    )
    args = parser.parse_args(argv)
    if args.requests < 1 or args.polls < 1:
        parser.error("--requests and --polls must be positive")
    command = shlex.join(["python", "-m", "benchmarks.polled_reads", *(argv or sys.argv[1:])])

    with ExitStack() as stack:
        state_dir = Path(tempfile.mkdtemp(prefix="unlearnd-bench-"))
        stack.callback(shutil.rmtree, state_dir, ignore_errors=True)
        database_url = stack.enter_context(scratch_database(args.pg_url))
        (state_dir / "metrics").mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("UNLEARN_")}
        env.update(
            UNLEARN_DATABASE_URL=database_url,
            UNLEARN_BOOTSTRAP_ADMIN_KEY=ADMIN_KEY,
            UNLEARN_STATE_DIR=str(state_dir / "state"),
            UNLEARN_DATA_ROOT=str(state_dir / "data"),
            PROMETHEUS_MULTIPROC_DIR=str(state_dir / "metrics"),
        )
        subprocess.run(
            [sys.executable, "-m", "workers.cli", "migrate"],
            env=env,
            check=True,
            timeout=180,
            capture_output=True,
        )
        port = _free_port()
        server = stack.enter_context(served(env, port, state_dir / "serve.log"))
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        client = stack.enter_context(
            httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=60)
        )
        tenant_id = client.get("/v1/me").json()["tenant_id"]
        dataset = client.post(
            "/v1/datasets",
            json={"name": "digits", "source": {"kind": "builtin", "name": "sklearn-digits"}},
        ).json()
        model = client.post(  # waits for uploaded weights: nothing trains or dispatches
            "/v1/models",
            json={
                "name": "bench",
                "dataset_id": dataset["id"],
                "architecture": {"name": "small_cnn"},
                "training": None,
            },
        ).json()
        populate(database_url, tenant_id, model["id"], args.requests)

        urls = [
            "/v1/overview",
            "/v1/models",
            f"/v1/models/{model['id']}",
            "/v1/deletion-requests?limit=50",
            "/v1/deletion-requests?status=pending&limit=500",
            "/v1/jobs?limit=50",
        ]
        rows = [
            {**measure(client, server.pid, url, args.polls), "model_id": model["id"]}
            for url in urls
        ]
    table = report(rows, args, command)
    print(table)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
