"""Load with a worker publishing meanwhile: ``--requests`` deletion requests (default 10,000)
in ``--seconds`` (default 60) from ``--clients`` clients, each with its own API key, at a
fixed rate; ``--retry-share`` of the sends (default 5%) repeat an earlier request with the
same Idempotency-Key and body, as a client does after a timeout.

The production shape on this machine: one ``unlearnd serve`` (Postgres, Redis broker, rate
limits on), one ``unlearnd worker`` and ``unlearnd beat`` (batches every few seconds, so
versions are published while the load runs), on a scratch database and a synthetic npz
dataset (``--samples`` x 8 features). Afterwards it waits until every request completed
and prints: sends, answers by status, errors, latency percentiles (from each send's
scheduled time), the stored request count against the distinct idempotency keys, retries
answered with the first answer, versions published during the load, and
acceptance-to-completion percentiles.

    python -m benchmarks.load                       # the full run
    python -m benchmarks.load --requests 600 --seconds 10 --clients 8   # a quick check
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg

from benchmarks.api_ingest import _flush_broker, _free_port, _quantile, scratch_database, served

ADMIN_KEY = "load-admin-" + "Zx9" * 10  # development-only bootstrap key of the scratch run
PATH = "/v1/deletion-requests"
TRANSPORT_ATTEMPTS = 3


@dataclass
class Send:
    at: float  # seconds after the start
    key: str  # Idempotency-Key
    body: dict[str, Any]
    retry_of: int | None = None  # index of the send it repeats


@dataclass
class Shard:
    """What one client measured."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    answers: dict[int, str] = field(default_factory=dict)  # send index -> request id
    mismatched_retries: int = 0
    retries_answered: int = 0
    transport_retries: int = 0  # a connection failed; sent again with the same key


def plan(args: argparse.Namespace, model_id: str, keys: list[str]) -> list[list[tuple[int, Send]]]:
    """Sends per client: (global index, send), each client's sends in time order."""
    rng = random.Random(args.seed)
    interval = args.seconds / args.requests
    sends: list[Send] = []
    for index in range(args.requests):
        client = index % args.clients
        earlier = [j for j in range(client, index, args.clients) if sends[j].retry_of is None]
        earlier = [j for j in earlier if sends[j].at <= index * interval - 1.0]
        if earlier and rng.random() < args.retry_share:
            original = rng.choice(earlier)
            sends.append(
                Send(index * interval, sends[original].key, sends[original].body, original)
            )
            continue
        body = {
            "model_id": model_id,
            "subject_id": f"user-{uuid.uuid4().hex[:12]}",
            "sample_keys": rng.sample(keys, rng.randint(1, 3)),
        }
        sends.append(Send(index * interval, uuid.uuid4().hex, body))
    return [
        [(i, sends[i]) for i in range(client, args.requests, args.clients)]
        for client in range(args.clients)
    ]


async def _client(
    base_url: str, api_key: str, sends: list[tuple[int, Send]], start: float
) -> Shard:
    shard = Shard()
    headers = {"Authorization": f"Bearer {api_key}"}
    limits = httpx.Limits(max_connections=8, max_keepalive_connections=8)
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, limits=limits, timeout=30
    ) as client:

        async def one(index: int, send: Send) -> None:
            scheduled = start + send.at
            for attempt in range(1, TRANSPORT_ATTEMPTS + 1):
                try:
                    response = await client.post(
                        PATH, json=send.body, headers={"Idempotency-Key": send.key}
                    )
                except httpx.TransportError as error:
                    # What a client does when a connection fails: send it again, same key.
                    status = type(error).__name__
                    if attempt < TRANSPORT_ATTEMPTS:
                        shard.transport_retries += 1
                    continue
                status = str(response.status_code)
                if response.status_code == 202:
                    shard.answers[index] = response.json()["id"]
                break
            shard.latencies.append(time.monotonic() - scheduled)
            shard.statuses[status] += 1

        tasks = []
        for index, send in sends:
            delay = start + send.at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(index, send)))
        await asyncio.gather(*tasks)
    for index, send in sends:
        if send.retry_of is not None and index in shard.answers and send.retry_of in shard.answers:
            shard.retries_answered += 1
            if shard.answers.get(send.retry_of) != shard.answers[index]:
                shard.mismatched_retries += 1
    return shard


def _generate(job: tuple[str, list[tuple[str, list[tuple[int, Send]]]], float]) -> list[Shard]:
    base_url, clients, start = job
    os.environ.setdefault("PYTHONHASHSEED", "0")

    async def all_clients() -> list[Shard]:
        return list(
            await asyncio.gather(*(_client(base_url, key, sends, start) for key, sends in clients))
        )

    return asyncio.run(all_clients())


def _dataset(data_root: Path, samples: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(samples, 8)).astype("float32")
    y = (x @ rng.normal(size=(8, 4))).argmax(axis=1)
    keys = np.array([f"user-{i:07d}/event" for i in range(samples)])
    data_root.mkdir(parents=True, exist_ok=True)
    np.savez(data_root / "events.npz", x=x, y=y, keys=keys)


def prepare(base_url: str, clients: int) -> tuple[str, list[str], list[str]]:
    """A dataset, a trained model, its training keys, and one API key per client."""
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=base_url, headers=admin, timeout=120) as api:
        dataset = api.post(
            "/v1/datasets",
            json={"name": "events", "source": {"kind": "npz", "path": "events.npz"}},
        )
        dataset.raise_for_status()
        model = api.post(
            "/v1/models",
            json={
                "name": "load",
                "dataset_id": dataset.json()["id"],
                "architecture": {"name": "mlp", "params": {"hidden": [32]}},
                "unlearner": {"name": "finetune", "params": {"epochs": 1}},
                "batching": {"max_requests": 2000, "max_wait_seconds": 5},
                "training": {"epochs": 2},
            },
        )
        model.raise_for_status()
        model_id = model.json()["id"]
        deadline = time.monotonic() + 600
        while api.get(f"/v1/models/{model_id}").json()["status"] != "ready":
            if time.monotonic() > deadline:
                raise RuntimeError("the model did not train in 600 s")
            time.sleep(1)
        train: list[str] = []  # holdout and test keys would be refused (never trained on)
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"split": "train", "limit": 500}
            if cursor:
                params["cursor"] = cursor
            page = api.get(f"/v1/datasets/{dataset.json()['id']}/samples", params=params).json()
            train += [item["key"] for item in page["items"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        api_keys = [
            api.post("/v1/keys", json={"name": f"client-{i}", "scopes": ["requests:write"]}).json()[
                "key"
            ]
            for i in range(clients)
        ]
    return model_id, train, api_keys


@contextmanager
def background(command: list[str], env: dict[str, str], log: Path):  # type: ignore[no-untyped-def]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def _ms(values: list[float], q: float) -> float:
    return _quantile(values, q) * 1000


def outcome(database_url: str, model_id: str, started_at: float, ended_at: float) -> dict[str, Any]:
    url = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as db:
        stored = db.execute("SELECT count(*) FROM deletion_requests").fetchone()[0]
        by_status = dict(
            db.execute("SELECT status, count(*) FROM deletion_requests GROUP BY status").fetchall()
        )
        completions = db.execute(
            "SELECT count(*) FROM request_events WHERE status = 'completed'"
        ).fetchone()[0]
        turnaround = [
            row[0]
            for row in db.execute(
                "SELECT EXTRACT(EPOCH FROM completed_at - created_at) FROM deletion_requests "
                "WHERE completed_at IS NOT NULL"
            ).fetchall()
        ]
        versions = db.execute(
            "SELECT number, parent, EXTRACT(EPOCH FROM created_at) FROM model_versions "
            "WHERE model_id = %s AND in_lineage ORDER BY number",
            (model_id,),
        ).fetchall()
    chain = all(v[1] == (v[0] - 1 if v[0] > 1 else None) for v in versions)
    during = sum(1 for v in versions if started_at <= float(v[2]) <= ended_at)
    return {
        "stored": stored,
        "by_status": by_status,
        "completions": completions,
        "turnaround": [float(t) for t in turnaround],
        "versions": len(versions),
        "versions_during_load": during,
        "chain": chain,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.load", description=__doc__)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=40, help="clients, one API key each")
    parser.add_argument("--processes", type=int, default=2, help="load generator processes")
    parser.add_argument("--retry-share", type=float, default=0.05)
    parser.add_argument("--samples", type=int, default=100_000, help="dataset size")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--completion-timeout", type=float, default=900.0)
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("UNLEARN_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"),
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    command = shlex.join(["python", "-m", "benchmarks.load", *(argv or sys.argv[1:])])

    with ExitStack() as stack:
        folder = Path(tempfile.mkdtemp(prefix="unlearnd-load-"))
        stack.callback(shutil.rmtree, folder, ignore_errors=True)
        database_url = stack.enter_context(scratch_database(args.pg_url))
        _flush_broker(args.redis_url)
        stack.callback(_flush_broker, args.redis_url)
        _dataset(folder / "data", args.samples, args.seed)
        (folder / "metrics").mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("UNLEARN_")}
        env.update(
            UNLEARN_DATABASE_URL=database_url,
            UNLEARN_BROKER_URL=args.redis_url,
            UNLEARN_BOOTSTRAP_ADMIN_KEY=ADMIN_KEY,
            UNLEARN_STATE_DIR=str(folder / "state"),
            UNLEARN_DATA_ROOT=str(folder / "data"),
            UNLEARN_DISPATCH_INTERVAL_SECONDS="1",
            UNLEARN_SWEEP_INTERVAL_SECONDS="5",
            PROMETHEUS_MULTIPROC_DIR=str(folder / "metrics"),
            OMP_NUM_THREADS="1",
        )
        unlearnd = [sys.executable, "-m", "workers.cli"]
        subprocess.run(
            [*unlearnd, "migrate"], env=env, check=True, capture_output=True, timeout=180
        )
        port = _free_port()
        stack.enter_context(served(env, port, folder / "serve.log"))
        stack.enter_context(
            background(
                [*unlearnd, "worker", "--queues", "gpu,audit,control,callbacks"],
                env,
                folder / "worker.log",
            )
        )
        stack.enter_context(background([*unlearnd, "beat"], env, folder / "beat.log"))
        base_url = f"http://127.0.0.1:{port}"
        model_id, keys, api_keys = prepare(base_url, args.clients)
        print(
            f"serve on {base_url}; model {model_id} ready; {args.clients} client keys", flush=True
        )

        per_client = plan(args, model_id, keys)
        jobs: list[list[tuple[str, list[tuple[int, Send]]]]] = [[] for _ in range(args.processes)]
        for client, sends in enumerate(per_client):
            jobs[client % args.processes].append((api_keys[client], sends))
        pool = stack.enter_context(multiprocessing.get_context("fork").Pool(args.processes))
        start = time.monotonic() + 2.0
        wall_start = time.time() + 2.0
        shards = [
            s
            for shard_list in pool.map(_generate, [(base_url, j, start) for j in jobs])
            for s in shard_list
        ]
        wall_end = time.time()
        elapsed = time.monotonic() - start

        distinct = len({send.key for sends in per_client for _, send in sends})
        deadline = time.monotonic() + args.completion_timeout
        url = database_url.replace("postgresql+psycopg://", "postgresql://")
        while time.monotonic() < deadline:
            with psycopg.connect(url) as db:
                open_requests = db.execute(
                    "SELECT count(*) FROM deletion_requests WHERE status <> 'completed'"
                ).fetchone()[0]
            if open_requests == 0:
                break
            time.sleep(2)
        result = outcome(database_url, model_id, wall_start, wall_end)

    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    for shard in shards:
        statuses.update(shard.statuses)
        latencies += shard.latencies
    sent = sum(statuses.values())
    errors = sent - statuses.get("202", 0)
    retries = sum(s.retries_answered for s in shards)
    mismatched = sum(s.mismatched_retries for s in shards)
    transport_retries = sum(s.transport_retries for s in shards)
    turnaround = result["turnaround"]

    def spread(values: list[float], scale: float) -> str:
        qs = [_quantile(values, q) * scale for q in (0.5, 0.9, 0.99)]
        return " / ".join(f"{v:.1f}" for v in [*qs, max(values or [0]) * scale])

    completed = result["by_status"].get("completed", 0)
    rows = [
        f"# {command}",
        "",
        "| measure | value |",
        "|---|---|",
        f"| sends (in {elapsed:.1f} s, {args.clients} clients) | {sent} ({sent / elapsed:.0f}/s) |",
        f"| answers by status | {dict(sorted(statuses.items()))} |",
        f"| errors (anything but 202, after up to {TRANSPORT_ATTEMPTS} tries) | {errors} |",
        f"| sends repeated after a connection error (same key) | {transport_retries} |",
        f"| latency p50 / p90 / p99 / max (ms) | {spread(latencies, 1000)} |",
        f"| distinct idempotency keys / stored requests | {distinct} / {result['stored']} |",
        f"| retries answered with the first answer | {retries - mismatched} of {retries} |",
        f"| requests completed (completion events) | {completed} ({result['completions']}) |",
        f"| versions published during the load / in all | {result['versions_during_load']} / "
        f"{result['versions']} (a chain: {result['chain']}) |",
        f"| acceptance to completion p50 / p90 / p99 / max (s) | {spread(turnaround, 1)} |",
    ]
    print("\n".join(rows))
    ok = (
        errors == 0
        and result["stored"] == distinct
        and mismatched == 0
        and result["completions"] == result["stored"] == completed
        and result["chain"]
    )
    print("\nverdict:", "OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
