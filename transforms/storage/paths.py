"""Names of places, as plain strings: whether a path or URL is local, joining parts below it, the
user-facing name of a path an fsspec filesystem returned, and a file name without its compression
extension (``.gz``, ``.bz2``, ``.zst``, ``.xz``: the ones read with transparent decompression)."""

from __future__ import annotations

import os
import posixpath
from typing import Any

from fsspec.implementations.local import LocalFileSystem

COMPRESSED = (".gz", ".bz2", ".zst", ".xz")


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
