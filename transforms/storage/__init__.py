"""Paths the same everywhere: local files and any fsspec URL (s3://, gs://, ...) as a ``Location``, globbed,
opened with transparent decompression and written atomically (``location``), read remotely so that a
dropped connection resumes at the byte it had reached (``reader``), with transient errors retried and
permanent ones ending in a ``StorageError`` that names the URL (``errors``), a store whose package is not
installed reported with the extra that brings it (``extras``), and names of places as plain strings
(``paths``). The names callers use are importable from here."""

from distilbeam.transforms.storage.errors import StorageError, describe, is_transient, retrying
from distilbeam.transforms.storage.extras import MissingExtra, is_installed, require_filesystem
from distilbeam.transforms.storage.location import WRITE_CHECK_PREFIX, Location, Options
from distilbeam.transforms.storage.paths import is_local, strip_compression, to_uri
from distilbeam.transforms.storage.reader import ResumableReader, file_identity, size_of

__all__ = [
    "WRITE_CHECK_PREFIX",
    "Location",
    "MissingExtra",
    "Options",
    "ResumableReader",
    "StorageError",
    "describe",
    "file_identity",
    "is_installed",
    "is_local",
    "is_transient",
    "require_filesystem",
    "retrying",
    "size_of",
    "strip_compression",
    "to_uri",
]
