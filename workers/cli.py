"""``unlearnd``: serve, worker, beat, migrate, keys create, audit verify."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any


def _multiprocess_metrics(role: str) -> None:
    """Prometheus multiprocess mode: set the folder before prometheus_client is imported.
    One folder per serving or worker process tree, so a restart starts from clean files."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        return
    folder = Path(tempfile.gettempdir()) / f"unlearnd-metrics-{os.getpid()}-{role}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def cmd_migrate(_: argparse.Namespace) -> int:
    from service.migrate import upgrade

    upgrade()
    _out("database at head")
    return 0


def duration(raw: str) -> timedelta:
    """``90d``, ``12h``, ``30m``, ``45s`` or plain seconds."""
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    number, unit = (raw[:-1], raw[-1]) if raw[-1:] in units else (raw, "s")
    try:
        return timedelta(seconds=float(number) * units[unit])
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"not a duration: {raw!r} (e.g. 90d, 12h)") from None


def cmd_keys_create(args: argparse.Namespace) -> int:
    from service.db import session_scope
    from service.keys import service as keys

    expires_at = datetime.now(UTC) + args.expires_in if args.expires_in else None
    with session_scope() as session:
        _, plaintext = keys.create_key(
            session,
            tenant_name=args.tenant,
            scopes=[s.strip() for s in args.scopes.split(",")],
            name=args.name,
            expires_at=expires_at,
        )
    _out(plaintext)
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    from service.db import session_scope
    from service.keys import service as keys

    with session_scope() as session:
        _out("id\ttenant\tname\tprefix\tscopes\tstatus\tcreated\texpires")
        for key, tenant in keys.with_tenant_names(session, tenant_name=args.tenant):
            expires = key.expires_at.isoformat(timespec="seconds") if key.expires_at else "-"
            _out(
                f"{key.id}\t{tenant}\t{key.name or '-'}\t{key.prefix}\t{','.join(key.scopes)}\t"
                f"{keys.status_of(key)}\t{key.created_at.isoformat(timespec='seconds')}\t{expires}"
            )
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    from service.db import session_scope
    from service.keys import service as keys

    with session_scope() as session:
        keys.revoke(session, key_id=args.key_id)
    _out(f"revoked {args.key_id}")
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    from service.db import session_scope
    from service.keys import service as keys

    with session_scope() as session:
        _, plaintext = keys.rotate(session, key_id=args.key_id, grace=args.grace)
    _out(plaintext)
    return 0


def proxy_options(forwarded_allow_ips: str) -> dict[str, Any]:
    """uvicorn's proxy settings: X-Forwarded-For (the client address the failed-auth
    lockout and the access log use) and X-Forwarded-Proto are believed only from the
    proxies ``UNLEARN_FORWARDED_ALLOW_IPS`` names. uvicorn's own default believes them from
    127.0.0.1, which lets any local process, or a proxy that passes the header through,
    choose the address it is locked out under."""
    if not forwarded_allow_ips.strip():
        return {"proxy_headers": False}
    return {"proxy_headers": True, "forwarded_allow_ips": forwarded_allow_ips}


def cmd_serve(args: argparse.Namespace) -> int:
    _multiprocess_metrics("serve")
    import uvicorn

    from service import logs
    from service.bootstrap import prepare
    from service.settings import get_settings
    from workers.runtime import create_app, install_sender

    install_sender()  # the demo model's training job is sent while preparing
    prepare(announce=_out)
    if get_settings().embedded_worker:  # this process runs the jobs
        from workers.device import announce_device

        announce_device(get_settings().device)
    _out(f"admin dashboard: http://{args.host}:{args.port}/admin/ (sign in with an API key)")
    # uvicorn's access log is off (it logs raw paths); ours is structured (service.logs).
    log_config = logs.config(access_log=args.access_log)
    # Request heads bounded in size and time (workers.http_edge), proxies as configured.
    options = {
        "http": "workers.http_edge:BoundedHttpProtocol",
        **proxy_options(get_settings().forwarded_allow_ips),
    }
    if args.workers > 1:
        if get_settings().embedded_worker:
            _out("--workers > 1 needs UNLEARN_BROKER_URL (the embedded worker runs in one process)")
            return 2
        uvicorn.run(
            "workers.runtime:create_app",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_config=log_config,
            access_log=False,
            **options,
        )
        return 0
    uvicorn.run(
        create_app(),
        host=args.host,
        port=args.port,
        log_config=log_config,
        access_log=False,
        **options,
    )
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    _multiprocess_metrics("worker")
    from service import outbox
    from service.settings import get_settings
    from workers.celery_app import app
    from workers.presence import PresenceBeat
    from workers.runtime import install_sender

    queues = tuple(queue.strip() for queue in args.queues.split(",") if queue.strip())
    # Jobs run from the gpu and audit queues; a worker serving only dispatch or callbacks
    # needs no device.
    device: str | None = None
    build: tuple[str, str] | None = None
    if {outbox.GPU, outbox.AUDIT} & set(queues):
        from workers import device as job_device

        # Before the pool forks: one check, one line.
        device = str(job_device.announce_device(get_settings().device))
        build = job_device.build()
    _beat_while_consuming(PresenceBeat(queues, device, build))
    install_sender()  # follow-up jobs are sent from inside the worker
    port = args.metrics_port or get_settings().worker_metrics_port
    if port:
        from prometheus_client import CollectorRegistry, multiprocess, start_http_server

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        start_http_server(port, registry=registry)
    argv = [
        "worker",
        "--loglevel=INFO",
        f"--queues={args.queues}",
        f"--concurrency={args.concurrency}",
        f"--pool={args.pool}",
    ]
    app.worker_main(argv)
    return 0


def _beat_while_consuming(beat: Any) -> None:
    """Seen on /readyz (``service.presence``) from the moment Celery consumes until it
    shuts down."""
    from celery.signals import worker_ready, worker_shutdown

    worker_ready.connect(lambda **_: beat.start(), weak=False)
    worker_shutdown.connect(lambda **_: beat.stop(), weak=False)


def cmd_beat(_: argparse.Namespace) -> int:
    from service.settings import get_settings
    from workers.celery_app import app
    from workers.presence import PresenceBeat

    # Consumes no queue: its beats are for its health check (`unlearnd healthcheck`).
    PresenceBeat((), None).start()
    schedule = get_settings().state_dir / "celerybeat-schedule"
    schedule.parent.mkdir(parents=True, exist_ok=True)
    app.Beat(loglevel="INFO", schedule=str(schedule)).run()
    return 0


def cmd_healthcheck(_: argparse.Namespace) -> int:
    """Exit 0 when a worker or beat process of this host (container) beat within the last
    minute (``service.presence``), 1 otherwise: the compose health check of the roles that
    serve no HTTP port."""
    import socket
    import time

    from service import presence

    beats = presence.seen()
    if beats is None:
        _out("unhealthy: worker beats travel through a Redis broker; none is configured")
        return 1
    host = socket.gethostname()
    mine = [beat for beat in beats if beat.name.rpartition(":")[0] == host]
    if not mine:
        _out(f"unhealthy: no beat from {host} in the last {presence.SEEN_SECONDS} s")
        return 1
    _out(f"healthy: {mine[0].name} beat {time.time() - mine[0].at:.0f} s ago")
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """Exit 0 when the chain (and, with --public-key, every signature and every entry of
    the certificates given) holds; 1 naming the first break; 2 on unusable input."""
    import json

    from service import audit_log
    from service.audit_signing import PublicKey
    from service.db import session_scope
    from service.errors import InvalidInput

    try:
        keys = [PublicKey.parse(text) for text in args.public_key]
    except ValueError as error:
        raise InvalidInput(f"--public-key is not an Ed25519 public key: {error}") from None
    if args.certificate and not keys:
        raise InvalidInput("--certificate needs --public-key: a certificate is checked by it")
    held: list[tuple[str, dict]] = []
    for path in args.certificate:
        try:
            entries = json.loads(Path(path).read_text())["audit_log"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise InvalidInput(f"{path} is not a certificate ({error})") from None
        held += [(path, entry) for entry in entries if isinstance(entry, dict)]
    with session_scope() as session:
        result = audit_log.verify(session, keys=keys)
        problems = [
            f"entry {entry.get('id')} of {path} {problem}"
            for path, entry in held
            if (problem := audit_log.held_entry_problem(session, entry, keys))
        ]
    if result.broken is not None:
        _out(
            f"audit log BROKEN at entry {result.broken.entry_id}: {result.broken.reason} "
            f"({result.checked} entries verified before it)"
        )
        return 1
    if problems:
        _out("audit log BROKEN: " + "; ".join(problems))
        return 1
    signed = f", signatures checked on {result.signed}" if keys else " (signatures not checked)"
    _out(f"audit log intact: {result.checked} entries verified{signed}")
    if held:
        _out(f"the {len(held)} entries of {len(args.certificate)} certificate(s) are in it")
    if result.head is not None:
        _out(f"head: entry {result.head.entry_id} {result.head.hash}")
    return 0


def cmd_audit_keygen(_: argparse.Namespace) -> int:
    from service.audit_signing import generate

    private, public = generate()
    _out(f"UNLEARN_AUDIT_SIGNING_KEY={private}")
    _out(f"public key (give it to verifiers): {public}")
    return 0


def cmd_audit_public_key(_: argparse.Namespace) -> int:
    from service import audit_log
    from service.errors import InvalidInput

    key = audit_log.public_key()
    if key is None:
        raise InvalidInput("no audit signing key is configured (UNLEARN_AUDIT_SIGNING_KEY)")
    _out(f"{key.text} (Ed25519, key id {key.key_id})")
    return 0


def parser() -> argparse.ArgumentParser:
    from service.version import VERSION

    root = argparse.ArgumentParser(prog="unlearnd", description=__doc__)
    root.add_argument("--version", action="version", version=f"unlearnd {VERSION}")
    commands = root.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="the HTTP API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="API processes, one per core the API may use (needs a broker; see docs/operations.md)",
    )
    serve.add_argument("--no-access-log", dest="access_log", action="store_false")
    serve.set_defaults(run=cmd_serve)

    worker = commands.add_parser("worker", help="a Celery worker")
    worker.add_argument("--queues", default="gpu,audit,control,callbacks")
    worker.add_argument("--concurrency", type=int, default=1)
    worker.add_argument("--pool", default="prefork", choices=["prefork", "solo", "threads"])
    worker.add_argument("--metrics-port", type=int, default=None)
    worker.set_defaults(run=cmd_worker)

    commands.add_parser("beat", help="the batching scheduler").set_defaults(run=cmd_beat)
    commands.add_parser("migrate", help="upgrade the database").set_defaults(run=cmd_migrate)
    commands.add_parser(
        "healthcheck", help="exit 0 when a worker or beat of this host beat in the last minute"
    ).set_defaults(run=cmd_healthcheck)

    keys = commands.add_parser("keys", help="API keys").add_subparsers(dest="keys", required=True)
    create = keys.add_parser("create", help="create a key and print it once")
    create.add_argument("--tenant", required=True)
    create.add_argument("--scopes", required=True, help="comma-separated, e.g. admin")
    create.add_argument("--name", default="")
    create.add_argument("--expires-in", type=duration, default=None, help="e.g. 90d")
    create.set_defaults(run=cmd_keys_create)
    listing = keys.add_parser("list", help="keys without their secrets")
    listing.add_argument("--tenant", default=None)
    listing.set_defaults(run=cmd_keys_list)
    revoke = keys.add_parser("revoke", help="revoke a key now")
    revoke.add_argument("key_id")
    revoke.set_defaults(run=cmd_keys_revoke)
    rotate = keys.add_parser("rotate", help="a new key; the old one expires after --grace")
    rotate.add_argument("key_id")
    rotate.add_argument("--grace", type=duration, default=timedelta(hours=1), help="e.g. 1h")
    rotate.set_defaults(run=cmd_keys_rotate)

    audit = commands.add_parser("audit", help="the audit log").add_subparsers(
        dest="audit", required=True
    )
    verify = audit.add_parser("verify", help="walk the hash chain, check the signatures")
    verify.add_argument(
        "--public-key",
        action="append",
        default=[],
        help="check every signature with this key (write --public-key=K: a key may start "
        "with -; repeat for a rotated key)",
    )
    verify.add_argument(
        "--certificate",
        action="append",
        default=[],
        help="a certificate's JSON: its entries must be signed and still in the log",
    )
    verify.set_defaults(run=cmd_audit_verify)
    audit.add_parser("keygen", help="print a new signing key").set_defaults(run=cmd_audit_keygen)
    audit.add_parser("public-key", help="the configured key's public half").set_defaults(
        run=cmd_audit_public_key
    )
    return root


def main(argv: list[str] | None = None) -> int:
    from pydantic import ValidationError

    from service import logs
    from service.bootstrap import RefusedToStart
    from service.db import unreachable
    from service.errors import DomainError

    args = parser().parse_args(argv)
    logs.configure(access_log=getattr(args, "access_log", True))
    try:
        return int(args.run(args) or 0)
    except (DomainError, RefusedToStart) as error:
        sys.stderr.write(f"unlearnd: {error}\n")
        return 2
    except ValidationError as error:  # the settings; their errors never echo values
        sys.stderr.write(f"unlearnd: invalid configuration: {error}\n")
        return 2
    except Exception as error:  # the database down, unknown or refusing us: one line
        message = unreachable(error)
        if message is None:
            raise
        sys.stderr.write(f"unlearnd: {message}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
