"""The run's statistics: a ``Profile`` gathered per shard as it is written (documents, tokens, the length
histogram, label counts per classify task, entity counts and top entities per NER task, dead-letter counts by
stage and reason) that adds up exactly across shards; throughput over time; and the run-status policy.
Profiles are built from the rows a shard writes, so the report costs no second pass over the output. Which
statistics a task gets follows from its result's shape: a result with a ``label`` counts labels, a list of
spans with ``label`` and ``text`` counts entities; a new task kind of either shape is reported unchanged."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from distilbeam.transforms.schema import Failure

TOP_ENTITIES_KEPT = 200  # per task, per shard and after merging: the top list is exact below this many
TOP_ENTITIES_SHOWN = 20
THROUGHPUT_POINTS = 60


@dataclasses.dataclass
class Profile:
    docs: int = 0
    tokens: int = 0
    lengths: dict[str, int] = dataclasses.field(default_factory=dict)  # length bucket -> documents
    labels: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)  # task -> label -> docs
    entities: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)  # task -> label -> spans
    # task -> label -> entity text -> mentions, trimmed to the TOP_ENTITIES_KEPT most frequent per task
    top_entities: dict[str, dict[str, dict[str, int]]] = dataclasses.field(default_factory=dict)
    dead_letter: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)  # stage -> error -> rows

    def merge(self, other: Profile) -> Profile:
        merged = Profile(
            self.docs + other.docs,
            self.tokens + other.tokens,
            _add(self.lengths, other.lengths),
            _add(self.labels, other.labels),
            _add(self.entities, other.entities),
            _add(self.top_entities, other.top_entities),
            _add(self.dead_letter, other.dead_letter),
        )
        merged.top_entities = {t: _trim(v) for t, v in merged.top_entities.items()}
        return merged

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Profile:
        return cls(**dict(data))


def length_bucket(n_tokens: int) -> str:
    """Powers of two: '0', '1', '2-3', '4-7', ... so buckets from different shards add up exactly."""
    if n_tokens <= 0:
        return "0"
    low = 1 << (n_tokens.bit_length() - 1)
    high = (low << 1) - 1
    return str(low) if low == high else f"{low}-{high}"


def _bucket_start(bucket: str) -> int:
    return int(bucket.split("-")[0])


def length_rows(profile: Profile) -> list[tuple[str, int]]:
    """Every bucket from the shortest documents' to the longest's, empty ones included."""
    if not profile.lengths:
        return []
    starts = [_bucket_start(b) for b in profile.lengths]
    low, high = min(starts), max(starts)
    buckets = ["0"] if low == 0 else []
    start = max(low, 1)
    while start <= high:
        buckets.append(length_bucket(start))
        start <<= 1
    return [(b, profile.lengths.get(b, 0)) for b in buckets]


def profile_table(table: pa.Table, failures: Sequence[Failure], tasks: Sequence[str]) -> Profile:
    """The statistics of written rows (a table of the output schema) and dead-letter rows, counted on the
    table's columns: per row work is done by Arrow, per distinct label or entity text by Python."""
    p = Profile(docs=table.num_rows)
    if table.num_rows:
        n_tokens = np.maximum(table.column("n_tokens").to_numpy(zero_copy_only=False).astype(np.int64), 0)
        p.tokens = int(n_tokens.sum())
        lows = np.where(n_tokens > 0, 1 << np.floor(np.log2(np.maximum(n_tokens, 1))).astype(np.int64), 0)
        values, counts = np.unique(lows, return_counts=True)
        p.lengths = {length_bucket(int(v)): int(c) for v, c in zip(values, counts, strict=True)}
    for task in tasks:
        if task not in table.column_names:
            continue
        column = table.column(task).combine_chunks()
        kind = column.type
        if pa.types.is_struct(kind) and kind.get_field_index("label") >= 0:
            found = _value_counts(pc.struct_field(column, "label"))
            if found:
                p.labels[task] = {str(k): n for k, n in found.items()}
        elif _is_span_list(kind):
            spans = pc.list_flatten(column)
            labels = pc.struct_field(spans, "label").cast(pa.string())
            found = _value_counts(labels)
            if not found:
                continue
            p.entities[task] = {str(k): n for k, n in found.items()}
            pairs = pa.table({"label": labels, "text": pc.struct_field(spans, "text").cast(pa.string())})
            counted = pairs.drop_null().group_by(["label", "text"]).aggregate([([], "count_all")])
            mentions: dict[str, dict[str, int]] = {}
            for label, text, n in zip(*(counted.column(i).to_pylist() for i in range(3)), strict=True):
                text = " ".join(text.split())
                by_text = mentions.setdefault(label, {})
                by_text[text] = by_text.get(text, 0) + n
            p.top_entities[task] = _trim(mentions)
    for f in failures:
        by_error = p.dead_letter.setdefault(f.stage, {})
        by_error[f.error] = by_error.get(f.error, 0) + 1
    return p


def _is_span_list(kind: pa.DataType) -> bool:
    if not pa.types.is_list(kind) or not pa.types.is_struct(kind.value_type):
        return False
    return kind.value_type.get_field_index("label") >= 0 and kind.value_type.get_field_index("text") >= 0


def _value_counts(values: pa.Array | pa.ChunkedArray) -> dict[Any, int]:
    """Non-null values and how often each occurs."""
    counted = pc.value_counts(pc.drop_null(values))
    return {
        value: int(n)
        for value, n in zip(
            counted.field("values").to_pylist(), counted.field("counts").to_pylist(), strict=True
        )
    }


def _add(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in a.items()}
    for k, v in b.items():
        if isinstance(v, Mapping):
            out[k] = _add(out.get(k, {}), v)
        else:
            out[k] = out.get(k, 0) + v
    return out


def _trim(
    by_label: Mapping[str, Mapping[str, int]], keep: int = TOP_ENTITIES_KEPT
) -> dict[str, dict[str, int]]:
    flat = sorted(
        ((n, label, text) for label, texts in by_label.items() for text, n in texts.items()),
        key=lambda t: (-t[0], t[1], t[2]),
    )[:keep]
    out: dict[str, dict[str, int]] = {}
    for n, label, text in flat:
        out.setdefault(label, {})[text] = n
    return out


def top_entities(profile: Profile, task: str, n: int = TOP_ENTITIES_SHOWN) -> list[tuple[str, str, int]]:
    flat = [
        (label, text, count)
        for label, texts in profile.top_entities.get(task, {}).items()
        for text, count in texts.items()
    ]
    return sorted(flat, key=lambda t: (-t[2], t[0], t[1]))[:n]


# -- throughput over time ------------------------------------------------------------------------------


def merge_timelines(timelines: Iterable[Mapping[int, int]]) -> dict[int, int]:
    """Documents finished per wall-clock second, added up across workers."""
    total: dict[int, int] = {}
    for timeline in timelines:
        for second, n in timeline.items():
            total[int(second)] = total.get(int(second), 0) + n
    return total


def throughput_series(
    timeline: Mapping[int, int], started: float, points: int = THROUGHPUT_POINTS
) -> list[list[float]]:
    """[[seconds since the run started, documents per second], ...]: at most ``points`` equal bins from
    the start of the run to its last finished document."""
    if not timeline:
        return []
    start = int(started)
    end = max(timeline) + 1
    width = max(1, math.ceil((end - start) / points))
    bins: dict[int, int] = {}
    for second, n in timeline.items():
        index = max(0, second - start) // width
        bins[index] = bins.get(index, 0) + n
    last = max(bins)
    return [[float(i * width), round(bins.get(i, 0) / width, 3)] for i in range(last + 1)]


# -- the summary ---------------------------------------------------------------------------------------


def run_status(summary: Mapping[str, Any]) -> str:
    """ok | incomplete (documents unaccounted for) | dead_letter_exceeded (over max_failed_fraction)."""
    if not summary.get("complete", False):
        return "incomplete"
    limit = summary.get("max_failed_fraction")
    output = summary.get("output") or {}
    if limit is not None and output.get("failed_fraction", 0.0) > limit:
        return "dead_letter_exceeded"
    return "ok"


def output_totals(carried: Mapping[str, int], run: Mapping[str, Any]) -> dict[str, Any]:
    """The whole output after this run: the shards it kept plus the shards it annotated."""
    totals = {
        k: int(carried.get(k, 0)) + int(run.get(k, 0))
        for k in ("docs_read", "docs_written", "docs_failed", "tokens")
    }
    totals["shards"] = int(carried.get("shards", 0)) + int(run.get("shards", 0))
    read = totals["docs_read"]
    totals["failed_fraction"] = round(totals["docs_failed"] / read, 6) if read else 0.0
    return totals
