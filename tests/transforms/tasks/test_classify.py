"""classify post-processing runs over a whole batch at once (every chunk's scores in one array, reduced per
document) and gives results identical, to the last bit, to a loop over the documents (the reference here,
as this project ran it before), on random logits, label counts, problem types, documents and windows."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distilbeam.transforms.batching import Tokenized
from distilbeam.transforms.schema import Annotated, Document
from distilbeam.transforms.tasks import Runtime, classify
from distilbeam.transforms.tasks.base import Loaded

PROBLEMS = [None, "single_label_classification", "multi_label_classification", "regression"]


def documents(lengths: list[int]) -> list[Tokenized]:
    return [
        Tokenized(
            Annotated(Document(str(i), "src", i, "x" * n), -1, {}),
            np.full(n, 7, dtype=np.int32),
            np.asarray([(k, k + 1) for k in range(n)], dtype=np.int32).reshape(-1, 2),
        )
        for i, n in enumerate(lengths)
    ]


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32 - 1),
    long_text=st.sampled_from(["truncate", "chunk-mean", "chunk-max"]),
    problem=st.sampled_from(PROBLEMS),
    n_labels=st.integers(1, 6),
    body=st.integers(1, 10),
    lengths=st.lists(st.integers(0, 60), min_size=1, max_size=8),
    ties=st.booleans(),
)
def test_a_batch_at_once_equals_a_loop_over_documents(
    seed, long_text, problem, n_labels, body, lengths, ties
):
    handler = classify.Handler(
        "t",
        classify.Settings(model="unused", long_text=long_text),
        Runtime(device="cpu"),
        512,
        body + 2,
        ([2], [3]),
    )
    id2label = {i: f"label{i}" for i in range(n_labels)}
    loaded = Loaded(
        model=None,
        device="cpu",
        autocast_dtype=None,
        pad_id=0,
        tokenizer=None,
        id2label=id2label,
        problem_type=problem,
    )
    items = documents(lengths)
    rows, owners = handler.rows(items, loaded)
    rng = np.random.default_rng(seed)
    if ties:
        logits = [rng.integers(0, 3, n_labels).astype(np.float32) for _ in rows]
    else:
        logits = [rng.normal(0, 3, n_labels).astype(np.float32) for _ in rows]
    handler.forward = lambda rows, model, types=None: logits
    ours = handler.annotate(items, loaded)
    assert ours == reference(items, logits, owners, loaded, long_text, handler.body)
    for result in ours:
        assert [type(result[k]) for k in ("label", "score", "n_chunks", "truncated")] == [
            str,
            float,
            int,
            bool,
        ]


def reference(items, logits, owners, model, long_text, body):
    probs = classify.scores_from_logits(np.stack(logits), model.problem_type, len(model.id2label))
    owners_arr = np.asarray(owners)
    reduce = np.max if long_text == "chunk-max" else np.mean
    out = []
    for i, tokenized in enumerate(items):
        chunks = probs[owners_arr == i]
        scores = reduce(chunks, axis=0)
        best = int(np.argmax(scores))
        out.append(
            {
                "label": model.id2label[best],
                "score": float(scores[best]),
                "scores": [{"label": model.id2label[k], "score": float(s)} for k, s in enumerate(scores)],
                "n_chunks": len(chunks),
                "truncated": len(tokenized.ids) > len(chunks) * body,
            }
        )
    return out
