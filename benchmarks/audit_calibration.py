"""Is the audit's verdict calibrated? Retrained models must pass, the original must not.

    python -m benchmarks.audit_calibration [--seeds 9] [--forget 100 400] [--trials 2]
                                          [--architectures mlp small_cnn]

On scikit-learn's digits (the split of ``tests/ml/test_audit.py``: 300 held-out samples, the
rest of the training split as the pool, the source's test split), for each architecture and
forget-set size: ``--seeds`` models retrained without the forget set; each one in turn is
audited as a version against ``--trials`` random sets of K = 4 of the others, as the
service's audit would audit a retrained version. Every gate failure there is a false alarm.
Then the model trained on everything (forget set included) is audited against four of
them: it should fail. The table gives, per setting, the false alarms over all audits and
gates, the original model's verdict and failed gates, and the seed-to-seed spread of each
metric beside the paired estimate the gates use (``ml.audit.scores.allowances``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ml.architectures import build_model
from ml.audit import audit_version, train_references
from ml.datasets import open_source
from ml.samples import SampleSet
from ml.training import TrainingConfig, train

HOLDOUT_SIZE, K = 300, 4
RECIPE = TrainingConfig(epochs=30, batch_size=64, lr=3e-3, seed=0)
CPU = torch.device("cpu")


def samples(adapter, positions: np.ndarray) -> SampleSet:
    index = adapter.index()
    positions = np.sort(positions)
    return SampleSet(
        adapter, positions, index.labels[positions], [index.keys[p] for p in positions]
    )


def run(architecture: str, forget_size: int, seeds: int, trials: int) -> list[str]:
    adapter = open_source({"kind": "builtin", "name": "sklearn-digits"}, Path("."))
    splits = np.asarray(adapter.index().splits)
    shuffled = np.random.default_rng(0).permutation(np.flatnonzero(splits == "train"))
    holdout, pool = samples(adapter, shuffled[:HOLDOUT_SIZE]), shuffled[HOLDOUT_SIZE:]
    test = samples(adapter, np.flatnonzero(splits == "test"))
    forget, retain = samples(adapter, pool[:forget_size]), samples(adapter, pool[forget_size:])

    def build() -> nn.Module:
        return build_model(architecture, {}, [1, 8, 8], 10)

    models = train_references(
        build_model=build, retain=retain, training=RECIPE, k=seeds, device=CPU
    )
    torch.manual_seed(RECIPE.seed)
    original = train(build(), samples(adapter, pool), RECIPE, device=CPU)

    def audit(model: nn.Module, references: list[nn.Module]) -> dict:
        return audit_version(
            model,
            forget=forget,
            retain=retain,
            audit_nonmembers=holdout,
            test=test,
            device=CPU,
            references=references,
        )

    rng = np.random.default_rng(1)
    audits = gates = alarms = 0
    paired: dict[str, list[float]] = {}
    for index, version in enumerate(models):
        others = [m for j, m in enumerate(models) if j != index]
        for _ in range(trials):
            chosen = [others[i] for i in rng.choice(len(others), K, replace=False)]
            report = audit(version, chosen)
            audits += 1
            gates += len(report["gates"])
            alarms += len(report["failed_gates"])
            for gate in report["gates"]:
                if gate["paired_sd"] is not None:
                    paired.setdefault(gate["name"], []).append(gate["paired_sd"])
    spread: dict[str, list[float]] = {}
    for model in models:
        for name, value in audit(model, [])["metrics"].items():
            if isinstance(value, float):
                spread.setdefault(name, []).append(value)
    first = audit(original, models[:K])
    failed = ", ".join(g["name"] for g in first["failed_gates"]) or "-"
    lines = [
        f"| {architecture} | {forget_size} | {audits} | {alarms} of {gates} "
        f"| {first['verdict']} ({failed}) |"
    ]
    for name in sorted(paired):
        if name in spread:
            lines.append(
                f"|  | {name} | seed-to-seed sd {np.std(spread[name], ddof=1):.4f} "
                f"| paired estimate {np.mean(paired[name]):.4f} | |"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=9)
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--forget", type=int, nargs="+", default=[100, 400])
    parser.add_argument("--architectures", nargs="+", default=["mlp", "small_cnn"])
    args = parser.parse_args(argv)
    if args.seeds < K + 1:
        parser.error(f"--seeds must be at least {K + 1}")
    torch.set_num_threads(1)
    started = time.perf_counter()
    print(
        "| architecture | forgotten | retrained audits | false alarms (gates) "
        "| original model |\n|---|---|---|---|---|"
    )
    for architecture in args.architectures:
        for forget_size in args.forget:
            print("\n".join(run(architecture, forget_size, args.seeds, args.trials)), flush=True)
    print(f"\n{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
