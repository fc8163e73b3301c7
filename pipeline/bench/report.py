"""The benchmarks' figures as they go into the JSON report, and the report printed: per-run summaries
(documents/s, tokens, padding, MFU), the ratios between approaches, the machine and the corpus."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from distilbeam.pipeline.bench.children import ChildRun

DEFINITIONS = {
    "docs_per_s": "documents / timed_s: the inference loop for (a), the whole process for (b) and (c)",
    "docs_per_cpu_s": "documents / CPU seconds (user + system) of the same span, all threads",
    "real_tokens": "non-padding tokens fed to the model, [CLS] and [SEP] included",
    "padding_fraction": "1 - real_tokens / computed_tokens (rows x padded length, over every model call)",
    "mfu": "model FLOPs on real tokens / timed_s / the matmul ceiling (best of its 10 runs)",
    "mfu_in_model": "the same over the time spent in the model's forward calls only",
    "startup_s": "from the start of loading the model(s) to the end of the first model call",
    "peak_rss_mb": "largest resident set of the run's process (or of its worker processes)",
}


def run_summary(child: ChildRun, n_docs: int, timed_s: float | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "returncode": child.returncode,
        "docs": n_docs,
        "process_wall_s": round(child.wall_s, 2),
        "process_cpu_s": round(child.cpu_s, 2),
        "peak_rss_mb": round(child.peak_rss_mb, 1),
    }
    if timed_s is not None:
        out["timed"] = "whole process: interpreter start, imports, pipeline start, model load, I/O"
        out["docs_per_s"] = round(n_docs / timed_s, 3)
        out["docs_per_cpu_s"] = round(n_docs / child.cpu_s, 3) if child.cpu_s else None
    if child.returncode != 0:
        out["error"] = child.log_tail
    return out


def token_figures(
    *,
    real: int,
    computed: int,
    expected_real: int,
    flops: int,
    timed_s: float,
    forward_s: float,
) -> dict[str, Any]:
    return {
        "timed_s": significant(timed_s, 4),
        "real_tokens": real,
        "real_tokens_expected": expected_real,
        "computed_tokens": computed,
        "padding_fraction": round(1 - real / computed, 4) if computed else None,
        "real_tokens_per_s": round(real / timed_s, 1),
        "model_gflop": significant(flops / 1e9, 4),
        "forward_s": significant(forward_s, 4),
        "_flops": flops,  # MFU is filled in at the end, against the best ceiling measured
    }


def fill_mfu(run: dict[str, Any], ceiling_gflops: float) -> None:
    flops = run.pop("_flops", None)
    if flops is None:
        return
    run["mfu"] = significant(flops / run["timed_s"] / 1e9 / ceiling_gflops)
    forward_s = run["forward_s"]
    run["mfu_in_model"] = significant(flops / forward_s / 1e9 / ceiling_gflops) if forward_s else None


def significant(value: float, digits: int = 3) -> float:
    return float(f"{value:.{digits}g}")


def ratios(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    def rate(name: str, key: str = "docs_per_s") -> float | None:
        run = runs.get(name)
        return run.get(key) if run and run.get("returncode") == 0 else None

    def ratio(a: float | None, b: float | None) -> float | None:
        return significant(a / b) if a and b else None

    a_both = None
    if rate("a_classify") and rate("a_ner"):
        docs = runs["a_classify"]["docs"]
        a_both = docs / (runs["a_classify"]["timed_s"] + runs["a_ner"]["timed_s"])

    def cpu_rate(name: str) -> float | None:
        return rate(name, "docs_per_cpu_s")

    out_cpu = {
        "c_over_a_classify": ratio(cpu_rate("c_classify"), cpu_rate("a_classify")),
        "c_over_b_classify": ratio(cpu_rate("c_classify"), cpu_rate("b_classify")),
        "c_int8_over_a_classify": ratio(cpu_rate("c_classify_int8"), cpu_rate("a_classify")),
    }
    out = {
        "c_over_a_classify": ratio(rate("c_classify"), rate("a_classify")),
        "c_over_a_classify_ner": ratio(rate("c_classify_ner"), a_both),
        "c_over_b_classify": ratio(rate("c_classify"), rate("b_classify")),
        "c_int8_over_a_classify": ratio(rate("c_classify_int8"), rate("a_classify")),
        "c_int8_over_a_classify_ner": ratio(rate("c_classify_ner_int8"), a_both),
        "b_over_a_classify": ratio(rate("b_classify"), rate("a_classify")),
    }
    if a_both:
        out["a_classify_ner_docs_per_s"] = round(a_both, 3)
    # The same by CPU seconds (kernel accounting) rather than wall seconds: less moved by other processes
    # taking cores during the run, though a busy machine still inflates both.
    out["by_cpu_time"] = out_cpu
    full, quarter = runs.get("c_classify"), runs.get("c_classify_quarter")
    if full and quarter and full.get("returncode") == 0 and quarter.get("returncode") == 0:
        out["scaling_time_4x_docs"] = round(full["process_wall_s"] / quarter["process_wall_s"], 2)
        if full.get("forward_s") and quarter.get("forward_s"):
            out["scaling_model_time_4x_docs"] = round(full["forward_s"] / quarter["forward_s"], 2)
        out["scaling_docs"] = [quarter["docs"], full["docs"]]
    return out


def machine_facts(device: str, threads: int, load_before: tuple[float, float, float]) -> dict[str, Any]:
    import apache_beam
    import torch
    import transformers

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    out = {
        "cpu": cpu,
        "cores": cores,
        "torch_threads": threads,
        "device": device,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "apache_beam": apache_beam.__version__,
        "load_average_before": [round(v, 2) for v in load_before],
    }
    if device.startswith("cuda"):
        out["gpu"] = torch.cuda.get_device_name(0)
    return out


def corpus_facts(source: str, n_tokens: Sequence[int]) -> dict[str, Any]:
    lengths = np.asarray(n_tokens)
    return {
        "source": source,
        "docs": len(lengths),
        "tokens": int(lengths.sum()),
        "tokens_per_doc": {
            "mean": round(float(lengths.mean()), 1),
            "p50": int(np.percentile(lengths, 50)),
            "p90": int(np.percentile(lengths, 90)),
            "p99": int(np.percentile(lengths, 99)),
            "max": int(lengths.max()),
        },
        "share_over_510_tokens": round(float((lengths > 510).mean()), 4),
    }


def print_comparison(report: dict[str, Any]) -> None:
    machine, ceiling = report["machine"], report["ceiling"]
    print(
        f"\n{machine['cpu']}, {machine['cores']} cores, device {machine['device']}, "
        f"{machine['torch_threads']} torch threads; load average before {machine['load_average_before']}, "
        f"after {report['load_average_after']}"
    )
    corpus = report["corpus"]
    print(
        f"corpus: {corpus['docs']} documents, {corpus['tokens']} tokens, per document "
        f"{corpus['tokens_per_doc']}, {corpus['share_over_510_tokens']:.1%} over 510 tokens"
    )
    start, end = ceiling["start"]["gflops"], ceiling["end"]["gflops"]
    dtype = ceiling["start"]["dtype"]
    print(f"{dtype} matmul ceiling: {ceiling['gflops']} GFLOP/s (start of run {start}, end {end})")
    print(
        f"\n{'run':22} {'docs/s':>8} {'tokens/s':>9} {'padding':>8} {'MFU':>6} {'in model':>9} {'RSS MB':>7}"
    )
    for name, run in report["runs"].items():
        if run.get("returncode") != 0:
            print(f"{name:22} FAILED (exit {run.get('returncode')}); see the JSON for its output")
            continue
        print(
            f"{name:22} {run.get('docs_per_s', 0):8.2f} {run.get('real_tokens_per_s', 0):9.0f} "
            f"{_pct(run.get('padding_fraction')):>8} {_pct(run.get('mfu')):>6} "
            f"{_pct(run.get('mfu_in_model')):>9} {run.get('peak_rss_mb', 0):7.0f}"
        )
    print()
    _print_targets(report["targets"])


def print_scale(report: dict[str, Any]) -> None:
    for name, run in report["runs"].items():
        shown = {k: v for k, v in run.items() if k not in ("log_tail", "beam_flags")}
        print(f"{name:28} {json.dumps(shown)}")
    print()
    for key, value in report["figures"].items():
        if key != "targets":
            print(f"{key}: {value}")
    _print_targets(report["figures"]["targets"])


def _print_targets(targets: dict[str, dict[str, Any]]) -> None:
    for name, target in targets.items():
        mark = "met" if target["met"] else "NOT MET"
        print(f"{mark:8} {name}: {target['value']} (target {target['target']}; {target['what']})")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"
