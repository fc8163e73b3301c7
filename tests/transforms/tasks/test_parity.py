"""Parity with the reference implementation: ``transformers.pipeline`` on the same model and text gives the
same labels, spans and scores (within 1e-4) as our handlers, batched the way the pipeline batches."""

from __future__ import annotations

import pytest
import transformers

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


@pytest.mark.parametrize("model", ["classifier", "multilabel", "single-logit"])
def test_classify_matches_text_classification_pipeline(models_dir, model, annotate):
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
def test_ner_matches_token_classification_pipeline(models_dir, model, aggregation, annotate):
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
