"""Writing one Parquet file per shard with the exact output schema and its metadata, the dead letter beside
it, and a check that every record the reader counted was written or dead-lettered."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distilbeam.transforms.layout import ERRORS_DIR, shard_file_name
from distilbeam.transforms.read import Split
from distilbeam.transforms.schema import (
    DEAD_LETTER_SCHEMA,
    Annotated,
    Document,
    Failure,
    ShardStats,
    output_schema,
)
from distilbeam.transforms.storage import Location
from distilbeam.transforms.summary import summary_dict
from distilbeam.transforms.tasks import classify, ner
from distilbeam.transforms.write import SplitResult, SplitWriter, WriteSettings, split_writable, total

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


def write_shard(tmp_path, chunks, keep_text=False, split=None, records=None):
    """Writes ``chunks`` of (annotated documents, failures) as one split; its stats."""
    settings = WriteSettings(Location(str(tmp_path)), schema(keep_text), keep_text, "zstd")
    with SplitWriter(settings, split or Split(SOURCE, "jsonl")) as writer:
        for k, (docs, failed) in enumerate(chunks):
            n = len(docs) + len(failed) if records is None else records[k]
            writer.write(docs, failed, records=n)
        result = writer.commit()
    return result.stats


def test_shard_file_has_exact_schema_metadata_and_rows_in_reading_order(tmp_path):
    docs = [annotated(0, ""), annotated(1, "Bob went home"), annotated(3)]
    stats = write_shard(tmp_path, [(docs[:2], [failure(2)]), (docs[2:], [])])
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


def test_rows_stream_out_in_row_groups_never_held_whole(tmp_path, monkeypatch):
    from distilbeam.transforms import write

    monkeypatch.setattr(write, "ROW_GROUP_ROWS", 4)
    chunks = [([annotated(3 * k + i) for i in range(3)], []) for k in range(5)]
    stats = write_shard(tmp_path, chunks)
    parquet = pq.ParquetFile(tmp_path / shard_file_name(SOURCE))
    assert parquet.metadata.num_rows == stats.docs_written == 15
    assert parquet.metadata.num_row_groups == 3  # 6 + 6 + 3 rows: written as they came, 4 at least
    assert parquet.read().column("offset").to_pylist() == list(range(15))


def test_keep_text_writes_the_document_text(tmp_path):
    write_shard(tmp_path, [([annotated(0, "hello there")], [])], keep_text=True)
    table = pq.read_table(tmp_path / shard_file_name(SOURCE))
    assert table.column_names[:6] == ["id", "source", "offset", "n_tokens", "warnings", "text"]
    assert table.column("text").to_pylist() == ["hello there"]


def test_dead_letter_file_beside_the_data(tmp_path):
    write_shard(tmp_path, [([annotated(0)], [failure(4, "infer"), failure(1)])])
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
    write_shard(tmp_path, [([annotated(0)], [])])
    assert not stale.exists()
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == [shard_file_name(SOURCE)]


def test_empty_shard_still_writes_a_file_with_the_schema(tmp_path):
    stats = write_shard(tmp_path, [])
    table = pq.read_table(tmp_path / shard_file_name(SOURCE))
    assert table.num_rows == 0
    assert table.schema.equals(expected_schema(False), check_metadata=False)
    assert stats == ShardStats(1, 0, 0, 0, 0, {})


def test_a_split_writes_a_part_file_of_its_own(tmp_path):
    split = Split(SOURCE, "jsonl", index=2, count=3, start=100, end=200, first_offset=7)
    stats = write_shard(tmp_path, [([annotated(7)], [failure(8)])], split=split)
    name = shard_file_name(SOURCE, split)
    assert name == shard_file_name(SOURCE).replace(".parquet", "-00002.parquet")
    assert pq.read_table(tmp_path / name).column("offset").to_pylist() == [7]
    assert pq.read_table(tmp_path / ERRORS_DIR / name).column("offset").to_pylist() == [8]
    assert stats.shards == 0  # the shard is counted once, by its first split


def test_a_failed_split_leaves_no_file_behind(tmp_path):
    settings = WriteSettings(Location(str(tmp_path)), schema(), False, "zstd")
    with pytest.raises(RuntimeError), SplitWriter(settings, Split(SOURCE, "jsonl")) as writer:
        writer.write([annotated(i) for i in range(3)], [failure(3)], records=4)
        raise RuntimeError("the worker died")
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_count_mismatch_is_reported_not_hidden(tmp_path, caplog):
    stats = write_shard(tmp_path, [([annotated(0), annotated(1)], [])], records=[5])
    assert (stats.docs_read, stats.docs_written, stats.docs_failed) == (5, 2, 0)
    assert "5 records read but 2 written + 0 failed" in caplog.text
    summary = summary_dict(stats, {}, 1.0)
    assert summary["complete"] is False


def test_row_that_does_not_fit_the_schema_is_dead_lettered_alone(tmp_path):
    good = annotated(0)
    bad = Annotated(
        Document("id-1", SOURCE, 1, "text"), 1, {**good.results, "sentiment": {"label": 5, "score": "high"}}
    )
    table, failures = split_writable([good, bad], schema(), False)
    assert table.column("id").to_pylist() == ["id-0"]
    (failed,) = failures
    assert (failed.id, failed.offset, failed.stage, failed.raw) == ("id-1", 1, "write", "text")
    stats = write_shard(tmp_path, [([good, bad], [])])
    assert (stats.docs_read, stats.docs_written, stats.docs_failed) == (2, 1, 1)
    assert stats.failed_by_stage == {"write": 1}


def test_repeated_ids_are_marked_in_every_row_that_has_them_across_chunks(tmp_path, monkeypatch):
    from distilbeam.transforms import write

    monkeypatch.setattr(write, "ROW_GROUP_ROWS", 2)
    docs = [
        Annotated(Document(i, SOURCE, k, "t", ("control_chars",) if k == 3 else ()), 1, annotated(k).results)
        for k, i in enumerate(["a", "b", "c", "a", "d", "b"])
    ]
    write_shard(tmp_path, [(docs[:2], []), (docs[2:4], []), (docs[4:], [])])
    parquet = pq.ParquetFile(tmp_path / shard_file_name(SOURCE))
    assert parquet.metadata.num_row_groups == 3
    rows = parquet.read().to_pylist()
    assert [(r["id"], r["warnings"]) for r in rows] == [
        ("a", ["duplicate_id"]),
        ("b", ["duplicate_id"]),
        ("c", []),
        ("a", ["control_chars", "duplicate_id"]),
        ("d", []),
        ("b", ["duplicate_id"]),
    ]
    assert [p.name for p in tmp_path.iterdir()] == [shard_file_name(SOURCE)]  # no temporary file left


# -- the summary ---------------------------------------------------------------------------------------------


def test_split_results_add_up_to_the_run(tmp_path):
    one = SplitResult(ShardStats(1, 4, 3, 1, 10, {"parse": 1}), timeline={100: 3, 101: 1})
    two = SplitResult(ShardStats(0, 2, 2, 0, 5, {}), timeline={101: 2})
    run = total([one, two, SplitResult()])
    assert run.stats == ShardStats(1, 6, 5, 1, 15, {"parse": 1})
    assert run.timeline == {100: 3, 101: 3}
    assert SplitResult.from_json(json.loads(json.dumps(run.to_json()))) == run
    summary = summary_dict(run.stats, {"version": "1.2.3"}, 2.0)
    assert summary["docs_read"] == summary["docs_written"] + summary["docs_failed"] == 6
    assert summary["complete"] is True and summary["version"] == "1.2.3"
    assert (summary["tokens"], summary["shards"], summary["failed_by_stage"]) == (15, 1, {"parse": 1})
    assert summary["docs_per_second"] == 3.0


def test_a_chunks_documents_are_spread_over_the_seconds_it_took():
    from distilbeam.transforms.write import finished

    timeline: dict[int, int] = {}
    finished(timeline, 10, 100.2, 103.9)  # seconds 100 to 103
    finished(timeline, 3, None, 103.5)
    assert timeline == {100: 3, 101: 3, 102: 2, 103: 5}
    assert sum(timeline.values()) == 13
