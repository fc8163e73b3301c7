"""Paths the same everywhere: local files and any fsspec URL (s3://, gs://, ...), globbed, opened with
transparent decompression, and written so that a reader never sees a half-written file.

Failures are sorted in two: transient ones (throttling, 5xx replies, dropped connections, timeouts) are
retried with exponential backoff; permanent ones (no such bucket or object, access denied, a bad request)
are not, and end in a ``StorageError`` whose message names the URL. Each request is first retried by the
store's own client (botocore and s3fs for S3, gcsfs for GCS), which knows which requests are safe to
repeat; this module retries whole operations on top of that, for clients that do not retry and for outages
longer than a client's own budget. Reads are retried below the decompressor and the record parser: a read
that fails part-way reopens the object and continues at the byte it had reached, so a retry never repeats
or skips a record."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import importlib.util
import io
import logging
import os
import posixpath
import random
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import IO, Any, TypeVar

import fsspec
from fsspec.implementations.local import LocalFileSystem
from smart_open.compression import compression_wrapper

from distilbeam.transforms import SetupError

log = logging.getLogger(__name__)
T = TypeVar("T")

COMPRESSED = (".gz", ".bz2", ".zst", ".xz")
READ_BLOCK_BYTES = 8 << 20  # bytes per ranged GET when reading a remote file
RETRY_ATTEMPTS = 5  # tries of one operation, each of them retried inside the client too
RETRY_FIRST_WAIT = 0.5  # seconds before the second try; doubles each time, with jitter
RETRY_MAX_WAIT = 20.0
WRITE_CHECK_PREFIX = "_distilbeam_write_check-"

# Exception classes (by name, so that no client library has to be installed) that mean a dropped
# connection, a timeout or a reply cut short: aiohttp, botocore, requests, urllib3, http.client, fsspec.
_TRANSIENT_CLASSES = {
    "ClientConnectionError",
    "ClientPayloadError",
    "ServerDisconnectedError",
    "ServerTimeoutError",
    "EndpointConnectionError",
    "ConnectionClosedError",
    "ReadTimeoutError",
    "ConnectTimeoutError",
    "IncompleteReadError",
    "ResponseStreamingError",
    "IncompleteRead",
    "ProtocolError",
    "ChunkedEncodingError",
    "ProxyError",
    "FSTimeoutError",
}
# Error codes S3 (and S3-compatible stores) send for throttling and for failures on their side.
_TRANSIENT_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "ServiceUnavailable",
}
_TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
_TRANSIENT_ERRNO = {
    errno.EBUSY,  # s3fs: SlowDown, ServiceUnavailable, 503
    getattr(errno, "EREMOTEIO", 121),  # s3fs: InternalError, 500
    errno.ECONNRESET,
    errno.ECONNABORTED,
    errno.ECONNREFUSED,
    errno.EPIPE,
    errno.ETIMEDOUT,
}


class StorageError(OSError):
    """A storage operation that failed for good: a permanent error, or a transient one that outlasted
    every retry (``transient`` tells which). The message names the URL and what the store said."""

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient

    def __reduce__(self):  # keep the message and flag when Beam pickles the error between processes
        return StorageError, (str(self), self.transient)


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the operation that raised ``exc`` can succeed."""
    if isinstance(exc, StorageError):
        return False  # already retried
    if isinstance(exc, FileNotFoundError | PermissionError | FileExistsError | IsADirectoryError):
        return False
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if _transient_here(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _transient_here(exc: BaseException) -> bool:
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    if _TRANSIENT_CLASSES & {c.__name__ for c in type(exc).__mro__}:
        return True
    if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNO:
        return True
    response = getattr(exc, "response", None)  # botocore ClientError
    if isinstance(response, Mapping):
        code = response.get("Error", {}).get("Code")
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in _TRANSIENT_CODES or status in _TRANSIENT_STATUS:
            return True
    if type(exc).__name__ == "HttpError":  # gcsfs
        return str(getattr(exc, "code", "")) in {str(s) for s in _TRANSIENT_STATUS}
    return False


def describe(exc: BaseException) -> str:
    """What went wrong, in a line."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, FileNotFoundError):  # gcsfs puts a request path in the message, s3fs a sentence
        return f"no such bucket or object ({text})" if " " in text else "no such bucket or object"
    if isinstance(exc, PermissionError) or text.startswith("Forbidden") or "AccessDenied" in text:
        return f"access denied ({text})"
    return f"{type(exc).__name__}: {text}"


def retrying(action: str, uri: str, operation: Callable[[], T], attempts: int = RETRY_ATTEMPTS) -> T:
    """Runs ``operation``, retrying transient errors with exponential backoff and jitter; any other error,
    or the last transient one, becomes a StorageError naming ``action`` and ``uri``."""
    for attempt in range(1, attempts + 1):
        try:
            return operation()
        except StorageError:
            raise
        except Exception as exc:
            transient = is_transient(exc)
            if not transient or attempt == attempts:
                tries = f" after {attempts} tries" if transient else ""
                raise StorageError(f"cannot {action} {uri}{tries}: {describe(exc)}", transient) from exc
            wait = min(RETRY_MAX_WAIT, RETRY_FIRST_WAIT * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
            log.warning("%s %s failed (%s); retrying in %.1fs", action, uri, describe(exc), wait)
            time.sleep(wait)
    raise AssertionError("unreachable")


# The extra that installs each object store's fsspec filesystem, and the module it provides. The base install
# reads and writes local paths only, so that it stays small.
EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}
EXTRA_MODULES = {"s3": "s3fs", "gcs": "gcsfs"}


class MissingExtra(SetupError):
    """A URL, or a runner, needs an optional part of distilbeam that is not installed. ``what`` says what
    is missing; the message adds the extra that brings it and the command that installs it."""

    def __init__(self, what: str, extra: str):
        super().__init__(f"{what}; it comes with the {extra} extra: pip install 'distilbeam[{extra}]'")
        self.what, self.extra = what, extra

    def __reduce__(self):  # Beam pickles errors between processes
        return MissingExtra, (self.what, self.extra)


def protocol(uri: str) -> str:
    return uri.split("://", 1)[0].lower() if "://" in uri else "file"


def is_installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (a dotted name's parents may be missing)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require_filesystem(uri: str) -> None:
    """Raises MissingExtra, naming the extra to install, when the store ``uri`` names needs a package that
    is missing (s3fs for s3://, gcsfs for gs://)."""
    extra = EXTRAS.get(protocol(uri))
    if extra is not None and not is_installed(EXTRA_MODULES[extra]):
        module = EXTRA_MODULES[extra]
        raise MissingExtra(f"{uri}: {protocol(uri)}:// URLs need {module}, which is not installed", extra)


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


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def to_uri(fs: Any, path: str) -> str:
    """The user-facing name of a path: plain absolute path when local, protocol URL otherwise."""
    if isinstance(fs, LocalFileSystem):
        return os.path.abspath(path)
    return fs.unstrip_protocol(path)


def join(base: str, *parts: str) -> str:
    if is_local(base):
        return os.path.join(base.removeprefix("file://"), *parts)
    return posixpath.join(base, *parts)


def strip_compression(name: str) -> str:
    for ext in COMPRESSED:
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def size_of(stream: IO[bytes]) -> int | None:
    """The size of the file behind an open stream, when it is known without reading."""
    raw = getattr(stream, "raw", stream)
    if isinstance(raw, ResumableReader):
        return raw.size
    try:
        return os.fstat(stream.fileno()).st_size
    except (OSError, AttributeError, ValueError):  # io.UnsupportedOperation is an OSError and a ValueError
        return getattr(stream, "size", None)


class ResumableReader(io.RawIOBase):
    """A remote file read through fsspec that survives dropped connections: on a transient error it
    reopens the object and seeks back to its own position before trying again. Reopening checks that the
    object is still the one first opened (size and etag or generation), so a file replaced mid-read fails
    instead of splicing two versions together."""

    def __init__(self, fs: Any, path: str, uri: str, block_size: int):
        super().__init__()
        self._fs, self._path, self.uri, self._block_size = fs, path, uri, block_size
        self._pos = 0
        self._file = retrying("open", uri, self._open)
        self._identity = file_identity(getattr(self._file, "details", {}))

    def _open(self) -> Any:
        return self._fs.open(self._path, "rb", block_size=self._block_size)

    def _reopen(self) -> None:
        with contextlib.suppress(Exception):  # the old handle's connection is already broken
            self._file.close()
        self._fs.invalidate_cache(self._path)
        self._file = self._open()
        identity = file_identity(getattr(self._file, "details", {}))
        if identity != self._identity:
            raise StorageError(f"cannot read {self.uri}: the file changed while it was being read")
        self._file.seek(self._pos)

    @property
    def size(self) -> int | None:
        return getattr(self._file, "size", None)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._pos = self._file.seek(offset, whence)
        return self._pos

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        attempt = 0

        def read_once() -> bytes:
            nonlocal attempt
            attempt += 1
            if attempt > 1:
                self._reopen()
            return self._file.read(size)

        data = retrying("read", self.uri, read_once)
        self._pos += len(data)
        return data

    def readall(self) -> bytes:
        chunks = []
        while chunk := self.read(READ_BLOCK_BYTES):
            chunks.append(chunk)
        return b"".join(chunks)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            try:
                self._file.close()
            finally:
                super().close()


def file_identity(info: Mapping[str, Any]) -> tuple[Any, Any]:
    """(size, version tag) from an fsspec listing entry: what changes when the object is replaced."""
    tag = next(
        (info[k] for k in ("ETag", "etag", "generation", "md5Hash", "crc32c", "mtime") if k in info), ""
    )
    return info.get("size"), str(tag)
