"""Ceilings the benchmarks' figures are read against: the machine's matrix-multiply rate at the model's
shapes (what MFU divides by), and the host path's: the step that reads, tokenizes, batches,
post-processes and writes Parquet, in one process, with a model whose forward costs nothing (it returns
logits of the right shape from a buffer made once): the most documents per second a process can feed any
accelerator."""

from __future__ import annotations

import math
import tempfile
import time
import types
from pathlib import Path
from typing import Any

from distilbeam.pipeline.bench.children import run_measure
from distilbeam.pipeline.bench.corpus import ModelShape


def matmul_ceiling(
    shape: ModelShape, rows: int, device: str, repeats: int = 5, seconds: float = 1.0
) -> dict[str, Any]:
    """GFLOP/s of the encoder's own matrix multiplies (fp32 on a CPU; fp16 on a GPU, as distilbeam's
    autocast runs them there) ([rows, dim] x [dim, dim] four times, then
    [rows, dim] x [dim, hidden] and back), best of ``repeats`` runs of about ``seconds`` each. Outputs go
    to preallocated tensors, so only the multiplies are timed."""
    import torch

    dev = torch.device(device)
    dtype = torch.float16 if dev.type == "cuda" else torch.float32
    x = torch.randn(rows, shape.dim, device=dev, dtype=dtype)
    h = torch.randn(rows, shape.hidden, device=dev, dtype=dtype)
    square = torch.randn(shape.dim, shape.dim, device=dev, dtype=dtype)
    up = torch.randn(shape.dim, shape.hidden, device=dev, dtype=dtype)
    down = torch.randn(shape.hidden, shape.dim, device=dev, dtype=dtype)
    flops_per_layer = 2 * rows * (4 * shape.dim * shape.dim + 2 * shape.dim * shape.hidden)

    out_square, out_up = torch.empty_like(x), torch.empty_like(h)

    def layer() -> None:
        for _ in range(4):
            torch.mm(x, square, out=out_square)
        torch.mm(x, up, out=out_up)
        torch.mm(h, down, out=out_square)

    def timed(layers: int) -> float:
        if dev.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(layers):
            layer()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started

    timed(1)
    layers = max(1, math.ceil(seconds / max(timed(1), 1e-6)))  # each run lasts about ``seconds``
    results = [layers * flops_per_layer / timed(layers) / 1e9 for _ in range(repeats)]
    return {
        "gflops": round(max(results), 1),
        "runs": [round(r, 1) for r in results],
        "rows": rows,
        "dtype": str(dtype).removeprefix("torch."),
    }


class NullModel:
    """Stands in for a model: logits of the right shape, sliced from a buffer of random values made once,
    so post-processing sees realistic label mixes while the forward costs nothing."""

    def __init__(self, model: Any, per_token: bool):
        import torch

        self.config = model.config
        self._labels = len(model.config.id2label)
        self._per_token = per_token
        self._buffer = torch.zeros(0)
        self._torch = torch

    def __call__(self, input_ids: Any, attention_mask: Any, **_: Any) -> Any:
        rows, width = input_ids.shape
        need = rows * (width if self._per_token else 1) * self._labels
        if self._buffer.numel() < need:
            seeded = self._torch.Generator().manual_seed(0)
            self._buffer = self._torch.randn(max(need, 2 * self._buffer.numel()), generator=seeded)
        values = self._buffer[:need]
        shape = (rows, width, self._labels) if self._per_token else (rows, self._labels)
        return types.SimpleNamespace(logits=values.view(shape))


def child_host(spec: dict[str, Any]) -> dict[str, Any]:
    """Annotates the shards with ``AnnotateSplitFn`` in this process, no runner, models replaced by
    ``NullModel``: documents per second of everything but the model."""
    from distilbeam.pipeline import runs
    from distilbeam.pipeline.config import from_dict
    from distilbeam.pipeline.plan import prepare, read_settings
    from distilbeam.transforms.annotate import AnnotateSplitFn
    from distilbeam.transforms.read import Split
    from distilbeam.transforms.tasks.base import TaskHandler
    from distilbeam.transforms.write import WriteSettings

    load = TaskHandler.load_model

    def null_load(handler: TaskHandler) -> Any:
        loaded = load(handler)
        loaded.model = NullModel(loaded.model, per_token=handler.kind_name() == "ner")
        return loaded

    TaskHandler.load_model = null_load  # type: ignore[method-assign]
    tasks = {
        "sentiment": {"kind": "classify", "model": spec["classifier"]},
        "entities": {"kind": "ner", "model": spec["ner"]},
    }
    out = Path(tempfile.mkdtemp(prefix="distilbeam-host-"))
    cfg = from_dict(
        {
            "input": {"paths": [spec["shards"] + "/*.jsonl"]},
            "tasks": {name: tasks[name] for name in spec["tasks"]},
            "output": {"path": str(out)},
            "runtime": {"torch_threads": 1},
        }
    )
    plan = runs.choose_shards(prepare(cfg), "host", False, None, read_output=False)
    write = WriteSettings(
        cfg.output.location, plan.schema, False, "zstd", run=plan.run, tasks=tuple(cfg.tasks)
    )
    fn = AnnotateSplitFn(plan.groups, read_settings(cfg), write, cfg.batching.sort_window)
    fn.setup()
    fn._models()  # loaded before the clock starts: this measures the path, not the load
    started, cpu = time.perf_counter(), time.process_time()
    docs = sum(r.stats.docs_read for s in plan.shards for r in fn.process(Split(s.uri, s.format)))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    fn.teardown()
    return {
        "docs": docs,
        "seconds": round(seconds, 2),
        "cpu_s": round(cpu, 2),
        "docs_per_s": round(docs / seconds),
    }


def host_ceiling(
    work: Path, name: str, tasks: list[str], shards: Path, models: dict[str, Path]
) -> dict[str, Any]:
    """``child_host`` in a process of its own, on ``shards`` with ``tasks`` of ``models``."""
    child, got = run_measure(
        "host",
        work,
        name,
        tree_memory=True,
        tasks=tasks,
        shards=str(shards),
        classifier=str(models["classifier"]),
        ner=str(models["ner"]),
    )
    return {**child.record(), **(got or {})}
