"""The training report, ``training_report.html`` beside the model: the learning curve (train and validation
loss, and the validation scores, per epoch) drawn with the run report's SVG chart helpers, the final scores
beside the TF-IDF baseline, and the data and settings, in one self-contained page like a run's report."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from distilbeam.transforms.report.charts import COLOURS, Plot, escape

REPORT_FILE = "training_report.html"
LOSSES = ("train_loss", "loss")
SCORES = ("accuracy", "macro_f1", "micro_f1", "precision", "recall", "f1", "agreement")

_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 980px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; } td, th { padding: 3px 10px; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; } tr:nth-child(even) { background: #f6f6f6; }
svg text { font-size: 12px; fill: #333; } .muted { color: #666; } pre { background: #f6f6f6; padding: 8px; }
"""


def svg_lines(
    series: Mapping[str, Sequence[tuple[float, float]]], width: int = 940, height: int = 260
) -> str:
    """One line with points per named series of (x, y) on the report's ``Plot`` (y from 0), epochs as x
    ticks, and a legend below."""
    series = {name: points for name, points in series.items() if points}
    if not series:
        return ""
    xs = sorted({x for points in series.values() for x, _ in points})
    highest = max(y for points in series.values() for _, y in points)
    plot = Plot.fit(width, height, (50, 12, 14, 52), highest, x_end=xs[-1] or 1.0)
    parts = plot.start()
    parts += [f'<text x="{plot.x(x):.1f}" y="{plot.base + 16}" text-anchor="middle">{x:g}</text>' for x in xs]
    for i, (name, points) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        coords = " ".join(f"{plot.x(x):.1f},{plot.y(y):.1f}" for x, y in points)
        parts.append(f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts += [
            f'<circle cx="{plot.x(x):.1f}" cy="{plot.y(y):.1f}" r="3" fill="{colour}"/>' for x, y in points
        ]
        lx = plot.left + 150 * i
        parts.append(f'<rect x="{lx}" y="{height - 16}" width="10" height="10" fill="{colour}"/>')
        parts.append(f'<text x="{lx + 14}" y="{height - 7}">{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def curves(
    history: Sequence[Mapping[str, float]], keys: Sequence[str]
) -> dict[str, list[tuple[float, float]]]:
    names = {"loss": "validation_loss"}
    return {
        names.get(k, k): [(row["epoch"], row[k]) for row in history if k in row]
        for k in keys
        if any(k in row for row in history)
    }


def render(facts: Mapping[str, Any]) -> str:
    """The page for the facts a model card is written from (see ``card.render``)."""
    history = facts.get("history", [])
    baseline = facts.get("baseline") or {}
    rows = [
        f"<tr><td>{escape(k)}</td><td class=n>{v:.4f}</td>"
        + (f"<td class=n>{baseline[k]:.4f}</td>" if k in baseline else "<td></td>")
        + "</tr>"
        for k, v in facts["final"].items()
        if isinstance(v, float) and k != "epoch"
    ]
    data_rows = [
        f"<tr><td>{escape(split)}</td><td class=n>{info['examples']}</td>"
        f"<td><code>{escape(info.get('files', {}).get('all', ''))}</code></td></tr>"
        for split, info in facts["data"].items()
    ]
    import yaml

    parts = [
        "<!doctype html><html><head><meta charset=utf-8>",
        f"<title>{escape(facts['title'])}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(facts['title'])}</h1>",
        f"<p>{escape(facts.get('summary', ''))}<br><span class=muted>base model "
        f"{escape(facts['base']['uri'])} · labels {escape(', '.join(facts['labels']))}</span></p>",
        "<h2>Learning curve</h2><h3>Loss</h3>",
        svg_lines(curves(history, LOSSES)),
        "<h3>Validation scores</h3>",
        svg_lines(curves(history, SCORES)),
        "<h2>Scores on the validation split</h2><table><tr><th>metric</th><th>this model</th>"
        f"<th>{'TF-IDF + logistic regression' if baseline else ''}</th></tr>{''.join(rows)}</table>",
        "<h2>Data</h2><table><tr><th>split</th><th>examples</th><th>files SHA-256</th></tr>"
        f"{''.join(data_rows)}</table>",
        f"<h2>Settings</h2><pre>{escape(yaml.safe_dump(facts['settings'], sort_keys=False))}</pre>",
        "</body></html>",
    ]
    return "\n".join(parts)
