"""What every task kind shares: a Beam ``ModelHandler`` that loads the model once per worker process (see
``runtime``), turns a batch of tokenized documents into padded model inputs, runs the model under
``torch.inference_mode`` and isolates failures by splitting the batch, so one bad document cannot take its
neighbours down. On a GPU a call that runs out of memory is split and retried instead; an error that leaves
the device unusable fails the bundle, so the runner retries it on a fresh worker."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler

from distilbeam.transforms import devices
from distilbeam.transforms.batching import Batch, Tokenized, plan_slices, windows
from distilbeam.transforms.schema import Failure
from distilbeam.transforms.tasks.runtime import (
    Loaded,
    Runtime,
    TaskSettings,
    cpu_calls,
    load,
    torch_threads,
    use_device,
    use_threads,
)

log = logging.getLogger(__name__)


class TaskHandler(ModelHandler):
    """A batch in, the same batch with this task's per-document results out."""

    auto_class_name: ClassVar[str]  # transformers Auto class for this kind
    architecture_suffix: ClassVar[str]  # what config.json's architectures must end with
    labelled: ClassVar[bool] = True  # whether the model's id2label names this task's outputs

    def __init__(
        self,
        name: str,
        settings: TaskSettings,
        runtime: Runtime,
        max_tokens: int | str,
        max_length: int,
        frame: tuple[list[int], list[int]],
    ):
        super().__init__()
        self.name = name
        self.settings = settings
        self.runtime = runtime
        self.max_tokens = max_tokens  # padded tokens per model call, or "auto": chosen by device
        # Resolved when the pipeline is built: tokens per window (see ``resolve_max_length``), and the
        # special token ids framing each window (see ``models.special_frame``).
        self.max_length = max_length
        self.prefix, self.suffix = list(frame[0]), list(frame[1])

    @property
    def body(self) -> int:
        """Document tokens per window."""
        return self.max_length - len(self.prefix) - len(self.suffix)

    # -- the ModelHandler contract -------------------------------------------------------------------
    def load_model(self) -> Loaded:
        """The task's model and tokenizer, loaded once per worker process onto the device its runtime
        resolves (see ``runtime.load``)."""
        return load(self.name, self.settings, self.runtime, self.auto_class_name, self.max_tokens)

    def run_inference(
        self, batch: Batch, model: Loaded, inference_args: dict | None = None
    ) -> Iterable[Batch]:
        use_threads(model.threads)
        use_device(model.device)
        Metrics.distribution(self.get_metrics_namespace(), "torch_threads").update(torch_threads())
        previous = [_first_failure(batch, i) for i in range(len(batch))]
        todo = [i for i, f in enumerate(previous) if f is None]
        results: list[Any] = list(previous)
        annotated = self._annotate_isolated([batch.items[i] for i in todo], model)
        if len(todo) > 1 and all(_out_of_memory(r) for r in annotated):
            # Every document, each one alone too: the device has no room for this model, whatever the
            # documents. Failing the bundle gets it retried on a fresh worker; dead-lettering the batch
            # would report a run that annotated nothing as a success.
            raise devices.DeviceUnusable(
                f"task {self.name}: all {len(todo)} documents of a batch ran out of device memory, each one "
                f"alone too, on {model.device}: another process may hold its memory, or batching.max_tokens "
                "is too large for it"
            )
        for i, result in zip(todo, annotated, strict=True):
            results[i] = result
        return [batch.with_results(self.name, results)]

    def should_skip_batching(self) -> bool:
        return True  # batches are cut upstream by token budget, sorted by length

    def get_num_bytes(self, batch: Batch) -> int:
        return 8 * batch.n_tokens

    def get_metrics_namespace(self) -> str:
        return f"distilbeam.{self.name}"

    # -- what each kind provides -----------------------------------------------------------------------
    def cost(self, n_tokens: int) -> tuple[int, int]:
        """(rows, padded row length) this task feeds the model for a document of ``n_tokens`` tokens."""
        spans = windows(n_tokens, self.body, self.stride())
        return len(spans), max(e - s for s, e in spans) + len(self.prefix) + len(self.suffix)

    def stride(self) -> int | None:
        return None

    def annotate(self, items: Sequence[Tokenized], model: Loaded) -> list[Any]:
        raise NotImplementedError

    def settings_problem(self) -> str | None:
        """Why these settings cannot work with this model's window, or None; checked before the run."""
        return None

    def resolve_model(self, tokenizer: Any, config: Mapping[str, Any]) -> None:
        """Called once when the pipeline is built, with the task's tokenizer and its model's config.json:
        a kind that needs facts from them (a question's token ids, a vector's size) keeps them on the
        handler, which carries them to the workers."""

    def arrow_type(self) -> pa.DataType:
        """This task's output column type."""
        raise NotImplementedError

    def model_output(self, output: Any, attention_mask: Any) -> Any:
        """What ``forward`` keeps of the model's output for each row, as a tensor of [rows, ...]: the
        logits unless the kind needs something else (start and end logits, a pooled vector)."""
        return output.logits

    @classmethod
    def check_model(cls, uri: str, config: dict[str, Any]) -> None:
        """Refuses a model whose head does not fit this task, before the pipeline starts."""
        from distilbeam.transforms import SetupError

        architectures = config.get("architectures") or []
        if not any(a.endswith(cls.architecture_suffix) for a in architectures):
            found = ", ".join(architectures) or "none listed in config.json"
            raise SetupError(
                f"model {uri} is not a *{cls.architecture_suffix} model (architectures: {found}); "
                f"task kind {cls.kind_name()} needs one"
            )
        if cls.labelled and not config.get("id2label"):
            raise SetupError(f"model {uri} has no id2label in config.json; labels cannot be named")

    @classmethod
    def kind_name(cls) -> str:
        return cls.__module__.rsplit(".", 1)[-1]

    # -- shared machinery --------------------------------------------------------------------------------
    def _annotate_isolated(self, items: Sequence[Tokenized], model: Loaded) -> list[Any]:
        """Runs the batch; on an error (out of device memory included) splits it in halves and retries, down
        to single documents, which then fail alone with the error. An error that leaves the device unusable
        is raised instead. The ``except`` block only takes note: the failed call's tensors live on in its
        traceback, so memory is freed and halves are retried once the exception is gone."""
        if not items:
            return []
        failure = None
        try:
            return self.annotate(items, model)
        except Exception as exc:
            if devices.is_fatal_device_error(exc):
                raise
            if len(items) == 1:
                doc = items[0].item.doc
                failure = Failure.of_document("infer", exc, f"task {self.name}: {exc}", doc)
                # The message, not the exception: a log handler that keeps records would keep its tensors.
                log.warning("%s (document %s of %s)", failure.message, doc.id, doc.source)
        _release_accelerator_memory(model)
        if failure is not None:
            return [failure]
        half = len(items) // 2
        return self._annotate_isolated(items[:half], model) + self._annotate_isolated(items[half:], model)

    def rows(self, items: Sequence[Tokenized], model: Loaded) -> tuple[list[np.ndarray], list[int]]:
        """Model input rows (special tokens added) for every window of every document, and for each row
        the index of its document."""
        rows, owners = [], []
        prefix = np.asarray(self.prefix, dtype=np.int32)
        suffix = np.asarray(self.suffix, dtype=np.int32)
        for index, tokenized in enumerate(items):
            for start, end in windows(len(tokenized.ids), self.body, self.stride()):
                rows.append(np.concatenate([prefix, tokenized.ids[start:end], suffix]))
                owners.append(index)
        return rows, owners

    def forward(
        self, rows: Sequence[np.ndarray], model: Loaded, types: Sequence[np.ndarray] | None = None
    ) -> list[np.ndarray]:
        """``model_output`` per row, float32, trimmed to the row's own length when it has one per token
        (``types``, when given, are the rows' token type ids). Rows run in calls cut by
        ``plan_slices`` (sorted by length, padded only to each call's longest row, under the token budget).
        On a GPU the next call is queued before the previous one's logits are copied back, so host work
        overlaps the device's; a call that runs out of device memory is split in halves and retried."""
        namespace = self.get_metrics_namespace()
        out: list[np.ndarray] = [None] * len(rows)  # type: ignore[list-item]
        started = time.perf_counter()
        busy_ms = 0.0
        real = computed = 0
        pending: list[tuple[list[int], Any, Any]] = []
        calls = plan_slices([len(r) for r in rows], model.max_tokens, model.call_overhead)
        Metrics.distribution(namespace, "plan_us").update(int(1e6 * (time.perf_counter() - started)))
        for chunk in calls:
            for piece, logits, timing in self._launch(chunk, rows, model, types):
                real += sum(len(rows[i]) for i in piece)
                computed += len(piece) * max(len(rows[i]) for i in piece)
                pending.append((piece, logits, timing))
                if len(pending) > 1:
                    busy_ms += _collect(pending.pop(0), rows, out, model.busy)
                    self._first_call_done(model)
        while pending:
            busy_ms += _collect(pending.pop(0), rows, out, model.busy)
            self._first_call_done(model)
        Metrics.counter(namespace, "real_tokens").inc(real)
        Metrics.counter(namespace, "computed_tokens").inc(computed)
        Metrics.counter(namespace, "forward_ms").inc(int(1000 * (time.perf_counter() - started)))
        if model.device.startswith("cuda"):
            Metrics.counter(namespace, "gpu_busy_ms").inc(round(busy_ms))
        return out

    def _first_call_done(self, model: Loaded) -> None:
        """Start-up: from the start of loading the model to the end of its first call."""
        if not model.first_call_done:
            model.first_call_done = True
            startup_ms = int(1000 * (time.monotonic() - model.load_started))
            Metrics.distribution(self.get_metrics_namespace(), "startup_ms").update(startup_ms)

    def _launch(
        self, chunk: list[int], rows: Sequence[np.ndarray], model: Loaded, types: Sequence[np.ndarray] | None
    ) -> Iterator[tuple[list[int], Any, Any]]:
        """Starts the model on ``chunk``: (rows, logits on the device, CUDA events or None) per call made.
        Out of device memory, a call is split in halves (each still sorted, so no extra padding), and a
        single row is tried once more with the device to itself, once the calls other threads have under
        way finish; out of memory again, it raises for ``_annotate_isolated`` to dead-letter its document.
        Memory is freed and calls retried only after the failed call's exception (whose traceback holds
        that call's tensors) is gone."""
        todo = [chunk]
        while todo:
            piece = todo.pop()
            started = self._try_call(piece, rows, model, types)
            if started is not None:
                yield (piece, *started)
                continue
            _release_accelerator_memory(model)
            if len(piece) > 1:
                Metrics.counter(self.get_metrics_namespace(), "oom_splits").inc()
                log.warning("task %s: out of memory on %d rows; retrying in halves", self.name, len(piece))
                half = len(piece) // 2
                todo += [piece[half:], piece[:half]]  # the first half first
                continue
            Metrics.counter(self.get_metrics_namespace(), "oom_alone_retries").inc()
            log.warning(
                "task %s: out of memory on one row of %d tokens; retrying it alone once other calls finish",
                self.name,
                len(rows[piece[0]]),
            )
            with model.calls.alone():
                _release_accelerator_memory(model)
                started = self._try_call(piece, rows, model, types, alone=True)
            if started is None:
                import torch

                raise torch.OutOfMemoryError(
                    f"out of memory on {model.device} for one row of {len(rows[piece[0]])} tokens, "
                    "even with the device to itself"
                )
            yield (piece, *started)

    def _try_call(
        self,
        chunk: list[int],
        rows: Sequence[np.ndarray],
        model: Loaded,
        types: Sequence[np.ndarray] | None,
        alone: bool = False,
    ) -> tuple[Any, Any] | None:
        """``_call``, or None when the device ran out of memory (any other error is raised)."""
        with contextlib.nullcontext() if alone else model.calls.shared():
            try:
                return self._call(chunk, rows, model, types)
            except Exception as exc:
                if not devices.is_out_of_memory(exc):
                    raise
        return None

    def _call(
        self, chunk: list[int], rows: Sequence[np.ndarray], model: Loaded, types: Sequence[np.ndarray] | None
    ) -> tuple[Any, Any]:
        import torch

        width = max(len(rows[i]) for i in chunk)
        ids = np.full((len(chunk), width), model.pad_id, dtype=np.int64)
        mask = np.zeros((len(chunk), width), dtype=np.int64)
        segments = np.zeros((len(chunk), width), dtype=np.int64) if types is not None else None
        for r, i in enumerate(chunk):
            ids[r, : len(rows[i])] = rows[i]
            mask[r, : len(rows[i])] = 1
            if segments is not None:
                segments[r, : len(rows[i])] = types[i]
        inputs = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
        if segments is not None:
            inputs["token_type_ids"] = torch.from_numpy(segments)
        if model.device == "cpu":
            with cpu_calls(model.threads), torch.inference_mode():
                return self.model_output(model.model(**inputs), inputs["attention_mask"]), None
        with torch.inference_mode():
            inputs = _to_device(inputs, model.device)
            # Timed on the stream the model's kernels run on: that of the model's device, whichever device
            # is current in this thread.
            stream = torch.cuda.current_stream(model.device)
            events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            events[0].record(stream)
            with torch.autocast(
                device_type="cuda", dtype=model.autocast_dtype, enabled=model.autocast_dtype is not None
            ):
                values = self.model_output(model.model(**inputs), inputs["attention_mask"])
            events[1].record(stream)
            return values, events


def _collect(
    call: tuple[list[int], Any, Any],
    rows: Sequence[np.ndarray],
    out: list[np.ndarray],
    busy: devices.BusyClock | None,
) -> float:
    """Copies a call's logits back into ``out`` (waiting for the device); the device time it added to the
    device's busy time, in ms (time other threads' calls already counted is not counted again)."""
    chunk, logits, events = call
    values = logits.cpu().float().numpy()  # to the host first: no device memory for the conversion
    for r, i in enumerate(chunk):
        out[i] = values[r, : len(rows[i])] if values.ndim == 3 else values[r]
    if events is None or busy is None:
        return 0.0
    return busy.add_events(*events)


def _to_device(inputs: dict[str, Any], device: str) -> dict[str, Any]:
    """Model inputs copied to the device through pinned memory, without waiting for the copy."""
    return {k: v.pin_memory().to(device, non_blocking=True) for k, v in inputs.items()}


def _first_failure(batch: Batch, i: int) -> Failure | None:
    for values in batch.results.values():
        if isinstance(values[i], Failure):
            return values[i]
    return None


def _out_of_memory(result: Any) -> bool:
    return isinstance(result, Failure) and result.error == "OutOfMemoryError"


def _release_accelerator_memory(model: Loaded) -> None:
    if model.device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()
