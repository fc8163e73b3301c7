"""Paths the same everywhere: local files and any fsspec URL (s3://, gs://, ...), globbed, opened with
transparent decompression, and written so that a reader never sees a half-written file."""

from __future__ import annotations

import os
import posixpath
import uuid
from collections.abc import Callable, Mapping
from typing import IO, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem
from smart_open.compression import compression_wrapper

COMPRESSED = (".gz", ".bz2", ".zst", ".xz")


def filesystem(uri: str, storage_options: Mapping[str, Any] | None = None) -> tuple[Any, str]:
    fs, path = fsspec.core.url_to_fs(uri, **dict(storage_options or {}))
    return fs, path


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


def expand(pattern: str, storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """Files matching one glob (or the file itself), sorted; directories are not files."""
    fs, path = filesystem(pattern, storage_options)
    matches = fs.glob(path) if fsspec.core.has_magic(path) else ([path] if fs.exists(path) else [])
    return sorted(to_uri(fs, m) for m in matches if not fs.isdir(m))


def strip_compression(name: str) -> str:
    for ext in COMPRESSED:
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def open_input(uri: str, storage_options: Mapping[str, Any] | None = None) -> IO[bytes]:
    """A binary stream of the file's content, decompressed by its extension; streamed, never read whole."""
    fs, path = filesystem(uri, storage_options)
    raw = fs.open(path, "rb")
    if getattr(raw, "size", None) == 0:  # empty whatever its name says (an empty .zst is not even a stream)
        return raw
    return compression_wrapper(raw, "rb", filename=path)


def write_atomic(
    uri: str, write: Callable[[IO[bytes]], None], storage_options: Mapping[str, Any] | None = None
) -> None:
    """Writes a file so that it appears complete or not at all under its final name.

    Object stores already publish an object only when its upload completes; a local file is written under
    a temporary name in the same directory and renamed, which is atomic on POSIX filesystems."""
    fs, path = filesystem(uri, storage_options)
    if isinstance(fs, LocalFileSystem):
        directory, name = os.path.split(path)
        os.makedirs(directory, exist_ok=True)
        tmp = os.path.join(directory, f".{name}.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    else:
        with fs.open(path, "wb") as f:
            write(f)
