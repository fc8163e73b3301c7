"""``AnnotateDocuments`` on the DirectRunner: every document comes out once, with every task's result equal to
running that task's model on the document alone, across tokenizer groups, batches and sort windows."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import BeamAssertException, assert_that, equal_to

from pipeline.config import from_dict
from pipeline.plan import prepare
from transforms.annotate import AnnotateDocuments
from transforms.batching import Batch, tokenize
from transforms.schema import Annotated, Document

TEXTS = [
    "The hotel in Paris was lovely and the staff were very helpful.",
    "",
    "Bob and Carol flew from Tokyo to Madrid with Initech!",
    "   ",
    "one two three four five six seven eight nine ten " * 5,
    "Alice visited the museum in Vienna on Monday.",
    "Très bon restaurant à Lyon 👍",
    "x",
]
DOCS = [Document(f"doc-{i}", "/data/shard.txt", i, t) for i, t in enumerate(TEXTS)]


@pytest.fixture(scope="module")
def plan(models_dir, tmp_path_factory):
    shard = tmp_path_factory.mktemp("input") / "shard.txt"
    shard.write_text("\n".join(TEXTS), encoding="utf-8")
    cfg = from_dict(
        {
            "input": {"paths": [str(shard)]},
            "tasks": {
                "sentiment": {"kind": "classify", "model": str(models_dir / "classifier")},
                "entities": {"kind": "ner", "model": str(models_dir / "ner"), "aggregation": "first"},
                "cased": {
                    "kind": "ner",
                    "model": str(models_dir / "ner-cased"),
                    "max_length": 12,
                    "stride": 3,
                },
            },
            "output": {"path": str(tmp_path_factory.mktemp("out"))},
            "runtime": {"device": "cpu", "torch_threads": 1},
        }
    )
    return prepare(cfg)


def one_at_a_time(plan) -> dict[str, dict]:
    """Every task's result for each document run through its model alone."""
    expected: dict[str, dict] = {doc.id: {} for doc in DOCS}
    for group in plan.groups:
        for handler in group.handlers:
            loaded = handler.load_model()
            for doc in DOCS:
                tokenized, _ = tokenize(loaded.tokenizer, [Annotated(doc, -1, {})])
                (out,) = handler.run_inference(Batch(tuple(tokenized)), loaded)
                expected[doc.id][handler.name] = out.results[handler.name][0]
    return expected


def matches(expected: dict[str, dict], n_tokens: dict[str, int]):
    def check(actual: list[Annotated]) -> None:
        by_id = {a.doc.id: a for a in actual}
        if len(by_id) != len(actual) or set(by_id) != set(expected):
            raise BeamAssertException(f"documents out: {sorted(a.doc.id for a in actual)}")
        for doc_id, item in by_id.items():
            want = expected[doc_id]
            if set(item.results) != set(want):
                raise BeamAssertException(f"{doc_id}: tasks {sorted(item.results)}")
            if item.n_tokens != n_tokens[doc_id]:
                raise BeamAssertException(f"{doc_id}: n_tokens {item.n_tokens} != {n_tokens[doc_id]}")
            got = item.results["sentiment"]
            if (
                got["label"] != want["sentiment"]["label"]
                or abs(got["score"] - want["sentiment"]["score"]) > 1e-5
            ):
                raise BeamAssertException(f"{doc_id}: sentiment {got} != {want['sentiment']}")
            for task in ("entities", "cased"):
                spans = [(e["label"], e["start"], e["end"], e["text"]) for e in item.results[task]]
                wanted = [(e["label"], e["start"], e["end"], e["text"]) for e in want[task]]
                close = all(
                    abs(a["score"] - b["score"]) <= 1e-5
                    for a, b in zip(item.results[task], want[task], strict=False)
                )
                if spans != wanted or not close:
                    raise BeamAssertException(f"{doc_id}: {task} {item.results[task]} != {want[task]}")

    return check


@pytest.mark.parametrize(("max_tokens", "sort_window"), [(48, 3), (4096, 100)])
def test_annotate_documents_on_the_direct_runner(plan, max_tokens, sort_window):
    assert len(plan.groups) == 2, "the cased model has a tokenizer of its own"
    expected = one_at_a_time(plan)
    assert any(expected[d]["entities"] for d in expected), "some entities, so the comparison says something"
    tokenizer = plan.groups[0].load_tokenizer()
    n_tokens = {d.id: len(tokenizer(d.text, add_special_tokens=False)["input_ids"]) for d in DOCS}

    options = PipelineOptions(["--runner=DirectRunner"])
    with BeamTestPipeline(options=options) as p:
        out = (
            p
            | beam.Create(DOCS)
            | AnnotateDocuments(plan.groups, max_tokens=max_tokens, sort_window=sort_window)
        )
        assert_that(out["annotated"], matches(expected, n_tokens), label="AllAnnotated")
        assert_that(out["failed"], equal_to([]), label="NothingFailed")
