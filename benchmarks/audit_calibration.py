"""Is the audit's verdict calibrated? Retrained models must pass, the parent that did
nothing must never pass, and a half-done unlearning must be told apart.

    python -m benchmarks.audit_calibration [--seeds 9] [--forget 100 400] [--trials 2]
                                          [--architectures mlp small_cnn]

On scikit-learn's digits (the split of ``tests/ml/test_audit.py``: 300 held-out samples, the
rest of the training split as the pool, the source's test split), for each architecture and
forget-set size: ``--seeds`` models retrained without the forget set; each one in turn is
audited as a version against ``--trials`` random sets of K = 4 of the others, with the
model trained on everything (the forget set included) as its parent, the positive control,
as the service's audit would audit a retrained version. Every gate failure there is a false
alarm; a retrained version's verdict is "pass", or "inconclusive" where no gate tells the
parent from the references. Then, against four of them, the parent audited as its own
child (it did nothing: it must be "fail" or "inconclusive", never "pass"), and a half-done
version: PGU stopped after one step (``stop`` "none", ``max_steps`` 1, from the parent's
cache). The table gives, per setting, the false alarms over all audits and gates, the
retrained versions' verdicts, the parent's and the half-done version's verdicts with their
failed gates, and the seed-to-seed spread of each metric beside the reference-pair estimate
the gates use (``ml.audit.scores.allowances``).
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
from ml.unlearners import UnlearnContext, get_unlearner

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
            parent=original,
        )

    rng = np.random.default_rng(1)
    audits = gates = alarms = 0
    verdicts: dict[str, int] = {}
    paired: dict[str, list[float]] = {}
    for index, version in enumerate(models):
        others = [m for j, m in enumerate(models) if j != index]
        for _ in range(trials):
            chosen = [others[i] for i in rng.choice(len(others), K, replace=False)]
            report = audit(version, chosen)
            audits += 1
            gates += len(report["gates"])
            alarms += len(report["failed_gates"])
            verdicts[report["verdict"]] = verdicts.get(report["verdict"], 0) + 1
            for gate in report["gates"]:
                if gate["paired_sd"] is not None:
                    paired.setdefault(gate["name"], []).append(gate["paired_sd"])
    spread: dict[str, list[float]] = {}
    for model in models:
        for name, value in audit(model, [])["metrics"].items():
            if isinstance(value, float):
                spread.setdefault(name, []).append(value)

    def outcome(report: dict) -> str:
        failed = ", ".join(g["name"] for g in report["failed_gates"]) or "-"
        return f"{report['verdict']} ({failed})"

    parent = audit(original, models[:K])
    half_done = audit(one_pgu_step(original, build, forget, retain, holdout), models[:K])
    told = ", ".join(f"{n} {v}" for v, n in sorted(verdicts.items()))
    lines = [
        f"| {architecture} | {forget_size} | {audits} | {alarms} of {gates} | {told} "
        f"| {outcome(parent)} | {outcome(half_done)} |"
    ]
    for name in sorted(paired):
        if name in spread:
            lines.append(
                f"|  | {name} | seed-to-seed sd {np.std(spread[name], ddof=1):.4f} "
                f"| reference pairs {np.mean(paired[name]):.4f} | | | |"
            )
    return lines


def one_pgu_step(
    original: nn.Module,
    build,  # type: ignore[no-untyped-def]
    forget: SampleSet,
    retain: SampleSet,
    holdout: SampleSet,
) -> nn.Module:
    """A half-done unlearning: PGU from ``original``, one step, no stop rule."""
    pgu = get_unlearner("pgu", {"stop": "none", "max_steps": 1})
    everything = forget.take(np.arange(0))

    def context(of: SampleSet, rest: SampleSet, artifacts: dict) -> UnlearnContext:
        model = build()
        model.load_state_dict(original.state_dict())
        return UnlearnContext(
            model=model.eval(),
            build_model=build,
            forget=of,
            retain=rest,
            validation=holdout,
            shadow=holdout,
            training=RECIPE,
            device=CPU,
            base_version=1,
            artifacts=artifacts.get,
        )

    pool = SampleSet(
        retain.adapter,
        np.concatenate([forget.positions, retain.positions]),
        np.concatenate([forget.labels, retain.labels]),
        [*forget.keys, *retain.keys],
    )
    cache = pgu.prepare(context(everything, pool, {}))
    result = pgu.unlearn(context(forget, retain, cache))
    model = build()
    model.load_state_dict(result.state_dict)
    return model.eval()


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
        "| retrained verdicts | parent, did nothing | PGU after one step |"
        "\n|---|---|---|---|---|---|---|"
    )
    for architecture in args.architectures:
        for forget_size in args.forget:
            print("\n".join(run(architecture, forget_size, args.seeds, args.trials)), flush=True)
    print(f"\n{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
