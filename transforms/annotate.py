"""Annotating documents with every configured task in one pass.

Tasks are grouped by tokenizer; each group tokenizes and batches the documents once, then runs each of its
tasks' models through Beam's ``RunInference`` on the same batches, and unbatches. Results accumulate on the
documents as they pass from group to group."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference

from transforms import models
from transforms.batching import BatchDocumentsFn, unbatch
from transforms.schema import Annotated, Document
from transforms.tasks.base import TaskHandler


@dataclasses.dataclass(frozen=True)
class TaskGroup:
    """Tasks whose models share one tokenizer."""

    tokenizer: models.ModelRef
    handlers: tuple[TaskHandler, ...]

    def load_tokenizer(self) -> Any:
        return models.load_tokenizer(models.worker_dir(self.tokenizer))


class AnnotateDocuments(beam.PTransform):
    """Documents -> ``annotated`` (one Annotated per document) and ``failed`` (dead-letter rows)."""

    def __init__(self, groups: list[TaskGroup], max_tokens: int | str, sort_window: int):
        super().__init__()
        self._groups = groups
        self._max_tokens = max_tokens
        self._sort_window = sort_window

    def expand(self, docs: beam.PCollection) -> dict[str, beam.PCollection]:
        items = docs | "Start" >> beam.Map(_start)
        failed = []
        for g, group in enumerate(self._groups):
            costs: list[Callable[[int], tuple[int, int]]] = [h.cost for h in group.handlers]
            batched = items | f"TokenizeAndBatch{g}" >> beam.ParDo(
                BatchDocumentsFn(
                    group.load_tokenizer,
                    costs,
                    self._max_tokens,
                    self._sort_window,
                    group.handlers[0].runtime.resolve_device,
                )
            ).with_outputs("failed", main="batches")
            failed.append(batched.failed)
            batches = batched.batches
            for handler in group.handlers:
                batches = batches | f"Infer[{handler.name}]" >> RunInference(handler)
            out = batches | f"Unbatch{g}" >> beam.FlatMap(unbatch).with_outputs("failed", main="annotated")
            failed.append(out.failed)
            items = out.annotated
        return {"annotated": items, "failed": failed | "FlattenFailures" >> beam.Flatten()}


# Functions the graph refers to are module-level, so they pickle by name (not by value with the launcher's
# file paths) and workers run their own installed copy.
def _start(doc: Document) -> Annotated:
    return Annotated(doc, -1, {})
