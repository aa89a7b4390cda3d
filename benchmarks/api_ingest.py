"""Ingest throughput and latency of ``POST /v1/deletion-requests`` on the production backend.

One ``unlearnd serve`` process on a fresh scratch Postgres database (created here, migrated
with ``unlearnd migrate``, dropped at the end) with a Redis broker, so no embedded worker
shares the measured process; a digits dataset and a model are registered (its training job
stays queued: no worker runs) and load generator processes (asyncio + httpx, one connection
pool each) post requests naming 1-3 random training samples, in two phases:

  max throughput  closed loop, ``--concurrency`` requests in flight for ``--seconds``
  fixed rate      open loop at ``--rate`` req/s for ``--seconds``; latency counts from each
                  request's scheduled send time, so a stalled server cannot hide its queue

Targets: >= 1000 accepted req/s sustained; p99 < 50 ms at 300 req/s. The generator runs on
the same machine as the server and its CPU time is in the table: read the numbers with it.

    python -m benchmarks.api_ingest --seconds 10 --output bench-results/api_ingest.txt

The Redis database given by ``--redis-url`` (default 15) is emptied at the end.
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
import socket
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
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
from psycopg import sql

ADMIN_KEY = "bench-admin-key-0123456789abcdef"  # 32 characters, installed as the bootstrap key
PATH = "/v1/deletion-requests"
THROUGHPUT_TARGET = 1000.0  # accepted req/s
P99_TARGET_MS = 50.0  # at the fixed rate
BACKLOG = 4  # open loop: at most this many requests per pooled connection wait or run;
# beyond that the server is saturated and further sends are counted as dropped (a longer
# queue would only measure the generator's own pool bookkeeping)
REQUEST_TIMEOUT = 10.0


# --- the load generator (runs in its own processes) -------------------------------------


@dataclass
class Shard:
    """What one generator process measured."""

    latencies: list[float] = field(default_factory=list)  # seconds, one per finished request
    lags: list[float] = field(default_factory=list)  # open loop: send start - scheduled time
    statuses: Counter[str] = field(default_factory=Counter)
    elapsed: float = 0.0
    cpu_seconds: float = 0.0


def _body(rng: random.Random, model_id: str, keys: list[str], serial: int) -> dict[str, Any]:
    return {
        "model_id": model_id,
        "subject_id": f"user-{serial}",
        "sample_keys": rng.sample(keys, rng.randint(1, 3)),
    }


async def _post(client: httpx.AsyncClient, body: dict[str, Any], shard: Shard) -> None:
    try:
        response = await client.post(PATH, json=body)
        shard.statuses[str(response.status_code)] += 1
    except httpx.HTTPError as error:
        shard.statuses[type(error).__name__] += 1


def _client(base_url: str, connections: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=base_url,
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        timeout=httpx.Timeout(REQUEST_TIMEOUT, pool=REQUEST_TIMEOUT),
    )


async def _closed_loop(plan: dict[str, Any]) -> Shard:
    shard, loop = Shard(), asyncio.get_running_loop()
    async with _client(plan["base_url"], plan["concurrency"]) as client:
        started = loop.time()
        deadline = started + plan["seconds"]

        async def user(index: int) -> None:
            rng = random.Random(plan["seed"] * 10_000 + index)
            serial = 0
            while loop.time() < deadline:
                serial += 1
                body = _body(rng, plan["model_id"], plan["keys"], serial)
                sent = loop.time()
                await _post(client, body, shard)
                shard.latencies.append(loop.time() - sent)

        await asyncio.gather(*(user(index) for index in range(plan["concurrency"])))
        shard.elapsed = loop.time() - started
    return shard


async def _open_loop(plan: dict[str, Any]) -> Shard:
    shard, loop = Shard(), asyncio.get_running_loop()
    rng = random.Random(plan["seed"])
    rate, count = plan["rate"], int(plan["rate"] * plan["seconds"])
    in_flight: set[asyncio.Task[None]] = set()

    async def one(scheduled: float, body: dict[str, Any]) -> None:
        shard.lags.append(loop.time() - scheduled)
        await _post(client, body, shard)
        shard.latencies.append(loop.time() - scheduled)

    async with _client(plan["base_url"], plan["concurrency"]) as client:
        started = loop.time() + plan["offset"]
        for index in range(count):
            scheduled = started + index / rate
            delay = scheduled - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(in_flight) >= BACKLOG * plan["concurrency"]:
                shard.statuses["dropped (backlog full)"] += 1
                continue
            task = asyncio.create_task(
                one(scheduled, _body(rng, plan["model_id"], plan["keys"], index))
            )
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        if in_flight:
            # Whatever has not finished two request timeouts after the last send is cut off.
            _, late = await asyncio.wait(in_flight, timeout=2 * REQUEST_TIMEOUT)
            for task in late:
                task.cancel()
                shard.statuses["cut off (phase deadline)"] += 1
        shard.elapsed = loop.time() - started
    return shard


def _generate(plan: dict[str, Any]) -> Shard:
    began = time.process_time()
    runner = _open_loop if plan["mode"] == "open" else _closed_loop
    shard = asyncio.run(runner(plan))
    shard.cpu_seconds = time.process_time() - began
    return shard


# --- the measured server and its database -------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _server_cpu_seconds(pid: int) -> float:
    """user + system CPU of a process, from /proc (Linux); NaN elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def scratch_database(admin_url: str):  # type: ignore[no-untyped-def]
    """A fresh database on the server ``admin_url`` points at; yields its SQLAlchemy URL."""
    name = f"unlearnd_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    parts = urlsplit(admin_url)
    url = urlunsplit(("postgresql+psycopg", parts.netloc, f"/{name}", parts.query, ""))
    try:
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@contextmanager
def served(env: dict[str, str], port: int, log_path: Path):  # type: ignore[no-untyped-def]
    """``unlearnd serve`` as a subprocess; yields it once /healthz answers."""
    command = [sys.executable, "-m", "workers.cli", "serve", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--no-access-log"]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"serve exited with {process.returncode}:\n{_tail(log_path)}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"serve did not answer /healthz in 60 s:\n{_tail(log_path)}")
            time.sleep(0.2)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _flush_broker(url: str) -> None:
    import redis

    try:
        redis.Redis.from_url(url, socket_timeout=5).flushdb()
    except redis.RedisError as error:
        print(f"warning: could not empty the broker database {url}: {error}", file=sys.stderr)


def prepare_model(base_url: str, samples: int) -> tuple[str, list[str]]:
    """Register the digits dataset and a model; return the model id and training keys."""
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=60) as client:
        dataset = client.post(
            "/v1/datasets",
            json={"name": "digits", "source": {"kind": "builtin", "name": "sklearn-digits"}},
        )
        dataset.raise_for_status()
        dataset_id = dataset.json()["id"]
        model = client.post(
            "/v1/models",
            json={
                "name": "bench",
                "dataset_id": dataset_id,
                "architecture": {"name": "small_cnn", "params": {}},
                "training": {"epochs": 1},
            },
        )
        model.raise_for_status()
        keys: list[str] = []
        cursor: str | None = None
        while len(keys) < samples:
            params: dict[str, Any] = {"split": "train", "limit": 500}
            if cursor:
                params["cursor"] = cursor
            page = client.get(f"/v1/datasets/{dataset_id}/samples", params=params)
            page.raise_for_status()
            keys += [item["key"] for item in page.json()["items"] if item["split"] == "train"]
            cursor = page.json()["next_cursor"]
            if not cursor:
                break
    if len(keys) < 3:
        raise RuntimeError(f"only {len(keys)} training keys found")
    return model.json()["id"], keys


# --- phases and the report ----------------------------------------------------------------


@dataclass
class Phase:
    name: str
    shards: list[Shard]
    server_cpu: float  # server CPU seconds during the phase
    wall: float

    @property
    def statuses(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for shard in self.shards:
            total.update(shard.statuses)
        return total

    @property
    def accepted(self) -> int:
        return self.statuses["202"]

    @property
    def sent(self) -> int:
        return sum(self.statuses.values())

    @property
    def errors(self) -> int:
        return self.sent - self.accepted

    @property
    def elapsed(self) -> float:
        return max(shard.elapsed for shard in self.shards)

    def latency_ms(self, q: float) -> float:
        return _quantile([x for s in self.shards for x in s.latencies], q) * 1000

    def lag_ms(self, q: float) -> float:
        return _quantile([x for s in self.shards for x in s.lags], q) * 1000


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def run_phase(
    name: str, plans: list[dict[str, Any]], server_pid: int, pool: Any, seconds: float
) -> Phase:
    cpu_before, wall_before = _server_cpu_seconds(server_pid), time.monotonic()
    pending = pool.map_async(_generate, plans)
    shards = pending.get(timeout=seconds + 2 * REQUEST_TIMEOUT + 60)  # generators bound themselves
    return Phase(
        name,
        shards,
        _server_cpu_seconds(server_pid) - cpu_before,
        time.monotonic() - wall_before,
    )


def plans_for(
    mode: str,
    args: argparse.Namespace,
    base_url: str,
    model_id: str,
    keys: list[str],
    seconds: float,
) -> list[dict[str, Any]]:
    processes = args.processes
    return [
        {
            "mode": mode,
            "base_url": base_url,
            "model_id": model_id,
            "keys": keys,
            "seconds": seconds,
            "seed": index + (1000 if mode == "open" else 0),
            "concurrency": max(1, args.concurrency // processes),
            "rate": args.rate / processes,
            "offset": 0.05 + index / args.rate,  # interleave the processes' schedules
        }
        for index in range(processes)
    ]


def report(phases: list[Phase], args: argparse.Namespace, command: str) -> str:
    header = (
        f"{'phase':<30} {'sent':>7} {'202':>7} {'errors':>6} {'req/s':>8} {'p50 ms':>7} "
        f"{'p95 ms':>7} {'p99 ms':>7} {'server CPU':>10} {'gen CPU':>8}  target"
    )
    rows = [header, "-" * len(header)]
    for index, phase in enumerate(phases):
        rate = phase.accepted / phase.elapsed if phase.elapsed else 0.0
        gen_cpu = sum(s.cpu_seconds for s in phase.shards) / phase.wall
        if index == 0:
            met = rate >= THROUGHPUT_TARGET
            target = f">= {THROUGHPUT_TARGET:.0f} req/s: {'met' if met else 'MISSED'}"
        else:
            met = phase.latency_ms(0.99) < P99_TARGET_MS and phase.errors == 0
            achieved = f"{args.rate:g} req/s offered"
            target = (
                f"p99 < {P99_TARGET_MS:.0f} ms, 0 errors: {'met' if met else 'MISSED'} ({achieved})"
            )
        rows.append(
            f"{phase.name:<30} {phase.sent:>7} {phase.accepted:>7} {phase.errors:>6} {rate:>8.1f} "
            f"{phase.latency_ms(0.50):>7.1f} {phase.latency_ms(0.95):>7.1f} "
            f"{phase.latency_ms(0.99):>7.1f} {phase.server_cpu / phase.wall:>9.0%} "
            f"{gen_cpu:>8.0%}  {target}"
        )
    notes = [
        "",
        f"command: {command}",
        f"{args.seconds:g} s per phase after a {args.warmup:g} s warm-up; "
        f"{args.processes} generator process(es); cores: {os.cpu_count()}",
        "req/s counts 202 answers only; latency is per request (open loop: from its "
        "scheduled send time); CPU is a share of one core over the phase's wall time.",
    ]
    for phase in phases:
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(phase.statuses.items()))
        notes.append(f"{phase.name}: statuses {{{statuses}}}")
        if any(s.lags for s in phase.shards):
            notes.append(
                f"{phase.name}: generator send lag p50 {phase.lag_ms(0.5):.1f} ms, "
                f"p99 {phase.lag_ms(0.99):.1f} ms (time the generator itself was late)"
            )
    return "\n".join(rows + notes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.api_ingest", description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--rate", type=float, default=300.0, help="open-loop rate (req/s)")
    parser.add_argument(
        "--concurrency", type=int, default=64, help="requests in flight (closed loop) / pool size"
    )
    parser.add_argument("--processes", type=int, default=1, help="load generator processes")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured warm-up seconds")
    parser.add_argument("--output", type=Path, default=None, help="also write the table here")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("UNLEARN_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"),
        help="a Postgres database to connect to for CREATE/DROP DATABASE",
    )
    parser.add_argument(
        "--redis-url",
        default="redis://127.0.0.1:6379/15",
        help="the broker; this Redis database is emptied at the end",
    )
    parser.add_argument("--samples", type=int, default=1500, help="training keys to draw from")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.rate <= 0 or args.concurrency < 1 or args.processes < 1:
        parser.error("--seconds, --rate, --concurrency and --processes must be positive")
    # A terminated benchmark still stops its server and drops its database (ExitStack below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    command = shlex.join(["python", "-m", "benchmarks.api_ingest", *(argv or sys.argv[1:])])

    with ExitStack() as stack:
        state_dir = Path(tempfile.mkdtemp(prefix="unlearnd-bench-"))
        stack.callback(shutil.rmtree, state_dir, ignore_errors=True)
        database_url = stack.enter_context(scratch_database(args.pg_url))
        stack.callback(_flush_broker, args.redis_url)
        (state_dir / "metrics").mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("UNLEARN_")}
        env.update(
            UNLEARN_ENVIRONMENT="production",
            UNLEARN_DATABASE_URL=database_url,
            UNLEARN_BROKER_URL=args.redis_url,
            UNLEARN_BOOTSTRAP_ADMIN_KEY=ADMIN_KEY,
            UNLEARN_STATE_DIR=str(state_dir / "state"),
            UNLEARN_DATA_ROOT=str(state_dir / "data"),
            PROMETHEUS_MULTIPROC_DIR=str(state_dir / "metrics"),
            # One key sends everything here: the per-key limit would measure itself.
            UNLEARN_RATE_LIMIT_PER_SECOND="0",
        )
        migrated = subprocess.run(
            [sys.executable, "-m", "workers.cli", "migrate"],
            env=env,
            timeout=180,
            capture_output=True,
            text=True,
        )
        if migrated.returncode != 0:
            raise RuntimeError(f"unlearnd migrate failed:\n{migrated.stdout}{migrated.stderr}")
        port = _free_port()
        server = stack.enter_context(served(env, port, state_dir / "serve.log"))
        base_url = f"http://127.0.0.1:{port}"
        model_id, keys = prepare_model(base_url, args.samples)
        print(f"serve pid {server.pid} on {base_url}; model {model_id}; {len(keys)} keys")

        pool = stack.enter_context(multiprocessing.get_context("spawn").Pool(args.processes))
        if args.warmup > 0:
            run_phase(
                "warm-up",
                plans_for("closed", args, base_url, model_id, keys, args.warmup),
                server.pid,
                pool,
                args.warmup,
            )
        phases = [
            run_phase(
                f"max throughput (C={args.concurrency})",
                plans_for("closed", args, base_url, model_id, keys, args.seconds),
                server.pid,
                pool,
                args.seconds,
            ),
            run_phase(
                f"open loop {args.rate:g} req/s",
                plans_for("open", args, base_url, model_id, keys, args.seconds),
                server.pid,
                pool,
                args.seconds,
            ),
        ]
        table = report(phases, args, command)
        print(table)
        if args.output is not None:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
