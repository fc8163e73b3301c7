"""What the benchmarks must show, and each target judged against a run's figures. Every target is a
name, what is compared, a comparison and a bound; the report carries all four with the value and whether
it was met."""

from __future__ import annotations

import operator
from typing import Any

COMPARISON = {  # distilbeam bench
    "c_over_a_classify": ("docs/s, distilbeam end to end / transformers.pipeline, classify", ">=", 4.0),
    "c_over_a_classify_ner": (
        "docs/s, distilbeam end to end / transformers.pipeline, classify + ner",
        ">=",
        3.5,
    ),
    "c_over_b_classify": ("docs/s, distilbeam end to end / Beam stock RunInference, classify", ">=", 5.0),
    "c_int8_over_a_classify": ("docs/s, distilbeam int8 end to end / transformers.pipeline fp32", ">=", 7.0),
    "int8_top_label_agreement": ("share of documents with the fp32 top label under int8", ">=", 0.99),
    "mfu_in_model_classify": (
        "model FLOP utilisation of the fp32 ceiling, real tokens, in the model",
        ">=",
        0.85,
    ),
    "padding": ("largest padding fraction of any distilbeam run", "<=", 0.05),
    "scaling": ("time for 4x the documents, distilbeam end to end", "<=", 4.3),
    "peak_rss_classify_ner": ("peak RSS of a distilbeam process running classify + ner, MB", "<", 2048),
}
SCALE = {  # distilbeam bench --scale
    "docs_per_s": ("documents/s end to end, demo models, classify + ner, whole corpus", ">=", 1000),
    "peak_rss_mb": ("peak memory of the whole process tree, MB, whole corpus", "<=", 1200),
    "memory_whole_over_quarter": ("peak memory, whole corpus / a quarter of it", "<=", 1.10),
    "first_commit_fraction": ("first shard committed, share of the run's wall time", "<=", 0.30),
    "host_classify_docs_per_s": ("host-path ceiling, classify, documents/s per process", ">=", 5000),
    "host_ner_docs_per_s": ("host-path ceiling, ner, documents/s per process", ">=", 2000),
    "base_whole_process_ratio": (
        "transformers.pipeline / distilbeam, whole process, base classify",
        ">=",
        3.3,
    ),
    "base_padding_fraction": ("padding of distilbeam's base classify run", "<=", 0.03),
}
_COMPARE = {">=": operator.ge, "<=": operator.le, "<": operator.lt}


def judge(targets: dict[str, tuple[str, str, float]], values: dict[str, Any]) -> dict[str, Any]:
    """Each target against ``values[name]``; a missing value (a run left out or failed) is not met."""
    out = {}
    for name, (what, op, bound) in targets.items():
        value = values.get(name)
        met = value is not None and bool(_COMPARE[op](value, bound))
        out[name] = {"what": what, "target": f"{op} {bound}", "value": value, "met": met}
    return out


def judge_comparison(report: dict[str, Any]) -> dict[str, Any]:
    """``COMPARISON`` against the report's ratios, agreement and runs."""
    runs = report["runs"]
    padding = [
        run["padding_fraction"]
        for name, run in runs.items()
        if name.startswith("c_") and run.get("padding_fraction") is not None
    ]
    rss = [
        run["peak_rss_mb"]
        for name, run in runs.items()
        if name.startswith("c_classify_ner") and "peak_rss_mb" in run
    ]
    values = {
        **report["ratios"],
        **report["agreement"],
        "mfu_in_model_classify": runs.get("c_classify", {}).get("mfu_in_model"),
        "padding": max(padding, default=None),
        "scaling": report["ratios"].get("scaling_time_4x_docs"),
        "peak_rss_classify_ner": max(rss, default=None),
    }
    return judge(COMPARISON, values)
