"""Ingest throughput and latency of ``POST /v1/deletion-requests`` on the production backend,
against the ceiling of the stack on the same machine.

Each measured server is ``unlearnd serve`` (``--workers N``) on a fresh scratch Postgres
database (created here, migrated with ``unlearnd migrate``, dropped at the end) with a Redis
broker, so no embedded worker shares the measured processes; a digits dataset and a model
are registered (its training job stays queued: no worker runs). Then:

  saturation   ``wrk`` (Debian's, the native generator) with ``benchmarks/wrk_ingest.lua``,
               ``--connections`` open for ``--seconds``: accepted (202) req/s, p50/p99, and
               the server's CPU per accepted request (the serve process tree, from /proc)
  fixed rate   about ``--rate`` req/s for ``--seconds``: wrk paced (rate x 500 ms
               connections, each sending about every 500 ms after its answer; a server
               slower than the pace shows as a lower accepted rate), or with
               ``--fixed-rate python`` the Python open loop below (latency from each
               request's scheduled send time, but the generator needs most of a core)
  ceiling      ``benchmarks/bare_app.py`` (a FastAPI endpoint that answers 202 with no
               database work) served the same way (uvicorn, same workers), under the same
               wrk load: the service's rate is reported as a share of it

``--before PATH`` measures a second checkout (e.g. the main branch's) the same way in the
same run, its code first on the server's PYTHONPATH. Targets: >= 1000 accepted req/s,
p99 < 50 ms at 300 req/s, >= 50% of the ceiling. The generators run on the same machine as
the server; the table goes to stdout and, with ``--docs``, between the ``ingest`` markers
of ``docs/benchmarks.md``.

    python -m benchmarks.api_ingest --seconds 10 --workers 2 --before /work/main --docs

The Redis database given by ``--redis-url`` (default 15) is emptied at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import re
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

from service.audit_signing import generate

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
    shard = asyncio.run(_open_loop(plan))
    shard.cpu_seconds = time.process_time() - began
    return shard


# --- the measured servers and their database ----------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def tree_cpu_seconds(pid: int) -> float:
    """user + system CPU of a process and its live children (uvicorn's workers), from /proc
    (Linux); NaN elsewhere."""
    try:
        total = sum(int(x) for x in _stat(pid)[11:13])
    except OSError:
        return float("nan")
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = _stat(int(entry.name))
            except (OSError, IndexError):
                continue
            if fields[1] == str(pid):
                total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


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
def served(command: list[str], env: dict[str, str], port: int, log_path: Path, cwd: Path):  # type: ignore[no-untyped-def]
    """A server as a subprocess; yields it once /healthz (or any answer) comes back."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}:\n{_tail(log_path)}")
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not answer in 300 s:\n{_tail(log_path)}")
            time.sleep(0.2)
        time.sleep(1.0)  # uvicorn's other workers come up meanwhile
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


# --- measurements -------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the table."""

    server: str
    load: str
    sent: int
    accepted: int
    seconds: float
    p50_ms: float
    p99_ms: float
    server_cpu: float  # seconds of the serve process tree during the phase

    @property
    def rate(self) -> float:
        return self.accepted / self.seconds if self.seconds else 0.0

    @property
    def cpu_ms_per_request(self) -> float:
        return 1000 * self.server_cpu / self.accepted if self.accepted else float("nan")


WRK_SCRIPT = Path(__file__).with_name("wrk_ingest.lua")
_WRK_LATENCY = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def run_wrk(
    label: str,
    server: str,
    base_url: str,
    pid: int,
    args: argparse.Namespace,
    env: dict[str, str],
    connections: int | None = None,
) -> Row:
    """Load ``base_url`` with wrk (saturating, or paced when ``env`` sets UNLEARN_DELAY_MS);
    the accepted (2xx) rate, latency, server CPU."""
    connections = connections or args.connections
    command = ["wrk", f"-t{args.wrk_threads}", f"-c{connections}", f"-d{args.seconds:g}s"]
    command += ["-s", str(WRK_SCRIPT), "--latency", base_url]
    before = tree_cpu_seconds(pid)
    output = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=args.seconds + 60, check=True
    ).stdout
    cpu = tree_cpu_seconds(pid) - before
    total = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)", output)
    if total is None:
        raise RuntimeError(f"unexpected wrk output:\n{output}")
    sent = int(total.group(1))
    seconds = float(total.group(2)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[total.group(3)]
    failed = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    accepted = sent - (int(failed.group(1)) if failed else 0)
    if errors:
        accepted -= sum(int(n) for n in errors.groups()[1:3])  # read/write errors: no answer
    latency = {q: float(v) * _UNITS[u] for q, v, u in _WRK_LATENCY.findall(output)}
    return Row(
        server,
        label,
        sent,
        max(0, accepted),
        seconds,
        latency.get("50", float("nan")),
        latency.get("99", float("nan")),
        cpu,
    )


def run_open_loop(
    server: str, base_url: str, pid: int, model_id: str, keys: list[str], args: argparse.Namespace
) -> Row:
    plans = [
        {
            "base_url": base_url,
            "model_id": model_id,
            "keys": keys,
            "seconds": args.seconds,
            "seed": 1000 + index,
            "concurrency": max(1, args.connections // args.processes),
            "rate": args.rate / args.processes,
            "offset": 0.05 + index / args.rate,  # interleave the processes' schedules
        }
        for index in range(args.processes)
    ]
    before = tree_cpu_seconds(pid)
    with multiprocessing.get_context("spawn").Pool(args.processes) as pool:
        shards = pool.map(_generate, plans)
    cpu = tree_cpu_seconds(pid) - before
    statuses: Counter[str] = Counter()
    for shard in shards:
        statuses.update(shard.statuses)
    latencies = [x for shard in shards for x in shard.latencies]
    return Row(
        server,
        f"open loop {args.rate:g} req/s",
        sum(statuses.values()),
        statuses["202"],
        max(shard.elapsed for shard in shards),
        _quantile(latencies, 0.50) * 1000,
        _quantile(latencies, 0.99) * 1000,
        cpu,
    )


# Each paced wrk connection sends about every 500 ms after its answer, so an answer's
# latency L lowers the offered rate by L / (0.5 s + L): 2% at 10 ms. (With 100 ms, 10 ms
# of latency already cost 9%, and the verdict's "rate held" check measured the pacing.)
PACE_SECONDS = 0.5


def run_paced(
    server: str, base_url: str, pid: int, args: argparse.Namespace, env: dict[str, str]
) -> Row:
    """wrk at about ``--rate`` req/s: rate x 500 ms connections, each sending every 500 ms
    (+-50%) after its answer. Latency counts from each send; a server slower than the pace
    shows as an accepted rate under the offered one."""
    connections = max(1, round(args.rate * PACE_SECONDS))
    paced = {**env, "UNLEARN_DELAY_MS": str(round(1000 * connections / args.rate))}
    label = f"wrk paced ~{args.rate:g} req/s"
    return run_wrk(label, server, base_url, pid, args, paced, connections)


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def _server_env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNLEARN_")}
    env["PYTHONPATH"] = str(root)
    return env


def measure_ceiling(args: argparse.Namespace, state_dir: Path) -> Row:
    port = _free_port()
    command = [sys.executable, "-m", "uvicorn", "benchmarks.bare_app:app", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", str(args.workers), "--no-access-log"]
    command += ["--log-level", "warning"]
    root = Path(__file__).resolve().parents[1]
    env = _server_env(root)
    with served(command, env, port, state_dir / "bare.log", root) as server:
        wrk_env = {**os.environ, "UNLEARN_KEY": "-", "UNLEARN_MODEL": "-"}
        base = f"http://127.0.0.1:{port}"
        run_wrk("warm-up", "ceiling", base, server.pid, _warmup(args), wrk_env)
        return run_wrk(
            f"wrk C={args.connections}",
            "ceiling: bare FastAPI 202",
            base,
            server.pid,
            args,
            wrk_env,
        )


def _warmup(args: argparse.Namespace) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), "seconds": args.warmup})


def service_settings(database_url: str, redis_url: str, run_dir: Path) -> dict[str, str]:
    """The measured service's environment: production, on ``database_url`` with the Redis
    broker, its state under ``run_dir`` (which must hold a ``metrics`` folder)."""
    return {
        "UNLEARN_ENVIRONMENT": "production",
        "UNLEARN_DATABASE_URL": database_url,
        "UNLEARN_BROKER_URL": redis_url,
        "UNLEARN_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
        "UNLEARN_STATE_DIR": str(run_dir / "state"),
        "UNLEARN_DATA_ROOT": str(run_dir / "data"),
        "PROMETHEUS_MULTIPROC_DIR": str(run_dir / "metrics"),
        # One key sends everything here: the per-key limit would measure itself.
        "UNLEARN_RATE_LIMIT_PER_SECOND": "0",
        # Production signs its audit log and refuses to start without a key.
        "UNLEARN_AUDIT_SIGNING_KEY": generate()[0],
    }


def migrate(env: dict[str, str], root: Path) -> None:
    """``unlearnd migrate`` from the checkout ``root``."""
    migrated = subprocess.run(
        [sys.executable, "-m", "workers.cli", "migrate"],
        env=env,
        cwd=root,
        timeout=180,
        capture_output=True,
        text=True,
    )
    if migrated.returncode != 0:
        raise RuntimeError(f"unlearnd migrate failed:\n{migrated.stdout}{migrated.stderr}")


def measure_service(label: str, root: Path, args: argparse.Namespace, state_dir: Path) -> list[Row]:
    """Saturation and fixed rate against ``unlearnd serve`` run from the checkout ``root``."""
    with ExitStack() as stack:
        database_url = stack.enter_context(scratch_database(args.pg_url))
        stack.callback(_flush_broker, args.redis_url)
        run_dir = state_dir / label.replace(" ", "-")
        (run_dir / "metrics").mkdir(parents=True)
        settings = service_settings(database_url, args.redis_url, run_dir)
        env = {**_server_env(root), **settings}
        migrate(env, root)
        port = _free_port()
        command = [sys.executable, "-m", "workers.cli", "serve", "--host", "127.0.0.1"]
        command += ["--port", str(port), "--no-access-log"]
        if args.workers > 1:
            command += ["--workers", str(args.workers)]
        server = stack.enter_context(served(command, env, port, run_dir / "serve.log", root))
        base_url = f"http://127.0.0.1:{port}"
        model_id, keys = prepare_model(base_url, args.samples)
        keys_file = run_dir / "keys.txt"
        keys_file.write_text("\n".join(keys) + "\n")
        wrk_env = {
            **os.environ,
            "UNLEARN_KEY": ADMIN_KEY,
            "UNLEARN_MODEL": model_id,
            "UNLEARN_KEYS_FILE": str(keys_file),
        }
        print(f"{label}: serve pid {server.pid} on {base_url}; {len(keys)} keys", flush=True)
        run_wrk("warm-up", label, base_url, server.pid, _warmup(args), wrk_env)
        saturated = run_wrk(f"wrk C={args.connections}", label, base_url, server.pid, args, wrk_env)
        if args.fixed_rate == "python":
            fixed = run_open_loop(label, base_url, server.pid, model_id, keys, args)
        else:
            fixed = run_paced(label, base_url, server.pid, args, wrk_env)
        return [saturated, fixed]


def report(
    rows: list[Row], ceiling: Row, args: argparse.Namespace, command: str, load: tuple[str, str]
) -> str:
    lines = [
        "| server | load | sent | accepted | accepted req/s | p50 ms | p99 ms "
        "| server CPU ms/request | share of ceiling |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in [ceiling, *rows]:
        saturating = row.load.startswith("wrk C=")
        share = f"{row.rate / ceiling.rate:.0%}" if saturating and ceiling.rate else "-"
        lines.append(
            f"| {row.server} | {row.load} | {row.sent:,} | {row.accepted:,} | {row.rate:,.0f} "
            f"| {row.p50_ms:.1f} | {row.p99_ms:.1f} | {row.cpu_ms_per_request:.2f} | {share} |"
        )
    after = [row for row in rows if row.server == "after"]
    verdicts = []
    if after:
        saturated, fixed = after
        calm = (
            fixed.p99_ms < P99_TARGET_MS
            and fixed.accepted == fixed.sent
            and fixed.rate >= 0.9 * args.rate  # the offered rate was held
        )
        verdicts = [
            "",
            f"Targets (after): >= {THROUGHPUT_TARGET:.0f} accepted req/s: "
            f"{'met' if saturated.rate >= THROUGHPUT_TARGET else 'MISSED'} "
            f"({saturated.rate:,.0f}); p99 < {P99_TARGET_MS:.0f} ms at {args.rate:g} req/s: "
            f"{'met' if calm else 'MISSED'} "
            f"({fixed.p99_ms:.1f} ms at {fixed.rate:,.0f} req/s); >= 50% of the ceiling: "
            f"{'met' if ceiling.rate and saturated.rate >= 0.5 * ceiling.rate else 'MISSED'} "
            f"({saturated.rate / ceiling.rate:.0%}).",
        ]
    notes = [
        "",
        f"Command: `{command}` ({args.workers} serve worker(s), wrk -t{args.wrk_threads} "
        f"-c{args.connections}, {args.seconds:g} s per phase after a {args.warmup:g} s "
        f"warm-up, {os.cpu_count()} cores, load average {load[0]} before and {load[1]} after).",
        "accepted counts 2xx answers; wrk's latency is per request from its send (paced: "
        f"{max(1, round(args.rate * PACE_SECONDS))} connections each sending about every "
        f"{PACE_SECONDS * 1000:.0f} ms after its answer), the Python open loop's from each "
        "request's scheduled send time; server CPU is the serve process tree's (Postgres and "
        "the generators excluded), per accepted request.",
    ]
    return "\n".join(lines + verdicts + notes)


def _load_average() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


MARK_START, MARK_END = "<!-- ingest:start -->", "<!-- ingest:end -->"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def write_docs(table: str, path: Path = DOCS) -> None:
    """Put ``table`` between the ingest markers of ``path``, keeping everything else."""
    section = f"{MARK_START}\n{table}\n{MARK_END}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if MARK_START in text and MARK_END in text:
        head, rest = text.split(MARK_START, 1)
        text = head + section + rest.split(MARK_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n## Ingest\n\n" + section + "\n"
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.api_ingest", description=__doc__)
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each phase")
    parser.add_argument("--rate", type=float, default=300.0, help="open-loop rate (req/s)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads")
    parser.add_argument(
        "--workers", type=int, default=2, help="serve --workers (and the ceiling's)"
    )
    parser.add_argument("--processes", type=int, default=1, help="open-loop generator processes")
    parser.add_argument(
        "--fixed-rate",
        choices=["wrk", "python"],
        default="wrk",
        help="the fixed-rate phase: wrk paced (cheap), or the Python open loop (latency from "
        "each scheduled send, but it needs most of a core itself)",
    )
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured warm-up seconds")
    parser.add_argument("--before", type=Path, default=None, help="also measure this checkout")
    parser.add_argument("--docs", action="store_true", help="write the table to docs/benchmarks.md")
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
    if min(args.seconds, args.rate, args.connections, args.processes, args.workers) <= 0:
        parser.error("--seconds, --rate, --connections, --processes and --workers must be positive")
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed (Debian: apt-get install wrk)")
    # A terminated benchmark still stops its servers and drops its databases.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    command = shlex.join(["python", "-m", "benchmarks.api_ingest", *(argv or sys.argv[1:])])
    load_before = _load_average()
    with ExitStack() as stack:
        state_dir = Path(tempfile.mkdtemp(prefix="unlearnd-bench-"))
        stack.callback(shutil.rmtree, state_dir, ignore_errors=True)
        ceiling = measure_ceiling(args, state_dir)
        rows = []
        if args.before is not None:
            rows += measure_service("before", args.before.resolve(), args, state_dir)
        rows += measure_service("after", Path(__file__).resolve().parents[1], args, state_dir)
    table = report(rows, ceiling, args, command, (load_before, _load_average()))
    print(table)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(table + "\n")
    if args.docs:
        write_docs(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
