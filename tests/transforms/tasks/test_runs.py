"""Sums and means over runs of rows for a whole batch equal numpy's over each run, to the last bit."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from distilbeam.transforms.tasks.runs import last_rows, run_means


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_rows=st.integers(0, 400),
    columns=st.sampled_from([None, 1, 2, 9]),
    cut=st.floats(0.0, 1.0),
    subset=st.booleans(),
)
def test_run_means_equal_numpy_means_of_each_run(seed, n_rows, columns, cut, subset):
    rng = np.random.default_rng(seed)
    shape = (n_rows,) if columns is None else (n_rows, columns)
    values = rng.random(shape, dtype=np.float32)
    first = np.flatnonzero(np.r_[n_rows > 0, rng.random(max(n_rows - 1, 0)) < cut])
    last = last_rows(first, n_rows)
    if subset:  # some runs only, as when "O" runs are left out
        kept = rng.random(len(first)) < 0.5
        first, last = first[kept], last[kept]
    means = run_means(values, first, last)
    assert means.dtype == np.float32 and means.shape == (len(first), *shape[1:])
    for mean, f, e in zip(means, first.tolist(), last.tolist(), strict=True):
        assert np.array_equal(mean, np.mean(values[f : e + 1], axis=0))
