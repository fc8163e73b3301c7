"""``Location``, a place in storage (a local path or an fsspec URL) with the fsspec options that reach
it, frozen into ``Options``, and what can be done there: glob, look up, remove, open for reading with
transparent decompression (remote files through the resumable reader), write atomically so that a reader
never sees a half-written file, and check before a run that writing is allowed. Every operation retries
transient errors and ends in a ``StorageError`` that names the URL."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from typing import IO, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem
from smart_open.compression import compression_wrapper

from distilbeam.transforms import SetupError
from distilbeam.transforms.storage.errors import StorageError, describe, retrying
from distilbeam.transforms.storage.extras import require_filesystem
from distilbeam.transforms.storage.paths import is_local, join, to_uri
from distilbeam.transforms.storage.reader import READ_BLOCK_BYTES, ResumableReader, size_of

log = logging.getLogger(__name__)

WRITE_CHECK_PREFIX = "_distilbeam_write_check-"


class Options(Mapping[str, Any]):
    """fsspec options (endpoint, profile, credentials...) as a frozen mapping: hashable, equal when their
    content is, pickled as their items, and shown by their keys only, since values may be secrets. Nested
    mappings and lists are frozen too; ``thawed()`` gives back the plain dicts and lists fsspec takes."""

    __slots__ = ("_items",)

    def __init__(self, options: Mapping[str, Any] | None = None):
        items = sorted((options or {}).items(), key=lambda item: str(item[0]))
        self._items = tuple((key, _freeze(value)) for key, value in items)

    def __getitem__(self, key: str) -> Any:
        for name, value in self._items:
            if name == key:
                return value
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Options):
            return self._items == other._items
        return isinstance(other, Mapping) and self == Options(other)

    def __reduce__(self):
        return Options, (dict(self._items),)

    def __repr__(self) -> str:
        return f"Options({', '.join(map(str, self))})"

    def thawed(self) -> dict[str, Any]:
        return {name: _thaw(value) for name, value in self._items}


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return value if isinstance(value, Options) else Options(value)
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    if isinstance(value, Options):
        return value.thawed()
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


@dataclasses.dataclass(frozen=True)
class Location:
    """A place in storage: a local path or an fsspec URL (s3://, gs://, ...), and the fsspec options that
    reach it (a mapping given is frozen into ``Options``). Small, hashable and picklable, so it travels in
    settings objects to workers; kept out of its repr are the options, which may hold credentials. Every
    operation retries transient errors and ends in a StorageError naming the URL (see ``retrying``)."""

    url: str
    options: Options = dataclasses.field(default_factory=Options, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.options, Options):
            object.__setattr__(self, "options", Options(self.options))

    @property
    def is_local(self) -> bool:
        return is_local(self.url)

    def join(self, *parts: str) -> Location:
        """The place ``parts`` below this one, reached with the same options."""
        return Location(join(self.url, *parts), self.options)

    def filesystem(self) -> tuple[Any, str]:
        """The fsspec filesystem and the path in it; MissingExtra when the store's package is missing."""
        require_filesystem(self.url)
        try:
            fs, path = fsspec.core.url_to_fs(self.url, **self.options.thawed())
        except ImportError as exc:  # another fsspec protocol whose package is missing: fsspec names it
            raise SetupError(f"{self.url}: {exc}") from None
        return fs, path

    def expand(self) -> list[str]:
        """The URLs of the files this glob matches (or of the file itself), sorted; directories are not
        files."""
        fs, path = self.filesystem()

        def matches() -> list[str]:
            found = fs.glob(path) if fsspec.core.has_magic(path) else ([path] if fs.exists(path) else [])
            return sorted(to_uri(fs, m) for m in found if not fs.isdir(m))

        return retrying("list", self.url, matches)

    def exists(self) -> bool:
        fs, path = self.filesystem()
        return retrying("look up", self.url, lambda: fs.exists(path))

    def remove(self, recursive: bool = False) -> None:
        """Removes a file (or a directory with ``recursive``); one that is already gone is fine, since a
        retried delete may find that its first try went through."""
        fs, path = self.filesystem()

        def rm() -> None:
            with contextlib.suppress(FileNotFoundError):
                fs.rm(path, recursive=recursive)

        retrying("remove", self.url, rm)
        fs.invalidate_cache()

    def open_input(self) -> IO[bytes]:
        """A binary stream of the file's content, decompressed by its extension; streamed, never read
        whole."""
        raw = self.open_raw()
        if size_of(raw) == 0:  # empty whatever its name says (an empty .zst is not even a stream)
            return raw
        return compression_wrapper(raw, "rb", filename=self.url)

    def open_raw(self, block_size: int = READ_BLOCK_BYTES) -> IO[bytes]:
        """A seekable binary stream of the file as stored. Remote files are read in ranged requests of
        ``block_size`` bytes; a request that fails transiently is retried from the byte it had reached."""
        fs, path = self.filesystem()
        if isinstance(fs, LocalFileSystem):
            return open(path, "rb")
        return io.BufferedReader(ResumableReader(fs, path, self.url, block_size), buffer_size=1 << 16)

    @contextlib.contextmanager
    def atomic_file(self) -> Iterator[IO[bytes]]:
        """A binary file to stream into that appears complete here when the block ends without an error,
        and not at all otherwise.

        A local file is written under a temporary name in the same directory and renamed, which is atomic
        on POSIX filesystems. For an object store the content goes to a local temporary file, uploaded whole
        when the block ends (one request, or a multipart or resumable upload for large files): the store
        publishes an object only when its upload completes, and an upload that fails is retried whole,
        never continued from a state we cannot see. Either way the content is never held in memory."""
        fs, path = self.filesystem()
        if isinstance(fs, LocalFileSystem):
            directory, name = os.path.split(path)
            os.makedirs(directory, exist_ok=True)
            tmp = os.path.join(directory, f".{name}.{uuid.uuid4().hex}.tmp")
        else:
            tmp = os.path.join(tempfile.gettempdir(), f".distilbeam-upload.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "wb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            if isinstance(fs, LocalFileSystem):
                os.replace(tmp, path)
            else:
                retrying("write", self.url, lambda: fs.put_file(tmp, path))
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    def write_bytes(self, data: bytes) -> None:
        """Writes a file so that it appears complete or not at all (see ``atomic_file``)."""
        with self.atomic_file() as f:
            f.write(data)

    def check_writable(self) -> None:
        """Checks that files can be written in this directory, so that a missing bucket or a denied write
        ends the run before the pipeline starts rather than after the work is done. Raises StorageError.

        A local directory (or its nearest existing parent) is checked for write permission, creating
        nothing; in an object store, where permissions are the store's to tell, a small file is written and
        removed."""
        if self.is_local:
            path = os.path.abspath(self.url.removeprefix("file://"))
            while not os.path.exists(path) and os.path.dirname(path) != path:
                path = os.path.dirname(path)
            if not os.path.isdir(path):
                raise StorageError(f"cannot write to {self.url}: {path} is not a directory")
            if not os.access(path, os.W_OK | os.X_OK):
                raise StorageError(f"cannot write to {self.url}: access denied ({path} is not writable)")
            return
        probe = self.join(f"{WRITE_CHECK_PREFIX}{uuid.uuid4().hex}")
        try:
            probe.write_bytes(b"")
        except OSError as exc:
            cause = exc.__cause__ if isinstance(exc, StorageError) and exc.__cause__ else exc
            raise StorageError(f"cannot write to {self.url}: {describe(cause)}") from exc
        try:
            probe.remove()
        except StorageError as exc:  # allowed to write but not to delete: the run can still go ahead
            log.warning("%s", exc)
