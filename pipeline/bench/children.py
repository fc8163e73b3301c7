"""Every run of a benchmark is a fresh process of its own, one after another. This module starts them and
measures them whole: wall time, the kernel's CPU time and peak resident set (``wait4``), or the peak of the
whole process tree's resident sets, sampled. The processes the benchmark writes itself (an inference loop,
the host-path ceiling) are ``python -m distilbeam.pipeline.bench _child SPEC``: the spec says what to
measure, and the child writes its figures to the spec's ``result`` file."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


@dataclasses.dataclass
class ChildRun:
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    returncode: int
    started: float  # time.time() at spawn, to compare with the times of files the child wrote
    log_tail: str

    def record(self) -> dict[str, Any]:
        """The run as ``--scale`` reports it: the log's tail only when it failed."""
        out: dict[str, Any] = {
            "wall_s": round(self.wall_s, 2),
            "cpu_s": round(self.cpu_s, 2),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "returncode": self.returncode,
        }
        if self.returncode != 0:
            out["log_tail"] = self.log_tail[-1500:]
        return out


def run_child(argv: list[str], log_path: Path, tree_memory: bool = False) -> ChildRun:
    """Runs a command to its end, its output to ``log_path``. Peak memory: with ``tree_memory``, the
    largest sum over the process and its descendants; otherwise the kernel's largest single process among
    them (for a Beam run with worker processes, the largest worker)."""
    with open(log_path, "wb") as log:
        started, clock = time.time(), time.perf_counter()
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        memory = TreeMemory(proc.pid) if tree_memory else None
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - clock
    proc.returncode = os.waitstatus_to_exitcode(status)
    return ChildRun(
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        peak_rss_mb=memory.stop() if memory else usage.ru_maxrss / 1024,  # KiB on Linux
        returncode=proc.returncode,
        started=started,
        log_tail=log_path.read_text(encoding="utf-8", errors="replace")[-3000:],
    )


def run_measure(
    what: str, work: Path, name: str, tree_memory: bool = False, **spec: Any
) -> tuple[ChildRun, dict[str, Any] | None]:
    """Runs ``_child`` on a spec of ``what`` and ``spec``; the child's figures, or None when it failed."""
    result = work / f"{name}.result.json"
    spec_path = work / f"{name}.spec.json"
    spec_path.write_text(json.dumps({"what": what, **spec, "result": str(result)}, default=str))
    argv = [sys.executable, "-m", "distilbeam.pipeline.bench", "_child", str(spec_path)]
    child = run_child(argv, work / f"{name}.log", tree_memory)
    return child, json.loads(result.read_text()) if child.returncode == 0 else None


def child_main(spec_path: str) -> int:
    """The child's side of ``run_measure``."""
    spec = json.loads(Path(spec_path).read_text())
    measure: Callable[[dict[str, Any]], dict[str, Any]]
    if spec["what"] == "host":
        from distilbeam.pipeline.bench.ceiling import child_host as measure
    elif spec["what"] == "transformers":
        from distilbeam.pipeline.bench.competitors import child_transformers as measure
    else:
        from distilbeam.pipeline.bench.competitors import child_beam_stock as measure
    Path(spec["result"]).write_text(json.dumps(measure(spec)))
    return 0


class TreeMemory:
    """The largest sum of resident sets of a process and its descendants, sampled every ``interval``."""

    def __init__(self, pid: int, interval: float = 0.1):
        import psutil

        self._root = psutil.Process(pid)
        self._interval = interval
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        import psutil

        while not self._stop.wait(self._interval):
            try:
                processes = [self._root, *self._root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            total = 0
            for p in processes:
                with contextlib.suppress(psutil.NoSuchProcess):
                    total += p.memory_info().rss
            self.peak_mb = max(self.peak_mb, total / 2**20)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return round(self.peak_mb, 1)


def progress() -> Callable[[str], None]:
    """A function that prints a message to stderr with the seconds since this call."""
    started = time.perf_counter()

    def say(message: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {message}", file=sys.stderr, flush=True)

    return say
