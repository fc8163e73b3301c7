"""``distilbeam bench``: distilbeam next to the stock ways of running the same DistilBERT models, on the
same documents; with ``--scale``, the data path around the model on short real documents.

By role: ``corpus`` (documents and models), ``competitors`` (transformers.pipeline, Beam's stock
RunInference, distilbeam's own run), ``ceiling`` (the matmul ceiling and the host path's, with a null
model), ``compare`` and ``scale`` (the two benchmarks), ``agreement``, ``report`` and ``targets`` (what
their figures are, mean and must reach), ``children`` (each run in a process of its own)."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from distilbeam.pipeline.bench.corpus import DEFAULT_DOCS, MODEL_SIZES, QUICK_DOCS

PARTS = ("transformers", "beam", "ner", "int8", "scaling")  # what --skip may leave out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--docs", type=int, help=f"documents to generate (default {DEFAULT_DOCS})")
    parser.add_argument("--quick", action="store_true", help=f"a quick look: {QUICK_DOCS} documents")
    parser.add_argument("--corpus", type=Path, help="use these documents (JSONL with a text field, or lines)")
    parser.add_argument("--text-field", default="text", help="the text field of --corpus JSONL")
    parser.add_argument("--out", type=Path, default=Path("bench.json"), help="where the JSON goes")
    parser.add_argument("--work-dir", type=Path, help="models, corpus and outputs (default: a temporary dir)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    parser.add_argument("--skip", default="", help=f"comma-separated parts to leave out: {', '.join(PARTS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--scale",
        action="store_true",
        help="measure the data path around the model instead: demo models on short real documents, "
        "memory against corpus size, first commit, host-path ceiling, base-size whole-process time",
    )
    parser.add_argument("--model-size", choices=sorted(MODEL_SIZES), default="base", help=argparse.SUPPRESS)


def main(args: argparse.Namespace) -> int:
    """Runs the benchmark ``args`` ask for, writes its JSON to ``--out`` and prints it; exit status 0 when
    every run succeeded, 1 when one failed, 2 for an unknown ``--skip`` part."""
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = skip - set(PARTS)
    if unknown:
        print(f"distilbeam bench: error: --skip: unknown parts {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    from distilbeam.pipeline.bench import compare, report, scale

    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="distilbeam-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        results = scale.run(args, work) if args.scale else compare.run(args, work, skip)
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (report.print_scale if args.scale else report.print_comparison)(results)
    print(f"distilbeam bench: wrote {args.out}")
    return 0 if all(run.get("returncode") == 0 for run in results["runs"].values()) else 1
