"""transforms/storage/ against real protocol servers: globs, compressed reads, atomic writes, retries of
transient faults injected by a proxy, and permanent errors that fail at once, naming the URL."""

from __future__ import annotations

import bz2
import errno
import gzip
import io
import json
import lzma
import os
import pickle
import time

import pytest
import zstandard

from distilbeam.transforms import storage
from distilbeam.transforms.read import ReadSettings, Shard, find_shards, read_shard
from distilbeam.transforms.schema import Document

LINES = [
    json.dumps({"id": f"d{i}", "text": f"document number {i} " + "word " * (i % 40)}) for i in range(3000)
]
CONTENT = ("\n".join(LINES) + "\n").encode()
COMPRESS = {
    "": lambda b: b,
    ".gz": gzip.compress,
    ".bz2": bz2.compress,
    ".zst": lambda b: zstandard.ZstdCompressor().compress(b),
    ".xz": lzma.compress,
}


def settings(options=None) -> ReadSettings:
    return ReadSettings(None, "id", "text", 1_000_000, storage.Options(options))


def test_globs_and_compressed_reads(store):
    bucket = store.new_bucket()
    for ext, compress in COMPRESS.items():
        store.put(f"{bucket}/in/docs{ext and '.jsonl'}{ext or '.jsonl'}", compress(CONTENT))
    store.put(f"{bucket}/in/other/skip.jsonl", b"{}\n")
    uris = storage.Location(store.url(bucket, "in", "*.jsonl*")).expand()
    assert uris == sorted(store.url(bucket, "in", f"docs.jsonl{ext}") for ext in COMPRESS)
    for uri in uris:
        with storage.Location(uri).open_input() as f:
            assert f.read() == CONTENT, uri
    shards = find_shards((store.url(bucket, "in", "*.jsonl.zst"),), settings())
    docs = list(read_shard(shards[0], settings()))
    assert [d.id for d in docs] == [f"d{i}" for i in range(len(LINES))]
    assert all(isinstance(d, Document) and d.source == shards[0].uri for d in docs)


def test_write_atomic_publishes_whole_files_and_remove_is_idempotent(store):
    bucket = store.new_bucket()
    file = storage.Location(store.url(bucket, "out", "part-1.parquet"))
    with file.atomic_file() as f:
        f.write(b"first half,")
        f.write(b" second half")
    fs = store.fs()
    fs.invalidate_cache()
    assert fs.cat_file(f"{bucket}/out/part-1.parquet") == b"first half, second half"
    assert fs.ls(f"{bucket}/out", detail=False) == [f"{bucket}/out/part-1.parquet"]  # no temporary names
    file.remove()
    file.remove()  # already gone: fine
    assert not file.exists()


@pytest.mark.slow  # real S3 and GCS emulators behind a fault proxy
def test_reads_and_writes_survive_injected_faults(store, fault_proxy, monkeypatch):
    """Every third request or so fails (503, reset, body cut short); the bytes and the documents that come
    back are exactly those stored, each once and in order."""
    monkeypatch.setattr(fault_proxy, "rate", 0.35)
    bucket = store.new_bucket()
    payload = os.urandom(250_000)
    store.put(f"{bucket}/blob.bin", payload)
    store.put(f"{bucket}/docs.jsonl.gz", gzip.compress(CONTENT))
    monkeypatch.setenv(*fault_proxy.store.endpoint_variable)
    options = {"skip_instance_cache": True}
    with storage.Location(fault_proxy.store.url(bucket, "blob.bin"), options).open_raw(32 << 10) as f:
        assert b"".join(iter(lambda: f.read(10_000), b"")) == payload
    shard = Shard(fault_proxy.store.url(bucket, "docs.jsonl.gz"), "jsonl")
    ids = [d.id for d in read_shard(shard, settings(options))]
    assert ids == [f"d{i}" for i in range(len(LINES))]
    out = storage.Location(fault_proxy.store.url(bucket, "out"), options)
    for i in range(8):
        out.join(f"f{i}").write_bytes(b"x" * 1000 * i)
    out.join("f0").remove()
    assert sorted(out.join("*").expand()) == [store.url(bucket, "out", f"f{i}") for i in range(1, 8)]
    assert all(fault_proxy.counts[kind] > 0 for kind in ("503", "reset", "cut")), (
        fault_proxy.counts,
        "\n".join(map(str, fault_proxy.log)),
    )


def test_permanent_errors_fail_at_once_naming_the_url(store, fault_proxy, monkeypatch):
    monkeypatch.setenv(*fault_proxy.store.endpoint_variable)
    options = {"skip_instance_cache": True}
    denied = store.new_bucket("denied")
    fault_proxy.deny.add(denied)
    cases = {
        store.url("no-such-bucket-here", "out"): "no such bucket",
        fault_proxy.store.url(denied, "out"): "access denied",
    }
    for uri, reason in cases.items():
        started = time.monotonic()
        with pytest.raises(storage.StorageError) as caught:
            storage.Location(uri, options).check_writable()
        assert time.monotonic() - started < 3, "a permanent error must not be retried with backoff"
        assert not caught.value.transient
        assert f"cannot write to {uri}: {reason}" in str(caught.value)
    with pytest.raises(
        storage.StorageError, match=f"cannot list {fault_proxy.store.url(denied)}.*access denied"
    ):
        storage.Location(fault_proxy.store.url(denied, "*.jsonl"), options).expand()


def test_a_location_is_a_small_hashable_value_that_never_shows_its_options():
    options = {"key": "secret", "client_kwargs": {"endpoint_url": "http://store"}, "scopes": ["a", "b"]}
    place = storage.Location("s3://bucket/out", options)
    copy = pickle.loads(pickle.dumps(place))
    assert copy == place and hash(copy) == hash(place) and len({place, copy}) == 1
    assert place.options == options and place.options.thawed() == options
    assert isinstance(place.options.thawed()["client_kwargs"], dict)
    assert place != storage.Location("s3://bucket/out", {**options, "key": "other"})
    assert "secret" not in repr(place) and "secret" not in repr(place.options)
    below = place.join("_state", "lock.json")
    assert below.url == "s3://bucket/out/_state/lock.json" and below.options == place.options
    assert storage.Location("file:///tmp/out").join("a").url == "/tmp/out/a"
    assert storage.Location("x") == storage.Location("x", {}) == storage.Location("x", None)


def test_transient_and_permanent_errors_are_told_apart():
    transient = [
        ConnectionResetError(errno.ECONNRESET, "reset by peer"),
        TimeoutError("read timed out"),
        OSError(errno.EBUSY, "Please reduce your request rate."),  # s3fs: SlowDown
        _chained(OSError("wrapper"), ConnectionAbortedError("aborted")),
    ]
    permanent = [
        FileNotFoundError("The specified bucket does not exist"),
        PermissionError("Access Denied"),
        OSError("Forbidden: b/bucket/o\nno access"),  # gcsfs: 403
        ValueError("Bad Request"),
        storage.StorageError("cannot read s3://b/k after 5 tries: ...", transient=True),  # already retried
    ]
    assert [storage.is_transient(e) for e in transient] == [True] * len(transient)
    assert [storage.is_transient(e) for e in permanent] == [False] * len(permanent)


def test_a_read_that_fails_part_way_resumes_at_the_same_byte(tmp_path, monkeypatch):
    """The retry layer of our own, under any fsspec filesystem: a read that raises part-way through a
    block reopens the file and continues from its position, so lines come out once each, in order."""
    import fsspec
    from fsspec.implementations.local import LocalFileOpener, LocalFileSystem

    path = tmp_path / "docs.jsonl.gz"
    path.write_bytes(gzip.compress(CONTENT))
    calls = {"read": 0, "open": 0}

    class FlakyFile(LocalFileOpener):
        def read(self, size=-1):
            calls["read"] += 1
            if calls["read"] % 3 == 0:
                raise ConnectionResetError(errno.ECONNRESET, "connection reset by peer")
            return super().read(512 if size < 0 else min(size, 512))  # short reads, as a socket gives

    class FlakyFileSystem(LocalFileSystem):
        protocol = "flaky"

        def _open(self, path, mode="rb", block_size=None, **kwargs):
            calls["open"] += 1
            return FlakyFile(path, mode, fs=self, **kwargs)

    fsspec.register_implementation("flaky", FlakyFileSystem, clobber=True)
    monkeypatch.setattr(storage.errors, "RETRY_FIRST_WAIT", 0.001)
    stream = io.BufferedReader(
        storage.ResumableReader(FlakyFileSystem(), str(path), "flaky://docs", 256), 256
    )
    with gzip.GzipFile(fileobj=stream) as f:
        assert f.read() == CONTENT
    assert calls["open"] > 10  # it did fail and reopen, many times


def _chained(outer: BaseException, cause: BaseException) -> BaseException:
    outer.__cause__ = cause
    return outer
