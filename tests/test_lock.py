"""The lock files (`make lock`): requirements.lock (what the image installs) and
requirements-dev.lock (what `make` and CI install) pin every dependency pyproject.toml names,
each with its hashes, torch and torchvision as pyproject.toml pins them, the two agreeing on
every package they share; and the Dockerfile and the Makefile install from them with
``--require-hashes``."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_LOCK = ROOT / "requirements.lock"
DEV_LOCK = ROOT / "requirements-dev.lock"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+) \\$", re.MULTILINE)


def _name(requirement: str) -> str:
    """PEP 503's normalised name of a requirement ("uvicorn[standard]>=0.29" -> uvicorn)."""
    name = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert name, requirement
    return re.sub(r"[-_.]+", "-", name.group(0)).lower()


def _pins(lock: Path) -> dict[str, str]:
    text = lock.read_text()
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.strip())
    for entry in entries:
        assert "--hash=sha256:" in entry, f"{lock.name}: no hash for {entry.splitlines()[0]}"
    return {_name(name): version for name, version in PIN.findall(text)}


def test_every_dependency_is_pinned_with_hashes() -> None:
    runtime, dev = _pins(RUNTIME_LOCK), _pins(DEV_LOCK)
    wanted = {_name(req) for req in PROJECT["dependencies"]}
    tools = {_name(req) for req in PROJECT["optional-dependencies"]["dev"]}
    assert wanted <= set(runtime), f"run `make lock`: {sorted(wanted - set(runtime))}"
    assert wanted | tools <= set(dev), f"run `make lock`: {sorted(wanted | tools - set(dev))}"
    assert not tools & set(runtime), "the image's lock carries no dev tools"
    differ = {name for name in runtime if dev.get(name) != runtime[name]}
    assert differ == set(), f"the two locks disagree on {sorted(differ)}"


def test_exact_pins_of_pyproject_are_the_locked_versions() -> None:
    runtime = _pins(RUNTIME_LOCK)
    exact = [req for req in PROJECT["dependencies"] if "==" in req]
    assert {_name(req) for req in exact} >= {"torch", "torchvision"}
    for requirement in exact:
        assert runtime[_name(requirement)] == requirement.split("==", 1)[1]


def test_the_image_and_make_install_from_the_locks() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^COPY requirements\.lock ", dockerfile, flags=re.MULTILINE)
    assert "pip install --require-hashes -r requirements.lock" in dockerfile
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install --quiet --require-hashes -r requirements-dev.lock" in makefile
    assert re.search(r"^lock:", makefile, flags=re.MULTILINE)
