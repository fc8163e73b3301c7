"""Encoding: class targets, sentence pairs, BIO tags aligned to tokens (spans off token boundaries refused),
and batches cut by a token budget."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from distilbeam.transforms import models
from distilbeam.transforms.training import encode
from distilbeam.transforms.training.data import DataError, Example, Span


@pytest.fixture(scope="module")
def tokenizer(models_dir):
    return models.load_tokenizer(models_dir / "tokenizer")


def test_bio_tags_follow_spans(tokenizer):
    text = "alice stark visited paris on monday"
    e = Example(text, (Span(0, 11, "PER"), Span(20, 25, "LOC")), "x line 1")
    tags = encode.bio_labels(["LOC", "PER"])
    (encoded,) = encode.encode_ner([e], tokenizer, tags, max_length=32)
    offsets = tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
    got = {
        text[s:t]: tags[g] for (s, t), g in zip(offsets, encoded.target, strict=True) if g != encode.IGNORE
    }
    assert got == {
        "alice": "B-PER",
        "stark": "I-PER",
        "visited": "O",
        "paris": "B-LOC",
        "on": "O",
        "monday": "O",
    }
    assert encoded.target[0] == encoded.target[-1] == encode.IGNORE  # [CLS], [SEP]


def test_span_inside_a_token_is_refused(tokenizer):
    e = Example("alice visited paris", (Span(1, 5, "PER"),), "people.jsonl line 3")
    with pytest.raises(DataError, match=r"people\.jsonl line 3: span \[1, 5\) PER 'lice' does not start"):
        encode.encode_ner([e], tokenizer, encode.bio_labels(["PER"]), max_length=32)


def test_pairs_have_two_segments_and_truncate_the_second(tokenizer):
    e = Example("the film was good", "label", "x", pair="a great movie " * 20)
    (encoded,) = encode.encode_classify([e], tokenizer, ["label"], False, max_length=16)
    assert len(encoded.input_ids) == 16
    first = tokenizer("the film was good")["input_ids"]
    assert encoded.input_ids[: len(first)] == first  # the first text whole, the second cut
    assert encoded.target == 0


def test_multi_hot_targets(tokenizer):
    e = Example("alice in paris", ("people", "places"), "x")
    (encoded,) = encode.encode_classify([e], tokenizer, ["people", "places", "sport"], True, 16)
    assert encoded.target == [1.0, 1.0, 0.0]


@given(
    lengths=st.lists(st.integers(1, 64), min_size=1, max_size=300),
    budget=st.integers(64, 1024),
    seed=st.one_of(st.none(), st.integers(0, 3)),
)
def test_batches_respect_the_budget_and_cover_every_example(lengths, budget, seed):
    batches = encode.token_batches(lengths, budget, seed)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(max(lengths[i] for i in b) * len(b) <= budget for b in batches)
    assert encode.token_batches(lengths, budget, seed) == batches
