"""Properties that hold for any input, checked with Hypothesis on a bounded number of small examples: the
readers account for every record exactly once, entity offsets index the document on any text, batches
partition the documents under the token budget, and dead-letter rows stay within 1 KiB."""

from __future__ import annotations

import gzip
import io
import itertools
import json
import re

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distilbeam.transforms.batching import Batch, plan_batches, tokenize, windows
from distilbeam.transforms.read import BOM, ReadSettings, Shard, derived_id, read_shard, sniff
from distilbeam.transforms.schema import RAW_LIMIT, Annotated, Document, Failure, clip
from distilbeam.transforms.storage import Location
from distilbeam.transforms.tasks import Runtime
from tests.transforms.handlers import handler_for

FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MEMORY = fsspec.filesystem("memory")
_names = itertools.count()


def _put(data: bytes, suffix: str) -> str:
    path = f"/properties/{next(_names)}{suffix}"
    MEMORY.pipe(path, data)
    return f"memory://{path}"


def _read(uri: str, fmt: str, max_chars: int) -> list[Document | Failure]:
    s = ReadSettings(None, "id", "text", max_chars)
    try:
        records = list(read_shard(Shard(uri, fmt), s))
    finally:
        MEMORY.rm(uri.removeprefix("memory://"))
    assert [r.offset for r in records] == list(range(len(records))), "one record per offset, in order"
    assert all(r.source == uri for r in records)
    return records


CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _expected_warnings(line: bytes, text: str) -> tuple[str, ...]:
    try:
        line.decode("utf-8")
        invalid = False
    except UnicodeDecodeError:
        invalid = True
    flags = {
        "invalid_utf8": invalid,
        "control_chars": bool(CONTROL.search(text)),
        "empty_text": not text.strip(),
    }
    return tuple(code for code, on in flags.items() if on)


def _lines(content: bytes) -> list[bytes]:
    lines = content.split(b"\n")
    return lines[:-1] if content.endswith(b"\n") else lines


# Text files: arbitrary bytes, or lines of arbitrary bytes and unicode, CRLF or LF, with or without a BOM.
line_bytes = st.one_of(st.binary(max_size=40), st.text(max_size=30).map(str.encode)).map(
    lambda b: b.replace(b"\n", b"")
)
text_files = st.one_of(
    st.binary(max_size=300),
    st.builds(
        lambda bom, lines, end, last: (BOM if bom else b"") + b"".join(line + end for line in lines) + last,
        st.booleans(),
        st.lists(line_bytes, max_size=12),
        st.sampled_from([b"\n", b"\r\n"]),
        line_bytes,
    ),
)


@FAST
@given(content=text_files, max_chars=st.integers(1, 30), compressed=st.booleans())
def test_the_text_reader_gives_each_line_once_as_a_document_or_a_failure(content, max_chars, compressed):
    uri = _put(gzip.compress(content) if compressed else content, ".txt.gz" if compressed else ".txt")
    records = _read(uri, "text", max_chars)
    if not content:
        assert records == []
        return
    if sniff(content):
        assert [(r.stage, r.error) for r in records] == [("decode", "WrongFormat")]
        return
    lines = _lines(content)
    assert len(records) == len(lines)
    for offset, (line, record) in enumerate(zip(lines, records, strict=True)):
        if len(line) > 4 * max_chars:
            assert (record.stage, record.error) == ("read", "TooLong")
            assert record.raw == clip(line.removesuffix(b"\r")[:RAW_LIMIT], RAW_LIMIT)
            continue
        line = line.removesuffix(b"\r")
        if offset == 0:
            line = line.removeprefix(BOM)
        text = line.decode("utf-8", "replace")
        if len(text) > max_chars:
            assert (record.stage, record.error) == ("read", "TooLong")
            continue
        assert isinstance(record, Document)
        assert (record.id, record.text) == (derived_id(uri, offset), text)
        assert record.warnings == _expected_warnings(line, text)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**30), 10**30)
    | st.floats(allow_nan=False)
    | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
good_records = st.fixed_dictionaries(
    {"text": st.text(max_size=40)},
    optional={"id": st.text(min_size=1, max_size=12) | st.integers(-(10**12), 10**12), "other": json_values},
)
jsonl_lines = st.lists(
    st.one_of(
        st.tuples(st.just("good"), good_records),
        st.tuples(st.just("json"), json_values),
        st.tuples(st.just("bytes"), st.binary(max_size=40).map(lambda b: b.replace(b"\n", b""))),
    ),
    max_size=12,
)


@FAST
@given(lines=jsonl_lines, ascii_only=st.booleans(), end=st.sampled_from(["\n", "\r\n"]))
def test_the_jsonl_reader_gives_each_line_once_and_keeps_texts_exactly(lines, ascii_only, end):
    encoded = [
        value if kind == "bytes" else json.dumps(value, ensure_ascii=ascii_only).encode()
        for kind, value in lines
    ]
    content = b"".join(line + end.encode() for line in encoded)
    uri = _put(content, ".jsonl")
    records = _read(uri, "jsonl", 10_000)
    if sniff(content):
        assert [(r.stage, r.error) for r in records] == [("decode", "WrongFormat")]
        return
    assert len(records) == len(lines)
    for offset, ((kind, value), record) in enumerate(zip(lines, records, strict=True)):
        if kind == "good":
            assert isinstance(record, Document), record
            assert record.text == value["text"]
            assert record.id == (str(value["id"]) if "id" in value else derived_id(uri, offset))
        elif kind == "json" and not (isinstance(value, dict) and isinstance(value.get("text"), str)):
            assert isinstance(record, Failure) and record.stage == "parse"
        else:
            assert isinstance(record, Document | Failure)
        if isinstance(record, Failure):
            assert len(record.raw.encode()) <= RAW_LIMIT and len(record.message.encode()) <= 1024


@FAST
@given(
    texts=st.lists(st.none() | st.text(max_size=30), max_size=25),
    row_group=st.integers(1, 8),
    with_ids=st.booleans(),
)
def test_the_parquet_reader_gives_each_row_once(texts, row_group, with_ids):
    columns = {"text": pa.array(texts, type=pa.string())}
    if with_ids:
        columns["id"] = pa.array([f"id-{i}" for i in range(len(texts))])
    sink = io.BytesIO()
    pq.write_table(pa.table(columns), sink, row_group_size=row_group)
    uri = _put(sink.getvalue(), ".parquet")
    records = _read(uri, "parquet", 10_000)
    assert len(records) == len(texts)
    for offset, (text, record) in enumerate(zip(texts, records, strict=True)):
        assert record.id == (f"id-{offset}" if with_ids else derived_id(uri, offset))
        if text is None:
            assert (record.stage, record.error) == ("parse", "BadRecord")
        else:
            assert isinstance(record, Document) and record.text == text


# -- entity offsets ------------------------------------------------------------------------------------------

EXOTIC = [
    "\x00", "\x07", "\t", "\r", "\u00a0", "\u200b", "\u200d", "\ufeff", "\ufffd", "\u0301", "\u0308",
    "\u0323", "\u05e9", "\u05dc", "\u0645", "\u0631", "\u200f", "\u202e", "\U0001f469", "\U0001f3fd",
    "\U0001f4bb", "\U0001f3f3", "\ufe0f", "\u6771", "\u4eac", "\uc11c", "\uff76", "\U0001d518",
    "\U00013000", "\u16a0", " ", " ", "a", "e", "Z", "1", ".", "-", "'",
]  # fmt: skip
WORDS = ["paris", "Alice", "the", "hotel", "London", "acme", "was", "caf\u00e9", "na\u0131ve", "ZÜRICH"]
texts = st.lists(
    st.one_of(st.sampled_from(EXOTIC), st.sampled_from(WORDS), st.characters(codec="utf-8")), max_size=60
).map("".join)


@pytest.fixture(scope="module")
def ner_handlers(models_dir):
    """A handler per (model, aggregation), windows of 12 tokens overlapping by 4, each with its model."""
    loaded = {}
    handlers = []
    for model in ("ner", "ner-cased"):
        for aggregation in ("none", "simple", "first", "average", "max"):
            # one torch thread: tiny models gain nothing from more, and the machine is shared
            runtime = Runtime(device="cpu", torch_threads=1)
            options = {"aggregation": aggregation, "max_length": 12, "stride": 4}
            handler = handler_for("ner", models_dir / model, runtime=runtime, max_tokens=256, **options)
            if model not in loaded:
                loaded[model] = handler.load_model()
            handlers.append((handler, loaded[model]))
    return handlers


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(texts, min_size=1, max_size=4), which=st.integers(0, 9))
def test_entity_offsets_index_the_document_on_any_text(ner_handlers, batch, which):
    handler, model = ner_handlers[which]
    items = [Annotated(Document(str(i), "src", i, text), -1, {}) for i, text in enumerate(batch)]
    tokenized, failures = tokenize(model.tokenizer, items)
    assert failures == []
    for t in tokenized:
        assert all(0 <= s <= e <= len(t.item.doc.text) for s, e in t.offsets.tolist())
    (out,) = handler.run_inference(Batch(tuple(tokenized)), model)
    for t, entities in zip(tokenized, out.results["t"], strict=True):
        text = t.item.doc.text
        assert isinstance(entities, list), entities
        previous_end = 0
        for e in entities:
            assert 0 <= e["start"] < e["end"] <= len(text), (text, e)
            assert e["text"] == text[e["start"] : e["end"]]
            assert e["start"] >= previous_end, ("entities overlap or are out of order", text, entities)
            previous_end = e["end"]


def test_a_text_the_tokenizer_cannot_take_fails_alone_at_tokenize(ner_handlers):
    """A lone surrogate (the reader replaces them, but a transform upstream might not) fails its document
    only, even when it is alone in its buffer."""
    _, model = ner_handlers[0]
    bad = Annotated(Document("bad", "src", 1, "half \ud83d"), -1, {})
    good = Annotated(Document("good", "src", 0, "Alice in Paris"), -1, {})
    for items in ([bad], [good, bad]):
        tokenized, failures = tokenize(model.tokenizer, items)
        assert [t.item.doc.id for t in tokenized] == [i.doc.id for i in items if i is not bad]
        assert [(f.id, f.stage, f.error) for f in failures] == [("bad", "tokenize", "TypeError")]
        assert failures[0].raw == "half \ufffd"


# -- batching ------------------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    costs=st.lists(st.tuples(st.integers(1, 8), st.integers(1, 600)), max_size=60),
    max_tokens=st.integers(1, 6000),
)
def test_batches_partition_the_documents_under_the_budget(costs, max_tokens):
    batches = plan_batches(costs, max_tokens)
    assert sorted(i for batch in batches for i in batch) == list(range(len(costs)))
    for batch in batches:  # each document's own tokens; the model pads per call (see plan_slices)
        tokens = sum(costs[i][0] * costs[i][1] for i in batch)
        assert tokens <= max_tokens or len(batch) == 1, (batch, max_tokens)


@settings(max_examples=300, deadline=None)
@given(n=st.integers(0, 5000), body=st.integers(1, 600), stride=st.none() | st.integers(0, 599))
def test_windows_cover_the_document_in_overlapping_steps(n, body, stride):
    if stride is not None and stride >= body:
        stride = body - 1
    spans = windows(n, body, stride)
    assert spans[0][0] == 0 and all(0 < e - s <= body or n == 0 for s, e in spans)
    if stride is None or n <= body:
        assert spans == [(0, min(n, body))]
        return
    assert spans[-1][1] == n
    for (s1, e1), (s2, _) in itertools.pairwise(spans):
        assert s2 == e1 - stride and s2 > s1


# -- dead-letter rows and warnings ---------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    value=st.binary(max_size=6000) | st.text(st.characters(codec=None), max_size=3000),
    limit=st.integers(1, 2048),
)
def test_clipped_text_is_valid_utf8_within_the_limit(value, limit):
    out = clip(value, limit)
    assert len(out.encode("utf-8")) <= limit  # encodes: no lone surrogate is left
    source = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    source = re.sub("[\ud800-\udfff]", "\ufffd", source)
    assert source.startswith(out)
    assert len(out) >= min(len(source), limit // 4)  # cut at a character boundary, not earlier


@settings(max_examples=100, deadline=None)
@given(raw=st.binary(min_size=1000, max_size=20_000), message=st.text(min_size=0, max_size=3000))
def test_a_dead_letter_row_holds_at_most_1kib_of_the_record(raw, message):
    failure = Failure.of("parse", ValueError("x"), message, source="s", offset=0, raw=raw)
    assert len(failure.raw.encode()) <= RAW_LIMIT and len(failure.message.encode()) <= 1024


@settings(max_examples=100, deadline=None)
@given(
    ids=st.lists(st.sampled_from(["a", "b", "c", "d", "e", "f", "g"]), max_size=20),
    chunk=st.integers(1, 7),
    row_group=st.integers(1, 9),
)
def test_rows_sharing_an_id_are_all_kept_and_all_flagged(ids, chunk, row_group):
    import tempfile

    import pyarrow.parquet as pq

    from distilbeam.transforms import layout, write
    from distilbeam.transforms.read import Split
    from distilbeam.transforms.schema import output_schema

    items = [Annotated(Document(id_, "s", i, "t"), 0, {}) for i, id_ in enumerate(ids)]
    with tempfile.TemporaryDirectory() as out:
        settings = write.WriteSettings(Location(out), output_schema({}, False), False, "zstd")
        original, write.ROW_GROUP_ROWS = write.ROW_GROUP_ROWS, row_group
        try:
            with write.SplitWriter(settings, Split("s", "jsonl")) as writer:
                for k in range(0, len(items), chunk):
                    writer.write(items[k : k + chunk], [], records=len(items[k : k + chunk]))
                writer.commit()
        finally:
            write.ROW_GROUP_ROWS = original
        rows = pq.read_table(f"{out}/{layout.shard_file_name('s')}").to_pylist()
    assert [r["offset"] for r in rows] == list(range(len(ids)))
    for r in rows:
        assert ("duplicate_id" in r["warnings"]) == (ids.count(r["id"]) > 1)


def test_an_over_long_last_line_ends_like_any_other_line():
    """Found by the property above: a skipped last line kept its trailing CR in the dead letter's raw."""
    uri = _put(b"\x00\x00\x00\x00\r", ".txt")
    (record,) = _read(uri, "text", 1)
    assert (record.stage, record.error, record.raw) == ("read", "TooLong", "\x00\x00\x00\x00")
