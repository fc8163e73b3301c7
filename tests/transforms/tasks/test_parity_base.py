"""Parity with ``transformers.pipeline`` on DistilBERT-base-sized models (6 layers, 768 wide, 12 heads, 3072
feed-forward) with the real bert-base-uncased vocabulary: real WordPiece splits, accents stripped, CJK split
per character, unknown emoji, and a document that fills most of the 512 positions."""

from __future__ import annotations

import dataclasses

import pytest
import transformers

from distilbeam.transforms.batching import Batch, plan_batches, tokenize
from distilbeam.transforms.schema import Annotated, Document
from distilbeam.transforms.tasks import Runtime
from tests.transforms.handlers import handler_for

# DistilBERT-base-sized models: the full suite, not the fast loop.
pytestmark = pytest.mark.slow

LONG = (
    "Alice Johnson flew from Paris to Tokyo on Monday, where the Initech board reviewed the quarterly "
    "results and announced a new research laboratory near the river. "
) * 14
TEXTS = [
    "The hotel in Paris was lovely and the staff were very helpful.",
    "",
    "   ",
    "Très bon restaurant à Lyon — le service était impeccable! 👍",
    "東京 and 北京 are capitals; مرحبا بالعالم; שלום",
    "ACME Corp. (NYSE: ACM) reported $3.5bn revenue in Q3, up 12% y/y.",
    "e\u0301 combining marks, naïve café résumé, and emoji 👩🏽‍💻 with ZWJ",
    "Unbelievably, the cinematographer's antidisestablishmentarianism overshadowed Zürich's biennale.",
    "Bob met Carol Smith-Jones at 10:30 in São Paulo; they signed with Globex for €2,000,000.",
]
MAX_TOKENS = 2048  # short texts share batches (padded together); the long one runs alone
# One torch thread: on a shared two-core machine a second thread mostly spins on small inputs.
CPU = Runtime(device="cpu", torch_threads=1)


def annotate(handler, loaded, texts):
    items = [Annotated(Document(str(i), "src", i, t), -1, {}) for i, t in enumerate(texts)]
    tokenized, failures = tokenize(loaded.tokenizer, items)
    assert not failures
    results = [None] * len(texts)
    costs = [handler.cost(len(t.ids)) for t in tokenized]
    batches = plan_batches(costs, MAX_TOKENS)
    assert any(len(b) > 1 for b in batches), "some documents are padded together"
    for indices in batches:
        (out,) = handler.run_inference(Batch(tuple(tokenized[i] for i in indices)), loaded)
        for i, result in zip(indices, out.results["t"], strict=True):
            results[i] = result
    return results


@pytest.fixture(scope="module")
def classifier(base_models_dir):
    handler = handler_for("classify", base_models_dir / "classifier", runtime=CPU, max_tokens=MAX_TOKENS)
    return handler, handler.load_model()


@pytest.fixture(scope="module")
def tagger(base_models_dir):
    handler = handler_for("ner", base_models_dir / "ner", runtime=CPU, max_tokens=MAX_TOKENS)
    return handler, handler.load_model()


def test_models_are_distilbert_base_sized(classifier, tagger):
    for _, loaded in (classifier, tagger):
        config = loaded.model.config
        assert (config.n_layers, config.dim, config.n_heads, config.hidden_dim) == (6, 768, 12, 3072)
        assert config.vocab_size == len(loaded.tokenizer) == 30522
        assert config.max_position_embeddings == 512
        assert sum(p.numel() for p in loaded.model.parameters()) > 66_000_000
    handler, loaded = classifier
    assert handler.max_length == 512
    n = len(loaded.tokenizer(LONG)["input_ids"])
    assert 400 < n <= 512, n
    assert loaded.tokenizer.tokenize("The hotel in Paris") == ["the", "hotel", "in", "paris"]
    assert "##" in "".join(loaded.tokenizer.tokenize("antidisestablishmentarianism"))


def test_classify_matches_text_classification_pipeline(classifier):
    handler, loaded = classifier
    reference = transformers.pipeline(
        "text-classification", model=loaded.model, tokenizer=loaded.tokenizer, device="cpu"
    )
    texts = [*TEXTS, LONG]
    ours = annotate(handler, loaded, texts)
    for text, result in zip(texts, ours, strict=True):
        expected = reference(text, top_k=None)
        by_label = {e["label"]: e["score"] for e in expected}
        best = max(expected, key=lambda e: e["score"])
        assert result["label"] == best["label"], text
        assert result["score"] == pytest.approx(best["score"], abs=1e-4)
        assert len(result["scores"]) == len(expected)
        for entry in result["scores"]:
            assert entry["score"] == pytest.approx(by_label[entry["label"]], abs=1e-4)


@pytest.mark.parametrize("aggregation", ["none", "simple", "first", "average", "max"])
def test_ner_matches_token_classification_pipeline(tagger, aggregation):
    base, loaded = tagger
    handler = type(base)(
        base.name,
        dataclasses.replace(base.settings, aggregation=aggregation),
        base.runtime,
        base.max_tokens,
        base.max_length,
        (base.prefix, base.suffix),
    )
    reference = transformers.pipeline(
        "token-classification",
        model=loaded.model,
        tokenizer=loaded.tokenizer,
        aggregation_strategy=aggregation,
        device="cpu",
    )
    texts = [*TEXTS, LONG]
    ours = annotate(handler, loaded, texts)
    found = 0
    for text, entities in zip(texts, ours, strict=True):
        expected = reference(text)
        assert len(entities) == len(expected), text
        for got, want in zip(entities, expected, strict=True):
            assert got["label"] == want.get("entity_group", want.get("entity"))
            assert (got["start"], got["end"]) == (want["start"], want["end"])
            assert got["score"] == pytest.approx(float(want["score"]), abs=1e-4)
            assert got["text"] == text[got["start"] : got["end"]]
        found += len(entities)
        if not text.strip():
            assert entities == []
    assert found > 0
