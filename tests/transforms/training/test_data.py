"""Labelled data: records read from JSONL, Parquet and CoNLL, and every kind of bad input refused with a
message naming the file, the record and the key."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from distilbeam.transforms.storage import Location
from distilbeam.transforms.training import data
from distilbeam.transforms.training.data import DataError, Example, Fields, Span

FIELDS = Fields()


def example(label, text="some text", where="f.jsonl line 1"):
    return Example(text, label, where)


def test_jsonl_and_parquet_read_alike(tmp_path):
    records = [{"text": "a good film", "label": "pos"}, {"text": "a bad film", "label": ["neg", "x"]}]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + "\n")
    pq.write_table(pa.Table.from_pylist([{"text": "fine", "label": "pos"}]), tmp_path / "b.parquet")
    examples, files = data.read_examples([Location(str(tmp_path / "*"))], FIELDS, "classify", "data.train")
    assert [e.label for e in examples] == ["pos", ("neg", "x"), "pos"]
    assert [e.where.rsplit(" ", 2)[-2:] for e in examples] == [["line", "1"], ["line", "2"], ["row", "0"]]
    assert len(files) == 2


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"text": "   ", "label": "a"}, "'text' is empty"),
        ({"label": "a"}, "no 'text' key"),
        ({"text": "x"}, "no 'label' key"),
        ({"text": "x", "label": None}, "must be a label"),
        ({"text": "x", "label": ["a", "a"]}, "lists a label twice"),
    ],
)
def test_bad_classify_records_name_file_and_line(tmp_path, record, message):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"text": "ok", "label": "a"}) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(DataError, match=rf"train\.jsonl line 2: .*{message}"):
        data.read_examples([Location(str(path))], FIELDS, "classify", "data.train")


def test_invalid_json_and_unmatched_glob(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "x", "label": "a"}\n{oops\n')
    with pytest.raises(DataError, match=r"bad\.jsonl line 2: not valid JSON"):
        data.read_examples([Location(str(tmp_path / "bad.jsonl"))], FIELDS, "classify", "data.train")
    with pytest.raises(DataError, match=r"data\.validation: .*matches no file"):
        data.read_examples([Location(str(tmp_path / "none-*.jsonl"))], FIELDS, "classify", "data.validation")


@pytest.mark.parametrize(
    ("spans", "message"),
    [
        ([{"start": 5, "end": 50, "label": "PER"}], r"label\[0\]: span \[5, 50\) is out of range"),
        ([{"start": 3, "end": 3, "label": "PER"}], "out of range"),
        ([{"start": 0, "end": 5, "label": "B-PER"}], "no B-/I-"),
        ([{"start": 0, "end": 5}], "expected a mapping with start, end and label"),
        (
            [{"start": 0, "end": 5, "label": "PER"}, {"start": 4, "end": 10, "label": "LOC"}],
            r"spans \[0, 5\) PER and \[4, 10\) LOC overlap",
        ),
        ("PER", "must be a list"),
    ],
)
def test_bad_spans(spans, message):
    with pytest.raises(DataError, match=rf"doc\.jsonl line 7.*{message}"):
        data.to_example({"text": "alice went to paris", "label": spans}, "doc.jsonl line 7", FIELDS, "ner")


def test_conll_sentences_become_texts_with_spans():
    lines = [
        "-DOCSTART- O",
        "",
        "Alice B-PER",
        "Stark I-PER",
        "visited O",
        "Paris B-LOC",
        "",
        "Bob I-PER",
        ".",
    ]
    lines[-1] = ". O"
    first, second = data.conll_examples("x.conll", lines)
    assert first.text == "Alice Stark visited Paris"
    assert first.label == (Span(0, 11, "PER"), Span(20, 25, "LOC"))
    assert second.text == "Bob ." and second.label == (Span(0, 3, "PER"),)  # IOB1: I- opens a span
    with pytest.raises(DataError, match=r"x\.conll sentence at line 1: tag 'X-PER'"):
        list(data.conll_examples("x.conll", ["Alice X-PER"]))


def test_label_outside_declared_set_and_unseen_in_training():
    train = [example("a"), example("b")]
    with pytest.raises(DataError, match=r"f\.jsonl line 1: label 'c' is not in data\.labels \(a, b\)"):
        data.label_set([*train, example("c")], [], ["a", "b"])
    with pytest.raises(DataError, match=r"v\.jsonl line 4: label 'c' never occurs in the training data"):
        data.label_set(train, [example("c", where="v.jsonl line 4")], ["a", "b", "c"])
    assert data.label_set(train, [example("b")], None) == ["a", "b"]


def test_validation_lacking_a_class_and_too_few_examples():
    train = [example(x) for x in "ababababab"]
    with pytest.raises(DataError, match=r"data\.validation: no example of label 'b'"):
        data.check_split(train, [example("a")], ["a", "b"])
    with pytest.raises(DataError, match=r"data\.train: 4 training examples are too few"):
        data.check_split(train[:4], [example("a"), example("b")], ["a", "b"])
    data.check_split(train, [example("a"), example("b")], ["a", "b"])


def test_hold_out_is_stratified_and_seeded():
    examples = [example(label, text=str(i)) for i, label in enumerate("a" * 30 + "b" * 10)]
    train, validation = data.hold_out(examples, 0.2, seed=3)
    assert sorted(e.label for e in validation) == ["a"] * 6 + ["b"] * 2
    assert len(train) + len(validation) == 40
    assert data.hold_out(examples, 0.2, seed=3) == (train, validation)
    assert data.hold_out(examples, 0.2, seed=4)[1] != validation


def test_files_hash_changes_with_content(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text("one\n")
    first = data.files_sha256([Location(str(path))])
    path.write_text("two\n")
    assert data.files_sha256([Location(str(path))])["all"] != first["all"]
