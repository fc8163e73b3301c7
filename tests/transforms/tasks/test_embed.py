"""``embed``: vectors equal to sentence-transformers' ``encode`` (the real all-MiniLM-L6-v2 weights, a BERT
model, and tiny DistilBERT encoders with mean and [CLS] pooling), and long documents read window by window."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from sentence_transformers import SentenceTransformer, models
from transformers import AutoModel, AutoTokenizer

from distilbeam.transforms import SetupError
from tests.transforms.handlers import build_task

TEXTS = [
    "The hotel in Paris was lovely and the staff were very helpful.",
    "Bob and Carol flew from Tokyo to Madrid with Initech; the flight was on time!",
    "",
    "Très bon restaurant à Lyon — le service était impeccable! 👍",
    "東京 and 北京 are capitals; مرحبا بالعالم; שלום",
    "one two three four five six seven eight nine ten " * 8,
    "x",
    "\tTabs\tand\nnewlines\r\ninside one document\u00a0with nbsp",
]


def cosine(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_minilm_vectors_match_sentence_transformers(minilm_dir, annotate, monkeypatch):
    """The real weights: a BERT model loaded through AutoModel, mean pooling, unit length."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = minilm_dir
    reference = SentenceTransformer(str(path), device="cpu").encode(TEXTS, batch_size=3)
    ours = annotate(path, "embed", TEXTS)
    assert json.loads((path / "config.json").read_text())["architectures"] == ["BertModel"]
    for text, got, want in zip(TEXTS, ours, reference, strict=True):
        assert len(got) == 384
        assert cosine(got, want) >= 0.9999, text
        assert np.linalg.norm(got) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
@pytest.mark.parametrize("normalize", [True, False])
def test_tiny_encoder_matches_sentence_transformers(task_models, annotate, pooling, normalize):
    path = task_models / "encoder"
    transformer = models.Transformer(str(path))
    pool = models.Pooling(transformer.get_embedding_dimension(), pooling_mode=pooling)
    modules = [transformer, pool] + ([models.Normalize()] if normalize else [])
    reference = SentenceTransformer(modules=modules, device="cpu").encode(TEXTS, batch_size=3)
    ours = annotate(path, "embed", TEXTS, pooling=pooling, normalize=normalize)
    for text, got, want in zip(TEXTS, ours, reference, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=text)


def test_long_documents_average_their_windows(task_models, annotate):
    """chunk-mean: the tokenizer's own consecutive windows, each pooled alone, averaged by the tokens each
    row holds; truncate: the first window only, as sentence-transformers truncates."""
    from distilbeam.transforms.tasks import demo_models

    path = task_models / "encoder"
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModel.from_pretrained(str(path)).eval()
    documents = [" ".join(demo_models.corpus(30, seed=s)) for s in (1, 2)]
    chunked = annotate(path, "embed", documents, max_length=32, normalize=False)
    truncated = annotate(path, "embed", documents, max_length=32, long_text="truncate", normalize=False)
    import torch

    for document, got, first in zip(documents, chunked, truncated, strict=True):
        encoded = tokenizer(
            document, truncation=True, max_length=32, stride=0, return_overflowing_tokens=True
        )
        assert len(encoded["input_ids"]) > 5
        vectors, weights = [], []
        for ids in encoded["input_ids"]:
            with torch.no_grad():
                hidden = model(input_ids=torch.tensor([ids])).last_hidden_state[0]
            vectors.append(hidden.mean(0).numpy())
            weights.append(len(ids))
        np.testing.assert_allclose(got, np.average(vectors, axis=0, weights=weights), atol=1e-5)
        np.testing.assert_allclose(first, vectors[0], atol=1e-5)


def test_embed_column_is_a_fixed_size_list(task_models, annotate):
    handler, _, identity = build_task("embed", task_models / "encoder", name="v")
    assert handler.arrow_type() == pa.list_(pa.float32(), 32)
    assert "labels" not in identity
    column = pa.array(annotate(task_models / "encoder", "embed", TEXTS), type=handler.arrow_type())
    assert column.null_count == 0 and len(column) == len(TEXTS)


def test_embed_accepts_a_checkpoint_with_a_head_and_refuses_what_is_not_a_model(models_dir, tmp_path):
    """AutoModel reads the encoder out of a classifier checkpoint; a config transformers does not know is
    refused before the run, naming the task and the model."""
    handler, _, _ = build_task("embed", models_dir / "classifier", name="v")
    assert handler.arrow_type() == pa.list_(pa.float32(), 32)

    strange = tmp_path / "strange"
    strange.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "model.safetensors"):
        (strange / name).write_bytes((models_dir / "classifier" / name).read_bytes())
    (strange / "config.json").write_text(json.dumps({"model_type": "no-such-model"}))
    with pytest.raises(SetupError, match=r"tasks\.v\.model: .*no-such-model"):
        build_task("embed", strange, name="v")
