"""Finding shards and telling what they hold: the input globs are expanded when the pipeline is built, each
file's format comes from ``input.format`` or its extension, and the first bytes of a text or JSON Lines
shard are sniffed for content that cannot be text (compressed data, Parquet, UTF-16), so that its dead
letter says what to do. Also here: the settings every reader takes, and the checks that tell a shard
that cannot be read at all from a store that is down."""

from __future__ import annotations

import dataclasses
import os
import re
import stat

import fsspec

from distilbeam.transforms import SetupError, storage
from distilbeam.transforms.schema import SURROGATES

FORMATS = {".txt": "text", ".text": "text", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}
FORMATS |= {".parquet": "parquet", ".pq": "parquet"}
BOM = b"\xef\xbb\xbf"


@dataclasses.dataclass(frozen=True)
class ReadSettings:
    format: str | None
    id_field: str | None
    text_field: str
    max_chars: int
    # The input store's fsspec options, for every shard; may hold credentials.
    options: storage.Options = dataclasses.field(default_factory=storage.Options, repr=False)
    # dead-letter: a document over max_chars is a dead-letter row; split: it is annotated in parts.
    long_documents: str = "dead-letter"
    # jsonl/parquet: the field of each record's second text, for sentence pairs; None reads one text.
    text_pair_field: str | None = None

    @property
    def split(self) -> bool:
        return self.long_documents == "split"

    def location(self, uri: str) -> storage.Location:
        """An input file or glob, reached with the input's storage options."""
        return storage.Location(uri, self.options)


@dataclasses.dataclass(frozen=True)
class Shard:
    uri: str
    format: str


def find_shards(patterns: tuple[str, ...], settings: ReadSettings) -> list[Shard]:
    """Expands every glob; each must match at least one file, and each file must have a known format."""
    shards: dict[str, Shard] = {}
    for pattern in patterns:
        glob = settings.location(pattern)
        try:
            uris = glob.expand()
        except storage.StorageError as exc:  # its message names the pattern and what the store said
            raise SetupError(f"input.paths: {exc}") from exc
        except (OSError, ValueError) as exc:
            raise SetupError(f"input.paths: cannot list {pattern}: {exc}") from exc
        if not uris:
            fs, path = glob.filesystem()
            if not fsspec.core.has_magic(path) and fs.isdir(path):
                raise SetupError(f"input.paths: {pattern} is a directory; name its files, e.g. {pattern}/*")
            raise SetupError(f"input.paths: no file matches {pattern}")
        for uri in uris:
            if SURROGATES.search(uri):
                shown = uri.encode("utf-8", "surrogateescape")
                raise SetupError(f"input.paths: the file name {shown!r} is not valid UTF-8; rename the file")
            shards[uri] = Shard(uri, shard_format(uri, settings.format))
    return list(shards.values())


def shard_format(uri: str, configured: str | None) -> str:
    """The configured format, or the one the file's extension (under any compression suffix) names."""
    if configured:
        return configured
    name = storage.strip_compression(uri.rsplit("/", 1)[-1])
    ext = "." + name.rsplit(".", 1)[-1] if "." in name else ""
    if ext not in FORMATS:
        raise SetupError(
            f"input.paths: cannot tell the format of {uri} from its extension; set input.format "
            "to text, jsonl or parquet"
        )
    return FORMATS[ext]


# Content a text or JSON Lines shard must not hold: (first bytes, what they are, what to do).
MAGIC: tuple[tuple[re.Pattern[bytes], str, str], ...] = tuple(
    (re.compile(pattern, re.DOTALL), what, todo)
    for pattern, what, todo in (
        (rb"\x1f\x8b", "gzip-compressed data", "end its name in .gz, or decompress it"),
        (rb"\x28\xb5\x2f\xfd", "zstd-compressed data", "end its name in .zst, or decompress it"),
        (rb"BZh[1-9]1AY&SY", "bzip2-compressed data", "end its name in .bz2, or decompress it"),
        (rb"\xfd7zXZ\x00", "xz-compressed data", "end its name in .xz, or decompress it"),
        (rb"PAR1\x15", "a Parquet file", "end its name in .parquet, or set input.format: parquet"),
        (rb"PK\x03\x04", "a zip archive", "unpack it; distilbeam does not read zip archives"),
        (rb"\xff\xfe\x00\x00|\x00\x00\xfe\xff", "UTF-32 text", "convert it to UTF-8 (iconv -f UTF-32)"),
        (rb"\xff\xfe|\xfe\xff", "UTF-16 text", "convert it to UTF-8 (iconv -f UTF-16 -t UTF-8)"),
    )
)


def sniff(head: bytes) -> tuple[str, str] | None:
    """What a shard's first (decompressed) bytes are when they cannot be text: (what, what to do)."""
    for pattern, what, todo in MAGIC:
        if pattern.match(head):
            return what, todo
    return None


def not_a_regular_file(uri: str) -> str | None:
    """Why a local path cannot be read as a shard (a named pipe would block forever, a device may never
    end); None for regular files and for paths that do not exist (opening them says why)."""
    if not storage.is_local(uri):
        return None
    try:
        mode = os.stat(uri.removeprefix("file://")).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kind = "a named pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
    return f"{uri} is {kind}, not a regular file; it is not read"


def raise_if_store_failed(exc: Exception) -> None:
    """A store that stayed unreachable through every retry says nothing about the shard's records: fail the
    bundle (the runner retries it, or the run ends) rather than dead-letter a readable shard."""
    if isinstance(exc, storage.StorageError) and exc.transient:
        raise exc
