"""Sample sets: the held-out samples split three ways by key, the same everywhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ml.datasets import open_source
from ml.samples import SampleSet, split_holdout


def _all_digits() -> SampleSet:
    adapter = open_source({"kind": "builtin", "name": "sklearn-digits"}, Path("."))
    index = adapter.index()
    positions = np.arange(len(index.keys))
    return SampleSet(adapter, positions, index.labels, list(index.keys))


def test_the_holdout_splits_into_three_disjoint_stable_parts():
    samples = _all_digits()
    shadow, validation, audit = split_holdout(samples)
    parts = [set(shadow.keys), set(validation.keys), set(audit.keys)]
    assert sum(map(len, parts)) == len(samples)
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    # about 20% / 30% / 50% of the keys
    shares = [len(part) / len(samples) for part in parts]
    assert abs(shares[0] - 0.2) < 0.04 and abs(shares[1] - 0.3) < 0.04
    # the order of the set does not matter: the split goes by key
    reversed_set = samples.take(np.arange(len(samples))[::-1])
    assert [set(p.keys) for p in split_holdout(reversed_set)] == parts
    # the audit's part is what it was when the holdout had two parts (salt "validation",
    # cut at half the hash range)
    _, old_audit = samples.split_by_key(0.5, salt="validation")
    assert set(old_audit.keys) == parts[2]
