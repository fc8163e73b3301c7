"""Which device and numeric path the models run on, and what a worker knows of its GPU. The launcher decides
the device kind (cpu or cuda) and the effective precision once, for the annotation hash; each worker checks
at model load that it runs what was planned, and fails loudly, naming torch's CUDA version and the NVIDIA
driver, where it cannot. Also here: telling out-of-memory errors (split and retry) from errors that leave
the device unusable (fail the bundle), the gate that lets a retry run with the device to itself, and the
clock that measures how busy a GPU was when several threads share it."""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distilbeam.transforms.batching import device_kind

# Phrases of torch's RuntimeErrors that leave a CUDA context unusable (a device-side assert, an illegal
# address): every later call on that device fails too. Builds of torch without ``torch.AcceleratorError``
# raise them as plain RuntimeErrors.
FATAL_DEVICE_ERRORS = (
    "CUDA error",
    "CUDA driver error",
    "device-side assert",
    "illegal memory access",
    "CUBLAS_STATUS_",
    "CUDNN_STATUS_",
)
# The intervals a BusyClock keeps before folding the oldest into its total; calls are collected within a
# call or two of being started, so older intervals no longer overlap new ones.
BUSY_INTERVALS_KEPT = 64


class DeviceMismatch(RuntimeError):
    """A worker cannot run the device the launch planned (and put in the annotation hash)."""


class DeviceUnusable(RuntimeError):
    """The device cannot run this model's calls at all, whatever the documents: the bundle fails, so that
    the runner retries it on a fresh worker."""


def cpu_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def effective_precision(precision: str, kind: str) -> str:
    """What ``runtime.precision`` runs as on a device of this kind: ``auto`` is fp16 on a GPU and fp32 on a
    CPU; half precision runs on GPUs only (a CPU runs fp32 whatever was asked); int8 runs on the CPU."""
    if precision == "int8":
        return "int8"
    if kind == "cpu":
        return "fp32"
    return "fp16" if precision == "auto" else precision


def autocast_dtype(precision: str, kind: str) -> Any:
    """The torch dtype autocast runs matrix multiplies in, or None for fp32 (and on a CPU)."""
    import torch

    effective = effective_precision(precision, kind)
    if kind != "cuda" or effective not in ("fp16", "bf16"):
        return None
    return torch.bfloat16 if effective == "bf16" else torch.float16


def driver_version(path: str = "/proc/driver/nvidia/version") -> str | None:
    """The NVIDIA kernel driver's version (such as 580.65.06), or None where no driver is loaded."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    match = re.search(r"\b(\d{3,}\.\d+(?:\.\d+)?)\b", text)
    return match.group(1) if match else None


def cuda_facts() -> str:
    """One line for logs and errors: torch's build and CUDA version, and the driver beside it."""
    import torch

    built = f"CUDA {torch.version.cuda}" if torch.version.cuda else "no CUDA (a CPU build)"
    driver = driver_version()
    line = f"torch {torch.__version__} built for {built}; "
    line += f"NVIDIA driver {driver}" if driver else "no NVIDIA driver found (/proc/driver/nvidia/version)"
    supported = _driver_cuda_version()
    if supported:
        line += f", which runs CUDA up to {supported}"
    return line


def _driver_cuda_version() -> str | None:
    """The newest CUDA version the loaded driver runs, as the CUDA runtime reports it (CUDA builds only)."""
    import torch

    try:
        version = int(torch._C._cuda_getDriverVersion())
    except Exception:  # a CPU build has no such call; a missing driver makes it fail
        return None
    return f"{version // 1000}.{version % 1000 // 10}" if version > 0 else None


def check_device(task: str, device: str, planned: str | None) -> None:
    """Refuses to load a model where the worker cannot run what the launch planned: a GPU run on a worker
    whose torch cannot use its GPU (no driver, or one too old for torch's CUDA) would otherwise crawl on the
    CPU, and a run planned for one numeric path would write rows of another under its hash."""
    import torch

    kind = device_kind(device)
    if (kind == "cuda" or planned == "cuda") and not torch.cuda.is_available():
        raise DeviceMismatch(
            f"task {task}: the run was planned for a GPU, but torch on this worker cannot use one "
            f"({cuda_facts()}). torch's CUDA version must be one the driver runs: build the worker image "
            "with a torch for the driver's CUDA version, or have a newer driver installed (Dataflow: "
            "install-nvidia-driver:latest in worker_accelerator); or set runtime.device: cpu to annotate on "
            "the CPU (a different numeric path: incremental outputs are annotated again)"
        )
    if planned is not None and kind != planned:
        raise DeviceMismatch(
            f"task {task}: the run was planned for the {planned.upper()} (runtime.device: auto, resolved "
            f"where the job was launched), but this worker would run it on {kind} ({cuda_facts()}); set "
            "runtime.device to cpu or cuda so that the launch and the workers agree"
        )


def is_out_of_memory(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc)


def is_fatal_device_error(exc: BaseException) -> bool:
    """Whether an error leaves the device unusable for every later call (a device-side assert, an illegal
    memory access): such an error fails the bundle, so the runner retries it on a fresh worker, instead of
    turning every later document into a dead-letter row. Running out of memory is not one."""
    import torch

    if is_out_of_memory(exc):
        return False
    accelerator_error = getattr(torch, "AcceleratorError", None)
    if accelerator_error is not None and isinstance(exc, accelerator_error):
        return True
    return isinstance(exc, RuntimeError) and any(phrase in str(exc) for phrase in FATAL_DEVICE_ERRORS)


class CallGate:
    """Model calls on one device share it; a call retried after running out of memory runs alone, once the
    calls under way have finished (and before any new one starts), so that other threads' brief use of the
    memory cannot fail it twice."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._running = 0
        self._waiting_alone = 0
        self._alone = False

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._changed:
            while self._alone or self._waiting_alone:
                self._changed.wait()
            self._running += 1
        try:
            yield
        finally:
            with self._changed:
                self._running -= 1
                self._changed.notify_all()

    @contextlib.contextmanager
    def alone(self) -> Iterator[None]:
        with self._changed:
            self._waiting_alone += 1
            while self._running or self._alone:
                self._changed.wait()
            self._waiting_alone -= 1
            self._alone = True
        try:
            yield
        finally:
            with self._changed:
                self._alone = False
                self._changed.notify_all()


class BusyClock:
    """How long a device spent on model calls: the union of the calls' intervals on the device's timeline,
    each measured from one origin event. Calls from several threads on one stream overlap (a call's start and
    end events bracket whatever other threads queued in between), so their durations added up would count
    that time more than once, and could exceed the wall time."""

    def __init__(self, origin: Any = None):
        self._origin = origin  # a CUDA event recorded on the device before any call
        self._lock = threading.Lock()
        self._spans: list[tuple[float, float]] = []  # disjoint, sorted
        self._floor = 0.0  # time before which everything is already counted

    def add_events(self, start: Any, end: Any) -> float:
        """Counts a call between two recorded (and completed) CUDA events; the busy time it added, in ms."""
        return self.add(self._origin.elapsed_time(start), self._origin.elapsed_time(end))

    def add(self, start: float, end: float) -> float:
        """Counts the interval [start, end) (ms since the origin); what it added that was not counted yet."""
        with self._lock:
            start = max(start, self._floor)
            if end <= start:
                return 0.0
            kept, added, merged = [], end - start, (start, end)
            for span in self._spans:
                if span[1] < merged[0] or span[0] > merged[1]:
                    kept.append(span)
                    continue
                added -= max(0.0, min(span[1], end) - max(span[0], start))
                merged = (min(span[0], merged[0]), max(span[1], merged[1]))
            kept.append(merged)
            kept.sort()
            if len(kept) > BUSY_INTERVALS_KEPT:
                self._floor = kept[0][1]
                kept = kept[1:]
            self._spans = kept
            return added
