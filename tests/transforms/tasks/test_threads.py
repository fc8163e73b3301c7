"""torch threads per model: set when the model loads, and again in whichever runner thread runs it, since
torch keeps the count per OS thread and a runner's threads may predate the load."""

from __future__ import annotations

import threading

import torch

from distilbeam.transforms.batching import Batch, tokenize
from distilbeam.transforms.schema import Annotated, Document
from distilbeam.transforms.tasks import Runtime
from tests.transforms.handlers import handler_for


def test_a_thread_started_before_the_model_loaded_runs_it_with_the_models_threads(models_dir):
    runtime = Runtime(device="cpu", torch_threads=1)
    handler = handler_for("classify", models_dir / "classifier", runtime=runtime, max_tokens=256)
    ready, loaded, seen = threading.Event(), threading.Event(), {}
    before = torch.get_num_threads()

    def runner_thread():
        # A thread that ran torch work before the model loaded keeps the count it had then.
        torch.set_num_threads(3)
        torch.ones(256, 256) @ torch.ones(256, 256)
        ready.set()
        loaded.wait()
        items = [Annotated(Document("a", "src", 0, "Alice flew to Paris."), -1, {})]
        tokenized, _ = tokenize(model.tokenizer, items)
        (out,) = handler.run_inference(Batch(tuple(tokenized)), model)
        seen["threads"] = torch.get_num_threads()
        seen["label"] = out.results["t"][0]["label"]

    thread = threading.Thread(target=runner_thread)
    thread.start()
    try:
        ready.wait()
        model = handler.load_model()
        assert model.threads == 1
        loaded.set()
        thread.join(timeout=60)
    finally:
        loaded.set()
        torch.set_num_threads(before)
    assert seen["label"] in ("NEGATIVE", "POSITIVE")
    assert seen["threads"] == 1
