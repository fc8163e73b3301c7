"""Reading remote files so that a dropped connection costs a retry, not the file: ``ResumableReader``
reads an object in ranged requests and, when one fails transiently, reopens the object and continues at
the byte it had reached, checking first that the object is still the one it opened. It sits below the
decompressor and the record parser, so a retry never repeats or skips a record. ``size_of`` tells the
size behind an open stream, local or remote, without reading it."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Mapping
from typing import IO, Any

from distilbeam.transforms.storage.errors import StorageError, retrying

READ_BLOCK_BYTES = 8 << 20  # bytes per ranged GET when reading a remote file


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
