"""End to end through the command line: a JSON Lines shard of sentence pairs (``input.text_pair_field``)
annotated by a BERT classifier (token type ids), read back with pyarrow: both texts kept, scores equal to
``transformers.pipeline("text-classification")`` on each pair, long pairs truncated ``only_second`` and
flagged, records without a usable second text in the dead letter. Text shards are refused before any
pipeline starts."""

from __future__ import annotations

import glob
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import transformers

from tests.conftest import run_cli, write_jsonl
from tests.transforms.tasks.test_pairs import build_bert_classifier

MAX_LENGTH = 24
RECORDS = [
    {"id": "p0", "premise": "A man is eating food.", "hypothesis": "Someone eats."},
    {"id": "p1", "premise": "The hotel in Paris was lovely.", "hypothesis": "one two three four " * 10},
    {"id": "p2", "premise": "Nobody is here.", "hypothesis": None},
    {"id": "p3", "premise": "The cat sleeps."},
    {"id": "p4", "premise": "Alice visited Berlin on Monday.", "hypothesis": "Alice was in Germany."},
    {"id": "p5", "premise": "An empty hypothesis.", "hypothesis": ""},
]


@pytest.fixture(scope="module")
def bert_nli(tmp_path_factory):
    return build_bert_classifier(tmp_path_factory.mktemp("pairs") / "bert-nli", seed=31)


def config(model, inputs, out) -> dict:
    return {
        "input": {"paths": [str(inputs)], "text_field": "premise", "text_pair_field": "hypothesis"},
        "tasks": {"nli": {"kind": "classify", "model": str(model), "max_length": MAX_LENGTH}},
        "output": {"path": str(out), "keep_text": True},
        "batching": {"max_tokens": 512},
    }


def test_a_pair_shard_is_annotated_with_both_texts_kept(bert_nli, tmp_path, write_config):
    shard = write_jsonl(tmp_path / "nli.jsonl", RECORDS)
    out = tmp_path / "out"
    result = run_cli("run", "--config", str(write_config(config(bert_nli, shard, out))))
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "_SUMMARY.json").read_text())
    assert (summary["docs_read"], summary["docs_written"], summary["docs_failed"]) == (6, 4, 2)

    (part,) = glob.glob(str(out / "part-*.parquet"))
    table = pq.read_table(part)
    fixed = ["id", "source", "offset", "n_tokens", "warnings"]
    assert table.schema.names == [*fixed, "text", "text_pair", "nli"]
    assert table.schema.field("text_pair").type == pa.string()
    rows = {row["id"]: row for row in table.to_pylist()}
    assert sorted(rows) == ["p0", "p1", "p4", "p5"]

    reference = transformers.pipeline("text-classification", model=str(bert_nli), device="cpu")
    tokenizer = reference.tokenizer
    for record in RECORDS:
        row = rows.get(record["id"])
        if row is None:
            continue
        a, b = record["premise"], record["hypothesis"]
        assert (row["text"], row["text_pair"]) == (a, b)
        assert row["n_tokens"] == len(tokenizer.tokenize(a)) + len(tokenizer.tokenize(b))
        kwargs = {"truncation": "only_second", "max_length": MAX_LENGTH} if b else {}
        expected = reference({"text": a, "text_pair": b}, top_k=None, **kwargs)
        best = max(expected, key=lambda e: e["score"])
        assert row["nli"]["label"] == best["label"]
        assert row["nli"]["score"] == pytest.approx(best["score"], abs=1e-4)
        scores = {e["label"]: e["score"] for e in row["nli"]["scores"]}
        assert scores == pytest.approx({e["label"]: e["score"] for e in expected}, abs=1e-4)
        assert row["nli"]["n_chunks"] == 1
        assert row["nli"]["truncated"] == (record["id"] == "p1")
    assert rows["p5"]["warnings"] == ["empty_text"]

    errors = pq.read_table(glob.glob(str(out / "_errors" / "part-*.parquet"))[0]).to_pylist()
    by_id = {e["id"]: e for e in errors}
    assert sorted(by_id) == ["p2", "p3"]
    assert {e["stage"] for e in errors} == {"parse"}
    assert "text pair field 'hypothesis' is null" in by_id["p2"]["message"]
    assert "text pair field 'hypothesis' is missing" in by_id["p3"]["message"]


def test_a_text_shard_with_a_pair_field_is_refused_before_the_run(bert_nli, tmp_path, write_config):
    shard = tmp_path / "lines.txt"
    shard.write_text("one text per line\n", encoding="utf-8")
    result = run_cli("run", "--config", str(write_config(config(bert_nli, shard, tmp_path / "out"))))
    assert result.returncode == 2, result.stderr[-3000:]
    assert "input.text_pair_field" in result.stderr and "lines.txt is a text shard" in result.stderr
    assert not (tmp_path / "out").exists()
