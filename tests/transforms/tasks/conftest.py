"""Running one task's handler on a list of texts the way the pipeline runs it: built by ``build_handler``,
documents tokenized once without special tokens, cut into batches by the token budget."""

from __future__ import annotations

import pytest

from distilbeam.transforms.batching import Batch, plan_batches, tokenize
from distilbeam.transforms.schema import Annotated, Document
from tests.transforms.handlers import handler_for


def run_task(model_dir, kind: str, texts: list[str], max_tokens: int = 512, **settings) -> list:
    handler = handler_for(kind, model_dir, max_tokens=max_tokens, **settings)
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


@pytest.fixture
def annotate():
    return run_task
