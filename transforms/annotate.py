"""Annotating the corpus split by split: one step reads a split, annotates its documents with every task and
streams the rows into the split's Parquet file, so documents never leave the worker that read them.

A split is read in chunks of ``sort_window`` documents. Tasks are grouped by tokenizer: each group tokenizes a
chunk once (one call of the fast tokenizer), cuts it into batches of similar length under a token budget,
and runs each of its tasks' model handlers on the same batches; results accumulate on the documents from
group to group, and the chunk goes to the writer in its reading order. Models are loaded once per worker
process and shared by its threads (Beam's ``Shared``), in the background while the first chunk is read and
tokenized. What leaves the step is one small ``SplitResult`` per split: counts, the report's statistics and
the throughput timeline."""

from __future__ import annotations

import concurrent.futures
import ctypes
import ctypes.util
import dataclasses
import itertools
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics
from apache_beam.utils import shared

from distilbeam.transforms import models
from distilbeam.transforms.batching import CALLS_PER_BATCH, Batch, plan_batches, tokenize
from distilbeam.transforms.progress import ProgressFile
from distilbeam.transforms.read import ReadSettings, Split, read_split
from distilbeam.transforms.schema import Annotated, Document, Failure
from distilbeam.transforms.tasks.base import TaskHandler
from distilbeam.transforms.write import SplitResult, SplitWriter, WriteSettings

LOAD_METRIC = "load_model_latency_milli_secs"  # as Beam's RunInference names it, per handler namespace


@dataclasses.dataclass(frozen=True)
class TaskGroup:
    """Tasks whose models share one tokenizer."""

    tokenizer: models.ModelRef
    handlers: tuple[TaskHandler, ...]

    def load_tokenizer(self) -> Any:
        return models.load_tokenizer(models.worker_dir(self.tokenizer))


@dataclasses.dataclass
class LoadedGroup:
    """A group's tokenizer, its handlers with their loaded models, and the tokens per batch."""

    tokenizer: Any
    handlers: list[tuple[TaskHandler, Any]]
    batch_tokens: int

    def cost(self, n_tokens: int) -> tuple[int, int]:
        """(rows, padded row length) the most demanding task of the group feeds the model."""
        per_task = [handler.cost(n_tokens) for handler, _ in self.handlers]
        return max(c[0] for c in per_task), max(c[1] for c in per_task)


def annotate_chunk(
    docs: Sequence[Document], groups: Sequence[LoadedGroup]
) -> tuple[list[Annotated], list[Failure]]:
    """Every document with every task's result, in the order given, and a dead-letter row for each document
    a task could not annotate (its first failure)."""
    items = [Annotated(doc, -1, {}) for doc in docs]
    failures: list[Failure] = []
    for group in groups:
        tokenized, failed = tokenize(group.tokenizer, items)
        failures += failed
        costs = [group.cost(len(t.ids)) for t in tokenized]
        done: dict[int, Annotated] = {}  # by position in ``tokenized``, which keeps the order of ``items``
        for indices in plan_batches(costs, group.batch_tokens):
            batch = Batch(tuple(tokenized[i] for i in indices))
            for handler, loaded in group.handlers:
                (batch,) = handler.run_inference(batch, loaded)
            for i, result in zip(indices, unbatch(batch), strict=True):
                if isinstance(result, Failure):
                    failures.append(result)
                else:
                    done[i] = result
        items = [done[i] for i in sorted(done)]
    return items, failures


def unbatch(batch: Batch) -> Iterator[Annotated | Failure]:
    """Each document of the batch with every task's result, or its first failure."""
    for i, tokenized in enumerate(batch.items):
        results = {task: values[i] for task, values in batch.results.items()}
        failure = next((r for r in results.values() if isinstance(r, Failure)), None)
        if failure is not None:
            yield failure
            continue
        item = tokenized.item
        n_tokens = item.n_tokens if item.n_tokens >= 0 else len(tokenized.ids)
        yield Annotated(item.doc, n_tokens, {**item.results, **results})


def release_memory() -> None:
    """Hands the memory a finished split freed back to the system: Arrow's pool and the C allocator keep
    freed pages for reuse, and with pages of every size from split after split a long run's resident set
    would creep up with the corpus instead of holding still."""
    pa.default_memory_pool().release_unused()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _libc() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim  # noqa: B018 (glibc only)
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _libc()


def chunks(records: Iterable[Any], size: int) -> Iterator[list[Any]]:
    records = iter(records)
    while chunk := list(itertools.islice(records, size)):
        yield chunk


class AnnotateSplitFn(beam.DoFn):
    """A split in; its documents read, annotated and written (data and dead letter, committed to the
    manifest once its shard is complete); its ``SplitResult`` out."""

    def __init__(
        self,
        groups: Sequence[TaskGroup],
        read: ReadSettings,
        write: WriteSettings,
        sort_window: int,
    ):
        self._groups = list(groups)
        self._read = read
        self._write = write
        self._sort_window = sort_window
        # One handle per model: every instance of this step in a process (one per thread) shares the model.
        self._handles = [[shared.Shared() for _ in g.handlers] for g in self._groups]

    def setup(self) -> None:
        self._tokenizers = [g.load_tokenizer() for g in self._groups]
        # Models load in the background: reading and tokenizing the first documents go on meanwhile.
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="distilbeam-load")
        self._loading = self._pool.submit(self._load_models)
        self._loaded: list[LoadedGroup] | None = None
        self._progress = ProgressFile(self._write.run.progress_dir if self._write.run else None)

    def _load_models(self) -> list[list[tuple[TaskHandler, Any, float | None]]]:
        """Each handler's model, and how long loading it took when this instance loaded it (None when
        another thread of the process had: the model is shared)."""
        out = []
        for group, handles in zip(self._groups, self._handles, strict=True):
            loaded = []
            for handler, handle in zip(group.handlers, handles, strict=True):
                took: list[float] = []

                def load(handler: TaskHandler = handler, took: list[float] = took) -> Any:
                    started = time.monotonic()
                    model = handler.load_model()
                    took.append(time.monotonic() - started)
                    return model

                model = handle.acquire(load, tag=handler.name)
                loaded.append((handler, model, took[0] if took else None))
            out.append(loaded)
        return out

    def _models(self) -> list[LoadedGroup]:
        """The loaded groups, waiting for the background load the first time."""
        if self._loaded is None:
            groups = []
            for tokenizer, loaded in zip(self._tokenizers, self._loading.result(), strict=True):
                for handler, _, seconds in loaded:
                    if seconds is not None:  # loaded by this instance, not shared from another thread's
                        metric = Metrics.distribution(handler.get_metrics_namespace(), LOAD_METRIC)
                        metric.update(int(1000 * seconds))
                budget = min(model.max_tokens for _, model, _ in loaded)  # padded tokens per model call
                handlers = [(handler, model) for handler, model, _ in loaded]
                groups.append(LoadedGroup(tokenizer, handlers, CALLS_PER_BATCH * budget))
            self._loaded = groups
        return self._loaded

    def process(self, split: Split) -> Iterator[SplitResult]:
        writer = SplitWriter(self._write, split)
        with writer:
            started = time.time()
            for chunk in chunks(read_split(split, self._read), self._sort_window):
                docs = [r for r in chunk if isinstance(r, Document)]
                failures = [r for r in chunk if isinstance(r, Failure)]
                annotated, failed = annotate_chunk(docs, self._models()) if docs else ([], [])
                writer.write(annotated, failures + failed, records=len(chunk), started=started)
                started = time.time()
                self._progress.add(done=len(chunk))
            result = writer.commit()
        release_memory()
        self._progress.add(read=result.stats.docs_read, bytes=self._bytes_of(split))
        self._progress.save()  # a split's end is always told: the last one's is the run's
        yield result

    def _bytes_of(self, split: Split) -> int:
        """The share of its shard's bytes a split holds, for the progress line's estimate of the total."""
        run = self._write.run
        size = run.shards[split.uri].size if run is not None and split.uri in run.shards else 0
        if split.whole or split.format == "parquet":  # a Parquet split's range is in row groups
            return size // split.count
        return (size if split.end is None else split.end) - split.start

    def teardown(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False)
        progress = getattr(self, "_progress", None)
        if progress is not None:
            progress.save()


class AnnotateSplits(beam.PTransform):
    """Splits -> one ``SplitResult`` per split, each split's documents written and committed on the way."""

    def __init__(
        self,
        groups: Sequence[TaskGroup],
        read: ReadSettings,
        write: WriteSettings,
        sort_window: int,
    ):
        super().__init__()
        self._fn = AnnotateSplitFn(groups, read, write, sort_window)

    def expand(self, splits: beam.PCollection) -> beam.PCollection:
        return splits | "AnnotateAndWrite" >> beam.ParDo(self._fn).with_output_types(SplitResult)
