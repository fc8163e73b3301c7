"""What every task kind shares: its settings' common keys and a Beam ``ModelHandler`` that loads the model
once per worker process, turns a batch of tokenized documents into padded model inputs, runs the model under
``torch.inference_mode`` and isolates failures by splitting the batch, so one bad document cannot take its
neighbours down."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler

from transforms import models
from transforms.batching import Batch, Tokenized, windows
from transforms.schema import Failure

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class TaskSettings:
    """Keys every task takes; each kind's ``Settings`` adds its own."""

    kind: ClassVar[str]
    model: str
    revision: str | None = None
    # Load a pytorch_model.bin (pickle, which can run code) for a model you trust; safetensors otherwise.
    allow_pickle: bool = False
    # Tokens per model window, special tokens included; null takes the model's own limit.
    max_length: int | None = None
    # Passed to the fsspec filesystem of an s3:// / gs:// ... model directory (endpoint, profile...).
    storage_options: Mapping[str, Any] = dataclasses.field(default_factory=dict, repr=False)

    @property
    def ref(self) -> models.ModelRef:
        return models.ModelRef(self.model, self.revision, self.allow_pickle, self.storage_options)


@dataclasses.dataclass(frozen=True)
class Runtime:
    device: str = "auto"
    precision: str = "auto"
    torch_threads: int | None = None
    worker_processes: int = 1  # processes sharing this machine's cores; 0: one process per core

    def resolve_device(self) -> str:
        import torch

        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device

    def threads(self) -> int:
        if self.torch_threads:
            return self.torch_threads
        if self.worker_processes == 0:
            return 1
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return max(1, cores // self.worker_processes)


@dataclasses.dataclass
class Loaded:
    """A model on its device with what post-processing needs from its tokenizer and config."""

    model: Any
    device: str
    autocast_dtype: Any  # torch dtype for autocast on accelerators, or None
    pad_id: int
    tokenizer: Any
    id2label: dict[int, str]
    problem_type: str | None
    threads: int = 1  # torch intra-op threads for every thread that runs this model


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
        max_tokens: int,
        max_length: int,
        frame: tuple[list[int], list[int]],
    ):
        super().__init__()
        self.name = name
        self.settings = settings
        self.runtime = runtime
        self.max_tokens = max_tokens
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
        import torch
        import transformers

        threads = self.runtime.threads()
        torch.set_num_threads(threads)
        path = models.worker_dir(self.settings.ref)
        tokenizer = models.load_tokenizer(path)
        model = models.load_model(path, getattr(transformers, self.auto_class_name), self.settings.ref)
        device = self.runtime.resolve_device()
        model.to(device)
        autocast = None
        if device.startswith("cuda") and self.runtime.precision in ("auto", "fp16", "bf16"):
            autocast = torch.bfloat16 if self.runtime.precision == "bf16" else torch.float16
        log.info(
            "task %s: loaded %s on %s (%d threads)",
            self.name,
            self.settings.model,
            device,
            torch.get_num_threads(),
        )
        return Loaded(
            model=model,
            device=device,
            autocast_dtype=autocast,
            pad_id=tokenizer.pad_token_id or 0,
            tokenizer=tokenizer,
            id2label={int(k): v for k, v in model.config.id2label.items()},
            problem_type=getattr(model.config, "problem_type", None),
            threads=threads,
        )

    def run_inference(
        self, batch: Batch, model: Loaded, inference_args: dict | None = None
    ) -> Iterable[Batch]:
        _use_threads(model.threads)
        Metrics.distribution(self.get_metrics_namespace(), "torch_threads").update(_torch_threads())
        previous = [_first_failure(batch, i) for i in range(len(batch))]
        todo = [i for i, f in enumerate(previous) if f is None]
        results: list[Any] = list(previous)
        for i, result in zip(
            todo, self._annotate_isolated([batch.items[i] for i in todo], model), strict=True
        ):
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
        from transforms import SetupError

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
        """Runs the batch; on an error (a CUDA out-of-memory included) splits it in halves and retries,
        down to single documents, which then fail alone with the error."""
        if not items:
            return []
        try:
            return self.annotate(items, model)
        except Exception as exc:
            if len(items) == 1:
                doc = items[0].item.doc
                log.warning("task %s failed on document %s of %s: %s", self.name, doc.id, doc.source, exc)
                return [
                    Failure.of(
                        "infer",
                        exc,
                        f"task {self.name}: {exc}",
                        source=doc.source,
                        offset=doc.offset,
                        id=doc.id,
                        raw=doc.text[:1024],
                    )
                ]
            _release_accelerator_memory(model)
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
        """``model_output`` per row, float32, trimmed to the row's own length when it has one per token.
        Rows run in slices that keep to the token budget, each padded only to its own longest row.
        ``types``, when given, are the rows' token type ids (segment ids of a question/context pair)."""
        import torch

        out: list[np.ndarray] = [None] * len(rows)  # type: ignore[list-item]
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        start = 0
        while start < len(order):
            longest = len(rows[order[start]])
            stop = start
            while stop < len(order):
                longest = max(longest, len(rows[order[stop]]))
                if stop > start and (stop - start + 1) * longest > self.max_tokens:
                    break
                stop += 1
            chunk = order[start:stop]
            width = max(len(rows[i]) for i in chunk)
            ids = np.full((len(chunk), width), model.pad_id, dtype=np.int64)
            mask = np.zeros((len(chunk), width), dtype=np.int64)
            segments = np.zeros((len(chunk), width), dtype=np.int64) if types is not None else None
            for r, i in enumerate(chunk):
                ids[r, : len(rows[i])] = rows[i]
                mask[r, : len(rows[i])] = 1
                if segments is not None:
                    segments[r, : len(rows[i])] = types[i]
            with torch.inference_mode():
                inputs = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
                if segments is not None:
                    inputs["token_type_ids"] = torch.from_numpy(segments)
                if model.device != "cpu":
                    inputs = {
                        k: v.pin_memory().to(model.device, non_blocking=True) for k, v in inputs.items()
                    }
                if model.autocast_dtype is not None:
                    with torch.autocast(device_type="cuda", dtype=model.autocast_dtype):
                        output = model.model(**inputs)
                else:
                    output = model.model(**inputs)
                values = self.model_output(output, inputs["attention_mask"]).float().cpu().numpy()
            for r, i in enumerate(chunk):
                out[i] = values[r, : len(rows[i])] if values.ndim == 3 else values[r]
            start = stop
        return out


def resolve_max_length(settings: TaskSettings, config: dict[str, Any], tokenizer: Any) -> int:
    """Tokens per window: the configured value, capped by what the model and tokenizer accept."""
    limits = [config.get("max_position_embeddings"), tokenizer.model_max_length]
    limit = min(v for v in limits if isinstance(v, int) and 0 < v < 1_000_000)
    return min(settings.max_length or limit, limit)


def _first_failure(batch: Batch, i: int) -> Failure | None:
    for values in batch.results.values():
        if isinstance(values[i], Failure):
            return values[i]
    return None


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _use_threads(threads: int) -> None:
    """torch keeps its thread count per OS thread (OpenMP): a runner thread that ran torch work before this
    model loaded keeps the count it had then. Set it in the thread that runs the model."""
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def _release_accelerator_memory(model: Loaded) -> None:
    if model.device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()
