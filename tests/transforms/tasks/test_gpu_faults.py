"""The GPU path when the device fails, checked on the CPU with the failures injected: a call that runs out of
memory is freed before it is retried, a row that runs out while other threads' calls are under way is tried
again alone once they finish, errors that leave the device unusable fail the bundle instead of filling the
dead letter, and a model on cuda:N runs and is timed on cuda:N, its busy time counted once however many
threads share the device. ``torch.cuda`` is replaced by ``FakeCuda``; the model itself runs on the CPU."""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import Counter, defaultdict

import pytest
import torch

from distilbeam.transforms import devices
from distilbeam.transforms.batching import Batch, tokenize
from distilbeam.transforms.schema import Annotated, Document, Failure
from distilbeam.transforms.tasks import Runtime, base
from distilbeam.transforms.tasks import runtime as task_runtime
from tests.transforms import handlers

TEXTS = [
    "Alice flew to Paris on Monday.",
    "The hotel was lovely and the staff were helpful.",
    "Bob met Carol in Berlin.",
    "one two three four five six seven eight nine ten " * 6,
    "Short.",
    "Initech and Globex signed in London on Tuesday morning.",
]


def handler_for(models_dir, runtime: Runtime, model: str = "classifier"):
    return handlers.handler_for("classify", models_dir / model, runtime=runtime, max_tokens="auto")


def documents(loaded, texts=TEXTS):
    items = [Annotated(Document(f"d{i}", "src", i, t), -1, {}) for i, t in enumerate(texts)]
    tokenized, failures = tokenize(loaded.tokenizer, items)
    assert not failures
    return tokenized


def annotate(handler, loaded, tokenized) -> list:
    (out,) = handler.run_inference(Batch(tuple(tokenized)), loaded)
    return out.results["t"]


class RecordedMetrics:
    """Stands in for Beam's ``Metrics`` (which counts only inside a running pipeline)."""

    def __init__(self):
        self.counters: Counter[str] = Counter()
        self.distributions: dict[str, list[int]] = defaultdict(list)
        self.lock = threading.Lock()

    def counter(self, namespace, name):
        metrics = self

        class Counted:
            def inc(self, n=1):
                with metrics.lock:
                    metrics.counters[name] += n

        return Counted()

    def distribution(self, namespace, name):
        metrics = self

        class Distributed:
            def update(self, value):
                with metrics.lock:
                    metrics.distributions[name].append(value)

        return Distributed()


@pytest.fixture
def metrics(monkeypatch) -> RecordedMetrics:
    recorded = RecordedMetrics()
    monkeypatch.setattr(base, "Metrics", recorded)
    return recorded


class FakeStream:
    def __init__(self, index: int):
        self.device = index


class FakeCuda:
    """``torch.cuda`` as the GPU path uses it: a current device per thread, a stream per device, and timing
    events that read the wall clock when recorded."""

    def __init__(self):
        self.local = threading.local()
        self.streams: dict[int, FakeStream] = {}
        self.set_devices: list[int] = []
        self.emptied = 0
        self.events: list[FakeEvent] = []

    @staticmethod
    def index(device) -> int:
        if isinstance(device, int):
            return device
        return torch.device(device).index or 0

    def current_device(self) -> int:
        return getattr(self.local, "device", 0)

    def set_device(self, device) -> None:
        self.local.device = self.index(device)
        self.set_devices.append(self.local.device)

    def current_stream(self, device=None) -> FakeStream:
        index = self.current_device() if device is None else self.index(device)
        return self.streams.setdefault(index, FakeStream(index))


class FakeEvent:
    fake: FakeCuda

    def __init__(self, enable_timing: bool = False):
        self.stream = None
        self.ms = None

    def record(self, stream=None):
        self.stream = stream or self.fake.current_stream()
        self.ms = 1000 * time.perf_counter()
        self.thread = threading.current_thread().name
        self.fake.events.append(self)

    def elapsed_time(self, end: FakeEvent) -> float:
        return end.ms - self.ms


@pytest.fixture
def fake_cuda(monkeypatch) -> FakeCuda:
    fake = FakeCuda()
    event = type("Event", (FakeEvent,), {"fake": fake})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", fake.current_device)
    monkeypatch.setattr(torch.cuda, "set_device", fake.set_device)
    monkeypatch.setattr(torch.cuda, "current_stream", fake.current_stream)
    monkeypatch.setattr(torch.cuda, "Event", event)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")

    def empty_cache():
        fake.emptied += 1

    monkeypatch.setattr(torch.cuda, "empty_cache", empty_cache)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    to = torch.nn.Module.to

    def stay_on_the_cpu(module, *args, **kwargs):
        if args and str(args[0]).startswith("cuda"):
            return module
        return to(module, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "to", stay_on_the_cpu)
    monkeypatch.setattr(base, "_to_device", lambda inputs, device: inputs, raising=False)
    # Gates and clocks made with the real torch.cuda stay out.
    monkeypatch.setattr(task_runtime, "_DEVICES", {}, raising=False)
    return fake


def out_of_memory() -> torch.OutOfMemoryError:
    return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")


class OutOfMemoryAbove(torch.nn.Module):
    """Runs out of memory on calls of more than ``rows`` rows, after allocating an activation as a model
    would; keeps only weak references to the failed calls' tensors, and notes at each call whether any of
    them is still alive."""

    def __init__(self, inner: torch.nn.Module, rows: int):
        super().__init__()
        self.inner = inner
        self.rows = rows
        self.failed: list[weakref.ref] = []
        self.alive_at_call: list[bool] = []

    def alive(self) -> bool:
        return any(ref() is not None for ref in self.failed)

    def forward(self, input_ids, attention_mask):
        self.alive_at_call.append(self.alive())
        if input_ids.shape[0] > self.rows:
            activation = torch.empty(input_ids.shape[0], input_ids.shape[1], 64)
            self.failed += [weakref.ref(input_ids), weakref.ref(attention_mask), weakref.ref(activation)]
            raise out_of_memory()
        return self.inner(input_ids=input_ids, attention_mask=attention_mask)


def test_memory_of_a_call_that_ran_out_is_freed_before_the_call_is_retried(models_dir, monkeypatch, metrics):
    handler = handler_for(models_dir, Runtime(device="cpu", precision="fp32"))
    loaded = handler.load_model()
    tokenized = documents(loaded)
    expected = annotate(handler, loaded, tokenized)
    loaded.model = OutOfMemoryAbove(loaded.model, rows=1)
    alive_when_freed = []
    monkeypatch.setattr(
        base, "_release_accelerator_memory", lambda model: alive_when_freed.append(loaded.model.alive())
    )
    got = annotate(handler, loaded, tokenized)
    assert loaded.model.failed, "some calls ran out of memory"
    assert alive_when_freed and not any(alive_when_freed), (
        "memory freed while the failed call's tensors lived"
    )
    assert not any(loaded.model.alive_at_call), "a call retried while the failed call's tensors lived"
    assert metrics.counters["oom_splits"] > 0
    assert not any(isinstance(r, Failure) for r in got)
    assert [r["label"] for r in got] == [r["label"] for r in expected]


class OutOfMemoryAtFirst(torch.nn.Module):
    """Runs out of memory on its first ``times`` calls, whatever their size: brief pressure on the device."""

    def __init__(self, inner: torch.nn.Module, times: int):
        super().__init__()
        self.inner = inner
        self.left = times

    def forward(self, input_ids, attention_mask):
        if self.left:
            self.left -= 1
            raise out_of_memory()
        return self.inner(input_ids=input_ids, attention_mask=attention_mask)


def test_a_row_that_runs_out_of_memory_briefly_is_not_dead_lettered(models_dir, metrics):
    handler = handler_for(models_dir, Runtime(device="cpu", precision="fp32"))
    loaded = handler.load_model()
    tokenized = documents(loaded)
    expected = annotate(handler, loaded, tokenized)
    loaded.max_tokens = 1  # one row per call: the very first call is a single row
    loaded.model = OutOfMemoryAtFirst(loaded.model, times=2)
    got = annotate(handler, loaded, tokenized)
    assert not any(isinstance(r, Failure) for r in got)
    assert [r["label"] for r in got] == [r["label"] for r in expected]
    assert metrics.counters["oom_alone_retries"] >= 1


def test_a_row_out_of_memory_beside_other_calls_is_retried_alone_once_they_finish(models_dir, fake_cuda):
    handler = handler_for(models_dir, Runtime(device="cuda", precision="fp32"))
    loaded = handler.load_model()
    a, b = documents(loaded, ["Alice flew to Paris.", "Bob met Carol in Berlin."])
    inner = loaded.model
    order: list[str] = []
    b_running, a_failed, b_may_end = threading.Event(), threading.Event(), threading.Event()

    class Pressure(torch.nn.Module):
        """Thread b's call holds the device until released; thread a's first call runs out of memory."""

        def forward(self, input_ids, attention_mask):
            if threading.current_thread().name == "b":
                order.append("b starts")
                b_running.set()
                b_may_end.wait(timeout=30)
                order.append("b ends")
            elif not a_failed.is_set():
                order.append("a runs out of memory")
                a_failed.set()
                raise out_of_memory()
            else:
                order.append("a retried")
            return inner(input_ids=input_ids, attention_mask=attention_mask)

    loaded.model = Pressure()
    results = {}

    def run(name, doc):
        results[name] = annotate(handler, loaded, [doc])[0]

    threads = {"b": threading.Thread(target=run, args=("b", b), name="b")}
    threads["b"].start()
    assert b_running.wait(timeout=30)
    threads["a"] = threading.Thread(target=run, args=("a", a), name="a")
    threads["a"].start()
    assert a_failed.wait(timeout=30)
    time.sleep(0.3)  # a waits for b's call rather than retrying beside it
    order.append("b released")
    b_may_end.set()
    for thread in threads.values():
        thread.join(timeout=60)
    assert order == ["b starts", "a runs out of memory", "b released", "b ends", "a retried"]
    assert not any(isinstance(r, Failure) for r in results.values())
    assert fake_cuda.emptied >= 2  # after the failure, and again once the device is the retry's alone


@pytest.mark.parametrize(
    "error",
    [
        torch.AcceleratorError("CUDA error: an illegal memory access was encountered"),
        RuntimeError("CUDA error: device-side assert triggered"),
        RuntimeError("CUDA error: CUBLAS_STATUS_EXECUTION_FAILED when calling `cublasSgemm(...)`"),
    ],
    ids=["AcceleratorError", "device-side assert", "cuBLAS"],
)
@pytest.mark.parametrize("n_docs", [1, 6])
def test_an_error_that_leaves_the_device_unusable_fails_the_bundle(models_dir, error, n_docs):
    handler = handler_for(models_dir, Runtime(device="cpu", precision="fp32"))
    loaded = handler.load_model()
    tokenized = documents(loaded)[:n_docs]

    class Broken(torch.nn.Module):
        def forward(self, input_ids, attention_mask):
            raise error

    loaded.model = Broken()
    with pytest.raises(type(error), match=str(error)[:20]):
        annotate(handler, loaded, tokenized)


def test_an_error_of_one_document_still_fails_that_document_alone(models_dir):
    handler = handler_for(models_dir, Runtime(device="cpu", precision="fp32"))
    loaded = handler.load_model()
    tokenized = documents(loaded)
    expected = annotate(handler, loaded, tokenized)
    inner, culprit = loaded.model, int(tokenized[2].ids[0])

    class RefusesOneToken(torch.nn.Module):
        def forward(self, input_ids, attention_mask):
            if (input_ids == culprit).any():
                raise ValueError("this token breaks the model")
            return inner(input_ids=input_ids, attention_mask=attention_mask)

    loaded.model = RefusesOneToken()
    got = annotate(handler, loaded, tokenized)
    failed = [i for i, r in enumerate(got) if isinstance(r, Failure)]
    assert 2 in failed and len(failed) < len(got)
    assert got[2].error == "ValueError" and got[2].stage == "infer"
    for i, r in enumerate(got):
        if i not in failed:
            assert r["label"] == expected[i]["label"]


def test_a_batch_whose_every_document_runs_out_of_memory_fails_the_bundle(models_dir):
    handler = handler_for(models_dir, Runtime(device="cpu", precision="fp32"))
    loaded = handler.load_model()
    tokenized = documents(loaded)
    loaded.model = OutOfMemoryAbove(loaded.model, rows=0)
    with pytest.raises(devices.DeviceUnusable, match="all 6 documents of a batch ran out of device memory"):
        annotate(handler, loaded, tokenized)
    # One document alone that does not fit goes to the dead letter: it may be that document.
    (alone,) = annotate(handler, loaded, tokenized[:1])
    assert isinstance(alone, Failure) and alone.error == "OutOfMemoryError"


def test_a_model_on_cuda_1_is_loaded_run_and_timed_on_cuda_1(models_dir, fake_cuda, metrics, caplog):
    handler = handler_for(models_dir, Runtime(device="cuda:1", precision="fp32"))
    with caplog.at_level(logging.INFO, logger="distilbeam.transforms.tasks.runtime"):
        loaded = handler.load_model()
    assert fake_cuda.set_devices == [1]
    assert "Fake GPU" in caplog.text and "CUDA 13.0" in caplog.text
    tokenized = documents(loaded)
    seen = {}

    def runner_thread():  # a runner thread of its own, whose current device is still cuda:0
        seen["before"] = torch.cuda.current_device()
        seen["results"] = annotate(handler, loaded, tokenized)
        seen["after"] = torch.cuda.current_device()

    thread = threading.Thread(target=runner_thread)
    thread.start()
    thread.join(timeout=60)
    assert (seen["before"], seen["after"]) == (0, 1)
    assert not any(isinstance(r, Failure) for r in seen["results"])
    assert fake_cuda.events and {e.stream.device for e in fake_cuda.events} == {1}
    assert metrics.counters["gpu_busy_ms"] >= 0


def test_busy_time_counts_calls_overlapping_on_one_stream_once(models_dir, fake_cuda, metrics):
    handler = handler_for(models_dir, Runtime(device="cuda", precision="fp32"))
    loaded = handler.load_model()
    tokenized = documents(loaded)
    loaded.max_tokens = 1  # one row per call
    inner = loaded.model

    class Slow(torch.nn.Module):
        """Each call keeps the (fake) device busy for 40 ms; threads' calls overlap on its one stream."""

        def forward(self, input_ids, attention_mask):
            time.sleep(0.04)
            return inner(input_ids=input_ids, attention_mask=attention_mask)

    loaded.model = Slow()
    threads = [threading.Thread(target=annotate, args=(handler, loaded, tokenized)) for _ in range(4)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    wall_ms = 1000 * (time.perf_counter() - started)
    durations = 0.0
    for thread in threads:  # each call records a start and an end event, in the thread that makes it
        calls = [e for e in fake_cuda.events if e.thread == thread.name]
        durations += sum(end.ms - start.ms for start, end in zip(calls[::2], calls[1::2], strict=True))
    assert durations > 1.5 * wall_ms, "the threads' calls overlapped"
    busy = metrics.counters["gpu_busy_ms"]
    assert 0.5 * wall_ms < busy <= wall_ms + 1


def test_busy_clock_counts_each_moment_once():
    clock = devices.BusyClock()
    assert [clock.add(*span) for span in [(0, 10), (5, 15), (20, 25), (0, 30), (12, 14)]] == [10, 5, 5, 10, 0]
    for k in range(200):  # more intervals than it keeps: the oldest fold into the total
        assert clock.add(100 + 10 * k, 105 + 10 * k) == 5
    assert clock.add(100, 105) == 0
    assert clock.add(2100, 2110) == 10


def test_errors_are_told_apart():
    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")
    assert devices.is_out_of_memory(oom) and not devices.is_fatal_device_error(oom)
    cuda_oom = RuntimeError("CUDA error: out of memory")
    assert devices.is_out_of_memory(cuda_oom) and not devices.is_fatal_device_error(cuda_oom)
    assert devices.is_fatal_device_error(torch.AcceleratorError("CUDA error: unspecified launch failure"))
    assert devices.is_fatal_device_error(RuntimeError("CUDA error: an illegal memory access was encountered"))
    for ordinary in (ValueError("bad input"), RuntimeError("shape mismatch"), KeyError("x")):
        assert not devices.is_out_of_memory(ordinary) and not devices.is_fatal_device_error(ordinary)
