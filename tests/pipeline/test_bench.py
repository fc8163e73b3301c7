"""``distilbeam bench`` end to end on a tiny corpus and tiny models: every approach runs, and the JSON holds
every figure with consistent values. Speed is not asserted here (the machine is shared); the README holds a
real run."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from distilbeam.pipeline.bench import targets
from tests.conftest import REPO, run_cli

RUNS = {
    "c_classify",
    "a_classify",
    "b_classify",
    "c_classify_ner",
    "a_ner",
    "c_classify_int8",
    "c_classify_ner_int8",
    "c_classify_quarter",
}
RUN_FIELDS = {
    "returncode",
    "docs",
    "process_wall_s",
    "process_cpu_s",
    "peak_rss_mb",
    "docs_per_s",
    "docs_per_cpu_s",
    "timed",
    "timed_s",
    "real_tokens",
    "real_tokens_expected",
    "computed_tokens",
    "padding_fraction",
    "real_tokens_per_s",
    "model_gflop",
    "forward_s",
    "mfu",
    "mfu_in_model",
    "startup_s",
    "approach",
    "tasks",
}


@pytest.mark.slow
def test_bench_runs_every_approach_and_reports_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    work = tmp_path / "work"
    args = ["bench", "--docs", "12", "--model-size", "tiny", "--work-dir", str(work), "--out", str(out)]
    result = run_cli(*args, env={"TMPDIR": str(tmp_path)})
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text())

    assert report["complete"] is True
    assert set(report["runs"]) == RUNS
    for name, run in report["runs"].items():
        assert set(run) >= RUN_FIELDS, (name, RUN_FIELDS - set(run))
        assert run["returncode"] == 0
        # Every approach feeds the model the same real tokens: the same work, counted where it happens.
        assert run["real_tokens"] == run["real_tokens_expected"] > 0, name
        assert run["computed_tokens"] >= run["real_tokens"]
        assert 0 <= run["padding_fraction"] < 1
        assert run["docs"] == (3 if name == "c_classify_quarter" else 12)
        assert run["docs_per_s"] == pytest.approx(run["docs"] / run["timed_s"], rel=0.02)
        assert 0 < run["timed_s"] <= run["process_wall_s"] + 0.01
        assert 0 < run["forward_s"] <= run["timed_s"]
        assert run["peak_rss_mb"] > 50 and run["process_cpu_s"] > 0
        assert 0 < run["mfu"] <= run["mfu_in_model"]
        assert run["startup_s"] > 0
    runs = report["runs"]
    assert runs["b_classify"]["computed_tokens"] == 12 * 512  # padded to a fixed length
    assert runs["b_classify"]["tensorflow_imported"] is False
    assert runs["c_classify_int8"]["precision"] == "int8"
    assert runs["c_classify_ner"]["tasks"] == "classify+ner"
    assert runs["c_classify_ner"]["real_tokens"] > runs["c_classify"]["real_tokens"]

    ratios = report["ratios"]
    rate = {name: run["docs_per_s"] for name, run in runs.items()}
    assert ratios["c_over_a_classify"] == pytest.approx(rate["c_classify"] / rate["a_classify"], rel=0.01)
    assert ratios["c_over_b_classify"] == pytest.approx(rate["c_classify"] / rate["b_classify"], rel=0.01)
    a_both = 12 / (runs["a_classify"]["timed_s"] + runs["a_ner"]["timed_s"])
    assert ratios["c_over_a_classify_ner"] == pytest.approx(rate["c_classify_ner"] / a_both, rel=0.02)
    assert set(ratios["by_cpu_time"]) == {"c_over_a_classify", "c_over_b_classify", "c_int8_over_a_classify"}
    assert all(v > 0 for v in ratios["by_cpu_time"].values())
    assert ratios["scaling_time_4x_docs"] > 0
    assert ratios["scaling_docs"] == [3, 12]

    agreement = report["agreement"]
    # distilbeam and transformers.pipeline agree document by document on the same fp32 model.
    assert agreement["transformers_top_label_agreement"] == 1.0
    assert agreement["transformers_entity_f1"] == 1.0
    assert 0 <= agreement["int8_top_label_agreement"] <= 1
    assert 0 <= agreement["int8_entity_f1"] <= 1
    trained = agreement["int8_trained_encoder"]
    assert 0.5 < trained["min"] <= trained["p1"] <= trained["mean"] <= 1.0001

    assert report["ceiling"]["start"]["gflops"] > 0 and report["ceiling"]["end"]["gflops"] > 0
    assert report["ceiling"]["start"]["dtype"] == "float32"
    assert report["corpus"]["docs"] == 12
    assert report["model"]["vocab"] == 30522
    assert report["machine"]["cores"] >= 1 and report["machine"]["device"] == "cpu"
    for name, target in report["targets"].items():
        assert {"what", "target", "value", "met"} <= set(target), name
        assert isinstance(target["met"], bool)
    assert "c_over_a_classify" in result.stdout and "wrote" in result.stdout


def test_bench_refuses_unknown_parts(tmp_path):
    result = run_cli("bench", "--skip", "everything", "--out", str(tmp_path / "b.json"))
    assert result.returncode == 2
    assert "--skip" in result.stderr and "everything" in result.stderr


def test_bench_runs_as_a_module_with_the_same_flags(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "distilbeam.pipeline.bench",
            "--skip",
            "everything",
            "--out",
            str(tmp_path / "b"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "--skip: unknown parts everything" in result.stderr


def test_comparison_targets_are_judged_from_the_report():
    report = {
        "ratios": {"c_over_a_classify": 4.5, "c_over_b_classify": 4.0, "scaling_time_4x_docs": 4.1},
        "agreement": {"int8_top_label_agreement": 0.995},
        "runs": {
            "c_classify": {"mfu_in_model": 0.9, "padding_fraction": 0.01},
            "c_classify_ner": {"padding_fraction": 0.06, "peak_rss_mb": 2100.0},
            "a_classify": {"padding_fraction": 0.5},  # not distilbeam's: no padding target
        },
    }
    judged = targets.judge_comparison(report)
    assert list(judged) == list(targets.COMPARISON)
    met = {name: target["met"] for name, target in judged.items()}
    assert met == {
        "c_over_a_classify": True,
        "c_over_a_classify_ner": False,  # no value: that run was left out
        "c_over_b_classify": False,
        "c_int8_over_a_classify": False,
        "int8_top_label_agreement": True,
        "mfu_in_model_classify": True,
        "padding": False,
        "scaling": True,
        "peak_rss_classify_ner": False,
    }
    assert judged["padding"] == {
        "what": "largest padding fraction of any distilbeam run",
        "target": "<= 0.05",
        "value": 0.06,
        "met": False,
    }
    assert judged["peak_rss_classify_ner"]["target"] == "< 2048"
    assert judged["c_over_a_classify"]["target"] == ">= 4.0"


def test_documented_performance_figures_are_those_of_its_committed_run():
    """docs/performance.md quotes a real run whose whole JSON is committed beside it, in
    docs/performance/bench-2000.json: the targets table must say what that JSON says."""
    page = (REPO / "docs" / "performance.md").read_text(encoding="utf-8")
    section = page.split("## The data path around the model", 1)[0]
    assert "(performance/bench-2000.json)" in section
    report = json.loads((REPO / "docs" / "performance" / "bench-2000.json").read_text(encoding="utf-8"))
    assert report["complete"] is True
    assert report["machine"]["device"] == "cpu" and report["corpus"]["docs"] == 2000
    table = dict(re.findall(r"^\| (.+?) \| ([^|]+?) \| (?:met|not met)", section, re.M))
    quoted = {
        "c_over_a_classify": "(c) / (a), docs/s, `classify`: >= 4",
        "c_over_a_classify_ner": "(c) / (a), docs/s, `classify` + `ner`, one tokenization: >= 3.5",
        "c_over_b_classify": "(c) / (b), docs/s, `classify`: >= 5",
        "c_int8_over_a_classify": "`int8` / (a), docs/s, `classify`: >= 7",
    }
    for name, row in quoted.items():
        assert table[row] == str(report["ratios"][name]), name
    targets = report["targets"]
    assert (
        table["`int8` top-label agreement with fp32: >= 99%"]
        == f"{targets['int8_top_label_agreement']['value']:.1%}"
    )
    assert table["peak RSS, `classify` + `ner`, one worker process: < 2 GB"] == (
        f"{targets['peak_rss_classify_ner']['value'] / 1000:.2f} GB"
    )
    met = {name for name, target in targets.items() if target["met"]}
    assert met == set(targets) - {"int8_top_label_agreement"}  # the page explains that one
