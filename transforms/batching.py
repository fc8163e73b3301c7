"""Tokenizing once per document and cutting micro-batches by a token budget.

A chunk of ``sort_window`` documents is tokenized in one call of the Rust tokenizer (without special tokens,
with character offsets), sorted by length and cut into batches of a few model calls' worth of tokens (see
``transforms/annotate.py``). Each task then builds its own model inputs (rows: windows framed by special
tokens) from the same token ids, so several tasks with one tokenizer tokenize once, and runs them in calls
cut by ``plan_slices``: padded only to each call's longest row, under the ``max_tokens`` budget."""

from __future__ import annotations

import collections
import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from distilbeam.transforms.schema import Annotated, Failure

# With ``batching.max_tokens: auto``, the most padded tokens one model call takes, per kind of device, for a
# model as wide as DistilBERT-base (768): on a CPU, matrix multiplies at its shapes are near their peak from
# a few hundred rows and lose cache locality past a few thousand; a GPU wants tens of thousands of rows to
# fill its cores. A narrower model does less work per token, so its calls take proportionally more tokens
# (up to ``AUTO_MAX_SCALE`` times more) before a call's fixed cost stops mattering.
AUTO_MAX_TOKENS = {"cpu": 2048, "cuda": 32768}
AUTO_WIDTH = 768
AUTO_MAX_SCALE = 8
# What one model call costs beyond its tokens, in tokens (Python dispatch, matrices too small to reach the
# peak): padding is spent only where it saves this much. The CPU figure is measured (a call of M tokens
# runs at about M / (M + 48) of the large-call speed); the GPU one is an estimate (launches overlap the
# previous call, see ``TaskHandler.forward``) chosen to keep padding under 5% on a few thousand documents.
CALL_OVERHEAD_TOKENS = {"cpu": 48, "cuda": 256}
# Most padding one model call may carry, as a share of its tokens.
MAX_PADDING = 0.05
# A batch (one element between pipeline steps) holds up to this many model calls' worth of tokens, so the
# model can slice its rows by length with little padding.
CALLS_PER_BATCH = 8


def device_kind(device: str) -> str:
    return "cuda" if device.startswith("cuda") else "cpu"


def resolve_max_tokens(max_tokens: int | str, device: str, width: int = AUTO_WIDTH) -> int:
    """The configured token budget, or with ``auto`` the device's own for a model ``width`` wide."""
    if isinstance(max_tokens, int):
        return max_tokens
    scale = min(AUTO_MAX_SCALE, max(1, AUTO_WIDTH // max(1, width)))
    return AUTO_MAX_TOKENS[device_kind(device)] * scale


def model_width(config: Any) -> int:
    """The hidden size of a transformers model config (DistilBERT calls it ``dim``)."""
    return int(getattr(config, "dim", None) or getattr(config, "hidden_size", None) or AUTO_WIDTH)


@dataclasses.dataclass(frozen=True, slots=True)
class Tokenized:
    item: Annotated
    ids: np.ndarray  # int32 token ids of the whole document, no special tokens
    offsets: np.ndarray  # int32 [n, 2] character offsets of each token into the document
    # A sentence pair's: ids[:pair_at] are its text's tokens, ids[pair_at:] its pair text's (their offsets
    # into the pair text), each tokenized on its own as the tokenizer's pair encoding does. None: one text.
    pair_at: int | None = None


@dataclasses.dataclass(frozen=True)
class Batch:
    """Documents tokenized with one tokenizer, and each task's result per document (or its Failure)."""

    items: tuple[Tokenized, ...]
    results: Mapping[str, Sequence[Any]] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items)

    def with_results(self, task: str, results: Sequence[Any]) -> Batch:
        return Batch(self.items, {**self.results, task: list(results)})

    @property
    def n_tokens(self) -> int:
        return sum(len(t.ids) for t in self.items)


def windows(n_tokens: int, body: int, stride: int | None) -> list[tuple[int, int]]:
    """Token ranges [start, end) of the model windows over a document of ``n_tokens`` tokens, each holding
    at most ``body`` tokens. Without ``stride`` only the first window (truncation); with it, windows overlap
    by ``stride`` tokens as the fast tokenizers' ``return_overflowing_tokens`` makes them."""
    if stride is None or n_tokens <= body:
        return [(0, min(n_tokens, body))]
    step = body - stride
    spans = []
    start = 0
    while True:
        end = min(start + body, n_tokens)
        spans.append((start, end))
        if end == n_tokens:
            return spans
        start += step


def plan_batches(costs: Sequence[tuple[int, int]], max_tokens: int) -> list[list[int]]:
    """Groups document indices into batches: sorted by padded length, each batch's tokens (rows x row
    length, summed over its documents) at most ``max_tokens``. A document over the budget on its own gets a
    batch of its own. Every index appears exactly once. The model then runs each batch's rows in slices
    (see ``plan_slices``), so a batch may hold several model calls' worth of rows."""
    order = sorted(range(len(costs)), key=lambda i: (costs[i][1], costs[i][0]))
    batches: list[list[int]] = []
    current: list[int] = []
    tokens = 0
    for i in order:
        n_rows, length = costs[i]
        if current and tokens + n_rows * length > max_tokens:
            batches.append(current)
            current, tokens = [], 0
        current.append(i)
        tokens += n_rows * length
    if current:
        batches.append(current)
    return batches


def plan_slices(
    lengths: Sequence[int], max_tokens: int, call_overhead: int, max_padding: float = MAX_PADDING
) -> list[list[int]]:
    """Cuts rows into model calls with the least cost, where a call costs its padded tokens (rows x its
    longest row) plus ``call_overhead``: what a call costs beyond its tokens (dispatch, matrices too small
    to reach the peak), in tokens. Rows are taken in length order; a call's padded tokens stay within
    ``max_tokens`` (a longer row runs alone) and at most ``max_padding`` of them are padding. So padding is
    spent only where it saves a call's overhead, and never more than that share, whatever the mix of
    lengths. Exact (dynamic programming over the sorted rows, see ``_cheapest_starts``), in time about
    linear in the rows; returns indices into ``lengths``."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    start_of = _cheapest_starts([lengths[i] for i in order], max_tokens, call_overhead, max_padding)
    slices = []
    j = len(order)
    while j > 0:
        i = start_of[j]
        slices.append(order[i:j])
        j = i
    slices.reverse()
    return slices


def _cheapest_starts(
    sorted_lengths: Sequence[int], max_tokens: int, call_overhead: int, max_padding: float
) -> list[int]:
    """For each j, where the last call of the cheapest plan of rows [0, j) starts (the earliest such start
    where several plans cost the same).

    The cost of rows [0, j) is best[j] = min over starts i of best[i] + (j - i) * L + overhead = j * L +
    overhead + min of best[i] - i * L, where L is the length of row j - 1, the call's longest. Rows are
    taken a run of one length at a time, during which L and the budget's ``fit`` rows stay the same:

    - starts inside the run carry no padding; the allowed ones, [j - fit, j - 1], slide right one row at a
      time, so their least value is kept in a deque whose values rise from front to back (each row pushed
      and popped once);
    - starts before the run have fixed values while the run lasts, so the least value over each suffix of
      them is computed once per run, vectorised; the earliest one allowed moves left as the run's rows
      dilute the shorter rows' padding (``reach``), and right as the budget allows fewer rows.

    So each row costs a few steps, plus one vectorised pass per distinct length over the starts the budget
    reaches, where trying every start the budget allows cost rows x (max_tokens / L) steps: 15 million for
    11,000 short rows at a GPU's 32,768-token budget. Padding is compared in integers (``max_padding`` as
    an exact fraction)."""
    n = len(sorted_lengths)
    num, den = float(max_padding).as_integer_ratio()
    prefix = list(itertools.accumulate(sorted_lengths, initial=0))
    best = [0] * (n + 1)
    start_of = [0] * (n + 1)
    s = 0
    while s < n:
        width = sorted_lengths[s]
        e = s
        while e < n and sorted_lengths[e] == width:
            e += 1
        fit = max(1, max_tokens // max(1, width))
        first = max(0, s + 1 - fit)  # no call ending in this run can start earlier
        least_before, earliest_before = _suffix_minima(best, first, s, width)
        reach = s
        window: collections.deque[tuple[int, int]] = collections.deque()  # (best[i] - i * width, i)
        for j in range(s + 1, e + 1):
            value = best[j - 1] - (j - 1) * width
            while window and window[-1][0] > value:
                window.pop()
            window.append((value, j - 1))
            low = j - fit
            while window[0][1] < low:
                window.popleft()
            value, start = window[0]
            # Start one row earlier while that call's padding stays within the cap:
            # padded - real <= max_padding * padded, with padded = (j - i) * width.
            while reach > first and reach > low:
                padded = (j - reach + 1) * width
                if padded * (den - num) > (prefix[j] - prefix[reach - 1]) * den:
                    break
                reach -= 1
            lowest = max(low, reach)
            if lowest < s and least_before[lowest - first] <= value:
                value, start = least_before[lowest - first], earliest_before[lowest - first]
            best[j] = value + j * width + call_overhead
            start_of[j] = start
        s = e
    return start_of


def _suffix_minima(best: Sequence[int], first: int, end: int, width: int) -> tuple[list[int], list[int]]:
    """For each start k in [first, end): the least of best[i] - i * width over the starts [k, end), and the
    earliest start that has it."""
    starts = np.arange(first, end, dtype=np.int64)
    values = np.asarray(best[first:end], dtype=np.int64) - starts * width
    least = np.minimum.accumulate(values[::-1])[::-1]
    # The earliest start holding the least of [k, end) is the first k' >= k whose value is the least of
    # [k', end) (every start between has a larger value than the least after it).
    records = np.where(values == least, starts, np.iinfo(np.int64).max)
    earliest = np.minimum.accumulate(records[::-1])[::-1]
    return least.tolist(), earliest.tolist()


def tokenize(tokenizer: Any, items: Sequence[Annotated]) -> tuple[list[Tokenized], list[Failure]]:
    """Tokenizes all documents in one call; if that fails, one at a time so only the culprit fails."""
    try:
        return _tokenize_all(tokenizer, items), []
    except Exception:
        pass  # even a lone document: it fails alone below, into the dead letter, never the whole run
    tokenized, failures = [], []
    for item in items:
        try:
            tokenized += _tokenize_all(tokenizer, [item])
        except Exception as exc:
            failures.append(Failure.of_document("tokenize", exc, f"tokenizer failed: {exc}", item.doc))
    return tokenized, failures


def _tokenize_all(tokenizer: Any, items: Sequence[Annotated]) -> list[Tokenized]:
    """One call of the Rust tokenizer for all documents, its ids and offsets gathered into two arrays in one
    pass each and cut per document (no special tokens, no truncation: tasks read long documents in
    windows). The pair texts of sentence pairs are tokenized in the same call (see ``_joined_pairs``)."""
    texts = [item.doc.text for item in items]
    pairs = [item.doc.text_pair for item in items if item.doc.text_pair is not None]
    encodings = encoder(tokenizer).encode_batch(texts + pairs, add_special_tokens=False)
    if pairs:
        return _joined_pairs(items, encodings)
    lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
    total = int(lengths.sum())
    ids = np.fromiter(itertools.chain.from_iterable(e.ids for e in encodings), dtype=np.int32, count=total)
    offsets = np.fromiter(
        itertools.chain.from_iterable(itertools.chain.from_iterable(e.offsets for e in encodings)),
        dtype=np.int32,
        count=2 * total,
    ).reshape(-1, 2)
    cuts = np.cumsum(lengths)[:-1]
    return [
        Tokenized(item, doc_ids, doc_offsets)
        for item, doc_ids, doc_offsets in zip(
            items, np.split(ids, cuts), np.split(offsets, cuts), strict=True
        )
    ]


def _joined_pairs(items: Sequence[Annotated], encodings: Sequence[Any]) -> list[Tokenized]:
    """Each sentence pair's two encodings (its text's in ``encodings`` at the item's position, its pair
    text's after all the texts, in item order) joined into one ``Tokenized``: ids and offsets end to end,
    ``pair_at`` where the second begins. An item without a pair text gets its text's alone."""
    out = []
    pair_encodings = iter(encodings[len(items) :])
    for item, first in zip(items, encodings, strict=False):
        parts = [first] if item.doc.text_pair is None else [first, next(pair_encodings)]
        ids = np.asarray([i for e in parts for i in e.ids], dtype=np.int32)
        offsets = np.asarray([o for e in parts for o in e.offsets], dtype=np.int32).reshape(-1, 2)
        pair_at = None if item.doc.text_pair is None else len(first.ids)
        out.append(Tokenized(item, ids, offsets, pair_at))
    return out


_ENCODERS: dict[int, tuple[Any, Any]] = {}


def encoder(tokenizer: Any) -> Any:
    """The Rust tokenizer behind a ``transformers`` fast tokenizer, with the truncation and padding its
    tokenizer.json may set turned off (a copy: the tokenizer itself is left as it is); made once per
    tokenizer."""
    found = _ENCODERS.get(id(tokenizer))
    if found is None or found[0] is not tokenizer:
        from tokenizers import Tokenizer

        backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        backend.no_truncation()
        backend.no_padding()
        found = _ENCODERS[id(tokenizer)] = (tokenizer, backend)
    return found[1]
