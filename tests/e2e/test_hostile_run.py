"""The catalogue of hostile input, end to end: one ``distilbeam run`` over a directory of bad files and bad
records, on the DirectRunner, read back with pyarrow and DuckDB. Each case asserts its exact outcome
(annotated, annotated and flagged, or dead-lettered with stage, error and message), and every record
of every shard is accounted for exactly once."""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import os
import re
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from distilbeam.transforms.read import derived_id
from tests.conftest import run_cli

SECRET = "hunter2-5f1c9a7e-do-not-log"  # in storage_options: must appear in no output, log or message
SECRET_ON_COMMAND_LINE = "s3cr3t-9b2e-from-the-command-line"
TEN_MB = 10 * 1024 * 1024
SHORT = [{"id": f"s{i}", "text": f"short record {i} about paris and london"} for i in range(300)]

# records.jsonl: (line, what becomes of it). Written with a byte-order mark first and CRLF endings on some.
EXOTIC = {
    "rtl": "שלום עולם مرحبا بالعالم",
    "combining": "e\u0301 a\u0308\u0323 Zu\u0351rich cafe\u0301 nai\u0308ve",
    "emoji": "team 👩🏽‍💻 and 👨‍👩‍👧‍👦 family 🏳️‍🌈 👍🏿 ok",
    "cjk": "東京都 and 北京市 and 서울 with ｶﾀｶﾅ",
    "unknown": "\U0001d518\U0001d52b\U0001d526 \u16a0\u16c7\u16bb \ua66e \U00013000",
    "mixed": "Alice visited Paris 東京 e\u0301 👩🏽‍💻 שלום \U0001d518 then Berlin",
}


def _json(record: dict) -> bytes:
    return json.dumps(record, ensure_ascii=False).encode()


ANNOTATED = "annotated"
# records.jsonl line by line, and what becomes of each: annotated, or dead-lettered (stage, error, message).
RECORD_LINES: list[tuple[bytes, str | tuple[str, str, str]]] = [
    (b"\xef\xbb\xbf" + _json({"id": "bom", "text": "starts after a byte-order mark"}), ANNOTATED),
    (b'{"id": "latin1", "text": "caf\xe9 cr\xe8me"}', ANNOTATED),
    (b'{"id": "nul", "text": "a\x00b and \\u0007 bell"}', ANNOTATED),
    (_json({"id": "empty", "text": ""}), ANNOTATED),
    (_json({"id": "spaces", "text": "   \t  "}), ANNOTATED),
    (b'{"id": "surrogate", "text": "half \\ud83d of an emoji"}', ANNOTATED),
    (_json({"id": "dup", "text": "the first of two"}), ANNOTATED),
    (_json({"id": "dup", "text": "the second of two"}), ANNOTATED),
    (_json({"id": "../../etc/x", "text": "an id shaped like a path"}), ANNOTATED),
    *((_json({"id": key, "text": text}), ANNOTATED) for key, text in EXOTIC.items()),
    (_json({"id": "longword", "text": "a" * 100_000}), ANNOTATED),
    (b'{"id": "broken", "text": "unterminated', ("parse", "JSONDecodeError", "not valid JSON: Unterminated")),
    (b"[1, 2]", ("parse", "BadRecord", "JSON line is a list, expected an object")),
    (_json({"id": "missing"}), ("parse", "BadRecord", "text field 'text' is missing, expected a string")),
    (
        _json({"id": "null", "text": None}),
        ("parse", "BadRecord", "text field 'text' is null, expected a string"),
    ),
    (
        _json({"id": "number", "text": 42}),
        ("parse", "BadRecord", "text field 'text' is a number, expected a"),
    ),
    (_json({"id": "list", "text": ["a"]}), ("parse", "BadRecord", "text field 'text' is a list, expected a")),
    (
        _json({"id": 1.5, "text": "float id"}),
        ("parse", "BadId", "id is 1.5 (a number); expected a non-empty"),
    ),
    (b"", ("parse", "BadRecord", "blank line where a JSON object was expected")),
    (
        b'{"id": "huge", "text": "' + b"x" * 3_000_000,
        ("parse", "JSONDecodeError", "not valid JSON: Unterminated"),
    ),
    (
        b'{"id": "ten-mb", "text": "' + b"word " * (TEN_MB // 5) + b'"}',
        ("read", "TooLong", "line longer than 4000000 bytes (4 x input.max_chars); skipped unread"),
    ),
    (_json({"id": "last", "text": "the last record"}), ANNOTATED),
]
TEXT_LINES: list[tuple[bytes, str | tuple[str, str, str]]] = [
    (b"plain line with crlf\r", ANNOTATED),
    (b"old\rmac", ANNOTATED),
    (b"caf\xe9", ANNOTATED),
    (b"nul\x00byte", ANNOTATED),
    (b"", ANNOTATED),
    (b"x" * 100_000, ANNOTATED),
    (
        b"y" * TEN_MB,
        ("read", "TooLong", "line longer than 4000000 bytes (4 x input.max_chars); skipped unread"),
    ),
    (b"last line, no line feed", ANNOTATED),
]


INPUT_NAMES = {
    "empty.jsonl",
    "empty.parquet",
    "adir.jsonl",
    "pipe.jsonl",
    "gone.jsonl",
    "truncated.jsonl.gz",
    "truncated.jsonl.zst",
    "plain.jsonl.gz",
    "gzip-named.jsonl",
    "parquet-named.txt",
    "utf16.txt",
    "not-parquet.parquet",
    "no-text.parquet",
    "int-text.parquet",
    "null-text.parquet",
    "junk.jsonl",
    "cr-only.jsonl",
    "records.jsonl",
    "lines.txt",
}


def _parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


@dataclasses.dataclass
class Run:
    root: Path
    inputs: Path
    out: Path
    stdout: str
    stderr: str
    summary: dict[str, Any]
    rows: list[dict[str, Any]]
    dead: list[dict[str, Any]]
    rerun: Any  # the same command again, without --force

    def uri(self, name: str) -> str:
        return str(self.inputs / name)

    def rows_of(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["source"] == self.uri(name)]

    def dead_of(self, name: str) -> list[dict[str, Any]]:
        return [r for r in self.dead if r["source"] == self.uri(name)]

    def row(self, id_: str) -> dict[str, Any]:
        (row,) = [r for r in self.rows_of("records.jsonl") if r["id"] == id_]
        return row

    def outcome(self, name: str, offset: int) -> tuple[str, dict[str, Any]]:
        found = [("annotated", r) for r in self.rows_of(name) if r["offset"] == offset]
        found += [(r["stage"], r) for r in self.dead_of(name) if r["offset"] == offset]
        assert len(found) == 1, (name, offset, found)
        return found[0]


@pytest.fixture(scope="module")
def run(tmp_path_factory, models_dir) -> Run:
    root = tmp_path_factory.mktemp("catalogue")
    inputs = root / "in"
    inputs.mkdir()
    (inputs / "empty.jsonl").write_bytes(b"")
    (inputs / "empty.parquet").write_bytes(b"")
    (inputs / "adir.jsonl").mkdir()  # the glob matches it: a directory is not a shard
    (inputs / "adir.jsonl" / "inner.jsonl").write_bytes(b'{"text": "not read: globs do not descend"}\n')
    os.mkfifo(inputs / "pipe.jsonl")
    (inputs / "gone.jsonl").symlink_to(root / "deleted.jsonl")
    short = b"".join(_json(r) + b"\n" for r in SHORT)
    blob = gzip.compress(short)
    (inputs / "truncated.jsonl.gz").write_bytes(blob[: len(blob) * 3 // 4])
    zstd = zstandard.ZstdCompressor().compressobj()  # in blocks, as the zstd tool writes long files
    blob = b"".join(
        zstd.compress(short[i : i + 2000]) + zstd.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
        for i in range(0, len(short), 2000)
    )
    (inputs / "truncated.jsonl.zst").write_bytes(blob[: len(blob) * 3 // 4])
    (inputs / "plain.jsonl.gz").write_bytes(short)
    (inputs / "gzip-named.jsonl").write_bytes(gzip.compress(short))
    (inputs / "parquet-named.txt").write_bytes(_parquet(pa.table({"text": ["a", "b"]})))
    (inputs / "utf16.txt").write_bytes("hello\nworld\n".encode("utf-16"))
    (inputs / "not-parquet.parquet").write_bytes(short)
    (inputs / "no-text.parquet").write_bytes(_parquet(pa.table({"id": ["a", "b", "c"], "body": ["x"] * 3})))
    (inputs / "int-text.parquet").write_bytes(_parquet(pa.table({"text": [1, 2]})))
    (inputs / "null-text.parquet").write_bytes(
        _parquet(pa.table({"id": [1, 2, 3], "text": ["a", None, "c"]}))
    )
    (inputs / "junk.jsonl").write_bytes(b'id,text\n1,hello world\n2,"quoted, text"\n')
    (inputs / "cr-only.jsonl").write_bytes(b'{"text": "a"}\r{"text": "b"}\r')
    ends = [b"\r\n" if i % 3 == 0 else b"\n" for i in range(len(RECORD_LINES))]  # CRLF on some lines
    records = b"".join(line + end for (line, _), end in zip(RECORD_LINES, ends, strict=True))
    (inputs / "records.jsonl").write_bytes(records)
    (inputs / "lines.txt").write_bytes(b"\n".join(line for line, _ in TEXT_LINES))

    out = root / "out"
    config = {
        "input": {"paths": [str(inputs / "*")], "storage_options": {"password": SECRET}},
        "tasks": {
            "sentiment": {"kind": "classify", "model": str(models_dir / "classifier")},
            "entities": {
                "kind": "ner",
                "model": str(models_dir / "ner"),
                "aggregation": "none",
                "max_length": 32,
                "stride": 8,
            },
            "cased": {"kind": "ner", "model": str(models_dir / "ner-cased"), "aggregation": "simple"},
        },
        "output": {"path": str(out), "keep_text": True, "compression": "none"},
        "batching": {"max_tokens": 512},
        "beam": {"runner": "DirectRunner"},
    }
    config_path = root / "config.yaml"
    config_path.write_text(json.dumps(config))
    (root / "tmp").mkdir()
    env = {"TMPDIR": str(root / "tmp"), "DISTILBEAM_CACHE": str(root / "cache")}
    assert {p.name for p in inputs.iterdir()} == INPUT_NAMES
    args = (
        "run",
        "--config",
        str(config_path),
        "--set",
        f"output.storage_options.token={SECRET_ON_COMMAND_LINE}",
    )
    result = run_cli(*args, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "_SUMMARY.json").read_text())
    rows = pq.read_table(sorted(map(str, out.glob("part-*.parquet")))).to_pylist()
    dead = pq.read_table(sorted(map(str, (out / "_errors").glob("part-*.parquet")))).to_pylist()
    rerun = run_cli(*args, env=env)
    return Run(root, inputs, out, result.stdout, result.stderr, summary, rows, dead, rerun)


# -- every run: nothing lost, nothing twice ------------------------------------------------------------------


def test_every_record_is_written_or_dead_lettered_exactly_once(run):
    s = run.summary
    assert s["complete"] is True
    assert s["docs_read"] == s["docs_written"] + s["docs_failed"]
    assert (s["docs_written"], s["docs_failed"]) == (len(run.rows), len(run.dead))
    keys = [(r["source"], r["offset"]) for r in run.rows + run.dead]
    assert len(keys) == len(set(keys))
    for source in {source for source, _ in keys}:  # each shard's offsets run 0..n-1
        assert sorted(o for s_, o in keys if s_ == source) == list(range(sum(s_ == source for s_, _ in keys)))
    assert (
        f"{s['docs_read']} documents read, {s['docs_written']} written, {s['docs_failed']} dead-lettered"
        in (run.stdout)
    )
    out = str(run.out)
    assert duckdb.sql(f"select count(*) from '{out}/part-*.parquet'").fetchall()[0][0] == s["docs_written"]
    assert (
        duckdb.sql(f"select count(*) from '{out}/_errors/part-*.parquet'").fetchall()[0][0]
        == s["docs_failed"]
    )


def test_the_shards_are_every_file_the_glob_matches_and_no_directory(run):
    assert run.summary["shards"] == len(INPUT_NAMES - {"adir.jsonl"}) == 18
    assert not [r for r in run.rows + run.dead if "adir.jsonl" in r["source"]]


def test_failures_are_counted_by_stage(run):
    by_stage: dict[str, int] = {}
    for row in run.dead:
        by_stage[row["stage"]] = by_stage.get(row["stage"], 0) + 1
    assert run.summary["failed_by_stage"] == dict(sorted(by_stage.items()))
    assert set(by_stage) == {"read", "decode", "parse"}


# -- files ---------------------------------------------------------------------------------------------------


def test_zero_byte_shards_give_no_rows_and_no_errors(run):
    for name in ("empty.jsonl", "empty.parquet"):
        assert run.rows_of(name) == [] and run.dead_of(name) == []


def dead_row(run: Run, name: str) -> dict[str, Any]:
    assert run.rows_of(name) == []
    (row,) = run.dead_of(name)
    assert (row["offset"], row["id"]) == (0, None)
    return row


def test_a_named_pipe_and_a_broken_link_are_read_failures(run):
    pipe = dead_row(run, "pipe.jsonl")
    assert (pipe["stage"], pipe["error"]) == ("read", "NotRegularFile")
    assert pipe["message"] == f"{run.uri('pipe.jsonl')} is a named pipe, not a regular file; it is not read"
    gone = dead_row(run, "gone.jsonl")
    assert (gone["stage"], gone["error"]) == ("read", "FileNotFoundError")
    assert gone["message"].startswith("cannot open shard: [Errno 2] No such file or directory")


@pytest.mark.parametrize("name", ["truncated.jsonl.gz", "truncated.jsonl.zst"])
def test_a_truncated_compressed_shard_keeps_its_readable_records(run, name):
    rows = sorted(run.rows_of(name), key=lambda r: r["offset"])
    assert [(r["id"], r["text"]) for r in rows] == [(s["id"], s["text"]) for s in SHORT[: len(rows)]]
    assert rows
    (row,) = run.dead_of(name)
    assert (row["offset"], row["stage"], row["error"]) == (len(rows), "decode", "EOFError")
    assert row["message"] == (
        f"shard unreadable after {len(rows)} records (EOFError: Compressed file ended before the "
        "end-of-stream marker was reached); the rest of it is lost"
    )


@pytest.mark.parametrize(
    ("name", "error", "message"),
    [
        ("plain.jsonl.gz", "BadGzipFile", "is it compressed as its name plain.jsonl.gz says?"),
        (
            "gzip-named.jsonl",
            "WrongFormat",
            "the content of gzip-named.jsonl is gzip-compressed data, not jsonl",
        ),
        (
            "parquet-named.txt",
            "WrongFormat",
            "the content of parquet-named.txt is a Parquet file, not text text",
        ),
        ("utf16.txt", "WrongFormat", "the content of utf16.txt is UTF-16 text, not text text: convert it"),
        ("not-parquet.parquet", "ArrowInvalid", "not a readable Parquet file: "),
    ],
)
def test_a_file_that_is_not_what_its_name_says_is_one_decode_failure(run, name, error, message):
    row = dead_row(run, name)
    assert (row["stage"], row["error"]) == ("decode", error)
    assert message in row["message"]


def test_parquet_without_a_usable_text_column_dead_letters_each_row(run):
    no_text = run.dead_of("no-text.parquet")
    assert [(r["id"], r["stage"], r["error"]) for r in no_text] == [(i, "parse", "BadColumn") for i in "abc"]
    assert {r["message"] for r in no_text} == {"column 'text' not found; the file has id, body"}
    ints = run.dead_of("int-text.parquet")
    assert [(r["offset"], r["error"], r["raw"]) for r in ints] == [
        (0, "BadColumn", "1"),
        (1, "BadColumn", "2"),
    ]
    assert {r["message"] for r in ints} == {"column 'text' is int64, expected a string column"}
    assert run.rows_of("no-text.parquet") == run.rows_of("int-text.parquet") == []


def test_parquet_null_texts_are_dead_lettered_the_rest_annotated(run):
    assert [(r["id"], r["text"]) for r in run.rows_of("null-text.parquet")] == [("1", "a"), ("3", "c")]
    (row,) = run.dead_of("null-text.parquet")
    assert (row["id"], row["offset"], row["stage"], row["message"]) == (
        "2",
        1,
        "parse",
        "text field 'text' is null",
    )


def test_csv_in_a_jsonl_shard_is_dead_lettered_line_by_line(run):
    rows = run.dead_of("junk.jsonl")
    assert [(r["offset"], r["stage"], r["error"]) for r in rows] == [
        (i, "parse", "JSONDecodeError") for i in range(3)
    ]
    assert rows[0]["raw"] == "id,text"


def test_a_file_with_cr_line_endings_is_one_record_with_a_hint(run):
    row = dead_row(run, "cr-only.jsonl")
    assert (row["stage"], row["error"]) == ("parse", "JSONDecodeError")
    assert "records end at LF or CRLF only" in row["message"]


# -- records -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "lines"), [("records.jsonl", RECORD_LINES), ("lines.txt", TEXT_LINES)])
def test_each_record_has_the_outcome_it_should(run, name, lines):
    for offset, (line, expected) in enumerate(lines):
        outcome, row = run.outcome(name, offset)
        if expected == ANNOTATED:
            assert outcome == ANNOTATED, (offset, row)
            continue
        stage, error, message = expected
        assert (row["stage"], row["error"]) == (stage, error), offset
        assert row["message"].startswith(message), (offset, row["message"])
        assert row["raw"].encode() == line.removeprefix(b"\xef\xbb\xbf")[:1024], offset  # the first 1 KiB
        assert len(row["message"].encode()) <= 1024


def test_repaired_and_suspicious_documents_are_annotated_and_flagged(run):
    flagged = [(r["id"], r["text"], r["warnings"]) for r in run.rows_of("records.jsonl") if r["warnings"]]
    assert sorted(flagged) == [
        ("dup", "the first of two", ["duplicate_id"]),
        ("dup", "the second of two", ["duplicate_id"]),
        ("empty", "", ["empty_text"]),
        ("latin1", "caf\ufffd cr\ufffdme", ["invalid_utf8"]),
        ("nul", "a\x00b and \x07 bell", ["control_chars"]),
        ("spaces", "   \t  ", ["empty_text"]),
        ("surrogate", "half \ufffd of an emoji", ["lone_surrogate"]),
    ]
    assert run.row("bom")["text"] == "starts after a byte-order mark" and run.row("bom")["warnings"] == []
    assert run.row("empty")["n_tokens"] == run.row("spaces")["n_tokens"] == 0
    assert run.row("longword")["n_tokens"] == 1  # one word over the tokenizer's word limit: one [UNK]
    count = duckdb.sql(
        f"select count(*) from '{run.out}/part-*.parquet' where list_contains(warnings, 'invalid_utf8')"
    ).fetchall()[0][0]
    assert count == 2  # records.jsonl "latin1" and lines.txt line 2


def test_text_lines_keep_what_they_hold(run):
    rows = {r["offset"]: r for r in run.rows_of("lines.txt")}
    got = {o: (r["text"], r["warnings"]) for o, r in rows.items() if o != 5}
    assert got == {
        0: ("plain line with crlf", []),
        1: ("old\rmac", []),  # a lone CR is not a line break
        2: ("caf\ufffd", ["invalid_utf8"]),
        3: ("nul\x00byte", ["control_chars"]),
        4: ("", ["empty_text"]),
        7: ("last line, no line feed", []),
    }
    assert rows[5]["id"] == derived_id(run.uri("lines.txt"), 5) and rows[5]["n_tokens"] == 1


def test_dead_letter_ids_are_kept_where_the_record_had_one(run):
    dead = run.dead_of("records.jsonl")
    assert [r["id"] for r in dead if r["id"] is not None] == ["missing", "null", "number", "list"]


def test_entity_offsets_index_the_document_on_exotic_text(run):
    rows = run.rows_of("records.jsonl") + run.rows_of("lines.txt")
    n_entities = 0
    for row in rows:
        for task in ("entities", "cased"):
            for e in row[task]:
                assert 0 <= e["start"] < e["end"] <= len(row["text"]), (row["id"], e)
                assert e["text"] == row["text"][e["start"] : e["end"]], (row["id"], e)
                n_entities += 1
    exotic = [run.row(key) for key in EXOTIC]
    assert all(r["warnings"] == [] and r["n_tokens"] > 0 for r in exotic)
    assert sum(len(r["entities"]) for r in exotic) > 0, "random weights tag some exotic tokens"
    assert n_entities > 50
    # DuckDB counts characters as Python does: code points, so the offsets work there unchanged.
    out = str(run.out)
    for task in ("entities", "cased"):
        mismatches, total = duckdb.sql(
            f"""select count(*) filter (where e.text != substring(text, e.start + 1, e."end" - e.start)),
                       count(*)
                from (select text, unnest({task}) as e from '{out}/part-*.parquet')"""
        ).fetchall()[0]
        assert mismatches == 0 and total > 0


# -- security ------------------------------------------------------------------------------------------------


def test_ids_never_become_file_names_and_outputs_stay_in_output_path(run):
    assert run.row("../../etc/x")["text"] == "an id shaped like a path"
    files = sorted(str(p.relative_to(run.out)) for p in run.out.rglob("*") if p.is_file())
    pattern = re.compile(
        r"(_errors/)?part-[0-9a-f]{16}\.parquet|_SUMMARY\.json|_REPORT\.(md|html)"
        r"|_state/shards/[0-9a-f]{16}\.json|_state/runs/\d{8}T\d{6}Z-[0-9a-f]{6}/(summary\.json|report\.(md|html))"
    )
    assert files and all(pattern.fullmatch(f) for f in files), files
    assert {p.name for p in run.root.iterdir()} <= {"in", "out", "tmp", "cache", "config.yaml"}
    assert {p.name for p in run.inputs.iterdir()} == INPUT_NAMES


def test_secrets_in_storage_options_appear_nowhere(run):
    seen = [run.stdout, run.stderr, run.rerun.stdout, run.rerun.stderr]
    for path in run.out.rglob("*"):
        if path.is_file():
            seen.append(path.read_bytes().decode("latin-1"))  # compression none: strings are plain
            if path.suffix == ".parquet":
                seen.append(json.dumps(pq.read_table(path).to_pylist(), default=str))
                seen.append(str(pq.read_metadata(path).metadata))
    for secret in (SECRET, SECRET_ON_COMMAND_LINE):
        assert not [s for s in seen if secret in s]
    assert "distilbeam.config_sha256" in str(pq.read_metadata(next(run.out.glob("part-*.parquet"))).metadata)


# -- config --------------------------------------------------------------------------------------------------


def test_a_second_run_into_the_same_output_needs_force(run):
    assert run.rerun.returncode == 2
    assert run.rerun.stdout == ""
    assert run.rerun.stderr.strip().splitlines()[-1] == (
        f"distilbeam: error: output.path: {run.out} is not empty; choose another path, or pass --force to "
        "replace the distilbeam outputs in it"
    )
    assert json.loads((run.out / "_SUMMARY.json").read_text()) == run.summary  # left as it was
