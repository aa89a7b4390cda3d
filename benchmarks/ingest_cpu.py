"""CPU per request of ``POST /v1/deletion-requests`` in process: the ASGI app called
directly (no sockets, no HTTP parser, no load generator on the cores), ``--callers``
posting at once, every batch committed in a scratch Postgres database. It isolates what
the service's own code costs, where ``benchmarks/api_ingest.py`` measures the served whole.

    python -m benchmarks.ingest_cpu --callers 64 --requests 6000
    python -m benchmarks.ingest_cpu --callers 1 --requests 1000     # one request per batch
    python -m benchmarks.ingest_cpu --edge-only                     # the HTTP edge alone

``--edge-only`` answers every request from a canned JSON at the batcher, so what is left is
the HTTP edge (middleware, gate, routing, body validation, the response). The database,
its model and its keys are prepared through a short-lived ``unlearnd serve`` (as
``api_ingest`` does); the process then builds the app itself. Prints one line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging.config
import os
import sys
import tempfile
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from benchmarks import api_ingest as served

ROOT = Path(__file__).resolve().parents[1]


def _scope(body: bytes, authorization: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": served.PATH,
        "raw_path": served.PATH.encode(),
        "root_path": "",
        "query_string": b"",
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "headers": [
            (b"host", b"bench"),
            (b"content-type", b"application/json"),
            (b"authorization", authorization),
            (b"content-length", str(len(body)).encode()),
        ],
        "state": {},
    }


async def _post(app: Any, body: bytes, authorization: bytes) -> int:
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # no disconnect while the answer is pending
        raise AssertionError("unreachable")

    status = 0

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(_scope(body, authorization), receive, send)
    return status


async def _measure(args: argparse.Namespace, model_id: str, keys: list[str]) -> str:
    from service.deletion_requests import ingest
    from workers.runtime import create_app

    app = create_app()
    authorization = f"Bearer {served.ADMIN_KEY}".encode()
    batches: list[int] = []
    settle = ingest.settle

    async def counted(items: list[Any]) -> list[Any]:
        batches.append(len(items))
        return await settle(items)

    ingest.settle = counted  # type: ignore[assignment]
    if args.edge_only:
        canned = {"id": "-", "model_id": model_id, "status": "pending", "sample_count": 1}

        async def answer_at_once(_: Any) -> dict[str, Any]:
            return canned

        ingest.submit = answer_at_once  # type: ignore[assignment]

    sent = 0
    statuses: dict[int, int] = {}

    async def caller(count: int) -> None:
        nonlocal sent
        for _ in range(count):
            sent += 1
            body = {
                "model_id": model_id,
                "subject_id": f"s{sent}",
                "sample_keys": [keys[(sent * 7919) % len(keys)]],
            }
            status = await _post(app, json.dumps(body).encode(), authorization)
            statuses[status] = statuses.get(status, 0) + 1

    startup: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    done = asyncio.Event()

    async def lifespan_send(message: MutableMapping[str, Any]) -> None:
        if message["type"].endswith(("complete", "failed")):
            done.set()

    lifespan = asyncio.create_task(
        app(
            {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
            startup.get,
            lifespan_send,
        )
    )
    await startup.put({"type": "lifespan.startup"})
    await done.wait()
    await asyncio.gather(*(caller(20) for _ in range(args.callers)))  # warm-up
    statuses.clear()
    batches.clear()
    each = max(1, args.requests // args.callers)
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(caller(each) for _ in range(args.callers)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    done.clear()
    await startup.put({"type": "lifespan.shutdown"})
    await done.wait()
    await lifespan
    total = sum(statuses.values())
    mean = sum(batches) / len(batches) if batches else 0.0
    what = "HTTP edge only" if args.edge_only else f"{len(batches)} batches, mean size {mean:.1f}"
    return (
        f"callers {args.callers}: {total} requests {dict(sorted(statuses.items()))}, "
        f"{1000 * cpu / total:.3f} ms CPU/request, {total / wall:,.0f} req/s wall ({what})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ingest_cpu", description=__doc__)
    parser.add_argument("--callers", type=int, default=64, help="posts in flight at once")
    parser.add_argument("--requests", type=int, default=6000, help="measured posts in all")
    parser.add_argument("--edge-only", action="store_true", help="answer at the batcher")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("UNLEARN_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test"),
        help="a Postgres database to connect to for CREATE/DROP DATABASE",
    )
    parser.add_argument(
        "--redis-url", default="redis://127.0.0.1:6379/15", help="the broker (emptied at the end)"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch, served.scratch_database(args.pg_url) as url:
        run_dir = Path(scratch)
        (run_dir / "metrics").mkdir()
        settings = served.service_settings(url, args.redis_url, run_dir)
        env = {**served._server_env(ROOT), **settings}
        try:
            served.migrate(env, ROOT)
            port = served._free_port()
            command = [sys.executable, "-m", "workers.cli", "serve", "--host", "127.0.0.1"]
            command += ["--port", str(port)]
            with served.served(command, env, port, run_dir / "serve.log", ROOT):
                model_id, keys = served.prepare_model(f"http://127.0.0.1:{port}", 1500)
            os.environ.update(settings)
            from service import logs

            # As `unlearnd serve --no-access-log` logs: the accepted-request lines stay.
            logging.config.dictConfig(logs.config(access_log=False))
            sys.stdout.flush()
            with open(os.devnull, "w") as quiet:  # the log lines cost their CPU, unseen
                saved = os.dup(1)
                os.dup2(quiet.fileno(), 1)
                try:
                    line = asyncio.run(_measure(args, model_id, keys))
                finally:
                    os.dup2(saved, 1)
                    os.close(saved)
        finally:
            served._flush_broker(args.redis_url)
    print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
