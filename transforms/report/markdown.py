"""The run report as Markdown: the same sections as the HTML page, as tables, for a terminal or a
repository browser."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from distilbeam.transforms.report.stats import Profile, length_rows, top_entities
from distilbeam.transforms.report.text import (
    duration,
    headline,
    overview_rows,
    pct,
    selection_text,
    sorted_counts,
)


def render_markdown(s: Mapping[str, Any]) -> str:
    """A run summary (the dict written as summary.json, its ``profile`` a ``Profile.to_json()``) in, the
    report as Markdown text out: status, overview, dead letter, labels and entities per task, document
    lengths and throughput, in that order."""
    profile = Profile.from_json(s.get("profile") or {})
    lines = [
        f"# distilbeam run {s.get('run_id', '')}",
        "",
        f"Status: **{s.get('status', '?')}** · mode {s.get('mode', '?')} · "
        f"run date {s.get('run_date', '?')} · finished {s.get('finished_at', '?')}",
        "",
        headline(s) + ".",
        "",
        selection_text(s),
        "",
        "| | this run | whole output |",
        "|---|---:|---:|",
        *[f"| {name} | {run} | {total} |" for name, run, total in overview_rows(s)],
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
            lines += [f"| {stage} | {_md(error)} | {n:,} |" for error, n in sorted_counts(errors)]
    else:
        lines.append("No dead-letter rows in this run.")
    for task, counts in profile.labels.items():
        total = sum(counts.values())
        lines += ["", f"## {task}: labels", "", "| label | documents | share |", "|---|---:|---:|"]
        lines += [f"| {_md(label)} | {n:,} | {pct(n, total)} |" for label, n in sorted_counts(counts)]
    for task, counts in profile.entities.items():
        lines += ["", f"## {task}: entities by label", "", "| label | mentions |", "|---|---:|"]
        lines += [f"| {_md(label)} | {n:,} |" for label, n in sorted_counts(counts)]
        top = top_entities(profile, task)
        if top:
            lines += ["", f"Top entities ({task}):", "", "| entity | label | mentions |", "|---|---|---:|"]
            lines += [f"| {_md(text)} | {_md(label)} | {n:,} |" for label, text, n in top]
    if profile.lengths:
        lines += ["", "## Document length (tokens)", "", "| tokens | documents |", "|---|---:|"]
        lines += [f"| {bucket} | {n:,} |" for bucket, n in length_rows(profile)]
    series = s.get("throughput") or []
    if series:
        rates = [r for _, r in series]
        lines += [
            "",
            "## Throughput",
            "",
            f"Peak {max(rates):,.1f} documents/s, mean {sum(rates) / len(rates):,.1f} documents/s over "
            f"{len(series)} intervals of {duration(series[1][0] - series[0][0] if len(series) > 1 else 1)}.",
        ]
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    """Text that stays inside one table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")
