"""The manifest, shard selection and clean-up after a crash."""

from __future__ import annotations

import os
import time

import pytest

from distilbeam.transforms import state
from distilbeam.transforms.storage import Location


def entry(source: str, **kw) -> state.ShardEntry:
    values = dict(
        source=source,
        size=10,
        identity="mtime:1:size:10",
        annotation_sha256="cfg1",
        outputs=(f"part-{'0' * 16}.parquet",),
        errors=(),
        docs_read=3,
        docs_written=2,
        docs_failed=1,
        tokens=30,
        run_id="20260101T000000Z-aaaaaa",
        committed_at="2026-01-01T00:00:00+00:00",
    )
    values.update(kw)
    return state.ShardEntry(**values)


def ident(uri: str, size: int = 10, identity: str = "mtime:1:size:10") -> state.ShardIdentity:
    return state.ShardIdentity(uri, size, identity)


def test_content_identity_prefers_what_the_store_versions_objects_by():
    assert state.content_identity({"generation": "17", "mtime": 5, "size": 3}) == "generation:17"
    assert state.content_identity({"ETag": '"abc"', "size": 3}) == "ETag:abc"
    assert state.content_identity({"mtime": 5.5, "size": 3}) == "mtime:5.5:size:3"
    assert state.content_identity({"size": 3}) == "size:3"


def test_identify_shards_sees_a_rewrite(tmp_path):
    a = tmp_path / "a.txt"
    a.write_text("one\n")
    before = state.identify_shards([Location(str(a))])[str(a)]
    assert before.size == 4
    os.utime(a, (time.time() + 5, time.time() + 5))
    a.write_text("one\ntwo\n")
    after = state.identify_shards([Location(str(a))])[str(a)]
    assert (after.size, after.identity) != (before.size, before.identity)


def test_select_shards_new_changed_config_and_refresh():
    entries = {"a": entry("a"), "b": entry("b"), "gone": entry("gone")}
    idents = {"a": ident("a"), "b": ident("b", size=11), "c": ident("c")}
    sel = state.select_shards(idents, entries, "cfg1", full_refresh=False)
    assert sel.todo == ["b", "c"]
    assert sel.reasons == {"b": "changed", "c": "new"}
    assert [e.source for e in sel.kept] == ["a"]
    assert [e.source for e in sel.stale] == ["gone"] and not sel.remove_stale
    assert sel.counts() == {"new": 1, "changed": 1, "config": 0, "refresh": 0, "kept": 1, "stale_kept": 1}

    changed = state.select_shards(idents, entries, "cfg2", full_refresh=False)
    assert changed.todo == ["a", "b", "c"] and changed.remove_stale
    assert changed.reasons == {"a": "config", "b": "config", "c": "new"}

    refresh = state.select_shards(idents, entries, "cfg1", full_refresh=True)
    assert set(refresh.reasons.values()) == {"refresh"} and refresh.remove_stale


def test_entries_round_trip_and_a_torn_entry_is_named(tmp_path):
    e = entry("s3://bucket/x.jsonl", errors=("_errors/part-0000000000000000.parquet",))
    state.write_entry(Location(str(tmp_path)), e)
    assert state.read_entries(Location(str(tmp_path))) == {e.source: e}
    split = entry(
        "s3://bucket/y.jsonl",
        outputs=("part-1111111111111111-00000.parquet", "part-1111111111111111-00001.parquet"),
    )
    state.write_entry(Location(str(tmp_path)), split)
    assert state.read_entries(Location(str(tmp_path)))[split.source] == split
    (tmp_path / "_state" / "shards" / "broken.json").write_text("{not json")
    with pytest.raises(state.SetupError, match=r"broken\.json"):
        state.read_entries(Location(str(tmp_path)))


def test_remove_unreferenced_keeps_committed_and_foreign_files(tmp_path):
    committed = entry(
        "a",
        outputs=("run_date=2026-01-02/part-aaaaaaaaaaaaaaaa.parquet", "part-dddddddddddddddd-00001.parquet"),
        errors=("_errors/run_date=2026-01-02/part-aaaaaaaaaaaaaaaa.parquet",),
    )
    files = {
        "run_date=2026-01-02/part-aaaaaaaaaaaaaaaa.parquet": True,  # committed
        "_errors/run_date=2026-01-02/part-aaaaaaaaaaaaaaaa.parquet": True,
        "run_date=2026-01-01/part-aaaaaaaaaaaaaaaa.parquet": False,  # replaced in another partition
        "part-bbbbbbbbbbbbbbbb.parquet": False,  # written, never committed
        "part-dddddddddddddddd-00001.parquet": True,  # a committed split
        "part-dddddddddddddddd-00002.parquet": False,  # a split of a layout no entry lists
        "_state/splits/0123456789abcdef/00000.json": False,  # a split record of a run that died
        ".part-cccccccccccccccc.parquet.0123456789abcdef0123456789abcdef.tmp": False,  # torn write
        "notes.txt": True,  # not ours
        "part-of-something-else.parquet": True,  # not a name distilbeam gives
    }
    for relative in files:
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_bytes(b"x")
    removed = state.remove_unreferenced(Location(str(tmp_path)), {"a": committed})
    assert sorted(removed) == sorted(r for r, keep in files.items() if not keep and "_state" not in r)
    for relative, keep in files.items():
        assert (tmp_path / relative).exists() == keep, relative
    assert not (tmp_path / "run_date=2026-01-01").exists()  # emptied partition folder removed


def test_an_entry_written_before_shards_were_split_still_reads(tmp_path):
    old = {
        **entry("a").to_json(),
        "output": "part-aaaaaaaaaaaaaaaa.parquet",
        "errors": "_errors/part-aaaaaaaaaaaaaaaa.parquet",
    }
    del old["outputs"]
    e = state.ShardEntry.from_json(old)
    assert e.files() == ["part-aaaaaaaaaaaaaaaa.parquet", "_errors/part-aaaaaaaaaaaaaaaa.parquet"]
