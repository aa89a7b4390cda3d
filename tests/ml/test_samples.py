"""Sample sets: the held-out samples split three ways by key, the same everywhere; a read
never passes off a kept copy's dropped rows as data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ml.datasets import SourceChanged, adapters, open_source
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


def test_a_sample_dropped_from_the_kept_copy_while_it_is_read_fails_the_read():
    # A worker with --pool threads shares its kept copy of a source: another job may drop
    # (zero) forgotten samples' rows while this one reads them. Zeros must not pass for data.
    source = {"kind": "builtin", "name": "sklearn-digits"}
    adapter = adapters.get("builtin")(source, Path("."))  # its own: the kept one stays whole
    index = adapter.index()
    positions = np.arange(40)
    samples = SampleSet(adapter, positions, index.labels[positions], index.keys[:40])
    intact = samples.tensors()[0]
    assert intact.abs().sum() > 0
    read = adapter.read

    def read_while_another_job_drops(chosen):
        adapter.erase(np.array([3, 7]))  # another thread's job drops them mid-read
        return read(chosen)  # what this read copies: their rows zeroed

    adapter.read = read_while_another_job_drops  # type: ignore[method-assign]
    with pytest.raises(SourceChanged) as raised:
        list(samples.batches(16))
    assert index.keys[3] in str(raised.value) and index.keys[7] in str(raised.value)
    with pytest.raises(SourceChanged):
        samples.tensors()
    # Samples that were not dropped still read.
    others = samples.take(np.arange(16, 40))
    assert torch.equal(next(others.batches(24))[0], intact[16:40])


def test_erase_records_a_position_before_it_zeroes_its_row():
    # The order read_kept relies on: a read that copied a zeroed row must find it recorded.
    source = {"kind": "builtin", "name": "sklearn-digits"}
    adapter = adapters.get("builtin")(source, Path("."))
    zeroed_unrecorded: list[int] = []

    class Rows(np.ndarray):
        def __setitem__(self, index, value):
            zeroed_unrecorded.extend(int(p) for p in index if int(p) not in adapter.erased)
            super().__setitem__(index, value)

    rows = np.ones((10, 4), dtype=np.float32).view(Rows)
    adapter._held(rows, np.array([2, 5]))
    assert zeroed_unrecorded == [] and adapter.erased == {2, 5}
    assert not rows[[2, 5]].any() and rows[[0, 1, 3]].all()
