"""Cutting documents into batches and rows into model calls: every row once, within the token budget, with
the least padding plus per-call overhead, and little padding whatever the mix of lengths."""

from __future__ import annotations

import collections
import itertools
import math
import random
import types

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from distilbeam.transforms.batching import (
    AUTO_MAX_TOKENS,
    CALL_OVERHEAD_TOKENS,
    MAX_PADDING,
    plan_batches,
    plan_slices,
    resolve_max_tokens,
)


def cost(slices, lengths, overhead):
    return sum(len(s) * max(lengths[i] for i in s) + overhead for s in slices)


def padding(slices, lengths):
    """Padding share of a plan (a list of calls) or of one call (a list of row indices)."""
    if slices and isinstance(slices[0], int):
        slices = [slices]
    computed = sum(len(s) * max(lengths[i] for i in s) for s in slices)
    real = sum(lengths[i] for s in slices for i in s)
    return 1 - real / computed


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 600), max_size=80), st.integers(1, 5000), st.integers(0, 10**6))
def test_slices_take_every_row_once_within_the_budget_and_the_padding_cap(lengths, max_tokens, overhead):
    slices = plan_slices(lengths, max_tokens, overhead)
    assert sorted(i for s in slices for i in s) == list(range(len(lengths)))
    for s in slices:
        assert s, "no empty calls"
        assert len(s) == 1 or len(s) * max(lengths[i] for i in s) <= max_tokens
        assert padding(s, lengths) <= MAX_PADDING + 1e-12


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(1, 30), max_size=9),
    st.integers(1, 120),
    st.integers(0, 60),
    st.sampled_from([0.0, 0.05, 0.2, 1.0]),
)
def test_slices_are_the_cheapest_plan_in_length_order(lengths, max_tokens, overhead, max_padding):
    ordered = sorted(range(len(lengths)), key=lambda i: lengths[i])
    best = math.inf
    for cuts in itertools.product((False, True), repeat=max(0, len(ordered) - 1)):
        plan, current = [], [ordered[0]] if ordered else []
        for i, cut in zip(ordered[1:], cuts, strict=True):
            if cut:
                plan.append(current)
                current = []
            current.append(i)
        if current:
            plan.append(current)
        if all(
            len(s) == 1
            or (
                len(s) * max(lengths[i] for i in s) <= max_tokens
                and padding(s, lengths) <= max_padding + 1e-12
            )
            for s in plan
        ):
            best = min(best, cost(plan, lengths, overhead))
    got = plan_slices(lengths, max_tokens, overhead, max_padding)
    assert cost(got, lengths, overhead) == (best if lengths else 0)


@given(st.lists(st.integers(1, 512), min_size=1, max_size=100), st.integers(512, 8192))
def test_without_call_overhead_nothing_is_padded(lengths, max_tokens):
    slices = plan_slices(lengths, max_tokens, 0)
    assert padding(slices, lengths) == 0


def test_a_huge_overhead_fills_calls_to_the_budget_as_far_as_the_padding_cap_allows():
    lengths = [10, 11, 12, 13] * 10
    assert len(plan_slices(lengths, 130, 10**6, max_padding=1.0)) == math.ceil(len(lengths) * 13 / 130)
    capped = plan_slices(lengths, 130, 10**6)
    assert all(len({lengths[i] for i in s}) == 1 for s in capped)  # 10 vs 11 is already 9% padding


def mixes(n: int, seed: int = 0) -> dict[str, list[int]]:
    rng = random.Random(seed)
    return {
        "short text": [rng.randint(4, 60) for _ in range(n)],
        "tweets of nearly one length": [rng.choice((30, 31, 32)) for _ in range(n)],
        "long tail": [min(512, max(3, round(rng.lognormvariate(math.log(48), 1.1)))) for _ in range(n)],
        "long documents": [rng.randint(300, 512) for _ in range(n)],
        "bimodal": [rng.choice((rng.randint(5, 20), rng.randint(400, 512))) for _ in range(n)],
    }


@pytest.mark.parametrize(
    "device,max_tokens", [("cpu", "auto"), ("cpu", 8192), ("cpu", 512), ("cuda", "auto")]
)
def test_padding_stays_under_five_percent_whatever_the_mix(device, max_tokens):
    budget = resolve_max_tokens(max_tokens, device)
    overhead = CALL_OVERHEAD_TOKENS[device]
    for name, lengths in mixes(2000).items():
        slices = plan_slices(lengths, budget, overhead)
        assert padding(slices, lengths) <= 0.05, name
        if budget >= AUTO_MAX_TOKENS[device]:
            # ... without paying for it in calls: padding plus per-call overhead stay small too (a small
            # budget set by hand costs calls on long documents, which is what it asks for).
            limit = 1.05 if device == "cpu" else 1.15
            assert cost(slices, lengths, overhead) <= limit * sum(lengths), name


@given(st.lists(st.tuples(st.integers(1, 4), st.integers(3, 512)), max_size=60), st.integers(1, 4096))
def test_batches_take_every_document_once_in_length_order(costs, budget):
    batches = plan_batches(costs, budget)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(costs)))
    assert [costs[i][1] for i in flat] == sorted(c[1] for c in costs)
    for b in batches:
        assert len(b) == 1 or sum(costs[i][0] * costs[i][1] for i in b) <= budget


def test_the_budget_follows_the_device_unless_configured():
    assert resolve_max_tokens("auto", "cpu") == AUTO_MAX_TOKENS["cpu"]
    assert resolve_max_tokens("auto", "cuda:1") == AUTO_MAX_TOKENS["cuda"]
    assert resolve_max_tokens(1000, "cuda") == 1000
    assert resolve_max_tokens(8192, "cpu") == 8192


def exhaustive_plan(lengths, max_tokens, overhead, max_padding=MAX_PADDING):
    """The same dynamic programme trying every start the budget allows for every row, vectorised per row
    (rows x max_tokens / length candidates): what ``plan_slices`` ran before it kept the least of the
    allowed starts in a deque. Also returns the number of candidate starts it examined."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    n = len(order)
    sorted_lengths = np.asarray([lengths[i] for i in order], dtype=np.int64)
    prefix = np.concatenate([[0], np.cumsum(sorted_lengths)])
    best = np.zeros(n + 1)
    start_of = [0] * (n + 1)
    examined = 0
    for j in range(1, n + 1):
        longest = int(sorted_lengths[j - 1])
        first = max(0, j - max(1, max_tokens // max(1, longest)))
        padded = (j - np.arange(first, j)) * longest
        costs = best[first:j] + padded + overhead
        costs[padded - (prefix[j] - prefix[first:j]) > max_padding * padded] = np.inf
        k = int(np.argmin(costs))  # the earliest of the cheapest; a row alone is always allowed
        best[j], start_of[j] = costs[k], first + k
        examined += j - first
    slices, j = [], n
    while j > 0:
        slices.append(order[start_of[j] : j])
        j = start_of[j]
    return slices[::-1], examined


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.integers(1, 80), max_size=60),
    st.integers(1, 2000),
    st.sampled_from([0, 1, 48, 256, 10**6]),
    st.sampled_from([0.0, 0.05, 0.2, 1.0]),
)
def test_slices_are_those_of_the_exhaustive_programme(lengths, max_tokens, overhead, max_padding):
    assert (
        plan_slices(lengths, max_tokens, overhead, max_padding)
        == exhaustive_plan(lengths, max_tokens, overhead, max_padding)[0]
    )


def gpu_batch(n: int = 11000, seed: int = 0) -> list[int]:
    """Rows of a batch a GPU takes at once: about 11,000 short rows, 260,000 tokens, 120 distinct lengths."""
    rng = random.Random(seed)
    return [min(512, max(3, round(rng.lognormvariate(math.log(20), 0.6)))) for _ in range(n)]


def test_planning_a_gpu_batch_takes_steps_linear_in_its_rows(monkeypatch):
    from distilbeam.transforms import batching

    lengths = gpu_batch()
    budget, overhead = AUTO_MAX_TOKENS["cuda"], CALL_OVERHEAD_TOKENS["cuda"]
    expected, examined_exhaustively = exhaustive_plan(lengths, budget, overhead)
    pushed = popped = 0

    class CountingDeque(collections.deque):
        def append(self, item):
            nonlocal pushed
            pushed += 1
            super().append(item)

        def pop(self):
            nonlocal popped
            popped += 1
            return super().pop()

        def popleft(self):
            nonlocal popped
            popped += 1
            return super().popleft()

    passes = []
    suffix_minima = batching._suffix_minima

    def counted(best, first, end, width):
        passes.append((width, end - first))
        return suffix_minima(best, first, end, width)

    monkeypatch.setattr(batching, "collections", types.SimpleNamespace(deque=CountingDeque))
    monkeypatch.setattr(batching, "_suffix_minima", counted)
    assert plan_slices(lengths, budget, overhead) == expected
    n = len(lengths)
    # Each row is pushed once and popped at most once; one vectorised pass per distinct length, over at
    # most the starts the budget lets a call of that length reach back to.
    assert pushed == n and popped <= n
    assert sorted(width for width, _ in passes) == sorted(set(lengths))
    assert all(size < max(1, budget // width) for width, size in passes)
    # Trying every start the budget allows examined two orders of magnitude more candidates.
    assert examined_exhaustively > 100 * (pushed + popped)


def test_auto_budget_grows_for_narrow_models_up_to_eight_times():
    assert resolve_max_tokens("auto", "cpu", 768) == resolve_max_tokens("auto", "cpu", 1024) == 2048
    assert resolve_max_tokens("auto", "cpu", 384) == 4096  # MiniLM
    assert resolve_max_tokens("auto", "cpu", 64) == resolve_max_tokens("auto", "cpu", 8) == 8 * 2048
    assert resolve_max_tokens("auto", "cuda", 256) == 3 * 32768
    assert resolve_max_tokens(1000, "cpu", 64) == 1000  # a configured budget is the user's
