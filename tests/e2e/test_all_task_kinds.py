"""End to end through the command line: ``configs/all-tasks.yaml`` runs classify, ner, qa and embed in one
pass; tasks with different tokenizers mix; a 10 MB single line is dead-lettered or split, never fatal. The
Parquet files are read back with pyarrow and DuckDB."""

from __future__ import annotations

import glob
import itertools
import json
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from distilbeam.pipeline import demo
from tests.conftest import REPO, run_cli

CONFIG = REPO / "configs" / "all-tasks.yaml"


@pytest.fixture(scope="module")
def demo_models(tmp_path_factory) -> Path:
    return demo.write_demo_models(tmp_path_factory.mktemp("demo") / "demo-models")["classifier"].parent


def model_overrides(models: Path) -> list[str]:
    tasks = {"sentiment": "classifier", "entities": "ner", "answers": "qa", "vectors": "encoder"}
    return [f"tasks.{task}.model={models / name}" for task, name in tasks.items()]


def run(config: Path, out: Path, *overrides: str):
    args = ["run", "--config", str(config), "--set", f"output.path={out}"]
    for override in overrides:
        args += ["--set", override]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((out / "_SUMMARY.json").read_text())


def test_all_tasks_config_runs_every_kind_in_one_pass(demo_models, tmp_path):
    out = tmp_path / "out"
    summary = run(CONFIG, out, *model_overrides(demo_models))
    assert (summary["docs_read"], summary["docs_written"], summary["complete"]) == (20, 20, True)
    assert {name: t["kind"] for name, t in summary["tasks"].items()} == {
        "sentiment": "classify",
        "entities": "ner",
        "answers": "qa",
        "vectors": "embed",
    }
    questions = yaml.safe_load(CONFIG.read_text())["tasks"]["answers"]["questions"]
    table = pa.concat_tables(pq.read_table(f) for f in sorted(glob.glob(str(out / "*.parquet"))))
    assert table.schema.field("vectors").type == pa.list_(pa.float32(), 64)
    assert table.schema.field("char_offset").type == pa.int64()  # the config splits long documents
    for row in table.to_pylist():
        text = row["text"]
        assert (row["sentiment"]["n_chunks"], row["sentiment"]["truncated"]) == (1, False)
        assert all(e["text"] == text[e["start"] : e["end"]] for e in row["entities"])
        assert [a["question"] for a in row["answers"]] == questions
        assert all(a["answer"] == text[a["start"] : a["end"]] for a in row["answers"])
        assert all(bool(a["answer"]) == bool(text.strip()) for a in row["answers"])  # none from nothing
        assert np.linalg.norm(row["vectors"]) == pytest.approx(1.0, abs=1e-5)
    answers = duckdb.sql(
        f"""select id, a.question, a.answer, a."end" - a.start as width, sentiment.n_chunks,
                   len(vectors) as dim
            from '{out}/*.parquet', unnest(answers) as t(a)"""
    ).fetchall()
    assert len(answers) == 20 * len(questions)
    assert all(width == len(answer) and n == 1 and dim == 64 for _, _, answer, width, n, dim in answers)


def test_tasks_with_different_tokenizers_mix(demo_models, minilm_dir, tmp_path):
    """The real MiniLM (its own tokenizer) next to the demo models: two tokenizations, one pass, and the
    vectors are still sentence-transformers' vectors."""
    from sentence_transformers import SentenceTransformer

    out = tmp_path / "out"
    overrides = [*model_overrides(demo_models), f"tasks.vectors.model={minilm_dir}"]
    summary = run(CONFIG, out, *overrides)
    assert summary["complete"] and summary["docs_written"] == 20
    rows = pa.concat_tables(pq.read_table(f) for f in glob.glob(str(out / "*.parquet"))).to_pylist()
    reference = SentenceTransformer(str(minilm_dir), device="cpu").encode([r["text"] for r in rows])
    for row, want in zip(rows, reference, strict=True):
        got = np.asarray(row["vectors"])
        assert len(got) == 384
        assert got @ want / (np.linalg.norm(got) * np.linalg.norm(want)) >= 0.9999
        assert row["answers"] and row["sentiment"]["label"] in demo.SENTIMENT_LABELS


def test_a_ten_megabyte_line_is_dead_lettered_or_split(demo_models, tmp_path, write_config):
    words = "the museum opened in march and the hotel closed in october paris london "
    line = (words * (10 * 1024 * 1024 // len(words) + 1))[: 10 * 1024 * 1024].strip()
    shard = tmp_path / "big.txt"
    shard.write_text(f"a short first line\n{line}\nand a short last one\n", encoding="utf-8")
    config = write_config(
        {
            "input": {"paths": [str(shard)]},
            "tasks": {"sentiment": {"kind": "classify", "model": str(demo_models / "classifier")}},
            "output": {"path": str(tmp_path / "unused"), "keep_text": False},
            "beam": {"runner": "DirectRunner"},
        }
    )

    dead = run(config, tmp_path / "dead")
    assert (dead["docs_read"], dead["docs_written"], dead["docs_failed"]) == (3, 2, 1)
    assert dead["failed_by_stage"] == {"read": 1} and dead["complete"]
    (errors,) = glob.glob(str(tmp_path / "dead" / "_errors" / "*.parquet"))
    (failure,) = pq.read_table(errors).to_pylist()
    assert (failure["offset"], failure["error"]) == (1, "TooLong")
    assert "4 x input.max_chars" in failure["message"] and "long_documents: split" in failure["message"]

    split = run(
        config, tmp_path / "split", "input.long_documents=split", "tasks.sentiment.long_text=truncate"
    )
    rows = duckdb.sql(
        f"""select id, "offset", char_offset, n_tokens, sentiment.truncated
            from '{tmp_path}/split/*.parquet' order by "offset", char_offset"""
    ).fetchall()
    parts = [r for r in rows if r[1] == 1]
    assert split["complete"] and split["docs_failed"] == 0
    assert split["docs_read"] == split["docs_written"] == len(rows) == len(parts) + 2
    assert len(parts) == 11  # 10 MiB in parts of at most 1,000,000 characters, cut at spaces
    base = parts[0][0].rsplit("#", 1)[0]
    assert [p[0] for p in parts] == [f"{base}#{k}" for k in range(len(parts))]
    starts = [p[2] for p in parts]
    assert starts[0] == 0 and all(0 < b - a <= 1_000_000 for a, b in itertools.pairwise(starts))
    assert all(p[4] for p in parts)  # each part is longer than one window and truncate was asked for
