"""Sentence pairs for ``classify`` (``input.text_pair_field``): model inputs equal the tokenizer's own pair
encoding ``tokenizer(text, pair)`` (ids and token type ids, truncated ``only_second``), and results equal
``transformers.pipeline("text-classification")({"text": ..., "text_pair": ...})`` within 1e-4, on a tiny
DistilBERT (no token types) and a tiny BERT (token types that matter), pairs of mixed lengths batched
together. A pair whose first text leaves no room for the second is a dead-letter row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import transformers

from distilbeam.transforms.batching import Batch, plan_batches, tokenize
from distilbeam.transforms.schema import Annotated, Document, Failure
from distilbeam.transforms.tasks import classify, demo_models
from distilbeam.transforms.tasks.qa import pair_frame
from tests.conftest import build_bert_qa, minilm_path
from tests.transforms.handlers import handler_for

NLI_LABELS = ("entailment", "neutral", "contradiction")
PAIRS = [
    ("A man is eating food.", "Someone eats."),
    ("The hotel in Paris was lovely and the staff were very helpful.", "The staff were rude."),
    ("", "An empty premise."),
    ("An empty hypothesis.", ""),
    ("Whitespace only.", "   "),
    ("Très bon restaurant à Lyon — le service était impeccable! 👍", "naïve café résumé Zürich"),
    ("x", "one two three four five six seven eight nine ten " * 4),
    ("Bob flew from Tokyo to Madrid.", "東京 and 北京 are capitals; مرحبا بالعالم"),
    ('He said: "Don\'t!" -- then left...', "\tTabs\tand\nnewlines\r\ninside\u00a0nbsp"),
]


@pytest.fixture(scope="module")
def pair_models(models_dir, tmp_path_factory) -> dict[str, Path]:
    """A DistilBERT NLI classifier on the tests' tokenizer, and a BERT one (token type ids) on the real
    uncased BERT vocabulary, its token type embeddings and head scaled up so that reading them matters."""
    root = tmp_path_factory.mktemp("pair-models")
    distilbert = demo_models.build_model(
        root / "distilbert",
        "sequence",
        NLI_LABELS,
        models_dir / "tokenizer",
        dim=32,
        layers=2,
        heads=2,
        hidden=64,
    )
    return {"distilbert": distilbert, "bert": build_bert_classifier(root / "bert", seed=21)}


def build_bert_classifier(out: Path, seed: int) -> Path:
    """A tiny BERT NLI classifier: the tests' tiny BERT (see ``build_bert_qa``) with a classifier head."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    body = build_bert_qa(out.with_name(f"{out.name}-body"), minilm_path(), seed)
    torch.manual_seed(seed)
    labels = {"id2label": dict(enumerate(NLI_LABELS)), "label2id": {x: i for i, x in enumerate(NLI_LABELS)}}
    model = BertForSequenceClassification.from_pretrained(str(body), **labels).eval()
    with torch.no_grad():  # scores far from uniform, moved by which text a token is in
        model.bert.embeddings.token_type_embeddings.weight.mul_(50.0)
        model.classifier.weight.mul_(100.0)
    model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(body)).save_pretrained(str(out))
    return out


def tokenized_pairs(tokenizer, pairs):
    items = [Annotated(Document(str(i), "src", i, a, text_pair=b), -1, {}) for i, (a, b) in enumerate(pairs)]
    tokenized, failures = tokenize(tokenizer, items)
    assert not failures
    return tokenized


def run_pairs(handler, pairs, max_tokens=512) -> list:
    """The handler on the pairs as the pipeline runs it: tokenized once, batched by cost."""
    loaded = handler.load_model()
    tokenized = tokenized_pairs(loaded.tokenizer, pairs)
    results = [None] * len(pairs)
    for indices in plan_batches([handler.cost(len(t.ids)) for t in tokenized], max_tokens):
        (out,) = handler.run_inference(Batch(tuple(tokenized[i] for i in indices)), loaded)
        for i, result in zip(indices, out.results["t"], strict=True):
            results[i] = result
    return results


def pair_handler(model_dir, **settings):
    return handler_for("classify", model_dir, **settings).with_pairs()


def assert_matches(result, expected):
    by_label = {e["label"]: e["score"] for e in expected}
    best = max(expected, key=lambda e: e["score"])
    assert result["label"] == best["label"]
    assert result["score"] == pytest.approx(best["score"], abs=1e-4)
    assert {e["label"]: e["score"] for e in result["scores"]} == pytest.approx(by_label, abs=1e-4)


# -- model inputs ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["distilbert", "bert"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_rows_are_the_tokenizers_own_pair_encoding_truncated_only_second(pair_models, model, side):
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(pair_models[model]))
    tokenizer.truncation_side = side
    handler = pair_handler(pair_models[model])
    handler.truncation_side = side
    for max_length in (512, 24, 12, 8):
        for (a, b), tokenized in zip(PAIRS, tokenized_pairs(tokenizer, PAIRS), strict=True):
            frame = handler.alone if b == "" else handler.pair
            built = classify.pair_rows(tokenized, frame, max_length, side)
            whole = tokenizer(a, b, return_token_type_ids=True)
            if isinstance(built, str):  # the first text leaves no room for the second
                assert whole.sequence_ids().count(0) + frame.n_special >= max_length, (a, b)
                continue
            strategy = "only_second" if b else True
            want = tokenizer(a, b, truncation=strategy, max_length=max_length, return_token_type_ids=True)
            row, types, truncated = built
            assert row.tolist() == want["input_ids"], (max_length, a, b)
            assert types.tolist() == want["token_type_ids"], (max_length, a, b)
            assert truncated == (len(whole["input_ids"]) > max_length)


def test_bert_rows_carry_both_token_types_and_distilbert_takes_none(pair_models):
    bert = pair_handler(pair_models["bert"])
    assert bert.pass_types and (bert.pair.question_type, bert.pair.context_type) == (0, 1)
    assert not pair_handler(pair_models["distilbert"]).pass_types


def test_pair_texts_are_tokenized_in_the_same_call_as_the_texts(pair_models):
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(pair_models["bert"]))
    for (a, b), tokenized in zip(PAIRS, tokenized_pairs(tokenizer, PAIRS), strict=True):
        first = tokenizer(a, add_special_tokens=False)["input_ids"]
        second = tokenizer(b, add_special_tokens=False, return_offsets_mapping=True)
        assert tokenized.pair_at == len(first)
        assert tokenized.ids.tolist() == first + second["input_ids"]
        assert [tuple(o) for o in tokenized.offsets[tokenized.pair_at :].tolist()] == second["offset_mapping"]


def test_a_pair_costs_one_row_of_both_texts_and_the_frame_within_the_window(pair_models):
    handler = pair_handler(pair_models["bert"], max_length=16)
    assert handler.cost(5) == (1, 5 + handler.pair.n_special)
    assert handler.cost(400) == (1, 16)


def test_a_tokenizer_whose_pair_encoding_cannot_be_read_is_refused():
    handler = classify.Handler("t", classify.Settings(model="m"), None, 512, 8, ([2], [3]))
    with pytest.raises(Exception, match="frames a sentence pair"):
        handler.with_pairs()


def test_reading_single_texts_is_unchanged_by_the_pair_frame(pair_models):
    handler = handler_for("classify", pair_models["bert"])
    assert handler.pair is None and handler.cost(600) == (2, 512)  # chunk-mean windows, as before


# -- parity ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["distilbert", "bert"])
def test_pairs_match_the_text_classification_pipeline_in_one_batch_of_mixed_lengths(pair_models, model):
    reference = transformers.pipeline("text-classification", model=str(pair_models[model]), device="cpu")
    handler = pair_handler(pair_models[model])
    ours = run_pairs(handler, PAIRS, max_tokens=4096)
    assert len(plan_batches([handler.cost(n) for n in (3, 60)], 4096)) == 1  # one batch, mixed lengths
    for (a, b), result in zip(PAIRS, ours, strict=True):
        assert_matches(result, reference({"text": a, "text_pair": b}, top_k=None))
        assert (result["n_chunks"], result["truncated"]) == (1, False)


def test_bert_results_depend_on_the_token_types(pair_models):
    """Without its token types the BERT model scores the pairs differently: parity above is not by luck."""
    reference = transformers.pipeline("text-classification", model=str(pair_models["bert"]), device="cpu")
    handler = pair_handler(pair_models["bert"])
    handler.pass_types = False
    ours = run_pairs(handler, PAIRS[:2])
    for (a, b), result in zip(PAIRS[:2], ours, strict=True):
        expected = {e["label"]: e["score"] for e in reference({"text": a, "text_pair": b}, top_k=None)}
        assert max(abs(e["score"] - expected[e["label"]]) for e in result["scores"]) > 1e-3


@pytest.mark.parametrize("model", ["distilbert", "bert"])
def test_long_pairs_are_truncated_only_second_as_the_pipeline_truncates(pair_models, model):
    max_length = 20
    reference = transformers.pipeline("text-classification", model=str(pair_models[model]), device="cpu")
    tokenizer = reference.tokenizer
    handler = pair_handler(pair_models[model], max_length=max_length)
    pairs = [p for p in PAIRS if len(tokenizer(p[0])["input_ids"]) + 1 < max_length]
    ours = run_pairs(handler, pairs)
    for (a, b), result in zip(pairs, ours, strict=True):
        kwargs = {"truncation": "only_second", "max_length": max_length} if b else {}
        assert_matches(result, reference({"text": a, "text_pair": b}, top_k=None, **kwargs))
        assert result["truncated"] == (len(tokenizer(a, b)["input_ids"]) > max_length)
    assert any(r["truncated"] for r in ours) and not all(r["truncated"] for r in ours)


def test_a_first_text_that_leaves_no_room_is_a_dead_letter_row_and_spares_its_batch(pair_models):
    handler = pair_handler(pair_models["bert"], max_length=8)
    six = "one two three four five six"  # 6 tokens: with [CLS] and [SEP], a window of 8 is full
    results = run_pairs(handler, [("short", "fine"), (six, "never read"), (six, "")])
    assert isinstance(results[0], dict) and not results[0]["truncated"]
    failure = results[1]
    assert isinstance(failure, Failure)
    assert (failure.stage, failure.error, failure.id) == ("tokenize", "TooLong", "1")
    assert "first text has 6 tokens" in failure.message and "no room for the second text" in failure.message
    assert "tasks.t.max_length" in failure.message
    assert isinstance(results[2], dict)  # an empty second text needs no room: read as the text alone


def test_pair_frame_of_bert_is_cls_sep_sep():
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(minilm_path()))
    frame = pair_frame(tokenizer)
    ids = tokenizer.convert_tokens_to_ids(["[CLS]", "[SEP]"])
    assert (frame.prefix, frame.middle, frame.suffix) == ((ids[0],), (ids[1],), (ids[1],))
    assert np.array_equal(frame.suffix_types, (1,))
