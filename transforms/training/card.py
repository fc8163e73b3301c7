"""The model card (``README.md``) written beside a trained model: where it came from (base model and its
weights' SHA-256, or the teacher for a distilled student), what it learned from (the data files' SHA-256),
with which settings, and how it scored, beside the baseline, so the directory explains itself wherever it
is copied. The same facts go to ``training_metrics.json`` for programs."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import yaml

METRICS_FILE = "training_metrics.json"


def render(facts: Mapping[str, Any]) -> str:
    """Markdown with Hugging Face's YAML front matter. ``facts``: title, task, labels, base (uri and
    weights_sha256), data (file hashes and example counts), settings, final and baseline scores, history."""
    front = {
        "base_model": facts["base"]["uri"],
        "pipeline_tag": {"ner": "token-classification"}.get(facts["task"], "text-classification"),
        "library_name": "transformers",
        "tags": ["distilbeam"],
    }
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "", f"# {facts['title']}", ""]
    lines += [facts.get("summary", ""), ""]
    lines += ["## Origin", "", f"- base model: `{facts['base']['uri']}`"]
    lines.append(f"- base weights SHA-256: `{facts['base']['weights_sha256']}`")
    for key, value in facts.get("origin", {}).items():
        lines.append(f"- {key}: `{value}`")
    lines += ["", "## Labels", "", ", ".join(f"`{x}`" for x in facts["labels"]), ""]
    lines += ["## Data", ""]
    for split, info in facts["data"].items():
        lines.append(f"- {split}: {info['examples']} examples")
        for uri, digest in info.get("files", {}).items():
            lines.append(f"  - `{uri}`: SHA-256 `{digest}`")
    lines += ["", "## Settings", "", "```yaml", yaml.safe_dump(facts["settings"], sort_keys=False).strip()]
    lines += ["```", "", "## Scores (validation split)", ""]
    lines += score_table(facts["final"], facts.get("baseline"))
    if facts.get("history"):
        lines += ["", "## Per epoch", ""]
        keys = sorted({k for row in facts["history"] for k in row} - {"epoch"})
        lines += ["| epoch | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        for row in facts["history"]:
            cells = [_num(row.get(k)) for k in keys]
            lines.append(f"| {row['epoch']:g} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Use",
        "",
        "```yaml",
        "tasks:",
        f"  {facts['task_name']}: {{kind: {facts['task']}, model: path/to/this/directory}}",
        "```",
        "",
    ]
    return "\n".join(lines)


def score_table(final: Mapping[str, float], baseline: Mapping[str, float] | None) -> list[str]:
    keys = [k for k in final if k not in ("loss", "epoch")]
    rows = ["| metric | this model |" + (" TF-IDF + logistic regression |" if baseline else "")]
    rows.append("|---|---|" + ("---|" if baseline else ""))
    for key in keys:
        row = f"| {key} | {_num(final[key])} |"
        if baseline:
            row += f" {_num(baseline.get(key))} |"
        rows.append(row)
    return rows


def _num(value: Any) -> str:
    return "" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def metrics_json(facts: Mapping[str, Any]) -> str:
    keys = ("task", "labels", "base", "origin", "data", "final", "baseline", "history", "settings")
    return json.dumps({k: facts[k] for k in keys if k in facts}, indent=2, sort_keys=False) + "\n"


def summary_line(final: Mapping[str, float], baseline: Mapping[str, float] | None) -> str:
    """One line for the terminal: the model's scores, and the baseline's beside them."""
    parts = []
    for key in ("accuracy", "macro_f1", "micro_f1", "precision", "recall", "f1", "agreement"):
        if key in final:
            part = f"{key} {final[key]:.4f}"
            if baseline and key in baseline:
                part += f" (baseline {baseline[key]:.4f})"
            parts.append(part)
    return ", ".join(parts)
