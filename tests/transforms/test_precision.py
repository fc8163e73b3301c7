"""Weights load in the dtype ``runtime.precision`` runs on, whatever dtype the checkpoint was saved in (a
DistilBERT saved in fp16 loads as fp32 on the CPU); and what each precision runs as on each kind of
device."""

from __future__ import annotations

import shutil

import pytest
import torch
import transformers

from distilbeam.transforms import devices, models
from distilbeam.transforms.batching import Batch, tokenize
from distilbeam.transforms.schema import Annotated, Document
from distilbeam.transforms.tasks import Runtime
from tests.transforms import handlers

TEXTS = ["Alice flew to Paris on Monday.", "The hotel was lovely.", "Bob met Carol in Berlin."]


@pytest.fixture(scope="module")
def fp16_checkpoint(models_dir, tmp_path_factory):
    """The tiny classifier saved as a half-precision checkpoint (``model.half().save_pretrained``)."""
    out = tmp_path_factory.mktemp("fp16") / "classifier"
    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(models_dir / "classifier"))
    model.half().save_pretrained(str(out))
    for file in (models_dir / "classifier").iterdir():
        if "token" in file.name or file.name == "vocab.txt":
            shutil.copy(file, out / file.name)
    saved = transformers.AutoModelForSequenceClassification.from_pretrained(str(out), dtype="auto")
    assert saved.dtype == torch.float16, "the checkpoint holds fp16 weights"
    return out


def handler_for(model_dir, precision: str):
    runtime = Runtime(device="cpu", precision=precision, torch_threads=1)
    return handlers.handler_for("classify", model_dir, runtime=runtime)


@pytest.mark.parametrize("precision", ["fp32", "auto", "int8", "fp16"])
def test_an_fp16_checkpoint_loads_in_fp32_on_the_cpu(fp16_checkpoint, precision):
    loaded = handler_for(fp16_checkpoint, precision).load_model()
    floats = {p.dtype for p in loaded.model.parameters() if p.is_floating_point()}
    assert floats == {torch.float32}
    assert loaded.autocast_dtype is None


def test_an_fp16_checkpoint_gives_the_scores_of_its_weights_in_fp32(fp16_checkpoint):
    handler = handler_for(fp16_checkpoint, "fp32")
    loaded = handler.load_model()
    items = [Annotated(Document(str(i), "src", i, t), -1, {}) for i, t in enumerate(TEXTS)]
    tokenized, _ = tokenize(loaded.tokenizer, items)
    (out,) = handler.run_inference(Batch(tuple(tokenized)), loaded)
    reference = transformers.pipeline(
        "text-classification",
        model=transformers.AutoModelForSequenceClassification.from_pretrained(
            str(fp16_checkpoint), dtype=torch.float32
        ),
        tokenizer=loaded.tokenizer,
        device="cpu",
    )
    for text, result in zip(TEXTS, out.results["t"], strict=True):
        expected = {e["label"]: e["score"] for e in reference(text, top_k=None)}
        for entry in result["scores"]:
            assert entry["score"] == pytest.approx(expected[entry["label"]], abs=1e-6)


def test_models_load_in_fp32_unless_told(fp16_checkpoint):
    ref = models.ModelRef(str(fp16_checkpoint))
    auto = transformers.AutoModelForSequenceClassification
    assert models.load_model(fp16_checkpoint, auto, ref).dtype == torch.float32
    assert models.load_model(fp16_checkpoint, auto, ref, dtype=torch.float16).dtype == torch.float16


@pytest.mark.parametrize(
    ("precision", "kind", "effective", "autocast"),
    [
        ("auto", "cpu", "fp32", None),
        ("fp32", "cpu", "fp32", None),
        ("fp16", "cpu", "fp32", None),  # half precision runs on GPUs only
        ("bf16", "cpu", "fp32", None),
        ("int8", "cpu", "int8", None),
        ("auto", "cuda", "fp16", torch.float16),
        ("fp16", "cuda", "fp16", torch.float16),
        ("bf16", "cuda", "bf16", torch.bfloat16),
        ("fp32", "cuda", "fp32", None),
    ],
)
def test_what_each_precision_runs_as(precision, kind, effective, autocast):
    assert devices.effective_precision(precision, kind) == effective
    assert devices.autocast_dtype(precision, kind) == autocast
