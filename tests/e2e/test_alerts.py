"""The alerting rules (deploy/alerts.yml): promtool accepts them, their unit tests
(deploy/*_test.yml, `promtool test rules`) pass, and every alert has one. Without promtool
these skip, except in CI where they fail (.ci/run installs Debian's prometheus package)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "alerts.yml"
RULE_TESTS = sorted(DEPLOY.glob("*_test.yml"))


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("promtool")
    if executable is None:
        message = "promtool is not installed (Debian: apt-get install prometheus)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI must check the alerting rules")
        pytest.skip(message)
    return subprocess.run(
        [executable, *args], cwd=DEPLOY, capture_output=True, text=True, timeout=120, check=False
    )


def test_rules_are_valid() -> None:
    result = _promtool("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr
    alerts = re.findall(r"^\s*- alert:\s*(\S+)", RULES.read_text(), flags=re.MULTILINE)
    assert f"SUCCESS: {len(alerts)} rules found" in result.stdout


def test_rule_unit_tests_pass() -> None:
    assert RULE_TESTS, "no deploy/*_test.yml"
    result = _promtool("test", "rules", *(path.name for path in RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test_that_fires_it() -> None:
    """A test that only expects silence would pass on a rule that never fires: each alert
    needs one ``exp_alerts`` with labels."""
    alerts = set(re.findall(r"^\s*- alert:\s*(\S+)", RULES.read_text(), flags=re.MULTILINE))
    fired: set[str] = set()
    for path in RULE_TESTS:
        text = path.read_text()
        for name, expected in re.findall(
            r"alertname:\s*(\S+)\s*\n\s*exp_alerts:(.*?)(?=\n\s*- eval_time:|\n  - interval:|\Z)",
            text,
            flags=re.DOTALL,
        ):
            if "exp_labels" in expected:
                fired.add(name)
    assert alerts and alerts <= fired, f"alerts no unit test fires: {sorted(alerts - fired)}"
