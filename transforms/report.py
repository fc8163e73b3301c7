"""The run report: statistics gathered per shard as it is written (a ``Profile``: documents, tokens, the
length histogram, label counts per classify task, entity counts and top entities per NER task, dead-letter
counts by stage and reason), added up across shards, and rendered as Markdown and as one HTML page whose
charts are inline SVG drawn here (no script, nothing fetched).

Profiles are built from the rows a shard writes, so the report costs no second pass over the output. Which
statistics a task gets follows from its result's shape: a result with a ``label`` counts labels, a list of
spans with ``label`` and ``text`` counts entities; a new task kind of either shape is reported unchanged."""

from __future__ import annotations

import dataclasses
import html
import json
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


# -- rendering -----------------------------------------------------------------------------------------


def _fmt(n: float) -> str:
    return f"{n:,.0f}" if float(n).is_integer() else f"{n:,.1f}"


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def _duration(seconds: float) -> str:
    seconds = float(seconds or 0)
    return f"{seconds:.1f} s" if seconds < 60 else clock(seconds)


def clock(seconds: float) -> str:
    """Whole seconds as 1m05s or 2h03m05s."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _overview_rows(s: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    out = s.get("output") or {}
    return [
        ("shards", _fmt(s.get("shards", 0)), _fmt(out.get("shards", 0))),
        ("documents read", _fmt(s.get("docs_read", 0)), _fmt(out.get("docs_read", 0))),
        ("documents written", _fmt(s.get("docs_written", 0)), _fmt(out.get("docs_written", 0))),
        (
            "dead-lettered",
            f"{_fmt(s.get('docs_failed', 0))} ({_pct(s.get('docs_failed', 0), s.get('docs_read', 0))})",
            f"{_fmt(out.get('docs_failed', 0))} ({_pct(out.get('docs_failed', 0), out.get('docs_read', 0))})",
        ),
        ("tokens", _fmt(s.get("tokens", 0)), _fmt(out.get("tokens", 0))),
    ]


def _headline(s: Mapping[str, Any]) -> str:
    wall = float(s.get("wall_seconds") or 0)
    docs_rate = s.get("docs_read", 0) / wall if wall else 0
    tokens_rate = s.get("tokens", 0) / wall if wall else 0
    return (
        f"{_duration(wall)} wall time, {docs_rate:,.1f} documents/s, {tokens_rate:,.0f} tokens/s"
        if s.get("shards")
        else "nothing to annotate: every input shard is already in the output"
    )


def _selection_text(s: Mapping[str, Any]) -> str:
    sel = s.get("selection") or {}
    parts = [
        f"{sel.get('new', 0)} new",
        f"{sel.get('changed', 0)} changed",
        f"{sel.get('config', 0)} re-annotated after a settings change",
        f"{sel.get('refresh', 0)} by full refresh",
        f"{sel.get('kept', 0)} kept from earlier runs",
    ]
    if sel.get("stale_removed"):
        parts.append(f"{sel['stale_removed']} no longer among the inputs, removed")
    if sel.get("stale_kept"):
        parts.append(f"{sel['stale_kept']} no longer among the inputs, kept")
    return "Shards: " + ", ".join(parts) + "."


def _sorted_counts(counts: Mapping[str, int]) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def _length_rows(profile: Profile) -> list[tuple[str, int]]:
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


def render_markdown(s: Mapping[str, Any]) -> str:
    profile = Profile.from_json(s.get("profile") or {})
    lines = [
        f"# distilbeam run {s.get('run_id', '')}",
        "",
        f"Status: **{s.get('status', '?')}** · mode {s.get('mode', '?')} · "
        f"run date {s.get('run_date', '?')} · finished {s.get('finished_at', '?')}",
        "",
        _headline(s) + ".",
        "",
        _selection_text(s),
        "",
        "| | this run | whole output |",
        "|---|---:|---:|",
        *[f"| {name} | {run} | {total} |" for name, run, total in _overview_rows(s)],
        "",
    ]
    if s.get("max_failed_fraction") is not None:
        out = s.get("output") or {}
        lines += [
            f"Dead-letter share of the output: {100 * out.get('failed_fraction', 0):.2f}% "
            f"(limit {100 * s['max_failed_fraction']:.2f}%).",
            "",
        ]
    lines += ["## Dead letter", ""]
    if profile.dead_letter:
        lines += ["| stage | reason | rows |", "|---|---|---:|"]
        for stage, errors in sorted(profile.dead_letter.items()):
            lines += [f"| {stage} | {_md(error)} | {n:,} |" for error, n in _sorted_counts(errors)]
    else:
        lines.append("No dead-letter rows in this run.")
    for task, counts in profile.labels.items():
        total = sum(counts.values())
        lines += ["", f"## {task}: labels", "", "| label | documents | share |", "|---|---:|---:|"]
        lines += [f"| {_md(label)} | {n:,} | {_pct(n, total)} |" for label, n in _sorted_counts(counts)]
    for task, counts in profile.entities.items():
        lines += ["", f"## {task}: entities by label", "", "| label | mentions |", "|---|---:|"]
        lines += [f"| {_md(label)} | {n:,} |" for label, n in _sorted_counts(counts)]
        top = top_entities(profile, task)
        if top:
            lines += ["", f"Top entities ({task}):", "", "| entity | label | mentions |", "|---|---|---:|"]
            lines += [f"| {_md(text)} | {_md(label)} | {n:,} |" for label, text, n in top]
    if profile.lengths:
        lines += ["", "## Document length (tokens)", "", "| tokens | documents |", "|---|---:|"]
        lines += [f"| {bucket} | {n:,} |" for bucket, n in _length_rows(profile)]
    series = s.get("throughput") or []
    if series:
        rates = [r for _, r in series]
        lines += [
            "",
            "## Throughput",
            "",
            f"Peak {max(rates):,.1f} documents/s, mean {sum(rates) / len(rates):,.1f} documents/s over "
            f"{len(series)} intervals of {_duration(series[1][0] - series[0][0] if len(series) > 1 else 1)}.",
        ]
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


# -- HTML and SVG --------------------------------------------------------------------------------------

_COLOURS = ("#3b6ea8", "#e0863a", "#4f9a57", "#c44e52", "#8172b2", "#937860", "#da8bc3", "#8c8c8c")
_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 980px;
  color: #222; padding: 0 1rem; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .5rem 0; }
td, th { padding: .2rem .7rem; border-bottom: 1px solid #eee; }
th { text-align: left; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
.status { display: inline-block; padding: .1rem .6rem; border-radius: .3rem; color: #fff; }
.ok { background: #4f9a57; } .dead_letter_exceeded { background: #e0863a; }
.incomplete { background: #c44e52; }
.charts { display: flex; flex-wrap: wrap; gap: 1.5rem; } figure { margin: 0; }
figcaption { font-size: .9rem; color: #555; margin-bottom: .3rem; }
svg text { font-size: 12px; fill: #333; } .muted { color: #666; }
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def svg_bars(items: Sequence[tuple[str, float]], width: int = 460, colour: str = _COLOURS[0]) -> str:
    """Horizontal bars, one per (label, value), largest first as given."""
    if not items:
        return ""
    row, label_w, value_w = 22, 150, 70
    height = row * len(items) + 8
    top = max(v for _, v in items) or 1
    span = width - label_w - value_w
    total = sum(v for _, v in items) or 1
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">']
    for i, (label, value) in enumerate(items):
        y = 4 + i * row
        w = max(1.0, span * value / top) if value else 0
        shown = label if len(label) <= 22 else label[:21] + "…"
        parts.append(f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{_e(shown)}</text>')
        parts.append(f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row - 6}" fill="{colour}"/>')
        parts.append(
            f'<text x="{label_w + w + 5:.1f}" y="{y + 15}">{_fmt(value)} ({100 * value / total:.0f}%)</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def svg_histogram(items: Sequence[tuple[str, float]], width: int = 460, height: int = 220) -> str:
    """Vertical bars with their bucket names underneath."""
    if not items:
        return ""
    left, bottom, top_pad = 44, 40, 12
    plot_w, plot_h = width - left - 8, height - bottom - top_pad
    peak, ticks = _nice_ticks(max(v for _, v in items))
    slot = plot_w / len(items)
    bar = min(slot - 4, 48.0)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">']
    parts += _y_axis(left, top_pad, plot_w, plot_h, peak, ticks)
    for i, (label, value) in enumerate(items):
        h = plot_h * value / peak
        cx = left + i * slot + slot / 2
        parts.append(
            f'<rect x="{cx - bar / 2:.1f}" y="{top_pad + plot_h - h:.1f}" width="{max(1.0, bar):.1f}" '
            f'height="{h:.1f}" fill="{_COLOURS[0]}"><title>{_e(label)}: {_fmt(value)}</title></rect>'
        )
        ly = top_pad + plot_h + 14
        parts.append(
            f'<text x="{cx:.1f}" y="{ly}" text-anchor="end" '
            f'transform="rotate(-35 {cx:.1f} {ly})">{_e(label)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def svg_steps(series: Sequence[Sequence[float]], width: int = 940, height: int = 240) -> str:
    """Binned rates over time as a filled step line: each [start, value] holds until the next start."""
    if not series:
        return ""
    left, bottom, top_pad, right = 50, 34, 12, 14
    plot_w, plot_h = width - left - right, height - bottom - top_pad
    step = series[1][0] - series[0][0] if len(series) > 1 else 1.0
    x_end = series[-1][0] + step
    peak, ticks = _nice_ticks(max(v for _, v in series))
    base = top_pad + plot_h

    def x(t: float) -> float:
        return left + plot_w * t / x_end

    def y(v: float) -> float:
        return base - plot_h * v / peak

    corners = [f"{x(series[0][0]):.1f},{base}"]
    for t, v in series:
        corners += [f"{x(t):.1f},{y(v):.1f}", f"{x(t + step):.1f},{y(v):.1f}"]
    corners.append(f"{x(x_end):.1f},{base}")
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">']
    parts += _y_axis(left, top_pad, plot_w, plot_h, peak, ticks)
    parts.append(f'<polygon points="{" ".join(corners)}" fill="{_COLOURS[0]}" fill-opacity="0.18"/>')
    parts.append(
        f'<polyline points="{" ".join(corners[1:-1])}" fill="none" stroke="{_COLOURS[0]}" stroke-width="2"/>'
    )
    for i in range(5):
        t = x_end * i / 4
        parts.append(f'<text x="{x(t):.1f}" y="{base + 18}" text-anchor="middle">{_duration_short(t)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _duration_short(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _nice_ticks(peak: float, count: int = 4) -> tuple[float, list[float]]:
    """An axis top of 1, 2, 2.5 or 5 times a power of ten, at least ``peak``, and its tick values."""
    if peak <= 0:
        return 1.0, [0.0, 1.0]
    raw = peak / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    if peak >= 1 and step < 1:
        step = 1.0
    n = math.ceil(peak / step - 1e-9)
    return n * step, [i * step for i in range(n + 1)]


def _y_axis(
    left: float, top: float, plot_w: float, plot_h: float, peak: float, ticks: Sequence[float]
) -> list[str]:
    parts = []
    for value in ticks:
        y = top + plot_h - plot_h * value / peak
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w:.1f}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e4e4e4"/>'
        )
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_tick(value)}</text>')
    return parts


def _tick(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.2f}".rstrip("0").rstrip(".")


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[bool]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(f"<td{' class=n' if n else ''}>{_e(v)}</td>" for v, n in zip(r, numeric, strict=True))
        + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(s: Mapping[str, Any]) -> str:
    profile = Profile.from_json(s.get("profile") or {})
    status = str(s.get("status", "?"))
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>distilbeam run {_e(s.get('run_id', ''))}</title><style>{_CSS}</style></head><body>",
        f"<h1>distilbeam run {_e(s.get('run_id', ''))}</h1>",
        f'<p><span class="status {_e(status)}">{_e(status)}</span> mode {_e(s.get("mode", "?"))} · run date '
        f"{_e(s.get('run_date', '?'))} · finished {_e(s.get('finished_at', '?'))}</p>",
        f"<p>{_e(_headline(s))}.<br><span class=muted>{_e(_selection_text(s))}</span></p>",
        _table(("", "this run", "whole output"), _overview_rows(s), (False, True, True)),
    ]
    if s.get("max_failed_fraction") is not None:
        out = s.get("output") or {}
        parts.append(
            f"<p>Dead-letter share of the output: {100 * out.get('failed_fraction', 0):.2f}% "
            f"(limit {100 * s['max_failed_fraction']:.2f}%).</p>"
        )
    series = s.get("throughput") or []
    if series:
        parts += [
            "<h2>Throughput over time</h2><figure><figcaption>documents per second since the run started"
            "</figcaption>",
            svg_steps(series),
            "</figure>",
        ]
    charts = []
    for i, (task, counts) in enumerate(profile.labels.items()):
        charts.append(
            f"<figure><figcaption>{_e(task)}: label distribution (documents)</figcaption>"
            f"{svg_bars(_sorted_counts(counts), colour=_COLOURS[i % len(_COLOURS)])}</figure>"
        )
    if profile.lengths:
        charts.append(
            "<figure><figcaption>document length (tokens per document)</figcaption>"
            f"{svg_histogram(_length_rows(profile))}</figure>"
        )
    for i, (task, counts) in enumerate(profile.entities.items()):
        charts.append(
            f"<figure><figcaption>{_e(task)}: entities by label (mentions)</figcaption>"
            f"{svg_bars(_sorted_counts(counts), colour=_COLOURS[(i + 1) % len(_COLOURS)])}</figure>"
        )
    if charts:
        parts += ["<h2>Annotations</h2><div class=charts>", *charts, "</div>"]
    for task in profile.entities:
        top = top_entities(profile, task)
        if top:
            parts += [
                f"<h2>{_e(task)}: top entities</h2>",
                _table(
                    ("entity", "label", "mentions"),
                    [(t, lab, f"{n:,}") for lab, t, n in top],
                    (False, False, True),
                ),
            ]
    parts.append("<h2>Dead letter</h2>")
    if profile.dead_letter:
        rows = [
            (stage, error, f"{n:,}")
            for stage, errors in sorted(profile.dead_letter.items())
            for error, n in _sorted_counts(errors)
        ]
        parts.append(_table(("stage", "reason", "rows"), rows, (False, False, True)))
    else:
        parts.append("<p>No dead-letter rows in this run.</p>")
    parts.append(
        f"<p class=muted>distilbeam {_e(s.get('version', ''))} · annotation settings "
        f"{_e(str(s.get('annotation_sha256', ''))[:12])}</p></body></html>"
    )
    return "\n".join(parts) + "\n"


# -- the files -----------------------------------------------------------------------------------------

SUMMARY_FILE = "_SUMMARY.json"
REPORT_MD = "_REPORT.md"
REPORT_HTML = "_REPORT.html"


def write_run_record(
    path: str, summary: Mapping[str, Any], storage_options: Mapping[str, Any], latest: bool
) -> None:
    """``_state/runs/<run id>/`` gets the run's summary.json, report.md and report.html; with ``latest``
    (a run that changed the output) the output's top-level _REPORT.md, _REPORT.html and, last,
    _SUMMARY.json are replaced too, so a reader who sees the new summary sees the new report."""
    from distilbeam.transforms import storage
    from distilbeam.transforms.state import RUNS_DIR, state_uri

    text = json.dumps(summary, indent=2) + "\n"
    md, page = render_markdown(summary), render_html(summary)
    run_dir = state_uri(path, RUNS_DIR, str(summary["run_id"]))
    files = [("summary.json", text), ("report.md", md), ("report.html", page)]
    for name, content in files:
        data = content.encode()
        storage.write_atomic(storage.join(run_dir, name), lambda f, d=data: f.write(d), storage_options)
    if latest:
        for name, content in ((REPORT_MD, md), (REPORT_HTML, page), (SUMMARY_FILE, text)):
            data = content.encode()
            storage.write_atomic(storage.join(path, name), lambda f, d=data: f.write(d), storage_options)
