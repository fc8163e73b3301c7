"""Sorted, token-budget batching gives every document its own results, identical to running it alone,
whatever the budget and however the rows are cut into model calls; a call that runs out of (device) memory
is split and retried; on a CPU one call runs at a time per process."""

from __future__ import annotations

import random
import threading
import time

import numpy as np
import pytest
import torch

from distilbeam.transforms.batching import Batch, plan_batches, tokenize
from distilbeam.transforms.schema import Annotated, Document, Failure
from distilbeam.transforms.tasks import Runtime, demo_models
from tests.transforms import handlers

# Every task kind batched against each document alone: the full suite, not the fast loop.
pytestmark = pytest.mark.slow


def texts(n: int = 40, seed: int = 7) -> list[str]:
    """Documents of very different lengths, some past the tiny models' 512-token window."""
    rng = random.Random(seed)
    words = " ".join(demo_models.corpus(100)).split()
    lengths = [rng.choice((1, 3, 8, 20, 60, 200, 700)) for _ in range(n)]
    return [" ".join(rng.choice(words) for _ in range(k)) for k in lengths]


def handler_for(models_dir, kind, model, runtime=None, **settings):
    runtime = runtime or Runtime(device="cpu")
    return handlers.handler_for(kind, models_dir / model, runtime=runtime, max_tokens="auto", **settings)


def tokenized_docs(loaded, docs):
    items = [Annotated(Document(f"d{i}", "src", i, t), -1, {}) for i, t in enumerate(docs)]
    tokenized, failures = tokenize(loaded.tokenizer, items)
    assert not failures
    return tokenized


def run_batched(handler, loaded, tokenized, budget):
    """As the pipeline does: documents in length order cut by a token budget, results mapped back by id."""
    costs = [handler.cost(len(t.ids)) for t in tokenized]
    by_id = {}
    for indices in plan_batches(costs, budget):
        (out,) = handler.run_inference(Batch(tuple(tokenized[i] for i in indices)), loaded)
        for item, result in zip(out.items, out.results["t"], strict=True):
            by_id[item.item.doc.id] = result
    return by_id


def run_alone(handler, loaded, tokenized):
    return {t.item.doc.id: handler.run_inference(Batch((t,)), loaded)[0].results["t"][0] for t in tokenized}


def assert_same(kind, got, want):
    assert got.keys() == want.keys()
    for doc_id in want:
        a, b = got[doc_id], want[doc_id]
        if kind == "classify":
            assert a["label"] == b["label"], doc_id
            scores = [s["score"] for s in b["scores"]]
            assert [s["score"] for s in a["scores"]] == pytest.approx(scores, abs=1e-5)
        else:
            assert [(e["label"], e["start"], e["end"]) for e in a] == [
                (e["label"], e["start"], e["end"]) for e in b
            ], doc_id
            assert [e["score"] for e in a] == pytest.approx([e["score"] for e in b], abs=1e-5)


@pytest.mark.parametrize(
    "kind,model,settings",
    [
        ("classify", "classifier", {"long_text": "chunk-mean"}),
        ("classify", "multilabel", {"long_text": "truncate"}),
        ("ner", "ner", {"aggregation": "simple", "stride": 64}),
        ("ner", "ner", {"aggregation": "first", "stride": None}),
    ],
)
def test_batched_results_match_each_document_alone(models_dir, kind, model, settings):
    handler = handler_for(models_dir, kind, model, **settings)
    loaded = handler.load_model()
    docs = texts()
    tokenized = tokenized_docs(loaded, docs)
    shuffled = random.Random(1).sample(tokenized, len(tokenized))
    alone = run_alone(handler, loaded, tokenized)
    # Budgets from one call per row to everything in a few calls; overheads from never padding to always.
    plans = [(64, 64, 0), (4096, 2048, 48), (20000, 8192, 10**6), (20000, 600, 10**6)]
    for budget, call_max, overhead in plans:
        loaded.max_tokens, loaded.call_overhead = call_max, overhead
        assert_same(kind, run_batched(handler, loaded, shuffled, budget), alone)


class OutOfMemoryAbove(torch.nn.Module):
    """A model that raises the CUDA out-of-memory error for calls over ``rows`` rows, as a GPU would."""

    def __init__(self, model: torch.nn.Module, rows: int):
        super().__init__()
        self.inner = model
        self.rows = rows
        self.calls: list[tuple[int, bool]] = []

    def forward(self, input_ids, attention_mask):
        fits = input_ids.shape[0] <= self.rows
        self.calls.append((input_ids.shape[0], fits))
        if not fits:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return self.inner(input_ids=input_ids, attention_mask=attention_mask)


@pytest.mark.parametrize("kind,model", [("classify", "classifier"), ("ner", "ner")])
def test_out_of_memory_splits_the_call_and_keeps_every_result(models_dir, kind, model):
    handler = handler_for(models_dir, kind, model)
    loaded = handler.load_model()
    tokenized = tokenized_docs(loaded, texts())
    expected = run_batched(handler, loaded, tokenized, 20000)
    loaded.model = OutOfMemoryAbove(loaded.model, rows=3)
    got = run_batched(handler, loaded, tokenized, 20000)
    assert_same(kind, got, expected)
    assert any(not fits for _, fits in loaded.model.calls), "some call was too large and was retried"
    assert all(rows <= 3 for rows, fits in loaded.model.calls if fits)
    assert not any(isinstance(r, Failure) for r in got.values())


class OutOfMemoryWider(torch.nn.Module):
    """Runs out of memory on any call holding a row wider than ``width`` tokens, even a row alone."""

    def __init__(self, model: torch.nn.Module, width: int):
        super().__init__()
        self.inner = model
        self.width = width

    def forward(self, input_ids, attention_mask):
        if input_ids.shape[1] > self.width:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return self.inner(input_ids=input_ids, attention_mask=attention_mask)


def test_a_single_row_out_of_memory_fails_only_its_document(models_dir):
    handler = handler_for(models_dir, "classify", "classifier")
    loaded = handler.load_model()
    docs = ["Alice flew to Paris.", "word " * 300, "Bob met Carol.", "Short.", "The staff were helpful."]
    tokenized = tokenized_docs(loaded, docs)
    loaded.model = OutOfMemoryWider(loaded.model, width=64)
    (out,) = handler.run_inference(Batch(tuple(tokenized)), loaded)
    results = out.results["t"]
    assert len(results) == len(tokenized)
    (failed,) = [r for r in results if isinstance(r, Failure)]
    assert (failed.id, failed.stage, failed.error) == ("d1", "infer", "OutOfMemoryError")
    assert all(r["label"] for r in results if r is not failed)


class Overlap(torch.nn.Module):
    """Records how many calls run at once."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.inner = model
        self.running = self.most = 0
        self.lock = threading.Lock()

    def forward(self, input_ids, attention_mask):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(0.01)
        try:
            return self.inner(input_ids=input_ids, attention_mask=attention_mask)
        finally:
            with self.lock:
                self.running -= 1


def test_cpu_calls_from_several_threads_take_turns(models_dir):
    handler = handler_for(models_dir, "classify", "classifier")
    loaded = handler.load_model()
    tokenized = tokenized_docs(loaded, texts(24))
    loaded.model = Overlap(loaded.model)
    loaded.max_tokens = 64
    errors = []

    def work(part):
        try:
            handler.run_inference(Batch(tuple(part)), loaded)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(tokenized[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert loaded.model.most == 1


def test_threads_divide_the_cores_between_worker_processes(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert Runtime().threads() == 8
    assert Runtime(worker_processes=2).threads() == 4
    assert Runtime(worker_processes=16).threads() == 1
    assert Runtime(torch_threads=3, worker_processes=2).threads() == 3


def test_int8_runs_on_the_cpu_even_with_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert Runtime(precision="int8").resolve_device() == "cpu"
    assert Runtime(precision="fp32").resolve_device() == "cuda"


@pytest.mark.parametrize("kind,model", [("classify", "classifier"), ("ner", "ner")])
def test_int8_quantises_the_linear_layers_and_gives_valid_results(models_dir, kind, model):
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

    fp32 = handler_for(models_dir, kind, model)
    int8 = handler_for(models_dir, kind, model, runtime=Runtime(device="cpu", precision="int8"))
    loaded = int8.load_model()
    encoder = loaded.model.base_model_prefix + "."
    reference = dict(fp32.load_model().model.named_modules())
    linear = [name for name, m in reference.items() if type(m) is torch.nn.Linear]
    assert any(name.startswith(encoder) for name in linear)
    assert any(not name.startswith(encoder) for name in linear)
    quantized = dict(loaded.model.named_modules())
    for name in linear:
        # The encoder's linear layers become int8; the task head, tiny and deciding the labels, stays fp32.
        if name.startswith(encoder):
            assert isinstance(quantized[name], DynamicInt8Linear), name
        else:
            assert type(quantized[name]) is torch.nn.Linear, name
    docs = texts()
    tokenized = tokenized_docs(loaded, docs)
    results = run_batched(int8, loaded, tokenized, 4096)
    labels = set(loaded.id2label.values())
    for t in tokenized:
        result = results[t.item.doc.id]
        if kind == "classify":
            assert result["label"] in labels
            assert sum(s["score"] for s in result["scores"]) == pytest.approx(1, abs=1e-5)
            assert max(s["score"] for s in result["scores"]) == result["score"]
        else:
            text = t.item.doc.text
            for e in result:
                assert e["label"] in {label.split("-", 1)[-1] for label in labels}
                assert 0 <= e["start"] < e["end"] <= len(text)
                assert e["text"] == text[e["start"] : e["end"]]
                assert 0 <= e["score"] <= 1 and np.isfinite(e["score"])
