"""What an output directory remembers between runs, so that a scheduled run annotates only what is new and a
crashed run can be re-run safely.

``<output.path>/_state/shards/<hash of the shard URI>.json`` holds one manifest entry per annotated input
shard: its URI, size and content identity when it was read, the hash of the settings that shape its rows,
where its output and dead-letter files are, and its counts. An entry is written after the shard's files are
in place, so an entry always points at complete files; a shard without a current entry is simply annotated
again. Here too: choosing which shards a run annotates, cleaning up after a crashed run, and committing a
shard (at once, or once every split of it is in). The folder's names are ``layout``'s; the lock that keeps
two runs from writing the same output at once is ``lock``'s."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import posixpath
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from fsspec.implementations.local import LocalFileSystem

from distilbeam.transforms import SetupError, layout, storage
from distilbeam.transforms.layout import SHARDS_DIR, SPLITS_DIR, entry_name, output_location, state_location
from distilbeam.transforms.storage import Location

# -- shards and their identity -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ShardIdentity:
    """What a store says about a shard without reading it: size and a content identity."""

    uri: str
    size: int
    identity: str


def content_identity(info: Mapping[str, Any]) -> str:
    """The cheapest identity the store offers in a listing: GCS generation, an S3/HTTP ETag, a content hash
    when one is listed, else modification time and size (local files). Anything that rewrites the object
    changes it; it may change without the content changing (a touched file), which only costs a re-run."""
    for key in ("generation", "ETag", "etag", "md5Hash", "crc32c", "sha256"):
        value = info.get(key)
        if value not in (None, ""):
            return f"{key}:{str(value).strip(chr(34))}"
    for key in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(key)
        if value not in (None, ""):
            if isinstance(value, datetime.datetime):
                value = value.isoformat()
            return f"{key}:{value}:size:{info.get('size')}"
    return f"size:{info.get('size')}"


def identify_shards(shards: Iterable[Location]) -> dict[str, ShardIdentity]:
    """Size and identity of each shard, by URI, from one listing per folder (one request per folder on an
    object store), falling back to a lookup per file for anything the listing did not show."""
    shards = list(shards)
    by_folder: dict[Location, list[Location]] = {}
    for shard in shards:
        folder = shard.url.rsplit("/", 1)[0] if "/" in shard.url else "."
        by_folder.setdefault(dataclasses.replace(shard, url=folder), []).append(shard)
    found: dict[str, ShardIdentity] = {}
    for folder, members in by_folder.items():
        fs, path = folder.filesystem()
        try:
            listing = {storage.to_uri(fs, i["name"]): i for i in fs.ls(path, detail=True)}
        except (OSError, ValueError):
            listing = {}
        for shard in members:
            info = listing.get(shard.url)
            if info is None:
                fs_one, path_one = shard.filesystem()
                info = fs_one.info(path_one)
            found[shard.url] = ShardIdentity(shard.url, int(info.get("size") or 0), content_identity(info))
    return {shard.url: found[shard.url] for shard in shards}


# -- the manifest --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ShardEntry:
    """One annotated shard, as committed."""

    source: str
    size: int
    identity: str
    annotation_sha256: str
    outputs: tuple[str, ...]  # one per split (one for a shard read whole); relative to output.path
    errors: tuple[str, ...]  # the dead-letter files of the splits that had failures
    docs_read: int
    docs_written: int
    docs_failed: int
    tokens: int
    run_id: str
    committed_at: str

    def files(self) -> list[str]:
        return [*self.outputs, *self.errors]

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "outputs": list(self.outputs), "errors": list(self.errors)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ShardEntry:
        data = dict(data)
        if "output" in data:  # an entry written before shards were split: one file and its dead letter
            data["outputs"] = [data.pop("output")]
            data["errors"] = [data["errors"]] if data.get("errors") else []
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        return cls(**{**values, "outputs": tuple(values["outputs"]), "errors": tuple(values["errors"])})


def read_entries(out: Location) -> dict[str, ShardEntry]:
    """Every committed shard of the output folder ``out``, by source URI."""
    fs, folder = state_location(out, SHARDS_DIR).filesystem()
    fs.invalidate_cache()
    if not fs.exists(folder):
        return {}
    names = [n for n in fs.ls(folder, detail=False) if n.endswith(".json")]
    entries = {}
    for name, blob in sorted(fs.cat(names).items()) if names else []:
        try:
            entry = ShardEntry.from_json(json.loads(blob))
        except (ValueError, TypeError) as exc:
            raise SetupError(
                f"output.path: manifest entry {name} is unreadable ({exc}); delete it to annotate that "
                "shard again"
            ) from None
        entries[entry.source] = entry
    return entries


def write_entry(out: Location, entry: ShardEntry) -> None:
    text = json.dumps(entry.to_json(), indent=1, sort_keys=True) + "\n"
    state_location(out, SHARDS_DIR, entry_name(entry.source)).write_bytes(text.encode())


def remove_entry(out: Location, source: str) -> None:
    state_location(out, SHARDS_DIR, entry_name(source)).remove()


# -- choosing what to annotate -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Selection:
    """The shards a run annotates, why, and what it keeps from earlier runs."""

    todo: list[str]
    reasons: dict[str, str]  # source -> new | changed | config | refresh
    kept: list[ShardEntry]  # committed and current: not annotated again
    stale: list[ShardEntry]  # committed, no longer among the inputs
    remove_stale: bool  # the annotation settings changed or a full refresh: drop the stale shards' outputs

    def counts(self) -> dict[str, int]:
        out = {"new": 0, "changed": 0, "config": 0, "refresh": 0}
        for reason in self.reasons.values():
            out[reason] += 1
        out["kept"] = len(self.kept)
        out["stale_removed" if self.remove_stale else "stale_kept"] = len(self.stale)
        return out


def select_shards(
    identities: Mapping[str, ShardIdentity],
    entries: Mapping[str, ShardEntry],
    annotation_sha256: str,
    full_refresh: bool,
) -> Selection:
    todo, reasons, kept = [], {}, []
    for uri, ident in identities.items():
        entry = entries.get(uri)
        if full_refresh:
            reason = "refresh"
        elif entry is None:
            reason = "new"
        elif entry.annotation_sha256 != annotation_sha256:
            reason = "config"
        elif (entry.size, entry.identity) != (ident.size, ident.identity):
            reason = "changed"
        else:
            kept.append(entry)
            continue
        todo.append(uri)
        reasons[uri] = reason
    stale = [e for uri, e in sorted(entries.items()) if uri not in identities]
    config_changed = any(e.annotation_sha256 != annotation_sha256 for e in entries.values())
    return Selection(todo, reasons, kept, stale, full_refresh or config_changed)


# -- cleaning up after a crashed run -------------------------------------------------------------------


def remove_unreferenced(out: Location, entries: Mapping[str, ShardEntry]) -> list[str]:
    """Removes what a crashed run left behind: temporary files, and output or dead-letter files that no
    manifest entry points at (written but never committed, or replaced in another partition). Files that
    distilbeam did not name are left alone. Returns the relative paths removed."""
    fs, root = out.filesystem()
    fs.invalidate_cache()
    if not fs.exists(root):
        return []
    state_location(out, SPLITS_DIR).remove(recursive=True)  # of runs that died
    fs.invalidate_cache()
    referenced = {f for e in entries.values() for f in e.files()}
    removed = []
    for found in sorted(fs.find(root)):
        relative = posixpath.relpath(found.replace(os.sep, "/"), root.replace(os.sep, "/"))
        name = relative.rsplit("/", 1)[-1]
        orphan = layout.is_part_file(relative) and relative not in referenced
        if orphan or layout.is_temporary(name):
            try:
                fs.rm(found)
                removed.append(relative)
            except FileNotFoundError:
                pass
    _remove_empty_partitions(fs, root)
    fs.invalidate_cache()
    return removed


def _remove_empty_partitions(fs: Any, root: str) -> None:
    if not isinstance(fs, LocalFileSystem):
        return  # object stores have no empty folders
    for base in (root, os.path.join(root, layout.ERRORS_DIR)):
        if not os.path.isdir(base):
            continue
        for name in os.listdir(base):
            folder = os.path.join(base, name)
            if layout.is_partition(name) and os.path.isdir(folder) and not os.listdir(folder):
                os.rmdir(folder)


def remove_shard_outputs(out: Location, entry: ShardEntry) -> None:
    """Drops a committed shard: its entry first (so it is never half-listed), then its files."""
    remove_entry(out, entry.source)
    for relative in entry.files():
        output_location(out, relative).remove()


# -- one run's settings, carried into the pipeline -----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """What the pipeline needs to commit shards and report on the run."""

    run_id: str
    mode: str
    run_date: str  # YYYY-MM-DD
    partition: str  # "" or "run_date=YYYY-MM-DD": the folder this run's files go to
    annotation_sha256: str
    shards: Mapping[str, ShardIdentity]  # the shards this run annotates
    previous: Mapping[str, tuple[str, ...]]  # source -> files of its earlier commit, removed once replaced
    carried: Mapping[str, int]  # counts of the committed shards this run keeps (see ``carried_counts``)
    selection: Mapping[str, int]
    max_failed_fraction: float | None
    started: float
    progress_dir: str | None = None  # local runs: where workers leave progress counts for the launcher
    # An earlier run committed shards but died before its summary: even a run with nothing to annotate
    # then rewrites the output's top-level summary and report.
    summary_behind: bool = False


def new_run_id(now: float | None = None) -> str:
    stamp = datetime.datetime.fromtimestamp(now or time.time(), datetime.timezone.utc)
    return f"{stamp:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


def carried_counts(entries: Iterable[ShardEntry]) -> dict[str, int]:
    out = {"shards": 0, "docs_read": 0, "docs_written": 0, "docs_failed": 0, "tokens": 0}
    for e in entries:
        out["shards"] += 1
        out["docs_read"] += e.docs_read
        out["docs_written"] += e.docs_written
        out["docs_failed"] += e.docs_failed
        out["tokens"] += e.tokens
    return out


def commit_split(
    out: Location,
    run: RunSettings,
    split: Any,
    files: tuple[str, str | None],
    counts: tuple[int, int, int, int],
) -> ShardEntry | None:
    """Called once a split's files are in place. A shard read whole is committed at once. A split shard is
    committed by whichever of its splits finds, after recording its own files and counts under
    ``_state/splits/``, that every split of the shard has done so in this run: the entry then lists every
    split's files. Returns the entry, or None while splits are missing."""
    if split.whole:
        return commit_shard(out, run, split.uri, [files], [counts])
    folder = layout.split_records_location(out, split.uri)
    record = {"run_id": run.run_id, "index": split.index, "files": list(files), "counts": list(counts)}
    folder.join(layout.split_record_name(split.index)).write_bytes(json.dumps(record).encode())
    fs, root = folder.filesystem()
    fs.invalidate_cache()
    names = [n for n in fs.ls(root, detail=False) if n.endswith(".json")]
    records = [json.loads(blob) for blob in fs.cat(names).values()] if names else []
    mine = {r["index"]: r for r in records if r.get("run_id") == run.run_id}
    if len(mine) < split.count:
        return None
    ordered = [mine[k] for k in range(split.count)]
    files_of = [tuple(r["files"]) for r in ordered]
    entry = commit_shard(out, run, split.uri, files_of, [tuple(r["counts"]) for r in ordered])
    folder.remove(recursive=True)
    if out.is_local:  # the last split shard in: no empty folder left behind
        with contextlib.suppress(OSError):
            os.rmdir(state_location(out, SPLITS_DIR).url)
    return entry


def commit_shard(
    out: Location,
    run: RunSettings,
    source: str,
    files: list[tuple[str, str | None]],
    counts: list[tuple[int, int, int, int]],
) -> ShardEntry:
    """Records a shard whose files (data and dead letter of each split) are in place, then removes the
    files of its earlier commit that are not among them (another run_date partition, another split
    layout)."""
    ident = run.shards[source]
    entry = ShardEntry(
        source=source,
        size=ident.size,
        identity=ident.identity,
        annotation_sha256=run.annotation_sha256,
        outputs=tuple(data for data, _ in files),
        errors=tuple(errors for _, errors in files if errors),
        docs_read=sum(c[0] for c in counts),
        docs_written=sum(c[1] for c in counts),
        docs_failed=sum(c[2] for c in counts),
        tokens=sum(c[3] for c in counts),
        run_id=run.run_id,
        committed_at=iso_time(time.time()),
    )
    write_entry(out, entry)
    for relative in run.previous.get(source, ()):
        if relative not in entry.files():
            earlier = output_location(out, relative)
            earlier.remove()
            _remove_folder_if_empty(earlier)
    return entry


def _remove_folder_if_empty(file: Location) -> None:
    """A local partition folder emptied by moving its last shard elsewhere goes too."""
    fs, path = file.filesystem()
    folder = os.path.dirname(path)
    if isinstance(fs, LocalFileSystem) and layout.is_partition(os.path.basename(folder)):
        with contextlib.suppress(OSError):  # not empty, or gone already
            os.rmdir(folder)


def iso_time(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).isoformat(timespec="seconds")
