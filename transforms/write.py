"""Writing enriched Parquet and the dead letter as documents are annotated, committing each shard as soon as
it is complete.

A split's rows stream into its Parquet file in row groups, in reading order (so by offset), under a temporary
name; its dead-letter rows likewise into a file beside it. When the split ends, its records read are checked
against rows written plus rows failed (no document disappears unnoticed), the files are put in place, and
the shard is committed to the manifest: at once for a shard read whole, by the last of its splits to finish
otherwise. Files are named from the shard (and the split), so annotating a shard again replaces its files.
What goes downstream is one small ``SplitResult`` per split, added up into the run's summary and report
(``summary``). The files' names are ``layout``'s."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import IO, Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics

from distilbeam.transforms import report, state
from distilbeam.transforms.layout import TEMP_SUFFIX, output_location, shard_files
from distilbeam.transforms.read import Split
from distilbeam.transforms.schema import (
    DEAD_LETTER_SCHEMA,
    Annotated,
    Failure,
    ShardStats,
    dead_letter_row,
    output_row,
    output_table,
)
from distilbeam.transforms.storage import Location

log = logging.getLogger(__name__)
ROW_GROUP_ROWS = 16384  # rows buffered before a row group is written


@dataclasses.dataclass(frozen=True)
class WriteSettings:
    output: Location  # the output folder
    schema: pa.Schema  # with the key-value metadata every file carries
    keep_text: bool
    compression: str
    # The run this write belongs to, whose manifest entries commit each shard (see transforms/state.py);
    # and the task columns the run report profiles.
    run: state.RunSettings | None = None
    tasks: tuple[str, ...] = ()


def split_writable(
    items: list[Annotated], schema: pa.Schema, keep_text: bool
) -> tuple[pa.Table, list[Failure]]:
    """The rows that convert to the output schema, as a table, and a write-stage failure for each one that
    does not."""
    try:
        return output_table(items, schema), []
    except (pa.ArrowException, TypeError, ValueError):
        pass
    good, bad = [], []
    for item in items:
        row = output_row(item, keep_text)
        try:
            pa.Table.from_pylist([row], schema=schema)
            good.append(row)
        except (pa.ArrowException, TypeError, ValueError) as exc:
            message = f"result does not fit the output schema: {exc}"
            bad.append(Failure.of_document("write", exc, message, item.doc))
    return pa.Table.from_pylist(good, schema=schema), bad


@dataclasses.dataclass(frozen=True)
class SplitResult:
    """What one split sends downstream: its counts, the report's statistics of its rows, and documents
    finished per wall-clock second. Results add up to the run's."""

    stats: ShardStats = dataclasses.field(default_factory=ShardStats)
    profile: report.Profile = dataclasses.field(default_factory=report.Profile)
    timeline: Mapping[int, int] = dataclasses.field(default_factory=dict)

    def __add__(self, other: SplitResult) -> SplitResult:
        return SplitResult(
            self.stats + other.stats,
            self.profile.merge(other.profile),
            report.merge_timelines([self.timeline, other.timeline]),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "stats": dataclasses.asdict(self.stats),
            "profile": self.profile.to_json(),
            "timeline": {str(k): v for k, v in self.timeline.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SplitResult:
        return cls(
            ShardStats(**data["stats"]),
            report.Profile.from_json(data["profile"]),
            {int(k): v for k, v in data["timeline"].items()},
        )


class SplitResultCoder(beam.coders.Coder):
    """A split's result as JSON: small, readable in a runner's logs, and no pickle between stages."""

    def encode(self, result: SplitResult) -> bytes:
        return json.dumps(result.to_json(), sort_keys=True).encode()

    def decode(self, encoded: bytes) -> SplitResult:
        return SplitResult.from_json(json.loads(encoded))

    def is_deterministic(self) -> bool:
        return True


beam.coders.registry.register_coder(SplitResult, SplitResultCoder)


def total(results: Iterable[SplitResult]) -> SplitResult:
    out = SplitResult()
    for result in results:
        out = out + result
    return out


class AddUpResults(beam.CombineFn):
    """Split results -> the run's, through Beam's combiner lifting (partial sums per worker)."""

    def create_accumulator(self) -> SplitResult:
        return SplitResult()

    def add_input(self, accumulator: SplitResult, result: SplitResult) -> SplitResult:
        return accumulator + result

    def merge_accumulators(self, accumulators: Iterable[SplitResult]) -> SplitResult:
        return total(accumulators)

    def extract_output(self, accumulator: SplitResult) -> SplitResult:
        return accumulator

    def get_accumulator_coder(self) -> beam.coders.Coder:
        return SplitResultCoder()


class SplitWriter:
    """Streams one split's rows and dead-letter rows into temporary files; ``commit`` puts them in place and
    commits the shard when it is complete. Used as a context manager, so temporary files of a split that
    fails are removed."""

    def __init__(self, settings: WriteSettings, split: Split):
        self._s = settings
        self._split = split
        partition = settings.run.partition if settings.run else ""
        self.data_file, self.errors_file = shard_files(split.uri, partition, split)
        self._stack = contextlib.ExitStack()
        self._data: pq.ParquetWriter | None = None
        self._data_handle: IO[bytes] | None = None
        self._errors: pq.ParquetWriter | None = None
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._id_hashes: list[np.ndarray] = []
        self._read = self._written = self._failed = self._tokens = 0
        self._by_stage: collections.Counter[str] = collections.Counter()
        self._profile = report.Profile()
        self._timeline: dict[int, int] = {}

    def __enter__(self) -> SplitWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        """After ``commit`` there is nothing left to do; a split that failed leaves no file behind."""
        for writer in (self._data, self._errors):
            if writer is not None and exc[0] is not None:
                with contextlib.suppress(Exception):
                    writer.close()
        self._stack.__exit__(*exc)

    def write(
        self,
        items: Sequence[Annotated],
        failures: Sequence[Failure],
        records: int,
        started: float | None = None,
    ) -> None:
        """One chunk of the split, in reading order: the ``records`` read, as annotated documents and
        failures; ``started``, when its reading began (time.time()), spreads them over the seconds the chunk
        took in the throughput timeline."""
        s = self._s
        table, unwritable = split_writable(list(items), s.schema, s.keep_text)
        failures = sorted([*failures, *unwritable], key=lambda f: (f.offset, f.stage, f.id or ""))
        self._read += records
        if table.num_rows:
            self._append(table)
        if failures:
            self._write_failures(failures)
        self._written += table.num_rows
        self._failed += len(failures)
        tokens = table.column("n_tokens").to_numpy()
        self._tokens += int(tokens.sum())
        self._profile = self._profile.merge(report.profile_table(table, failures, s.tasks))
        finished(self._timeline, table.num_rows + len(failures), started, time.time())

    def _append(self, table: pa.Table) -> None:
        ids = table.column("id").to_pylist()
        self._id_hashes.append(np.fromiter((hash(i) for i in ids), dtype=np.int64, count=len(ids)))
        self._pending.append(table)
        self._pending_rows += table.num_rows
        if self._pending_rows >= ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        if self._data is None:
            self._data_handle = self._stack.enter_context(self._atomic(self.data_file))
            self._data = pq.ParquetWriter(self._data_handle, self._s.schema, compression=self._compression)
        self._data.write_table(pa.concat_tables(self._pending))
        self._pending, self._pending_rows = [], 0

    def _write_failures(self, failures: list[Failure]) -> None:
        if self._errors is None:
            handle = self._stack.enter_context(self._atomic(self.errors_file))
            self._errors = pq.ParquetWriter(handle, DEAD_LETTER_SCHEMA, compression=self._compression)
        rows = [dead_letter_row(f) for f in failures]
        self._errors.write_table(pa.Table.from_pylist(rows, schema=DEAD_LETTER_SCHEMA))
        for failure in failures:
            self._by_stage[failure.stage] += 1

    @property
    def _compression(self) -> str | None:
        return None if self._s.compression == "none" else self._s.compression

    def _atomic(self, relative: str) -> Any:
        return output_location(self._s.output, relative).atomic_file()

    def commit(self) -> SplitResult:
        """Puts the split's files in place (an empty split still gets a data file with the schema), then
        commits the shard if the counts add up and every split of it is in place."""
        s = self._s
        self._flush()
        if self._data is None:
            self._data_handle = self._stack.enter_context(self._atomic(self.data_file))
            self._data = pq.ParquetWriter(self._data_handle, s.schema, compression=self._compression)
        self._close_data()
        errors = output_location(s.output, self.errors_file)
        if self._errors is not None:
            self._errors.close()
        self._stack.close()  # both files in place: the data file first
        if self._errors is None:  # a dead letter left by an earlier run of this split would be stale
            errors.remove()
        self._count()
        if self._read != self._written + self._failed:
            log.error(
                "shard %s: %d records read but %d written + %d failed",
                self._split.uri,
                self._read,
                self._written,
                self._failed,
            )
            Metrics.counter("distilbeam", "docs_unaccounted").inc(
                abs(self._read - self._written - self._failed)
            )
        files = (self.data_file, self.errors_file if self._errors is not None else None)
        counts = (self._read, self._written, self._failed, self._tokens)
        if s.run is not None and counts[0] == counts[1] + counts[2]:  # else the shard stays uncommitted
            state.commit_split(s.output, s.run, self._split, files, counts)
        stats = ShardStats(int(self._split.index == 0), *counts, dict(sorted(self._by_stage.items())))
        return SplitResult(stats, self._profile, self._timeline)

    def _close_data(self) -> None:
        """Writes the data file's footer (until then the temporary file is torn), then marks repeated ids."""
        self._data.close()
        self._mark_duplicate_ids()

    def _count(self) -> None:
        Metrics.counter("distilbeam", "docs_written").inc(self._written)
        Metrics.counter("distilbeam", "docs_failed").inc(self._failed)
        Metrics.counter("distilbeam", "tokens").inc(self._tokens)

    def _mark_duplicate_ids(self) -> None:
        """Rows of one split that share an id: each stays (every input record is one row, told apart by its
        offset) and each gets the ``duplicate_id`` warning, none of them being more the original than
        another. Ids are remembered as hashes while rows stream out; in the rare split that has a repeated
        one, the file is rewritten once, a row group at a time, with the warning added."""
        hashes = np.concatenate(self._id_hashes) if self._id_hashes else np.zeros(0, np.int64)
        unique, counts = np.unique(hashes, return_counts=True)
        repeated = set(unique[counts > 1].tolist())
        if not repeated:
            return
        self._data_handle.flush()
        path = self._data_handle.name
        parquet = pq.ParquetFile(path)
        ids = collections.Counter(
            i for i in parquet.read(columns=["id"]).column("id").to_pylist() if hash(i) in repeated
        )
        duplicated = {i for i, n in ids.items() if n > 1}
        if not duplicated:
            return  # hashes alike, ids not
        with tempfile.NamedTemporaryFile(dir=os.path.dirname(path), suffix=TEMP_SUFFIX) as patched:
            with pq.ParquetWriter(patched.name, self._s.schema, compression=self._compression) as out:
                for g in range(parquet.num_row_groups):
                    out.write_table(_with_duplicate_warning(parquet.read_row_group(g), duplicated))
            parquet.close()
            self._data_handle.seek(0)
            self._data_handle.truncate()
            with open(patched.name, "rb") as f:
                shutil.copyfileobj(f, self._data_handle, 1 << 20)
        self._data_handle.flush()


def finished(timeline: dict[int, int], n: int, started: float | None, now: float) -> None:
    """Adds ``n`` documents finished between ``started`` and ``now`` to a per-second timeline, spread evenly
    over those seconds (all in ``now``'s without a start): a chunk's documents come out together, but were
    read, tokenized and run through the models over the whole span."""
    first, last = int(started if started is not None else now), int(now)
    seconds = last - first + 1
    share, extra = divmod(n, seconds)
    for k in range(seconds):
        count = share + (1 if k < extra else 0)
        if count:
            timeline[first + k] = timeline.get(first + k, 0) + count


def _with_duplicate_warning(table: pa.Table, duplicated: set[str]) -> pa.Table:
    from distilbeam.transforms.schema import WARNINGS

    ids = table.column("id").to_pylist()
    warnings = table.column("warnings").to_pylist()
    order = list(WARNINGS)
    fixed = [
        [w for w in order if w in {*found, "duplicate_id"}] if i in duplicated else found
        for i, found in zip(ids, warnings, strict=True)
    ]
    index = table.schema.get_field_index("warnings")
    return table.set_column(index, table.schema.field(index), pa.array(fixed, pa.list_(pa.string())))
