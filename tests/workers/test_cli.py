"""The ``unlearnd`` CLI's keys commands: create, list without secrets, rotate and revoke;
bad input exits 2 with one line on stderr, never a traceback, and stores nothing. Also
``--version`` and ``healthcheck``."""

from __future__ import annotations

import pytest

from service.db import session_scope
from workers.cli import main


def test_the_cli_manages_keys(env, capsys):
    assert (
        main(["keys", "create", "--tenant", "acme", "--scopes", "admin", "--expires-in", "90d"])
        == 0
    )
    plaintext = capsys.readouterr().out.strip()
    assert plaintext.startswith("ulk_")
    assert main(["keys", "list", "--tenant", "acme"]) == 0
    listing = capsys.readouterr().out
    secret = plaintext.split("_", 2)[2]  # ulk_<prefix>_<secret>; a secret may hold "_"
    assert plaintext not in listing and secret not in listing
    key_id = listing.splitlines()[1].split("\t")[0]
    assert "active" in listing
    assert main(["keys", "rotate", key_id, "--grace", "0"]) == 0
    rotated = capsys.readouterr().out.strip()
    assert rotated.startswith("ulk_") and rotated != plaintext
    assert main(["keys", "revoke", key_id]) == 0
    capsys.readouterr()
    main(["keys", "list"])
    assert "revoked" in capsys.readouterr().out


def test_a_tenant_name_is_one_tenant_whatever_its_case(env, capsys):
    from sqlalchemy import select

    from service.tables import Tenant

    for name in ("Acme", "acme", "ACME"):
        assert main(["keys", "create", "--tenant", name, "--scopes", "admin"]) == 0
    capsys.readouterr()
    with session_scope() as session:
        assert session.scalars(select(Tenant.name)).all() == ["Acme"]
    assert main(["keys", "list", "--tenant", "aCmE"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 4  # a header, three keys


@pytest.mark.parametrize(
    "args",
    [
        ["--tenant", "acme", "--scopes", "bogus"],
        ["--tenant", "", "--scopes", "admin"],
        ["--tenant", " spaced ", "--scopes", "admin"],
        ["--tenant", "acme\n", "--scopes", "admin"],
    ],
)
def test_the_cli_refuses_bad_keys_without_a_traceback(env, capsys, args):
    assert main(["keys", "create", *args]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and captured.err.startswith("unlearnd: ")
    assert captured.out == ""
    with session_scope() as session:
        from sqlalchemy import func, select

        from service.tables import Tenant

        assert session.scalar(select(func.count()).select_from(Tenant)) == 0


def _serve_options(monkeypatch, tmp_path) -> dict[str, object]:
    """What ``unlearnd serve`` hands uvicorn besides the app, without serving."""
    import uvicorn

    captured: dict[str, object] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: captured.update(options))
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))  # keep serve's own out
    assert main(["serve", "--port", "1"]) == 0
    return {k: v for k, v in captured.items() if k in ("proxy_headers", "forwarded_allow_ips")}


def _guesses(live, count: int) -> tuple[list[int], list[str]]:
    """``count`` bad keys from one peer, each claiming another address in X-Forwarded-For;
    the statuses and the clients the access log recorded."""
    import logging

    import httpx

    recorded: list[str] = []

    class Clients(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            recorded.append(record.__dict__.get("client", ""))

    access = logging.getLogger("unlearnd.access")
    handler = Clients()
    access.addHandler(handler)
    try:
        statuses = [
            httpx.get(
                f"{live.url}/v1/models",
                headers={
                    "Authorization": f"Bearer ulk_guess_{i}",
                    "X-Forwarded-For": f"203.0.113.{i}",
                },
            ).status_code
            for i in range(count)
        ]
    finally:
        access.removeHandler(handler)
    return statuses, recorded


def test_serve_trusts_no_proxy_unless_one_is_configured(env, monkeypatch, tmp_path):
    from tests.helpers.app import configure
    from tests.helpers.live import LiveServer

    configure(monkeypatch, auth_failures_per_minute=20)
    options = _serve_options(monkeypatch, tmp_path)
    assert options == {"proxy_headers": False}
    with LiveServer(**options) as live:
        statuses, clients = _guesses(live, 40)
    # One peer is one address, whatever it claims: locked out after 20 failures (a token
    # comes back every 3 s, so a loaded machine may let one of the later guesses through).
    assert statuses[:20] == [401] * 20 and set(statuses[20:]) <= {401, 429}
    assert statuses[20:].count(429) >= 15
    assert set(clients) == {"127.0.0.1"}

    configure(monkeypatch, forwarded_allow_ips="127.0.0.1")
    options = _serve_options(monkeypatch, tmp_path)
    assert options == {"proxy_headers": True, "forwarded_allow_ips": "127.0.0.1"}
    with LiveServer(**options) as live:
        statuses, clients = _guesses(live, 40)
    # Behind a trusted proxy each forwarded address is its own client.
    assert set(statuses) == {401}
    assert clients == [f"203.0.113.{i}" for i in range(40)]


def test_a_malformed_proxy_setting_is_refused(env, monkeypatch, capsys):
    from tests.helpers.app import configure

    configure(monkeypatch, forwarded_allow_ips="10.0.0.0/8,not-an-address")
    assert main(["keys", "list"]) == 2
    assert "forwarded_allow_ips" in capsys.readouterr().err


def test_the_cli_keeps_a_tenants_last_admin_key(env, capsys):
    assert main(["keys", "create", "--tenant", "acme", "--scopes", "admin"]) == 0
    capsys.readouterr()
    main(["keys", "list", "--tenant", "acme"])
    key_id = capsys.readouterr().out.splitlines()[1].split("\t")[0]
    assert main(["keys", "revoke", key_id]) == 2
    captured = capsys.readouterr()
    assert "last active admin key" in captured.err and "Traceback" not in captured.err
    assert main(["keys", "create", "--tenant", "acme", "--scopes", "admin"]) == 0
    assert main(["keys", "revoke", key_id]) == 0


@pytest.mark.parametrize("command", [["serve", "--port", "1"], ["keys", "list"], ["migrate"]])
def test_an_unreachable_database_is_one_line_without_the_password(
    env, monkeypatch, capsys, tmp_path, command
):
    from tests.helpers.app import configure
    from tests.helpers.network import free_port

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))  # keep serve's own out
    port = free_port()  # nothing listens there
    url = f"postgresql+psycopg://unlearnd:hunter2@127.0.0.1:{port}/unlearnd"
    configure(monkeypatch, database_url=url)
    assert main(command) == 2
    err = capsys.readouterr().err
    assert err.startswith("unlearnd: cannot use the database at ") and f":{port}/" in err
    assert "hunter2" not in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_version(capsys):
    from service.version import VERSION

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"unlearnd {VERSION}" != "unlearnd "


@pytest.mark.redis
def test_healthcheck_passes_only_while_this_host_beats(monkeypatch, sqlite_env, redis_url, capsys):
    """The compose health check of beat and the callback worker (no HTTP port)."""
    import redis

    from tests.helpers.app import configure
    from workers.presence import PresenceBeat

    redis.Redis.from_url(redis_url).flushdb()
    configure(monkeypatch, broker_url=redis_url)
    other = PresenceBeat((), None)
    other.name = "another-container:7"
    other.beat()
    assert main(["healthcheck"]) == 1
    assert "no beat from" in capsys.readouterr().out
    PresenceBeat(("callbacks",), None).beat()
    assert main(["healthcheck"]) == 0
    assert "healthy" in capsys.readouterr().out
    redis.Redis.from_url(redis_url).flushdb()
