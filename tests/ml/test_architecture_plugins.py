"""Architecture plug-ins: installed packages' entry points in ``unlearnd.architectures``
become architecture names, once; clashes and broken plug-ins stop the process with an
error naming the plug-in. The example plug-in is installed as ``tests/helpers/plugins``
says: a dist-info folder on sys.path, found by ``importlib.metadata`` as a pip install
would be, no pip and no network. ``check_fits`` is what makes a plug-in's network safe to
accept: logits of the right shape from a maskable output layer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from ml import architectures
from ml.architectures import (
    ArchitectureError,
    PluginError,
    build_model,
    check_fits,
    load_plugins,
    structure,
    validate_params,
)
from ml.class_masking import mask_classes
from ml.registry import Registry
from tests.helpers.plugins import PACKAGE, forget_modules, write_distribution

ROOT = Path(__file__).resolve().parents[2]
GROUP = architectures.PLUGIN_GROUP


def test_the_example_plugin_registers_its_network(example_plugin):
    assert example_plugin == ["tiny_convnet"]
    entry = architectures.architectures.get("tiny_convnet")
    assert entry.source == "plug-in unlearnd-example-plugin 0.1.0"
    assert validate_params("tiny_convnet", {}) == {"channels": [8, 16]}
    for shape in ([1, 8, 8], [3, 32, 32]):
        check_fits(structure("tiny_convnet", {}, shape, 10), shape, 10)
        network = build_model("tiny_convnet", {"channels": [4, 4, 4]}, shape, 10)
        assert network(torch.randn(2, *shape)).shape == (2, 10)
        mask_classes(network, [3])  # its last Linear is its output layer
        assert network(torch.randn(2, *shape)).argmax(1).ne(3).all()
    with pytest.raises(ArchitectureError, match="cannot take inputs"):
        check_fits(structure("tiny_convnet", {"channels": [8] * 4}, [1, 8, 8], 10), [1, 8, 8], 10)


def test_the_plugin_is_not_registered_outside_its_test():
    assert "tiny_convnet" not in architectures.architectures
    assert PACKAGE not in sys.modules


def _site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str, source: str) -> Path:
    """A folder on sys.path holding ``module`` (its ``source``)."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / f"{module}.py").write_text(source)
    monkeypatch.syspath_prepend(str(site))
    return site


NETWORK = """
from pydantic import BaseModel, ConfigDict
from torch import nn

class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

def build(input_shape, num_classes, params):
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))

class Net:
    Params = Params
    build = staticmethod(build)

not_an_architecture = 42
"""


@pytest.fixture
def fresh() -> Registry[architectures.Architecture]:
    """The built-in architectures only: what a process registers before its plug-ins."""
    return architectures.architectures.copy()


def test_a_name_already_taken_is_refused_with_the_plugin_named(tmp_path, monkeypatch, fresh):
    site = _site(tmp_path, monkeypatch, "clash_nets", NETWORK)
    write_distribution(site, "clash-nets", "2.0", {GROUP: {"small_cnn": "clash_nets:Net"}})
    with pytest.raises(PluginError, match=r"'small_cnn' \(clash_nets:Net of clash-nets\) clashes"):
        load_plugins(fresh)
    forget_modules("clash_nets")


def test_two_plugins_with_one_name_are_refused(tmp_path, monkeypatch, fresh):
    site = _site(tmp_path, monkeypatch, "twin_nets", NETWORK)
    write_distribution(site, "twin-a", "1.0", {GROUP: {"twin": "twin_nets:Net"}})
    write_distribution(site, "twin-b", "1.0", {GROUP: {"twin": "twin_nets:Net"}})
    with pytest.raises(PluginError, match="'twin'.*clashes"):
        load_plugins(fresh)
    forget_modules("twin_nets")


@pytest.mark.parametrize(
    ("name", "target", "message"),
    [
        ("broken", "missing_module:Net", "failed to load: No module named 'missing_module'"),
        ("numbers", "odd_nets:not_an_architecture", "names neither"),
        ("bad name!", "odd_nets:Net", "a name is 1-100 letters"),
    ],
)
def test_broken_plugins_are_refused(tmp_path, monkeypatch, fresh, name, target, message):
    site = _site(tmp_path, monkeypatch, "odd_nets", NETWORK)
    write_distribution(site, "odd-nets", "1.0", {GROUP: {name: target}})
    with pytest.raises(PluginError, match=message):
        load_plugins(fresh)
    assert fresh.names() == architectures.architectures.names()
    forget_modules("odd_nets")


def test_a_process_with_a_clashing_plugin_does_not_start(tmp_path):
    """Plug-ins load when ``ml.architectures`` is imported: the clash stops the import."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "clash_nets.py").write_text(NETWORK)
    write_distribution(site, "clash-nets", "2.0", {GROUP: {"mlp": "clash_nets:Net"}})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    result = subprocess.run(
        [sys.executable, "-c", "import ml.architectures"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "PluginError: architecture plug-in 'mlp'" in result.stderr
    assert "clashes" in result.stderr


class _Logits(nn.Module):
    def __init__(self, head: nn.Module, extra: nn.Module | None = None) -> None:
        super().__init__()
        self.head, self.extra = head, extra

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x.flatten(1))


@pytest.mark.parametrize(
    ("network", "message"),
    [
        # the last Linear registered is not the one that makes the logits
        (_Logits(nn.Linear(64, 10), nn.Linear(10, 3)), "3 outputs, not one per class"),
        # no Linear at all: nothing class deletion could mask
        (
            nn.Sequential(
                nn.Flatten(), nn.Unflatten(1, (64, 1, 1)), nn.Conv2d(64, 10, 1), nn.Flatten()
            ),
            "no Linear",
        ),
        # logits of the wrong width
        (nn.Sequential(nn.Flatten(), nn.Linear(64, 5)), r"shape \(N, 10\)"),
        # inputs it cannot take
        (nn.Sequential(nn.Flatten(), nn.Linear(32, 10)), "cannot take inputs of shape"),
    ],
)
def test_check_fits_refuses_networks_class_deletion_could_not_mask(network, message):
    with torch.device("meta"):
        network = network.to("meta")
    with pytest.raises(ArchitectureError, match=message):
        check_fits(network, [1, 8, 8], 10)
