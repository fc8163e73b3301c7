"""The run's own measurements, read back from Beam when the pipeline ends: per task, the tokens that went
through the model (real and padding), the time spent in it, and start-up (model load to first batch). The
same values are Beam metrics in the ``distilbeam.<task>`` namespaces, so Dataflow and Flink show them too."""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

NAMESPACE = "distilbeam"
log = logging.getLogger(__name__)


def report(result: Any, path: str | None = None) -> None:
    """Logs one line per task and, with ``path``, writes every distilbeam metric there as JSON."""
    try:
        values = collect(result)
    except Exception as exc:  # a runner that cannot query metrics: the run itself is not at fault
        log.warning("cannot read the run's metrics: %s", exc)
        return
    for line in describe(values):
        log.info("%s", line)
    if path:
        Path(path).write_text(json.dumps(values, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def collect(result: Any) -> dict[str, dict[str, Any]]:
    """``{namespace: {name: value}}`` for every distilbeam metric; counters summed over steps,
    distributions as ``{sum, count, min, max}``."""
    out: dict[str, dict[str, Any]] = defaultdict(dict)
    query = result.metrics().query()
    for entry in query.get("counters", []):
        key = entry.key.metric
        if key.namespace.startswith(NAMESPACE):
            out[key.namespace][key.name] = out[key.namespace].get(key.name, 0) + _value(entry)
    for entry in query.get("distributions", []):
        key = entry.key.metric
        value = _value(entry)
        if key.namespace.startswith(NAMESPACE) and value is not None and value.count:
            previous = out[key.namespace].get(key.name)
            merged = {"sum": value.sum, "count": value.count, "min": value.min, "max": value.max}
            if previous:
                merged = {
                    "sum": previous["sum"] + value.sum,
                    "count": previous["count"] + value.count,
                    "min": min(previous["min"], value.min),
                    "max": max(previous["max"], value.max),
                }
            out[key.namespace][key.name] = merged
    return dict(out)


def describe(metrics: dict[str, dict[str, Any]]) -> list[str]:
    """One line per task: tokens through the model, padding, model speed and start-up."""
    lines = []
    for namespace, values in sorted(metrics.items()):
        if not namespace.startswith(NAMESPACE + ".") or not values.get("computed_tokens"):
            continue
        real, computed = values.get("real_tokens", 0), values["computed_tokens"]
        seconds = values.get("forward_ms", 0) / 1000
        line = f"task {namespace.split('.', 1)[1]}: {real} tokens through the model, "
        line += f"{1 - real / computed:.1%} padding"
        if seconds > 0:
            line += f", {real / seconds:,.0f} tokens/s in the model"
        startup = values.get("startup_ms")
        if startup:
            line += f", {startup['max'] / 1000:.1f}s from model load to first batch"
        lines.append(line)
    return lines


def _value(entry: Any) -> Any:
    return entry.committed if entry.committed is not None else entry.attempted
