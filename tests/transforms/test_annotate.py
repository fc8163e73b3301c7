"""Annotating split by split: ``annotate_chunk`` gives every document every task's result, equal to running
that task's model on the document alone, across tokenizer groups, batches and chunk sizes; and the
``AnnotateSplits`` step on the DirectRunner reads, annotates and writes a shard in one go."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from distilbeam.transforms.annotate import LoadedGroup, TaskGroup, annotate_chunk, chunks, unbatch
from distilbeam.transforms.batching import CALLS_PER_BATCH, Batch, tokenize
from distilbeam.transforms.layout import shard_file_name
from distilbeam.transforms.read import ReadSettings, Split
from distilbeam.transforms.schema import Annotated, Document, Failure, output_schema
from distilbeam.transforms.storage import Location
from distilbeam.transforms.tasks import Runtime, TaskHandler, TaskSettings
from distilbeam.transforms.tasks.build import build_handler
from distilbeam.transforms.write import WriteSettings
from tests.transforms.handlers import task_settings

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


CPU = Runtime(device="cpu", torch_threads=1)
READ = ReadSettings(None, "id", "text", 1_000_000)  # the config's input defaults


@dataclasses.dataclass(frozen=True)
class Planned:
    """What a run plans for these tests: the tasks grouped by tokenizer, the output schema, the shard."""

    groups: list[TaskGroup]
    schema: pa.Schema
    shard: Path | None = None


def plan_tasks(tasks: dict[str, TaskSettings], max_tokens: int | str, shard: Path | None = None) -> Planned:
    """The tasks' handlers grouped by tokenizer, in task order, as ``pipeline/plan.py`` groups them."""
    by_tokenizer: dict[str, list[TaskHandler]] = {}
    types = {}
    for name, settings in tasks.items():
        handler, tokenizer_id, _ = build_handler(name, settings, CPU, max_tokens)
        by_tokenizer.setdefault(tokenizer_id, []).append(handler)
        types[name] = handler.arrow_type()
    groups = [TaskGroup(handlers[0].settings.ref, tuple(handlers)) for handlers in by_tokenizer.values()]
    return Planned(groups, output_schema(types, keep_text=False), shard)


def make_plan(models_dir, tmp_path_factory, max_tokens) -> Planned:
    shard = tmp_path_factory.mktemp("input") / "shard.txt"
    shard.write_text("\n".join(TEXTS), encoding="utf-8")
    tasks = {
        "sentiment": task_settings("classify", models_dir / "classifier"),
        "entities": task_settings("ner", models_dir / "ner", aggregation="first"),
        "cased": task_settings("ner", models_dir / "ner-cased", max_length=12, stride=3),
    }
    return plan_tasks(tasks, max_tokens, shard)


def loaded_groups(plan) -> list[LoadedGroup]:
    out = []
    for group in plan.groups:
        handlers = [(h, h.load_model()) for h in group.handlers]
        budget = min(m.max_tokens for _, m in handlers)
        out.append(LoadedGroup(group.load_tokenizer(), handlers, CALLS_PER_BATCH * budget))
    return out


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


def check_matches(actual: list[Annotated], expected: dict[str, dict], n_tokens: dict[str, int]) -> None:
    assert [a.doc.id for a in actual] == [d.id for d in DOCS], "every document once, in reading order"
    for item in actual:
        want = expected[item.doc.id]
        assert set(item.results) == set(want) and item.n_tokens == n_tokens[item.doc.id]
        got = item.results["sentiment"]
        assert got["label"] == want["sentiment"]["label"]
        assert got["score"] == pytest.approx(want["sentiment"]["score"], abs=1e-5)
        for task in ("entities", "cased"):
            spans = [(e["label"], e["start"], e["end"], e["text"]) for e in item.results[task]]
            assert spans == [(e["label"], e["start"], e["end"], e["text"]) for e in want[task]]
            for a, b in zip(item.results[task], want[task], strict=True):
                assert a["score"] == pytest.approx(b["score"], abs=1e-5)


@pytest.mark.parametrize(("max_tokens", "chunk"), [(48, 3), (4096, 100)])
def test_annotate_chunk_equals_each_document_alone(models_dir, tmp_path_factory, max_tokens, chunk):
    plan = make_plan(models_dir, tmp_path_factory, max_tokens)
    assert len(plan.groups) == 2, "the cased model has a tokenizer of its own"
    expected = one_at_a_time(plan)
    assert any(expected[d]["entities"] for d in expected), "some entities, so the comparison says something"
    tokenizer = plan.groups[0].load_tokenizer()
    n_tokens = {d.id: len(tokenizer(d.text, add_special_tokens=False)["input_ids"]) for d in DOCS}
    groups = loaded_groups(plan)
    annotated, failures = [], []
    for part in chunks(DOCS, chunk):
        done, failed = annotate_chunk(part, groups)
        annotated += done
        failures += failed
    assert failures == []
    check_matches(annotated, expected, n_tokens)


def test_a_document_a_task_cannot_annotate_is_dead_lettered_and_its_neighbours_go_on(
    models_dir, tmp_path_factory, monkeypatch
):
    from distilbeam.transforms import batching

    plan = make_plan(models_dir, tmp_path_factory, 4096)
    groups = loaded_groups(plan)
    real = batching.encoder(groups[0].tokenizer)

    class Encoder:
        def encode_batch(self, texts, **kwargs):
            if any("Vienna" in t for t in texts):
                raise ValueError("cannot tokenize this")
            return real.encode_batch(texts, **kwargs)

    refusing = groups[0].tokenizer
    original = batching.encoder
    monkeypatch.setattr(batching, "encoder", lambda t: Encoder() if t is refusing else original(t))
    annotated, failures = annotate_chunk(DOCS, groups)
    assert [a.doc.id for a in annotated] == [d.id for d in DOCS if "Vienna" not in d.text]
    (failure,) = failures
    assert (failure.id, failure.stage, failure.error) == ("doc-5", "tokenize", "ValueError")


def test_unbatch_keeps_documents_in_their_batch_order_and_sends_failures_aside(models_dir):
    from distilbeam.transforms import models

    tokenizer = models.load_tokenizer(models_dir / "tokenizer")
    items = [
        Annotated(Document(f"doc-{i}", "src", i, t), -1, {}) for i, t in enumerate(["a b c", "d", "e f"])
    ]
    tokenized, _ = tokenize(tokenizer, items)
    boom = Failure.of("infer", "Boom", "no", source="src", offset=1, id="doc-1")
    batch = (
        Batch(tuple(tokenized)).with_results("a", ["A0", boom, "A2"]).with_results("b", ["B0", "B1", "B2"])
    )
    out = list(unbatch(batch))
    assert out[1] is boom
    assert [(o.doc.id, o.n_tokens, dict(o.results)) for o in (out[0], out[2])] == [
        ("doc-0", 3, {"a": "A0", "b": "B0"}),
        ("doc-2", 2, {"a": "A2", "b": "B2"}),
    ]


def test_annotate_splits_on_the_direct_runner_writes_each_split(models_dir, tmp_path_factory):
    from distilbeam.transforms.annotate import AnnotateSplits

    plan = make_plan(models_dir, tmp_path_factory, 4096)
    expected = one_at_a_time(plan)
    out = tmp_path_factory.mktemp("written")
    tasks = tuple(h.name for g in plan.groups for h in g.handlers)
    write = WriteSettings(Location(str(out)), plan.schema, False, "zstd", tasks=tasks)
    options = PipelineOptions(["--runner=DirectRunner"])
    with BeamTestPipeline(options=options) as p:
        results = (
            p
            | beam.Create([Split(str(plan.shard), "text")])
            | AnnotateSplits(plan.groups, READ, write, sort_window=3)
        )
        docs = results | beam.Map(lambda r: (r.stats.docs_read, r.stats.docs_written, r.profile.docs))
        assert_that(docs, equal_to([(len(TEXTS), len(TEXTS), len(TEXTS))]))
    rows = pq.read_table(out / shard_file_name(str(plan.shard))).to_pylist()
    assert [r["offset"] for r in rows] == list(range(len(TEXTS)))
    for row in rows:
        want = expected[f"doc-{row['offset']}"]
        assert row["sentiment"]["label"] == want["sentiment"]["label"]
        assert [(e["label"], e["start"], e["end"]) for e in row["entities"]] == [
            (e["label"], e["start"], e["end"]) for e in want["entities"]
        ]


def test_memory_does_not_grow_with_the_shard(models_dir, tmp_path, monkeypatch):
    """A proxy at small scale for a corpus of millions: annotating a shard four times as long holds no more
    memory, as rows stream out in row groups and only a chunk of documents is held at a time."""
    import tracemalloc

    from distilbeam.transforms import write
    from distilbeam.transforms.annotate import AnnotateSplitFn

    monkeypatch.setattr(write, "ROW_GROUP_ROWS", 64)
    tasks = {
        "sentiment": task_settings("classify", models_dir / "classifier"),
        "entities": task_settings("ner", models_dir / "ner"),
    }
    peaks = {}
    for n in (400, 1600):
        shard = tmp_path / f"shard-{n}.jsonl"
        shard.write_text("".join(f'{{"id": "{i}", "text": "{TEXTS[i % 3]} number {i}"}}\n' for i in range(n)))
        plan = plan_tasks(tasks, "auto")
        write_settings = WriteSettings(Location(str(tmp_path / "out")), plan.schema, False, "zstd")
        fn = AnnotateSplitFn(plan.groups, READ, write_settings, sort_window=50)
        fn.setup()
        fn._models()
        tracemalloc.start()
        (result,) = fn.process(Split(str(shard), "jsonl"))
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        fn.teardown()
        assert result.stats.docs_written == n
    assert peaks[1600] < 1.25 * peaks[400], peaks
