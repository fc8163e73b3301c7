"""``distilbeam demo-models``: small DistilBERT models with random weights and a WordPiece tokenizer trained
here (see ``transforms/tasks/demo_models.py``), so the pipeline can be tried (and tested) with no network.
Their labels mean nothing; the run summary marks them as random-weight models."""

from __future__ import annotations

from pathlib import Path

from distilbeam.transforms.tasks.demo_models import (
    NER_LABELS,
    RANDOM_WEIGHTS_KEY,
    SENTIMENT_LABELS,
    build_model,
    build_tokenizer,
    corpus,
)

__all__ = [
    "NER_LABELS",
    "RANDOM_WEIGHTS_KEY",
    "SENTIMENT_LABELS",
    "build_model",
    "build_tokenizer",
    "corpus",
    "write_demo_models",
]


def write_demo_models(root: Path) -> dict[str, Path]:
    """The models the offline configs use: ``root/classifier`` and ``root/ner`` (`offline-demo.yaml`),
    ``root/qa`` and ``root/encoder`` too (`all-tasks.yaml`)."""
    root.mkdir(parents=True, exist_ok=True)
    tokenizer_dir = root / "tokenizer"
    build_tokenizer(tokenizer_dir, corpus())
    return {
        "classifier": build_model(root / "classifier", "sequence", SENTIMENT_LABELS, tokenizer_dir, seed=1),
        "ner": build_model(root / "ner", "token", NER_LABELS, tokenizer_dir, seed=2),
        "qa": build_model(root / "qa", "qa", (), tokenizer_dir, seed=6),
        "encoder": build_model(root / "encoder", "encoder", (), tokenizer_dir, seed=7),
    }
