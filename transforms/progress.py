"""Watching a run: a progress line (documents done, rate, ETA from the shard sizes) printed by the launcher
on local runs, from running totals that workers leave in small files in a folder the launcher watches
(``ProgressFile``, ``ProgressLine``). The run never depends on them: a file that cannot be written or read
is skipped."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from typing import IO

from distilbeam.transforms.report import clock

log = logging.getLogger(__name__)
WRITE_EVERY_SECONDS = 0.5


class ProgressFile:
    """A worker's running totals for the progress line: documents finished, and records and bytes of the
    splits it has finished reading. Saved at most every ``WRITE_EVERY_SECONDS`` to a file of its own in the
    folder the launcher watches; without a folder (a remote runner) it does nothing."""

    def __init__(self, progress_dir: str | None):
        self._file = os.path.join(progress_dir, f"{uuid.uuid4().hex}.json") if progress_dir else None
        self._totals = {"done": 0, "read": 0, "bytes": 0}
        self._saved_at = 0.0

    def add(self, **counts: int) -> None:
        for key, n in counts.items():
            self._totals[key] += n
        if self._file and time.monotonic() - self._saved_at >= WRITE_EVERY_SECONDS:
            self.save()

    def save(self) -> None:
        if not self._file:
            return
        self._saved_at = time.monotonic()
        try:
            tmp = f"{self._file}.tmp"
            with open(tmp, "w") as f:
                f.write(json.dumps(self._totals))
            os.replace(tmp, self._file)
        except OSError as exc:  # progress is a courtesy: never fail the run over it
            log.debug("progress file %s not written: %s", self._file, exc)
            self._file = None


def read_totals(progress_dir: str) -> dict[str, int]:
    """Sums the running totals every worker left in ``progress_dir``."""
    totals = {"done": 0, "read": 0, "bytes": 0}
    try:
        names = [n for n in os.listdir(progress_dir) if n.endswith(".json")]
    except OSError:
        return totals
    for name in names:
        try:
            with open(os.path.join(progress_dir, name)) as f:
                record = json.load(f)
        except (OSError, ValueError):
            continue
        for key in totals:
            totals[key] += int(record.get(key, 0))
    return totals


def progress_text(totals: Mapping[str, int], total_bytes: int, elapsed: float) -> str:
    """'1,234 / ~5,000 documents (25%), 41.2 docs/s, ETA 1m31s'. The total is estimated from the shards
    read so far (records per byte, times the bytes of all shards), exact once every shard is read."""
    done, read, read_bytes = totals["done"], totals["read"], totals["bytes"]
    rate = done / elapsed if elapsed > 0 else 0.0
    if read_bytes and total_bytes:
        exact = read_bytes >= total_bytes
        expected = max(read if exact else round(read * total_bytes / read_bytes), done)
        share = f" ({100 * done / expected:.0f}%)" if expected else ""
        text = f"{done:,} / {'' if exact else '~'}{expected:,} documents{share}, {rate:,.1f} docs/s"
        if rate > 0 and expected > done:
            text += f", ETA {clock((expected - done) / rate)}"
        return text
    return f"{done:,} documents, {rate:,.1f} docs/s"


class ProgressLine:
    """A launcher thread that prints the run's progress: on a terminal, one line rewritten every second;
    otherwise (logs, cron mail) a line every ``interval`` seconds. Rate and ETA count from the first
    finished document, so model loading does not drag the rate down."""

    def __init__(
        self,
        progress_dir: str,
        total_bytes: int,
        stream: IO[str] | None = None,
        interval: float | None = None,
    ):
        self._dir = progress_dir
        self._total_bytes = total_bytes
        self._stream = stream or sys.stderr
        self._tty = bool(getattr(self._stream, "isatty", lambda: False)())
        self._interval = interval or (1.0 if self._tty else 30.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="distilbeam-progress", daemon=True)
        self._first_done_at: float | None = None
        self._started_at = time.monotonic()
        self._printed_at = self._started_at  # the first line comes one interval in
        self._last = ""

    def start(self) -> ProgressLine:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self._show(final=True)
        except Exception as exc:
            log.debug("progress line failed: %s", exc)

    def _loop(self) -> None:
        while not self._stop.wait(min(1.0, self._interval)):
            try:
                self._show(final=False)
            except Exception as exc:  # never let the display break the run
                log.debug("progress line failed: %s", exc)

    def _show(self, final: bool) -> None:
        totals = read_totals(self._dir)
        now = time.monotonic()
        if totals["done"] and self._first_done_at is None:
            self._first_done_at = now
        if not final and (not totals["done"] or now - self._printed_at < self._interval):
            return
        elapsed = now - self._first_done_at if self._first_done_at is not None else 0.0
        if final and elapsed < 1.0:  # every document finished between two looks: rate over the whole run
            elapsed = now - self._started_at
        text = "distilbeam: progress: " + progress_text(totals, self._total_bytes, elapsed)
        if text == self._last and not final:
            return
        self._last = text
        self._printed_at = now
        if self._tty:
            self._stream.write("\r" + text.ljust(100) + ("\n" if final else ""))
        else:
            self._stream.write(text + "\n")
        self._stream.flush()
