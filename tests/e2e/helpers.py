"""What the end-to-end tests of scheduled runs share: a small corpus, configs, and reading an output back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from tests.conftest import write_jsonl


def corpus(directory: Path, shards: int = 2, docs: int = 4, bad: bool = True) -> list[Path]:
    """``shards`` files alternating JSON lines and plain text; the first JSON shard has one record that is
    not JSON, so the dead letter is exercised too."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in range(shards):
        texts = [f"Alice visited Paris on day {s}-{d}, and the hotel was lovely." for d in range(docs)]
        if s % 2 == 0:
            path = write_jsonl(
                directory / f"shard{s}.jsonl", [{"id": f"s{s}d{d}", "text": t} for d, t in enumerate(texts)]
            )
            if bad and s == 0:
                path.write_text(path.read_text() + "{not json\n")
        else:
            path = directory / f"shard{s}.txt"
            path.write_text("".join(t + "\n" for t in texts))
        paths.append(path)
    return paths


def config(models_dir: Path, inputs: Path, out: Path, **output) -> dict:
    return {
        "input": {"paths": [str(inputs / "*")]},
        "tasks": {
            "sentiment": {"kind": "classify", "model": str(models_dir / "classifier")},
            "entities": {"kind": "ner", "model": str(models_dir / "ner")},
        },
        "batching": {"max_tokens": 1024},
        "output": {"path": str(out), "mode": "incremental", **output},
    }


def _output_files(out: Path) -> Iterator[tuple[str, Path]]:
    """Every file of the output but the per-run records, with its path relative to the output."""
    for p in sorted(out.rglob("*")):
        relative = str(p.relative_to(out))
        if p.is_file() and not relative.startswith("_state/runs/"):
            yield relative, p


def snapshot(out: Path) -> dict[str, bytes]:
    """Every file of the output but the per-run records, by relative path."""
    return {relative: p.read_bytes() for relative, p in _output_files(out)}


def mtimes(out: Path) -> dict[str, int]:
    return {relative: p.stat().st_mtime_ns for relative, p in _output_files(out)}


def entries(out: Path) -> dict[str, dict]:
    folder = out / "_state" / "shards"
    found = [json.loads(p.read_text()) for p in folder.glob("*.json")] if folder.exists() else []
    return {e["source"]: e for e in found}


def run_summary(out: Path, stdout: str) -> dict:
    run_id = stdout.split("distilbeam: run ", 1)[1].split(":", 1)[0]
    return json.loads((out / "_state" / "runs" / run_id / "summary.json").read_text())


def data_files(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("part-*.parquet") if "_errors" not in p.parts)


def error_files(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("part-*.parquet") if "_errors" in p.parts)


def _read_rows(paths: list[Path], columns: list[str]) -> list[tuple]:
    found = []
    for path in paths:
        t = pq.read_table(path, columns=columns)
        found += list(zip(*(t.column(c).to_pylist() for c in columns), strict=True))
    return sorted(found)


def rows(out: Path) -> list[tuple]:
    """(source, offset, id) of every written document, read back with pyarrow, sorted."""
    return _read_rows(data_files(out), ["source", "offset", "id"])


def annotations(out: Path) -> list[tuple]:
    """(source, offset, id, sentiment label, entity spans) of every written document, sorted."""
    found = []
    for path in data_files(out):
        for r in pq.read_table(path).to_pylist():
            spans = tuple((e["label"], e["start"], e["end"]) for e in r["entities"])
            found.append((r["source"], r["offset"], r["id"], r["sentiment"]["label"], spans))
    return sorted(found)


def dead_rows(out: Path) -> list[tuple]:
    """(source, offset, stage) of every dead-letter row, sorted."""
    return _read_rows(error_files(out), ["source", "offset", "stage"])


def duck(out: Path, sql: str) -> list[tuple]:
    """Runs ``sql`` with ``docs`` bound to every data file of the output."""
    files = ", ".join(f"'{p}'" for p in data_files(out))
    return duckdb.sql(f"with docs as (select * from read_parquet([{files}])) {sql}").fetchall()
