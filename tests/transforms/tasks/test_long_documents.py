"""Documents longer than the model's window: the windows are the fast tokenizer's own overflowing windows,
``ner`` equals transformers' token-classification pipeline with ``stride`` and finds each entity once
wherever the windows cut, and ``classify`` reads every chunk (or says it did not)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import transformers
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from distilbeam.transforms.batching import windows
from distilbeam.transforms.tasks import demo_models

# Sweeps of windows, strides and strategies against the pipeline: the full suite, not the fast loop.
pytestmark = pytest.mark.slow

UNICODE = "Très bon restaurant à Lyon — naïve café, 東京 and 北京; مرحبا 👩🏽‍💻 Zürich São Paulo. "
DOCUMENTS = [
    " ".join(demo_models.corpus(4, seed=21)),
    " ".join(demo_models.corpus(25, seed=22)),
    " ".join(demo_models.corpus(36, seed=23)),
    UNICODE * 12,
    " ".join(demo_models.corpus(12, seed=24)) + " " + UNICODE * 3 + " ".join(demo_models.corpus(12, seed=25)),
]


@pytest.mark.parametrize("tokenizer_name", ["tokenizer", "tokenizer-cased"])
@pytest.mark.parametrize(("max_length", "stride"), [(16, 0), (16, 5), (40, 8), (40, 37), (64, None)])
def test_windows_are_the_tokenizers_overflowing_windows(models_dir, tokenizer_name, max_length, stride):
    tokenizer = AutoTokenizer.from_pretrained(str(models_dir / tokenizer_name))
    for document in DOCUMENTS:
        ids = tokenizer(document, add_special_tokens=False)["input_ids"]
        expected = tokenizer(
            document,
            truncation=True,
            max_length=max_length,
            stride=stride or 0,
            return_overflowing_tokens=stride is not None,
            return_special_tokens_mask=True,
        )
        rows = expected["input_ids"] if stride is not None else [expected["input_ids"]]
        masks = expected["special_tokens_mask"] if stride is not None else [expected["special_tokens_mask"]]
        theirs = [
            [t for t, special in zip(r, m, strict=True) if not special]
            for r, m in zip(rows, masks, strict=True)
        ]
        ours = [ids[s:e] for s, e in windows(len(ids), max_length - 2, stride)]
        assert ours == theirs


def reference_ner(model_dir, max_length, stride, aggregation):
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    tokenizer.model_max_length = max_length
    return transformers.pipeline(
        "token-classification",
        model=str(model_dir),
        tokenizer=tokenizer,
        aggregation_strategy=aggregation,
        stride=stride,
        device="cpu",
    )


@pytest.mark.parametrize("aggregation", ["simple", "first", "average", "max"])
@pytest.mark.parametrize("model", ["ner", "ner-cased"])
def test_long_ner_matches_token_classification_pipeline_with_stride(models_dir, annotate, model, aggregation):
    """Documents up to 25 windows of 40 tokens, overlapping by 12: the same entities, spans and scores."""
    reference = reference_ner(models_dir / model, 40, 12, aggregation)
    ours = annotate(models_dir / model, "ner", DOCUMENTS, aggregation=aggregation, max_length=40, stride=12)
    n_windows = 0
    for document, entities in zip(DOCUMENTS, ours, strict=True):
        n_windows = max(
            n_windows, len(reference.tokenizer(document, stride=12, return_overflowing_tokens=True))
        )
        expected = reference(document)
        assert len(entities) == len(expected), document
        for got, want in zip(entities, expected, strict=True):
            assert got["label"] == want["entity_group"]
            assert (got["start"], got["end"]) == (want["start"], want["end"])
            assert got["score"] == pytest.approx(float(want["score"]), abs=1e-4)
            assert got["text"] == document[got["start"] : got["end"]]
    assert n_windows > 1


def lexicon_document(tokenizer, lexicon, max_length: int, stride: int, seed: int):
    """A document of one-token words, 30 windows long, with a two-word person ("alice wayne") across the
    end of every window and across the start of every next one, and one-word places and companies
    scattered in between; and the entities it holds, as (label, start, end)."""
    import random

    rng = random.Random(seed)
    filler = ["the", "a", "good", "movie", "was", "very", "slow", "and", "staff", "were", "quite", "hotel"]
    for word in filler + [w for words in lexicon.values() for w in words]:
        assert len(tokenizer.encode(word, add_special_tokens=False)) == 1, word
    n = 30 * (max_length - 2)
    slots: list[tuple[str, str] | None] = [None] * n
    spans = windows(n, max_length - 2, stride)
    for (_, end), (start, _) in itertools.pairwise(spans):
        for first in (end - 1, start - 1):  # person = tokens first, first + 1
            slots[first] = ("B-PER", rng.choice(lexicon["B-PER"]))
            slots[first + 1] = ("I-PER", rng.choice(lexicon["I-PER"]))
    for i in range(1, n - 1):
        if slots[i - 1] is None and slots[i] is None and slots[i + 1] is None and rng.random() < 0.08:
            label = rng.choice(["B-LOC", "B-ORG"])
            slots[i] = (label, rng.choice(lexicon[label]))
    text, entities = "", []
    for slot in slots:
        text += " " if text else ""
        if slot is None:
            text += rng.choice(filler)
            continue
        label, word = slot
        if label == "I-PER":
            entities[-1] = ("PER", entities[-1][1], len(text) + len(word))
        else:
            entities.append((label[2:], len(text), len(text) + len(word)))
        text += word
    assert len(tokenizer.encode(text, add_special_tokens=False)) == n
    return text, entities


@pytest.mark.parametrize("aggregation", ["simple", "first", "average", "max"])
@pytest.mark.parametrize(("max_length", "stride"), [(24, 4), (40, 10)])
def test_entities_across_window_boundaries_come_out_once(
    lexicon_models, lexicon, annotate, aggregation, max_length, stride
):
    tokenizer = AutoTokenizer.from_pretrained(str(lexicon_models / "ner"))
    document, expected = lexicon_document(tokenizer, lexicon, max_length, stride, seed=max_length)
    (entities,) = annotate(
        lexicon_models / "ner",
        "ner",
        [document],
        aggregation=aggregation,
        max_length=max_length,
        stride=stride,
    )
    assert [(e["label"], e["start"], e["end"]) for e in entities] == expected
    assert all(e["text"] == document[e["start"] : e["end"]] for e in entities)
    boundaries = len(windows(30 * (max_length - 2), max_length - 2, stride)) - 1
    assert sum(e["label"] == "PER" for e in entities) == 2 * boundaries
    reference = reference_ner(lexicon_models / "ner", max_length, stride, aggregation)
    assert [(e["entity_group"], e["start"], e["end"]) for e in reference(document)] == expected


def test_without_overlap_an_entity_across_a_boundary_is_cut_in_two(lexicon_models, lexicon, annotate):
    """stride 0 is allowed, and this is why it is not the default: the windows share no token."""
    tokenizer = AutoTokenizer.from_pretrained(str(lexicon_models / "ner"))
    document, expected = lexicon_document(tokenizer, lexicon, 24, 4, seed=1)
    (entities,) = annotate(lexicon_models / "ner", "ner", [document], max_length=24, stride=0)
    assert len(entities) > len(expected)
    assert all(e["text"] == document[e["start"] : e["end"]] for e in entities)


def test_ner_without_aggregation_gives_each_token_once(models_dir, annotate):
    """transformers refuses stride with aggregation none; here each token of the overlaps comes out once."""
    (short,) = annotate(models_dir / "ner", "ner", [DOCUMENTS[2]], aggregation="none", max_length=512)
    (long,) = annotate(
        models_dir / "ner", "ner", [DOCUMENTS[2]], aggregation="none", max_length=40, stride=12
    )
    spans = [(e["start"], e["end"]) for e in long]
    assert len(spans) == len(set(spans)) and spans == sorted(spans)
    assert len(short) > 0 and len(long) > 0


@pytest.mark.parametrize("model", ["classifier", "multilabel"])
def test_classify_chunks_are_the_tokenizers_windows(models_dir, annotate, model):
    """chunk-mean / chunk-max: the model's probabilities on each of the tokenizer's consecutive windows,
    averaged or maxed; truncate: transformers' text-classification pipeline with truncation."""
    path = models_dir / model
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    reference = AutoModelForSequenceClassification.from_pretrained(str(path)).eval()
    pipeline = transformers.pipeline("text-classification", model=str(path), device="cpu")
    results = {
        mode: annotate(path, "classify", DOCUMENTS, max_length=32, long_text=mode)
        for mode in ("chunk-mean", "chunk-max", "truncate")
    }
    for i, document in enumerate(DOCUMENTS):
        encoded = tokenizer(
            document, truncation=True, max_length=32, stride=0, return_overflowing_tokens=True
        )
        probs = []
        for ids in encoded["input_ids"]:
            with torch.no_grad():
                logits = reference(input_ids=torch.tensor([ids])).logits[0].numpy()
            multi = reference.config.problem_type == "multi_label_classification"
            probs.append(1 / (1 + np.exp(-logits)) if multi else np.exp(logits) / np.exp(logits).sum())
        for mode, reduce in (("chunk-mean", np.mean), ("chunk-max", np.max)):
            got = results[mode][i]
            expected = reduce(probs, axis=0)
            assert [s["score"] for s in got["scores"]] == pytest.approx(expected.tolist(), abs=1e-4)
            assert got["score"] == pytest.approx(expected.max(), abs=1e-4)
            assert (got["n_chunks"], got["truncated"]) == (len(probs), False)
        truncated = results["truncate"][i]
        want = pipeline(document, top_k=None, truncation=True, max_length=32)
        by_label = {w["label"]: w["score"] for w in want}
        assert {s["label"]: s["score"] for s in truncated["scores"]} == pytest.approx(by_label, abs=1e-4)
        assert (truncated["n_chunks"], truncated["truncated"]) == (1, len(probs) > 1)
    assert max(len(r["scores"]) for r in results["truncate"]) > 1
    assert max(r["n_chunks"] for r in results["chunk-mean"]) > 1
