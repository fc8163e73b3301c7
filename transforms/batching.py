"""Tokenizing once per document and cutting micro-batches by a token budget.

A worker buffers up to ``sort_window`` documents, tokenizes them in one call of the fast tokenizer (without
special tokens, with character offsets), sorts them by length and cuts batches whose padded size (rows x
longest row) stays under ``max_tokens``. Each task then builds its own model inputs from the same token ids,
so several tasks with one tokenizer tokenize once."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from transforms.schema import Annotated, Failure

# A task's batching cost for a document of n tokens: (rows it feeds the model, padded length of each row).
CostFn = Callable[[int], tuple[int, int]]


@dataclasses.dataclass(frozen=True, slots=True)
class Tokenized:
    item: Annotated
    ids: np.ndarray  # int32 token ids of the whole document, no special tokens
    offsets: np.ndarray  # int32 [n, 2] character offsets of each token into the document


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
    """Groups document indices into batches: sorted by padded length, each batch's rows x longest row at
    most ``max_tokens``. A document over the budget on its own gets a batch of its own (the model then
    runs its rows in slices). Every index appears exactly once."""
    order = sorted(range(len(costs)), key=lambda i: (costs[i][1], costs[i][0]))
    batches: list[list[int]] = []
    current: list[int] = []
    rows = longest = 0
    for i in order:
        n_rows, length = costs[i]
        if current and (rows + n_rows) * max(longest, length) > max_tokens:
            batches.append(current)
            current, rows, longest = [], 0, 0
        current.append(i)
        rows += n_rows
        longest = max(longest, length)
    if current:
        batches.append(current)
    return batches


class BatchDocumentsFn(beam.DoFn):
    """Annotated documents in, batches out (main), tokenizer failures on ``failed``."""

    def __init__(
        self, load_tokenizer: Callable[[], Any], costs: Sequence[CostFn], max_tokens: int, window: int
    ):
        self._load_tokenizer = load_tokenizer
        self._costs = costs
        self._max_tokens = max_tokens
        self._window = window
        self._tokens = Metrics.distribution("distilbeam", "doc_tokens")
        self._padding = Metrics.counter("distilbeam", "padding_tokens")
        self._computed = Metrics.counter("distilbeam", "computed_tokens")

    def setup(self) -> None:
        self._tokenizer = self._load_tokenizer()

    def start_bundle(self) -> None:
        self._buffer: list[Annotated] = []

    def process(self, item: Annotated) -> Iterator[Any]:
        self._buffer.append(item)
        if len(self._buffer) >= self._window:
            yield from self._flush()

    def finish_bundle(self) -> Iterator[WindowedValue]:
        for out in self._flush():
            if isinstance(out, beam.pvalue.TaggedOutput):
                yield beam.pvalue.TaggedOutput(out.tag, _global(out.value))
            else:
                yield _global(out)

    def _flush(self) -> Iterator[Any]:
        items, self._buffer = self._buffer, []
        if not items:
            return
        tokenized, failures = tokenize(self._tokenizer, items)
        for failure in failures:
            yield beam.pvalue.TaggedOutput("failed", failure)
        costs = [self._cost(len(t.ids)) for t in tokenized]
        for indices in plan_batches(costs, self._max_tokens):
            rows = sum(costs[i][0] for i in indices)
            computed = rows * max(costs[i][1] for i in indices)
            real = sum(min(costs[i][0] * costs[i][1], len(tokenized[i].ids) + 2) for i in indices)
            self._computed.inc(computed)
            self._padding.inc(max(0, computed - real))
            yield Batch(tuple(tokenized[i] for i in indices))

    def _cost(self, n_tokens: int) -> tuple[int, int]:
        self._tokens.update(n_tokens)
        per_task = [cost(n_tokens) for cost in self._costs]
        return max(c[0] for c in per_task), max(c[1] for c in per_task)


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
            doc = item.doc
            failures.append(
                Failure.of(
                    "tokenize",
                    exc,
                    f"tokenizer failed: {exc}",
                    source=doc.source,
                    offset=doc.offset,
                    id=doc.id,
                    raw=doc.text[:1024],
                )
            )
    return tokenized, failures


def _tokenize_all(tokenizer: Any, items: Sequence[Annotated]) -> list[Tokenized]:
    encoded = tokenizer(
        [item.doc.text for item in items],
        add_special_tokens=False,
        return_offsets_mapping=True,
        return_attention_mask=False,
        return_token_type_ids=False,
    )
    out = []
    for item, ids, offsets in zip(items, encoded["input_ids"], encoded["offset_mapping"], strict=True):
        out.append(
            Tokenized(
                item,
                np.asarray(ids, dtype=np.int32),
                np.asarray(offsets, dtype=np.int32).reshape(-1, 2),
            )
        )
    return out


def _global(value: Any) -> WindowedValue:
    return WindowedValue(value, GlobalWindow().max_timestamp(), [GlobalWindow()])


def unbatch(batch: Batch) -> Iterator[Any]:
    """Back to one record per document: Annotated with every task's result, or the first Failure."""
    for i, tokenized in enumerate(batch.items):
        results = {task: values[i] for task, values in batch.results.items()}
        failure = next((r for r in results.values() if isinstance(r, Failure)), None)
        if failure is not None:
            yield beam.pvalue.TaggedOutput("failed", failure)
            continue
        item = tokenized.item
        n_tokens = item.n_tokens if item.n_tokens >= 0 else len(tokenized.ids)
        yield Annotated(item.doc, n_tokens, {**item.results, **results})
