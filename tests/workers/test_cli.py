"""The ``unlearnd`` CLI's keys commands: create, list without secrets, rotate and revoke;
bad input exits 2 with one line on stderr, never a traceback, and stores nothing."""

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


@pytest.mark.parametrize(
    "args",
    [
        ["--tenant", "acme", "--scopes", "bogus"],
        ["--tenant", "", "--scopes", "admin"],
        ["--tenant", " spaced ", "--scopes", "admin"],
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
