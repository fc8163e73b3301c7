"""What a task's model runs with: the settings keys every task kind shares (``TaskSettings``), where and how
the models run (``Runtime``: device, precision, torch threads), and the per-process policy that follows
from them: how many CPU calls run at once, the thread count and CUDA device each runner thread sets, and the
call gate and busy clock each device shares between models and threads."""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from distilbeam.transforms import devices, models, storage
from distilbeam.transforms.batching import (
    CALL_OVERHEAD_TOKENS,
    device_kind,
    model_width,
    resolve_max_tokens,
)
from distilbeam.transforms.tasks.int8 import quantize_int8

log = logging.getLogger(__name__)


# Kernels oneDNN keeps built for call shapes it may see again (see ``load``).
ONEDNN_CACHE_CAPACITY = 16


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
        return models.ModelRef(
            storage.Location(self.model, self.storage_options), self.revision, self.allow_pickle
        )


@dataclasses.dataclass(frozen=True)
class Runtime:
    device: str = "auto"
    precision: str = "auto"
    torch_threads: int | None = None
    worker_processes: int = 1  # processes sharing this machine's cores; 0: one process per core
    # The device kind (cpu or cuda) the launch resolved ``device`` to and put in the annotation hash
    # (``runners.planned_device``); a worker that would run another refuses to load the model.
    # None where nothing was planned (benchmarks, tests).
    planned_device: str | None = None

    def resolve_device(self) -> str:
        """The device this process runs the models on: ``auto`` is the GPU where torch can use one."""
        import torch

        if self.device == "auto":
            # int8 is dynamic quantisation of the linear layers, which runs on the CPU only.
            return "cuda" if torch.cuda.is_available() and self.precision != "int8" else "cpu"
        return self.device

    def numerics(self) -> dict[str, str]:
        """The numeric path rows are computed on, as planned (or as this process resolves it): the device
        kind and the effective precision. Part of each task's identity, so of the annotation hash."""
        kind = self.planned_device or device_kind(self.resolve_device())
        return {"device": kind, "precision": devices.effective_precision(self.precision, kind)}

    def threads(self) -> int:
        """torch threads per model call: as configured, else this process's share of the cores."""
        if self.torch_threads:
            return self.torch_threads
        if self.worker_processes == 0:
            return 1
        return max(1, devices.cpu_cores() // self.worker_processes)


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
    max_tokens: int = 2048  # padded tokens per model call
    call_overhead: int = CALL_OVERHEAD_TOKENS["cpu"]  # see ``plan_slices``
    load_started: float = 0.0  # time.monotonic() when loading began, for the start-up metric
    first_call_done: bool = False
    # Shared by every model on this device in the process (see ``device_state``).
    calls: devices.CallGate = dataclasses.field(default_factory=devices.CallGate)
    busy: devices.BusyClock | None = None  # GPU only


def load(
    name: str, settings: TaskSettings, runtime: Runtime, auto_class_name: str, max_tokens: int | str
) -> Loaded:
    """Task ``name``'s model and tokenizer on the device ``runtime`` resolves: checks the device against
    the launch's plan, sets this process's torch and tokenizer threads, loads the weights in fp32
    (quantised for int8), moves them to the device, and resolves ``max_tokens`` (a number, or "auto") to
    the padded tokens per call for that device."""
    import torch
    import transformers

    started = time.monotonic()
    device = runtime.resolve_device()
    # Before anything is loaded: a worker that cannot run what the launch planned fails here, loudly.
    devices.check_device(name, device, runtime.planned_device)
    threads = runtime.threads()
    torch.set_num_threads(threads)
    # The fast tokenizers' thread pool too (read when it starts, at the first batch it tokenizes): worker
    # processes sharing the machine would otherwise each start one thread per core.
    os.environ.setdefault("RAYON_NUM_THREADS", str(threads))
    # oneDNN (torch's CPU kernels) caches the kernels it builds for each new call shape, up to 1,024 by
    # default at a fraction of a MB each; token-budget calls take a new shape almost every call, so the
    # cache grew the process by a few hundred MB over a large corpus. Sixteen keep the reuse that
    # matters, consecutive calls of one shape, in bounded memory. Read at the first forward, so set here.
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(ONEDNN_CACHE_CAPACITY))
    path = models.worker_dir(settings.ref)
    tokenizer = models.load_tokenizer(path)
    # Weights in fp32 whatever dtype the checkpoint was saved in, for every precision: int8 quantises
    # fp32 weights, and on a GPU fp16 and bf16 run under autocast over fp32 weights, which keeps layer
    # norms, softmax and reductions in fp32 while matrix multiplies run in half precision. The cost is
    # the weights' memory (about 265 MB for DistilBERT-base), small beside a GPU's.
    model = models.load_model(path, getattr(transformers, auto_class_name), settings.ref, dtype=torch.float32)
    if runtime.precision == "int8":
        model = quantize_int8(model)
    if device_kind(device) == "cuda":
        # The current device is per thread and stays cuda:0 unless set: allocations without a device,
        # and the streams timing events are recorded on, would otherwise land on the wrong GPU.
        torch.cuda.set_device(torch.device(device))
        log.info("task %s: %s, %s", name, torch.cuda.get_device_name(device), devices.cuda_facts())
    model.to(device)
    autocast = devices.autocast_dtype(runtime.precision, device_kind(device))
    per_call = resolve_max_tokens(max_tokens, device, model_width(model.config))
    numerics = devices.effective_precision(runtime.precision, device_kind(device))
    log.info(
        "task %s: loaded %s on %s (%s, %d threads, %d tokens per call)",
        name,
        settings.model,
        device,
        numerics,
        torch.get_num_threads(),
        per_call,
    )
    gate, busy = device_state(device)
    return Loaded(
        model=model,
        device=device,
        autocast_dtype=autocast,
        pad_id=tokenizer.pad_token_id or 0,
        tokenizer=tokenizer,
        id2label={int(k): v for k, v in model.config.id2label.items()},
        problem_type=getattr(model.config, "problem_type", None),
        threads=threads,
        max_tokens=per_call,
        call_overhead=CALL_OVERHEAD_TOKENS[device_kind(device)],
        load_started=started,
        calls=gate,
        busy=busy,
    )


def resolve_max_length(settings: TaskSettings, config: dict[str, Any], tokenizer: Any) -> int:
    """Tokens per window: the configured value, capped by what the model and tokenizer accept."""
    limits = [config.get("max_position_embeddings"), tokenizer.model_max_length]
    limit = min(v for v in limits if isinstance(v, int) and 0 < v < 1_000_000)
    return min(settings.max_length or limit, limit)


# On a CPU, as many model calls at a time per process as its cores hold calls of the torch threads it was
# given: one when each call spreads over every core, one per core when workers run one thread each (the
# DirectRunner's threads sharing a process); more would only oversubscribe the cores. On a GPU calls may
# overlap: one thread's host work hides another's transfer.
_CPU_CALLS: dict[int, threading.BoundedSemaphore] = {}
_CPU_CALLS_LOCK = threading.Lock()


def cpu_calls(threads: int) -> threading.BoundedSemaphore:
    """The semaphore CPU calls of models running ``threads`` torch threads pass, one per process."""
    with _CPU_CALLS_LOCK:
        if threads not in _CPU_CALLS:
            _CPU_CALLS[threads] = threading.BoundedSemaphore(max(1, devices.cpu_cores() // max(1, threads)))
        return _CPU_CALLS[threads]


def torch_threads() -> int:
    """torch's thread count in the calling thread."""
    import torch

    return torch.get_num_threads()


def use_threads(threads: int) -> None:
    """Sets torch's thread count in the calling thread: torch keeps it per OS thread (OpenMP)."""
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def use_device(device: str) -> None:
    """Makes the model's CUDA device current in the calling thread: the current device is per OS thread."""
    if device.startswith("cuda"):
        import torch

        index = torch.device(device).index
        if index is not None and torch.cuda.current_device() != index:
            torch.cuda.set_device(index)


# Per device in this process: the gate its model calls pass (see ``devices.CallGate``) and, on a GPU, the
# clock of its busy time, shared by every model and thread using the device.
_DEVICES: dict[str, tuple[devices.CallGate, devices.BusyClock | None]] = {}
_DEVICES_LOCK = threading.Lock()


def device_state(device: str) -> tuple[devices.CallGate, devices.BusyClock | None]:
    """The device's call gate and (on a GPU) busy clock, made at its first use in this process."""
    with _DEVICES_LOCK:
        if device not in _DEVICES:
            busy = None
            if device.startswith("cuda"):
                import torch

                origin = torch.cuda.Event(enable_timing=True)
                origin.record(torch.cuda.current_stream(device))
                busy = devices.BusyClock(origin)
            _DEVICES[device] = (devices.CallGate(), busy)
        return _DEVICES[device]
