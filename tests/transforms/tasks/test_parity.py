"""Parity with the reference implementation: ``transformers.pipeline`` on the same model and text gives the
same labels, spans and scores (within 1e-4) as our handlers, batched the way the pipeline batches."""

from __future__ import annotations

import pytest
import transformers

from pipeline.config import from_dict
from pipeline.plan import resolve_task
from transforms.batching import Batch, plan_batches, tokenize
from transforms.schema import Annotated, Document
from transforms.tasks import Runtime

TEXTS = [
    "The hotel in Paris was lovely and the staff were very helpful.",
    "Bob and Carol flew from Tokyo to Madrid with Initech; the flight was on time!",
    "",
    "   ",
    "Très bon restaurant à Lyon — le service était impeccable! 👍",
    "ACME Corp. (NYSE: ACM) reported $3.5bn revenue in Q3, up 12% y/y.",
    "naïve café résumé coöperate Zürich São Paulo",
    "東京 and 北京 are capitals; مرحبا بالعالم; שלום",
    'He said: "Don\'t!" -- then left... (quickly)',
    "one two three four five six seven eight nine ten " * 8,
    "x",
    "Alice Johnson, Grace Williams and Erin Frank met at the Vienna museum on Monday morning.",
    "\tTabs\tand\nnewlines\r\ninside one document\u00a0with nbsp",
    "e\u0301 combining marks and emoji 👩🏽‍💻 with ZWJ",
]


def annotate(model_dir, kind, texts, max_tokens=256, **settings):
    cfg = from_dict(
        {
            "input": {"paths": ["unused"]},
            "tasks": {"t": {"kind": kind, "model": str(model_dir), **settings}},
            "output": {"path": "unused"},
        }
    )
    handler, _, _ = resolve_task("t", cfg.tasks["t"], Runtime(device="cpu"), max_tokens)
    loaded = handler.load_model()
    items = [Annotated(Document(str(i), "src", i, t), -1, {}) for i, t in enumerate(texts)]
    tokenized, failures = tokenize(loaded.tokenizer, items)
    assert not failures
    results = [None] * len(texts)
    costs = [handler.cost(len(t.ids)) for t in tokenized]
    for indices in plan_batches(costs, max_tokens):
        (out,) = handler.run_inference(Batch(tuple(tokenized[i] for i in indices)), loaded)
        for i, result in zip(indices, out.results["t"], strict=True):
            results[i] = result
    return results


@pytest.mark.parametrize("model", ["classifier", "multilabel", "single-logit"])
def test_classify_matches_text_classification_pipeline(models_dir, model):
    reference = transformers.pipeline("text-classification", model=str(models_dir / model), device="cpu")
    ours = annotate(models_dir / model, "classify", TEXTS)
    for text, result in zip(TEXTS, ours, strict=True):
        expected = reference(text, top_k=None)
        by_label = {e["label"]: e["score"] for e in expected}
        best = max(expected, key=lambda e: e["score"])
        assert result["label"] == best["label"], text
        assert result["score"] == pytest.approx(best["score"], abs=1e-4)
        assert len(result["scores"]) == len(expected)
        for entry in result["scores"]:
            assert entry["score"] == pytest.approx(by_label[entry["label"]], abs=1e-4)


@pytest.mark.parametrize("aggregation", ["none", "simple", "first", "average", "max"])
@pytest.mark.parametrize("model", ["ner", "ner-cased"])
def test_ner_matches_token_classification_pipeline(models_dir, model, aggregation):
    reference = transformers.pipeline(
        "token-classification", model=str(models_dir / model), aggregation_strategy=aggregation, device="cpu"
    )
    ours = annotate(models_dir / model, "ner", TEXTS, aggregation=aggregation)
    for text, entities in zip(TEXTS, ours, strict=True):
        expected = reference(text)
        assert len(entities) == len(expected), text
        for got, want in zip(entities, expected, strict=True):
            assert got["label"] == want.get("entity_group", want.get("entity"))
            assert (got["start"], got["end"]) == (want["start"], want["end"])
            assert got["score"] == pytest.approx(float(want["score"]), abs=1e-4)
            assert got["text"] == text[got["start"] : got["end"]]
