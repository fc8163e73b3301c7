"""The output lock: one holder at a time, released when done, renewed while held, and taken over once its
holder is gone or its lease expired."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from distilbeam.transforms import lock
from distilbeam.transforms.storage import Location


def test_lock_refuses_a_second_holder_and_is_released(tmp_path):
    first = lock.OutputLock(Location(str(tmp_path)), "run-1")
    first.acquire()
    record = json.loads((tmp_path / "_state" / "lock.json").read_text())
    assert record["run_id"] == "run-1" and record["pid"] == os.getpid()
    with pytest.raises(lock.OutputLocked, match=r"in use by run run-1 .*lock\.json"):
        lock.OutputLock(Location(str(tmp_path)), "run-2").acquire()
    first.release()
    assert not (tmp_path / "_state" / "lock.json").exists()
    with lock.OutputLock(Location(str(tmp_path)), "run-3"):
        assert json.loads((tmp_path / "_state" / "lock.json").read_text())["run_id"] == "run-3"


def _write_lock(tmp_path, **fields) -> None:
    record = {
        "run_id": "old",
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "pid_started": 0.0,
        "acquired_at": "2026-01-01T00:00:00+00:00",
        "token": "t",
        "expires_at": time.time() + 3600,
    }
    record.update(fields)
    (tmp_path / "_state").mkdir(exist_ok=True)
    (tmp_path / "_state" / "lock.json").write_text(json.dumps(record))


def test_lock_of_a_dead_process_on_this_host_is_taken_over(tmp_path):
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    _write_lock(tmp_path, pid=int(child.stdout))
    with lock.OutputLock(Location(str(tmp_path)), "new"):
        assert json.loads((tmp_path / "_state" / "lock.json").read_text())["run_id"] == "new"


def test_lock_on_another_host_holds_until_it_expires(tmp_path):
    _write_lock(tmp_path, host="elsewhere", pid=1)
    with pytest.raises(lock.OutputLocked, match="pid 1 on elsewhere"):
        lock.OutputLock(Location(str(tmp_path)), "new").acquire()
    _write_lock(tmp_path, host="elsewhere", pid=1, expires_at=time.time() - 1)
    with lock.OutputLock(Location(str(tmp_path)), "new"):
        assert json.loads((tmp_path / "_state" / "lock.json").read_text())["run_id"] == "new"


def test_lock_is_renewed_while_held(tmp_path):
    held = lock.OutputLock(Location(str(tmp_path)), "run", ttl=0.6)
    with held:
        first = json.loads((tmp_path / "_state" / "lock.json").read_text())["expires_at"]
        time.sleep(0.9)
        later = json.loads((tmp_path / "_state" / "lock.json").read_text())
        assert later["expires_at"] > first and not lock.is_stale(later)


def test_lock_released_before_anything_was_written_leaves_no_folder(tmp_path):
    with lock.OutputLock(Location(str(tmp_path / "new" / "out")), "run"):
        assert (tmp_path / "new" / "out" / "_state" / "lock.json").exists()
    assert list(tmp_path.iterdir()) == []
