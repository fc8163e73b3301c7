"""Writing one Parquet file per shard with the exact output schema and its metadata, the dead letter beside
it, and a check that every record the reader counted was written or dead-lettered."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from transforms.schema import DEAD_LETTER_SCHEMA, Annotated, Document, Failure, ShardStats, output_schema
from transforms.tasks import classify, ner
from transforms.write import (
    ERRORS_DIR,
    SUMMARY_FILE,
    WriteSettings,
    WriteShardFn,
    WriteSummaryFn,
    shard_file_name,
    split_writable,
    summary_dict,
)

# The contract, spelled out independently of the code that builds it.
CLASSIFY = pa.struct(
    [
        pa.field("label", pa.string()),
        pa.field("score", pa.float32()),
        pa.field(
            "scores", pa.list_(pa.struct([pa.field("label", pa.string()), pa.field("score", pa.float32())]))
        ),
        pa.field("n_chunks", pa.int32()),
        pa.field("truncated", pa.bool_()),
    ]
)
NER = pa.list_(
    pa.struct(
        [
            pa.field("label", pa.string()),
            pa.field("text", pa.string()),
            pa.field("start", pa.int32()),
            pa.field("end", pa.int32()),
            pa.field("score", pa.float32()),
        ]
    )
)
METADATA = {
    "distilbeam.version": "1.2.3",
    "distilbeam.config_sha256": "ab" * 32,
    "distilbeam.tasks": json.dumps({"sentiment": {"model": "m"}}),
}


def expected_schema(keep_text: bool) -> pa.Schema:
    fields = [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),
        pa.field("n_tokens", pa.int32(), nullable=False),
        pa.field("warnings", pa.list_(pa.string()), nullable=False),
    ]
    if keep_text:
        fields.append(pa.field("text", pa.string(), nullable=False))
    fields += [pa.field("sentiment", CLASSIFY), pa.field("entities", NER)]
    return pa.schema(fields)


def schema(keep_text: bool = False) -> pa.Schema:
    types = {"sentiment": classify.ARROW_TYPE, "entities": ner.ARROW_TYPE}
    return output_schema(types, keep_text, METADATA)


@pytest.mark.parametrize("keep_text", [False, True])
def test_output_schema_is_the_contract(keep_text):
    built = schema(keep_text)
    assert built.equals(expected_schema(keep_text), check_metadata=False)
    assert [f.nullable for f in built] == [f.nullable for f in expected_schema(keep_text)]
    assert {k.decode(): v.decode() for k, v in built.metadata.items()} == METADATA


def test_task_arrow_types_are_the_contract():
    assert classify.Handler.arrow_type(classify.Settings(model="m")) == CLASSIFY
    assert ner.Handler.arrow_type(ner.Settings(model="m")) == NER


def test_dead_letter_schema_is_the_contract():
    assert [(f.name, f.type, f.nullable) for f in DEAD_LETTER_SCHEMA] == [
        ("id", pa.string(), True),
        ("source", pa.string(), False),
        ("offset", pa.int64(), False),
        ("stage", pa.string(), False),
        ("error", pa.string(), False),
        ("message", pa.string(), False),
        ("raw", pa.string(), False),
    ]


# -- writing a shard -----------------------------------------------------------------------------------------

SOURCE = "/data/shard-0.jsonl"


def annotated(offset: int, text: str = "some text", label: str = "POSITIVE") -> Annotated:
    result = {
        "sentiment": {
            "label": label,
            "score": 0.75,
            "scores": [{"label": "NEGATIVE", "score": 0.25}, {"label": label, "score": 0.75}],
        },
        "entities": [{"label": "PER", "text": text[:4], "start": 0, "end": 4, "score": 0.5}] if text else [],
    }
    return Annotated(Document(f"id-{offset}", SOURCE, offset, text), len(text.split()), result)


def failure(offset: int, stage: str = "parse") -> Failure:
    return Failure.of(stage, "BadRecord", "not JSON", source=SOURCE, offset=offset, raw=b"{oops")


def write_shard(tmp_path, docs, failed, counts, keep_text=False):
    settings = WriteSettings(str(tmp_path), schema(keep_text), keep_text, "zstd", {})
    (stats,) = WriteShardFn(settings).process((SOURCE, {"docs": docs, "failed": failed, "counts": counts}))
    return stats


def test_shard_file_has_exact_schema_metadata_and_rows_sorted_by_offset(tmp_path):
    docs = [annotated(3), annotated(0, ""), annotated(1, "Bob went home")]
    stats = write_shard(tmp_path, docs, [failure(2)], [5 - 1])
    path = tmp_path / shard_file_name(SOURCE)
    table = pq.read_table(path)
    assert table.schema.equals(expected_schema(False), check_metadata=False)
    assert [f.nullable for f in table.schema] == [f.nullable for f in expected_schema(False)]
    assert {
        k.decode(): v.decode() for k, v in pq.read_schema(path).metadata.items()
    }.items() >= METADATA.items()
    rows = table.to_pylist()
    assert [r["offset"] for r in rows] == [0, 1, 3]
    assert rows[0]["entities"] == []
    assert rows[0]["sentiment"]["label"] == "POSITIVE"
    assert rows[1]["entities"][0] == {"label": "PER", "text": "Bob ", "start": 0, "end": 4, "score": 0.5}
    assert stats == ShardStats(1, 4, 3, 1, sum(d.n_tokens for d in docs), {"parse": 1})


def test_keep_text_writes_the_document_text(tmp_path):
    write_shard(tmp_path, [annotated(0, "hello there")], [], [1], keep_text=True)
    table = pq.read_table(tmp_path / shard_file_name(SOURCE))
    assert table.column_names[:6] == ["id", "source", "offset", "n_tokens", "warnings", "text"]
    assert table.column("text").to_pylist() == ["hello there"]


def test_dead_letter_file_beside_the_data(tmp_path):
    write_shard(tmp_path, [annotated(0)], [failure(4, "infer"), failure(1)], [3])
    dead = pq.read_table(tmp_path / ERRORS_DIR / shard_file_name(SOURCE))
    assert dead.schema.equals(DEAD_LETTER_SCHEMA, check_metadata=False)
    assert [(r["offset"], r["stage"], r["error"], r["raw"]) for r in dead.to_pylist()] == [
        (1, "parse", "BadRecord", "{oops"),
        (4, "infer", "BadRecord", "{oops"),
    ]


def test_no_dead_letter_file_when_nothing_failed_and_a_stale_one_is_removed(tmp_path):
    stale = tmp_path / ERRORS_DIR / shard_file_name(SOURCE)
    stale.parent.mkdir()
    stale.write_bytes(b"from an earlier run")
    write_shard(tmp_path, [annotated(0)], [], [1])
    assert not stale.exists()
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == [shard_file_name(SOURCE)]


def test_empty_shard_still_writes_a_file_with_the_schema(tmp_path):
    stats = write_shard(tmp_path, [], [], [0])
    table = pq.read_table(tmp_path / shard_file_name(SOURCE))
    assert table.num_rows == 0
    assert table.schema.equals(expected_schema(False), check_metadata=False)
    assert stats == ShardStats(1, 0, 0, 0, 0, {})


def test_count_mismatch_is_reported_not_hidden(tmp_path, caplog):
    stats = write_shard(tmp_path, [annotated(0), annotated(1)], [], [5])
    assert (stats.docs_read, stats.docs_written, stats.docs_failed) == (5, 2, 0)
    assert "5 records read but 2 written + 0 failed" in caplog.text
    summary = summary_dict(stats, {}, 1.0)
    assert summary["complete"] is False


def test_row_that_does_not_fit_the_schema_is_dead_lettered_alone(tmp_path):
    good = annotated(0)
    bad = Annotated(
        Document("id-1", SOURCE, 1, "text"), 1, {**good.results, "sentiment": {"label": 5, "score": "high"}}
    )
    rows, failures = split_writable([good, bad], schema(), False)
    assert [r["id"] for r in rows] == ["id-0"]
    (failed,) = failures
    assert (failed.id, failed.offset, failed.stage) == ("id-1", 1, "write")
    stats = write_shard(tmp_path, [good, bad], [], [2])
    assert (stats.docs_read, stats.docs_written, stats.docs_failed) == (2, 1, 1)
    assert stats.failed_by_stage == {"write": 1}


# -- the summary ---------------------------------------------------------------------------------------------


def test_summary_adds_up_shards_and_carries_the_run_facts(tmp_path):
    total = ShardStats(1, 4, 3, 1, 10, {"parse": 1}) + ShardStats(1, 2, 2, 0, 5, {}) + ShardStats()
    assert total == ShardStats(2, 6, 5, 1, 15, {"parse": 1})
    facts = {"version": "1.2.3", "config_sha256": "x", "tasks": {"sentiment": {"weights_sha256": "y"}}}
    (summary,) = WriteSummaryFn(str(tmp_path), facts, started=0.0, storage_options={}).process(total)
    on_disk = json.loads((tmp_path / SUMMARY_FILE).read_text())
    assert on_disk == summary
    assert summary["docs_read"] == summary["docs_written"] + summary["docs_failed"] == 6
    assert summary["complete"] is True
    assert (summary["tokens"], summary["shards"], summary["failed_by_stage"]) == (15, 2, {"parse": 1})
    assert summary["wall_seconds"] > 0
    assert {k: summary[k] for k in facts} == facts
