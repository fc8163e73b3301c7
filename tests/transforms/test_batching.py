"""Tokenizing once and batching by a token budget: every document in exactly one batch, each batch within the
budget, and results that come back to the right document and equal one-document-at-a-time inference."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from distilbeam.transforms import models
from distilbeam.transforms.batching import Batch, plan_batches, tokenize, windows
from distilbeam.transforms.schema import Annotated, Document
from distilbeam.transforms.tasks import Runtime
from distilbeam.transforms.tasks.build import build_handler
from tests.transforms.handlers import task_settings

TEXTS = [
    "The hotel in Paris was lovely and the staff were very helpful.",
    "",
    "Bob and Carol flew from Tokyo to Madrid with Initech; the flight was on time!",
    "x",
    "   ",
    "one two three four five six seven eight nine ten " * 6,
    "Alice visited the museum in Vienna on Monday.",
    "Très bon restaurant à Lyon — le service était impeccable! 👍",
    "good",
    "Acme sold ten thousand phones in March, and Globex bought the rest in October.",
    "bad film, slow story, terrible staff " * 4,
    "Grace and Dave liked the festival.",
]


def docs(texts=TEXTS) -> list[Annotated]:
    return [Annotated(Document(f"doc-{i}", "src", i, t), -1, {}) for i, t in enumerate(texts)]


# -- plan_batches --------------------------------------------------------------------------------------------


def check_plan(costs: list[tuple[int, int]], max_tokens: int) -> list[list[int]]:
    batches = plan_batches(costs, max_tokens)
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(len(costs))), "every document exactly once"
    for batch in batches:
        # A batch holds documents whose rows add up to the budget; the model then runs them in calls
        # padded per call (plan_slices), so padding is not the batch's business.
        tokens = sum(costs[i][0] * costs[i][1] for i in batch)
        if len(batch) > 1:
            assert tokens <= max_tokens, (batch, [costs[i] for i in batch])
        elif tokens > max_tokens:
            assert costs[batch[0]][0] * costs[batch[0]][1] > max_tokens, "alone only when over on its own"
    lengths = [costs[i][1] for i in flat]
    assert lengths == sorted(lengths), "batches are cut from documents sorted by length"
    return batches


def test_plan_batches_on_many_random_inputs():
    rng = random.Random(1234)
    for _ in range(500):
        n = rng.randint(0, 60)
        costs = [(rng.choice([1, 1, 1, 2, 3]), rng.randint(2, 300)) for _ in range(n)]
        check_plan(costs, rng.choice([1, 16, 64, 256, 1024, 8192]))


def test_plan_batches_fills_each_batch_up_to_the_budget():
    costs = [(1, 10)] * 10
    assert check_plan(costs, 30) == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert check_plan(costs, 100) == [list(range(10))]
    assert check_plan(costs, 9) == [[i] for i in range(10)]


def test_plan_batches_counts_each_documents_own_tokens():
    costs = [(1, 50), (1, 10), (1, 10), (1, 40)]
    # sorted: 10, 10, 40, 50 -> [10, 10, 40] (60 tokens); adding the 50 would make 110 > 100
    assert check_plan(costs, 100) == [[1, 2, 3], [0]]


def test_plan_batches_counts_every_window_of_a_long_document():
    costs = [(4, 32), (1, 32), (1, 32)]
    assert check_plan(costs, 128) == [[1, 2], [0]]


def test_plan_batches_gives_an_oversize_document_a_batch_of_its_own():
    costs = [(1, 5), (1, 500), (1, 6)]
    assert check_plan(costs, 64) == [[0, 2], [1]]


def test_plan_batches_of_nothing():
    assert plan_batches([], 100) == []


# -- windows -------------------------------------------------------------------------------------------------


def test_windows_without_stride_truncate():
    assert windows(0, 10, None) == [(0, 0)]
    assert windows(7, 10, None) == [(0, 7)]
    assert windows(25, 10, None) == [(0, 10)]


@pytest.mark.parametrize("stride", [0, 1, 3, 9])
@pytest.mark.parametrize("n", [0, 1, 9, 10, 11, 25, 100])
def test_windows_cover_the_document_and_overlap_by_stride(n, stride):
    body = 10
    spans = windows(n, body, stride)
    assert spans[0][0] == 0
    assert spans[-1][1] == n
    assert all(0 < e - s <= body for s, e in spans) or n == 0
    for (_, e1), (s2, _) in itertools.pairwise(spans):
        assert e1 - s2 == stride, "consecutive windows share exactly `stride` tokens"
        assert e1 < n


@pytest.mark.parametrize(("body", "stride"), [(8, 0), (8, 3), (16, 4), (7, 4)])
def test_windows_match_the_fast_tokenizers_overflowing_tokens(models_dir, body, stride):
    tokenizer = models.load_tokenizer(models_dir / "tokenizer")
    for text in TEXTS:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        reference = tokenizer(
            text,
            add_special_tokens=False,
            truncation=True,
            max_length=body,
            stride=stride,
            return_overflowing_tokens=True,
        )["input_ids"]
        ours = [ids[s:e] for s, e in windows(len(ids), body, stride)]
        assert ours == reference, text


# -- tokenizing ---------------------------------------------------------------------------------------------


def test_tokenizing_gives_the_tokenizers_own_ids_and_offsets_untruncated(models_dir):
    tokenizer = models.load_tokenizer(models_dir / "tokenizer")
    tokenizer.backend_tokenizer.enable_truncation(8)  # a tokenizer.json may set it: never applied here
    texts = [t for t in TEXTS] + ["word " * 600]
    tokenized, failures = tokenize(tokenizer, docs(texts))
    assert failures == [] and tokenizer.backend_tokenizer.truncation is not None  # the tokenizer unchanged
    tokenizer.backend_tokenizer.no_truncation()
    for t, text in zip(tokenized, texts, strict=True):
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        assert t.ids.tolist() == encoded["input_ids"] and t.ids.dtype == np.int32
        assert [tuple(o) for o in t.offsets.tolist()] == [tuple(o) for o in encoded["offset_mapping"]]
    assert len(tokenized[-1].ids) > 512  # past any truncation


def test_tokenizer_failure_fails_only_its_document(models_dir, monkeypatch):
    from distilbeam.transforms import batching

    real = models.load_tokenizer(models_dir / "tokenizer")
    rust = batching.encoder(real)

    class Encoder:
        def encode_batch(self, texts, **kwargs):
            if any("BOOM" in t for t in texts):
                raise ValueError("cannot tokenize this")
            return rust.encode_batch(texts, **kwargs)

    monkeypatch.setattr(batching, "encoder", lambda tokenizer: Encoder())
    items = docs(["fine", "BOOM here", "also fine"])
    tokenized, failures = tokenize(real, items)
    assert [t.item.doc.id for t in tokenized] == ["doc-0", "doc-2"]
    (failure,) = failures
    assert (failure.id, failure.offset, failure.stage, failure.error) == (
        "doc-1",
        1,
        "tokenize",
        "ValueError",
    )


# -- batched inference equals one document at a time (issue 3, must show 2) ----------------------------------


def handler_for(models_dir, model, kind, **settings):
    return task_settings(kind, models_dir / model, **settings)


def infer(settings, texts, max_tokens) -> list:
    handler, _, _ = build_handler("t", settings, Runtime(device="cpu", torch_threads=1), max_tokens)
    loaded = _loaded(handler)
    tokenized, failures = tokenize(loaded.tokenizer, docs(texts))
    assert failures == []
    results = {}
    costs = [handler.cost(len(t.ids)) for t in tokenized]
    for indices in plan_batches(costs, max_tokens):
        (out,) = handler.run_inference(Batch(tuple(tokenized[i] for i in indices)), loaded)
        assert [t.item.doc.id for t in out.items] == [tokenized[i].item.doc.id for i in indices]
        for t, result in zip(out.items, out.results["t"], strict=True):
            assert t.item.doc.id not in results
            results[t.item.doc.id] = result
    return [results[f"doc-{i}"] for i in range(len(texts))]


_LOADED: dict = {}


def _loaded(handler):
    """One loaded model per model directory for the whole module: loading is the slow part."""
    key = handler.settings.model
    if key not in _LOADED:
        _LOADED[key] = handler.load_model()
    return _LOADED[key]


def assert_same_classification(got, want):
    assert got["label"] == want["label"]
    assert got["score"] == pytest.approx(want["score"], abs=1e-5)
    assert [s["label"] for s in got["scores"]] == [s["label"] for s in want["scores"]]
    assert np.allclose([s["score"] for s in got["scores"]], [s["score"] for s in want["scores"]], atol=1e-5)


def assert_same_entities(got, want):
    assert [(e["label"], e["start"], e["end"], e["text"]) for e in got] == [
        (e["label"], e["start"], e["end"], e["text"]) for e in want
    ]
    assert np.allclose([e["score"] for e in got], [e["score"] for e in want], atol=1e-5)


BUDGETS = [1, 40, 128, 512, 100_000]


@pytest.mark.parametrize("settings", [{}, {"max_length": 16, "long_text": "chunk-max"}])
def test_classify_batched_equals_one_document_at_a_time(models_dir, settings):
    task = handler_for(models_dir, "classifier", "classify", **settings)
    alone = [infer(task, [text], 100_000)[0] for text in TEXTS]
    for budget in BUDGETS:
        batched = infer(task, TEXTS, budget)
        for got, want in zip(batched, alone, strict=True):
            assert_same_classification(got, want)


@pytest.mark.parametrize("aggregation", ["none", "simple", "first", "average", "max"])
def test_ner_batched_equals_one_document_at_a_time(models_dir, aggregation):
    task = handler_for(models_dir, "ner", "ner", aggregation=aggregation, max_length=16, stride=4)
    alone = [infer(task, [text], 100_000)[0] for text in TEXTS]
    assert any(alone), "the model finds some entities, so the comparison says something"
    for budget in BUDGETS:
        batched = infer(task, TEXTS, budget)
        for got, want in zip(batched, alone, strict=True):
            assert_same_entities(got, want)
