"""The example architecture plug-in (examples/unlearnd-example-plugin) installed for one
test, without pip and without a network.

Installing a package does two things Python's import system sees: its modules become
importable, and a ``<name>-<version>.dist-info`` folder beside them carries its metadata
and ``entry_points.txt``, which ``importlib.metadata.entry_points`` reads. Here the
example's ``src`` folder goes on ``sys.path`` and such a dist-info folder is written into a
temporary folder that goes on ``sys.path`` too, its entry points taken from the example's
own pyproject.toml, so the test reads what a real install would register. No build backend,
no pip, no index: it works on a clean clone offline (CI) and leaves the environment as it
was (``sys.path`` is restored, unlearnd's architecture registry is a copy for the test,
and the ``example_plugin`` fixture forgets the imported module).
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import pytest

from ml import architectures
from ml.architectures import PLUGIN_GROUP, load_plugins

__all__ = ["EXAMPLE", "PACKAGE", "forget_modules", "install_example", "write_distribution"]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "unlearnd-example-plugin"
PACKAGE = "unlearnd_example_plugin"


def write_distribution(
    site: Path, name: str, version: str, points: dict[str, dict[str, str]]
) -> None:
    """A ``dist-info`` folder under ``site``, as pip writes it: METADATA and
    entry_points.txt (``points``: group -> {entry name: "module:object"})."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = []
    for group, entries in points.items():
        lines += [f"[{group}]", *(f"{entry} = {target}" for entry, target in entries.items())]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")


def install_example(monkeypatch: pytest.MonkeyPatch, site: Path) -> list[str]:
    """The example plug-in importable and discoverable for this test, its architectures
    registered in a copy of the registry; returns their names."""
    project = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    points = project["entry-points"]
    assert PLUGIN_GROUP in points, f"the example declares no {PLUGIN_GROUP} entry point"
    write_distribution(site, project["name"], project["version"], points)
    monkeypatch.syspath_prepend(str(EXAMPLE / "src"))
    monkeypatch.syspath_prepend(str(site))
    registry = architectures.architectures.copy()
    monkeypatch.setattr(architectures, "architectures", registry)
    names = load_plugins(registry)
    return names


def forget_modules(package: str = PACKAGE) -> None:
    """Drop ``package``'s imported modules, so the next test imports it afresh."""
    for module in [m for m in sys.modules if m == package or m.startswith(f"{package}.")]:
        del sys.modules[module]
