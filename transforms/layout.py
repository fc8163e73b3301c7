"""The output folder's layout: every name a run gives to what it writes under ``output.path``, the test of
which names found there are distilbeam's, and what ``--force`` removes.

    part-<shard>[-<split>].parquet             a shard's rows (one file per split of a split shard)
    run_date=YYYY-MM-DD/part-...               the same, in the run's date partition (partition_by)
    _errors/[run_date=YYYY-MM-DD/]part-...     the dead letter beside each part file
    _SUMMARY.json  _REPORT.md  _REPORT.html    the latest run that changed the output: summary, report
    _state/shards/<shard>.json                 the manifest: one entry per committed shard
    _state/splits/<shard>/<split>.json         the splits of a split shard done so far, until it commits
    _state/runs/<run id>/summary.json, report.md, report.html     every run's own record
    _state/lock.json                           the lease of the run writing the output
    .<name>.<32 hex digits>.tmp                a file being written (``Location.atomic_file`` names it)
    _distilbeam_write_check-<hex>              the probe that the folder is writable (``storage``)

``<shard>`` is a hash of the shard's URI, so annotating a shard again replaces its files in place, and
``<split>`` its split's number, five digits."""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Any

from distilbeam.transforms import SetupError, storage
from distilbeam.transforms.storage import Location

if TYPE_CHECKING:
    from distilbeam.transforms.read import Split

ERRORS_DIR = "_errors"  # the dead letter's folder
SUMMARY_FILE = "_SUMMARY.json"
REPORT_MD = "_REPORT.md"
REPORT_HTML = "_REPORT.html"
STATE_DIR = "_state"
SHARDS_DIR = "shards"  # the manifest, in STATE_DIR
SPLITS_DIR = "splits"  # per split of a split shard, until the shard is committed
RUNS_DIR = "runs"  # one folder per run
RUN_SUMMARY = "summary.json"  # in a run's folder
RUN_REPORT_MD = "report.md"
RUN_REPORT_HTML = "report.html"
LOCK_FILE = "lock.json"
PARTITION_PREFIX = "run_date="
TEMP_SUFFIX = ".tmp"

_PART = r"part-[0-9a-f]{16}(?:-[0-9]{5})?\.parquet"
_PART_FILE = re.compile(rf"^(?:{ERRORS_DIR}/)?(?:{PARTITION_PREFIX}[^/]+/)?{_PART}$")
_TEMP_FILE = re.compile(r"^\..+\.[0-9a-f]{32}\.tmp$")  # Location.atomic_file's temporary names


# -- names ---------------------------------------------------------------------------------------------


def shard_hash(source: str) -> str:
    """The 16 hex digits that name a shard's files and its manifest entry."""
    return hashlib.blake2b(source.encode(), digest_size=8).hexdigest()


def shard_file_name(source: str, split: Split | None = None) -> str:
    """``part-<hash of the shard>.parquet``; a split shard's parts add ``-<split number>``."""
    name = f"part-{shard_hash(source)}"
    if split is not None and not split.whole:
        name += f"-{split.index:05d}"
    return f"{name}.parquet"


def shard_files(source: str, partition: str = "", split: Split | None = None) -> tuple[str, str]:
    """A shard's (or split's) output and dead-letter files, relative to output.path: named from the shard
    alone (in the run's date partition, if any), so annotating a shard again replaces its files in place."""
    name = shard_file_name(source, split)
    folder = f"{partition}/" if partition else ""
    return f"{folder}{name}", f"{ERRORS_DIR}/{folder}{name}"


def partition_folder(run_date: str) -> str:
    """The folder a run partitioned by run date writes its files to."""
    return f"{PARTITION_PREFIX}{run_date}"


def entry_name(source: str) -> str:
    """A shard's manifest entry, in ``_state/shards/``."""
    return f"{shard_hash(source)}.json"


def split_record_name(index: int) -> str:
    """A finished split's record, in its shard's folder under ``_state/splits/``."""
    return f"{index:05d}.json"


def state_location(out: Location, *parts: str) -> Location:
    """A place under the output's ``_state/`` folder."""
    return out.join(STATE_DIR, *parts)


def output_location(out: Location, relative: str) -> Location:
    """A file named relative to the output (as manifest entries name them)."""
    return out.join(*relative.split("/"))


def split_records_location(out: Location, source: str) -> Location:
    """The folder of a split shard's split records."""
    return state_location(out, SPLITS_DIR, shard_hash(source))


def run_record_location(out: Location, run_id: str, *name: str) -> Location:
    """A run's folder under ``_state/runs/``, or a file in it."""
    return state_location(out, RUNS_DIR, run_id, *name)


def lock_location(out: Location) -> Location:
    return state_location(out, LOCK_FILE)


def lock_aside_name(lock_path: str, token: str) -> str:
    """Where a stale lock is moved while a run takes it over (local disks)."""
    return f"{lock_path}.{token}.stale"


# -- which names are distilbeam's ----------------------------------------------------------------------


def is_part_file(relative: str) -> bool:
    """An output or dead-letter file exactly as distilbeam names it, by its path relative to the output."""
    return bool(_PART_FILE.match(relative))


def is_temporary(name: str) -> bool:
    """A file being written, or left by a write that died; never the lock's own renewal."""
    return bool(_TEMP_FILE.match(name)) and not name.startswith(f".{LOCK_FILE}.")


def is_partition(name: str) -> bool:
    return name.startswith(PARTITION_PREFIX)


def is_ours(entry: str) -> bool:
    """Whether an entry at the top of an output folder is one that distilbeam writes. Looser than
    ``is_part_file`` (any ``part-*.parquet``): it decides only which folders a run resumes or replaces,
    not which files a crashed run's clean-up removes."""
    name = _base_name(entry)
    return (
        _is_part_name(name)
        or name in (SUMMARY_FILE, REPORT_MD, REPORT_HTML, ERRORS_DIR, STATE_DIR)
        or is_partition(name)
        or (name.startswith(".") and name.endswith(TEMP_SUFFIX))
        or name.startswith(storage.WRITE_CHECK_PREFIX)  # left only if the store let us write, not delete
    )


def _is_part_name(name: str) -> bool:
    return name.startswith("part-") and name.endswith(".parquet")


def _base_name(entry: str) -> str:
    return entry.rstrip("/").rsplit("/", 1)[-1]


def only_lock(fs: Any, entry: str) -> bool:
    """The _state folder holding nothing but the lock (this run's) and run records: not an earlier output."""
    if _base_name(entry) != STATE_DIR:
        return False
    names = {_base_name(n) for n in fs.ls(entry, detail=False)}
    return names <= {LOCK_FILE, RUNS_DIR}


# -- what a run accepts in its output folder, and what --force removes ----------------------------------


def check_output_folder(out: Location, writable: bool = False) -> None:
    """output.path is a folder or nothing yet; with ``writable``, also one this run can write in, so that a
    missing bucket or a denied write ends the run here rather than after the work is done."""
    fs, root = out.filesystem()
    try:
        if out.exists() and not _is_dir(fs, root, out.url):
            raise SetupError(f"output.path: {out.url} exists and is not a directory")
        if writable:
            out.check_writable()
    except OSError as exc:
        raise SetupError(f"output.path: {exc}") from None


def _is_dir(fs: Any, root: str, path: str) -> bool:
    return storage.retrying("look up", path, lambda: fs.isdir(root))


def prepare_output(out: Location, force: bool, mode: str = "overwrite") -> None:
    """Refuses to mix a run's files with an earlier run's; with ``force``, removes the earlier outputs
    (and only those: files distilbeam did not write stay where they are). In incremental mode a folder
    holding only distilbeam's files is expected (an earlier run's, or an interrupted one's); a folder
    with anything else in it is refused the same way, and --force starts it over."""
    fs, root = out.filesystem()
    if not fs.exists(root):
        return
    check_output_folder(out)
    entries = [e for e in fs.ls(root, detail=False) if not only_lock(fs, e)]
    if not entries:
        return
    if mode == "incremental" and not force and all(is_ours(e) for e in entries):
        return
    if not force:
        raise SetupError(
            f"output.path: {out.url} is not empty; choose another path, or pass --force to replace "
            "the distilbeam outputs in it"
        )
    for entry in entries:
        _remove_earlier_output(out, _base_name(entry))
    fs.invalidate_cache()


def _remove_earlier_output(out: Location, name: str) -> None:
    """What --force removes of one top-level entry: distilbeam's files and folders, the manifest (the
    earlier runs' records stay), nothing else."""
    if (
        _is_part_name(name)
        or name in (SUMMARY_FILE, REPORT_MD, REPORT_HTML)
        or name.startswith(storage.WRITE_CHECK_PREFIX)
    ):
        out.join(name).remove()
    elif name == ERRORS_DIR or is_partition(name):
        out.join(name).remove(recursive=True)
    elif name == STATE_DIR:
        state_location(out, SHARDS_DIR).remove(recursive=True)
