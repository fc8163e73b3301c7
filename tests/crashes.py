"""Crash injection for the crash-safety tests: the ``distilbeam`` command run in a child process that kills
itself with SIGKILL the Nth time the run reaches a named point, exactly where a real crash would hurt.

    python -m tests.crashes POINT[:N] run --config FILE

wraps the production step at POINT, then runs ``distilbeam.pipeline.cli.main`` in the same process. The
wrapped steps run in this process only when the DirectRunner runs the pipeline in process (its default
``in_memory`` mode, or ``direct_num_workers: 1``), as the crash tests' configs do. The points:

    annotate        a chunk of documents annotated, before it is written (N counts documents)
    write_data      a split's row groups written, its footer not: a torn temporary data file
    after_data      a split's files in place, not yet recorded in the manifest
    after_errors    the same, for a split with a dead letter only
    after_entry     a shard's manifest entry written, its earlier files not yet removed
    before_summary  every shard committed, the run's summary and report not yet written
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

from tests.conftest import REPO

POINTS = ("annotate", "write_data", "after_data", "after_errors", "after_entry", "before_summary")


class Countdown:
    """Kills this process once ``n`` passages (or documents) have been counted."""

    def __init__(self, n: int):
        self._left = n
        self._guard = threading.Lock()  # a local run's worker threads pass the same point

    def count(self, passages: int = 1) -> None:
        with self._guard:
            self._left -= passages
            if self._left <= 0:
                os.kill(os.getpid(), signal.SIGKILL)


def _die_before(owner: Any, name: str, countdown: Countdown, counts: Callable[..., int]) -> None:
    """Replaces ``owner.name`` with a function that counts ``counts(*args)`` passages, then calls it."""
    original = getattr(owner, name)

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        countdown.count(counts(*args, **kwargs))
        return original(*args, **kwargs)

    setattr(owner, name, wrapper)


def _once(*args: Any, **kwargs: Any) -> int:
    return 1


def _records(writer: Any, items: Any, failures: Any, records: int, started: Any = None) -> int:
    """``SplitWriter.write``'s arguments: the records of the chunk."""
    return records


def _with_dead_letter(path: str, run: Any, split: Any, files: tuple[str, str | None], *rest: Any) -> int:
    """``state.commit_split``'s arguments: one passage if the split has a dead-letter file."""
    return int(files[1] is not None)


def inject(point: str) -> None:
    """Arms ``point`` or ``point:N`` (its Nth passage; the first without N) in this process."""
    from distilbeam.transforms import state, summary, write

    name, _, nth = point.partition(":")
    countdown = Countdown(int(nth or 1))
    if name == "annotate":  # the chunk's records, annotated or dead-lettered, before they are written
        _die_before(write.SplitWriter, "write", countdown, _records)
    elif name == "write_data":
        _die_before(write.SplitWriter, "_close_data", countdown, _once)
    elif name == "after_data":
        _die_before(state, "commit_split", countdown, _once)
    elif name == "after_errors":
        _die_before(state, "commit_split", countdown, _with_dead_letter)
    elif name == "after_entry":
        original = state.write_entry

        def write_entry(*args: Any, **kwargs: Any) -> None:
            original(*args, **kwargs)
            countdown.count()

        state.write_entry = write_entry
    elif name == "before_summary":
        original_process = summary.WriteRunReportFn.process

        def process(self: Any, result: Any) -> Any:  # Beam reads the DoFn's signature: keep it
            countdown.count()
            yield from original_process(self, result)

        summary.WriteRunReportFn.process = process
    else:
        raise ValueError(f"unknown crash point {name!r}; known: {', '.join(POINTS)}")


def run_crashing(point: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Runs ``distilbeam *args`` from this source tree in a child process armed to crash at ``point``."""
    return subprocess.run(
        [sys.executable, "-m", "tests.crashes", point, *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def main(argv: list[str]) -> int:
    from distilbeam.pipeline import cli

    inject(argv[0])
    return cli.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
