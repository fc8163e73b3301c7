"""Sums and means over runs of consecutive rows (a document's chunks, a word's tokens, an entity's words)
for a whole batch at once, equal to the last bit to numpy's over each run's rows (``np.mean(rows,
axis=0)``), so that ties between labels break as they would in a loop over the runs. numpy adds the rows
of a 2-D array left to right, and a 1-D array pairwise once it has 8 values or more; ``np.add.reduceat``
adds in yet another order."""

from __future__ import annotations

import numpy as np

PAIRWISE_FROM = 8  # values from which numpy sums a 1-D array pairwise


def last_rows(first: np.ndarray, n_rows: int) -> np.ndarray:
    """The last row of each run, for runs starting at ``first`` (ascending) and covering ``n_rows`` rows."""
    return np.append(first[1:], n_rows)[: len(first)] - 1


def run_sums(values: np.ndarray, first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """The sum of rows ``first[i]`` to ``last[i]`` of ``values``, for each i. One numpy step per row position
    within a run, for all runs at once; only a 1-D run of ``PAIRWISE_FROM`` values or more (a long entity, a
    long document's chunks under a one-label model) is summed by numpy on its own."""
    sizes = last - first + 1
    sums = values[first]
    pairwise = np.zeros(len(sizes), dtype=bool)
    if values.ndim == 1 or values.shape[1] == 1:
        pairwise = sizes >= PAIRWISE_FROM
    longest_first = np.argsort(-np.where(pairwise, 1, sizes), kind="stable")
    descending = -np.where(pairwise, 1, sizes)[longest_first]
    for position in range(1, int(-descending[0]) if len(sizes) else 0):
        runs = longest_first[: np.searchsorted(descending, -position)]  # runs longer than position
        sums[runs] += values[first[runs] + position]
    for run in np.flatnonzero(pairwise).tolist():
        sums[run] = values[first[run] : last[run] + 1].sum(axis=0)
    return sums


def run_means(values: np.ndarray, first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """The mean of rows ``first[i]`` to ``last[i]`` of ``values``, for each i, in their dtype."""
    sizes = (last - first + 1).reshape(-1, *[1] * (values.ndim - 1))
    return (run_sums(values, first, last) / sizes).astype(values.dtype)
