"""The run report as one HTML page: the Markdown report's sections with inline SVG charts and CSS, so the
file opens anywhere with no script and nothing fetched."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from distilbeam.transforms.report.charts import COLOURS, escape, svg_bars, svg_histogram, svg_steps
from distilbeam.transforms.report.stats import Profile, length_rows, top_entities
from distilbeam.transforms.report.text import headline, overview_rows, selection_text, sorted_counts

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


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]], numeric: Sequence[bool]) -> str:
    """A table of escaped cells; columns marked ``numeric`` are right-aligned."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(f"<td{' class=n' if n else ''}>{escape(v)}</td>" for v, n in zip(r, numeric, strict=True))
        + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(s: Mapping[str, Any]) -> str:
    """A run summary (the dict written as summary.json, its ``profile`` a ``Profile.to_json()``) in, one
    self-contained HTML page out: status, overview and dead-letter limit, throughput over time, charts of
    labels, document lengths and entities, top entities per task, dead-letter rows, and the version and
    settings hash. Everything shown from the summary is escaped; charts are inline SVG, styles inline."""
    profile = Profile.from_json(s.get("profile") or {})
    status = str(s.get("status", "?"))
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>distilbeam run {escape(s.get('run_id', ''))}</title><style>{_CSS}</style></head><body>",
        f"<h1>distilbeam run {escape(s.get('run_id', ''))}</h1>",
        f'<p><span class="status {escape(status)}">{escape(status)}</span> mode {escape(s.get("mode", "?"))} '
        f"· run date {escape(s.get('run_date', '?'))} · finished {escape(s.get('finished_at', '?'))}</p>",
        f"<p>{escape(headline(s))}.<br><span class=muted>{escape(selection_text(s))}</span></p>",
        _table(("", "this run", "whole output"), overview_rows(s), (False, True, True)),
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
            f"<figure><figcaption>{escape(task)}: label distribution (documents)</figcaption>"
            f"{svg_bars(sorted_counts(counts), colour=COLOURS[i % len(COLOURS)])}</figure>"
        )
    if profile.lengths:
        charts.append(
            "<figure><figcaption>document length (tokens per document)</figcaption>"
            f"{svg_histogram(length_rows(profile))}</figure>"
        )
    for i, (task, counts) in enumerate(profile.entities.items()):
        charts.append(
            f"<figure><figcaption>{escape(task)}: entities by label (mentions)</figcaption>"
            f"{svg_bars(sorted_counts(counts), colour=COLOURS[(i + 1) % len(COLOURS)])}</figure>"
        )
    if charts:
        parts += ["<h2>Annotations</h2><div class=charts>", *charts, "</div>"]
    for task in profile.entities:
        top = top_entities(profile, task)
        if top:
            parts += [
                f"<h2>{escape(task)}: top entities</h2>",
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
            for error, n in sorted_counts(errors)
        ]
        parts.append(_table(("stage", "reason", "rows"), rows, (False, False, True)))
    else:
        parts.append("<p>No dead-letter rows in this run.</p>")
    parts.append(
        f"<p class=muted>distilbeam {escape(s.get('version', ''))} · annotation settings "
        f"{escape(str(s.get('annotation_sha256', ''))[:12])}</p></body></html>"
    )
    return "\n".join(parts) + "\n"
