"""The lease that keeps two runs from writing one output folder at once: ``_state/lock.json`` names the run
holding it (its holder record) and when it expires; the holder renews it while it runs, and a lock whose
holder stopped renewing it, or died on this host, is stale and taken over (``OutputLock``, ``is_stale``)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

from fsspec.implementations.local import LocalFileSystem

from distilbeam.transforms import SetupError, layout, storage
from distilbeam.transforms.state import iso_time
from distilbeam.transforms.storage import Location

log = logging.getLogger(__name__)

LOCK_TTL_SECONDS = 600.0  # a lock whose holder stopped renewing it for this long is stale
LOCK_RENEW_SECONDS = 60.0


class OutputLocked(SetupError):
    """Another run holds the output directory."""


class OutputLock:
    """A lease on an output directory: ``_state/lock.json`` names its holder (run id, host, pid and the
    process's start time) and an expiry that the holder renews while it runs. A lock is stale, and taken
    over, once it expires or when its holder was on this host and that process is gone (a killed run
    does not make the next one wait). On a local disk the lock is created exclusively; on object stores,
    which fsspec gives no create-if-absent for, it is written and read back."""

    def __init__(self, out: Location, run_id: str, ttl: float = LOCK_TTL_SECONDS):
        self.location = layout.lock_location(out)
        self.uri = self.location.url
        self._ttl = ttl
        self._holder = _holder_record(run_id)
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._made: list[str] = []  # local folders the lock created, removed on release if still empty

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def acquire(self) -> None:
        try:
            self._acquire()
        except OSError as exc:  # the store refused: say so in one line, before anything runs
            reason = storage.describe(exc)
            raise SetupError(f"output.path: cannot take the lock {self.uri}: {reason}") from exc

    def _acquire(self) -> None:
        fs, path = self.location.filesystem()
        for _ in range(5):
            current = self._read(fs, path)
            if current is not None and not is_stale(current):
                raise OutputLocked(_locked_message(self.uri, current))
            if current is not None:
                log.warning(
                    "taking over the stale lock of run %s (pid %s on %s)",
                    current.get("run_id"),
                    current.get("pid"),
                    current.get("host"),
                )
            if self._create(fs, path, current):
                self._renewer = threading.Thread(target=self._renew, name="distilbeam-lock", daemon=True)
                self._renewer.start()
                return
        raise OutputLocked(f"could not take the lock {self.uri}: other runs keep taking it; try again")

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
            self._renewer = None
            fs, path = self.location.filesystem()
            try:
                current = self._read(fs, path)
                if current is not None and current.get("token") == self._holder["token"]:
                    self.location.remove()
            except OSError as exc:  # the store refuses now (a policy changed under the run)
                log.warning("could not release the lock %s (%s); it expires by itself", self.uri, exc)
                return
            if isinstance(fs, LocalFileSystem):  # a run that stopped before writing leaves no trace
                for folder in [os.path.dirname(os.path.abspath(path)), *self._made[1:]]:
                    with contextlib.suppress(OSError):  # not empty: the run wrote something
                        os.rmdir(folder)

    def _record(self) -> bytes:
        now = time.time()
        record = {**self._holder, "renewed_at": iso_time(now), "expires_at": now + self._ttl}
        return (json.dumps(record, indent=1) + "\n").encode()

    def _create(self, fs: Any, path: str, stale: dict | None) -> bool:
        if isinstance(fs, LocalFileSystem):
            state_dir = folder = os.path.dirname(os.path.abspath(path))
            while not os.path.exists(folder) and folder != os.path.dirname(folder):
                self._made.append(folder)
                folder = os.path.dirname(folder)
            os.makedirs(state_dir, exist_ok=True)
            if stale is not None and not _move_aside(path, stale):
                return False
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as f:
                f.write(self._record())
                f.flush()
                os.fsync(f.fileno())
            return True
        fs.pipe(path, self._record())
        time.sleep(1.0)  # let a racing writer's lock land, then see whose lock stuck
        fs.invalidate_cache()
        current = self._read(fs, path)
        return current is not None and current.get("token") == self._holder["token"]

    def _renew(self) -> None:
        interval = min(LOCK_RENEW_SECONDS, self._ttl / 3)
        while not self._stop.wait(interval):
            try:
                fs, path = self.location.filesystem()
                current = self._read(fs, path)
                if current is None or current.get("token") != self._holder["token"]:
                    log.error(
                        "the lock %s was taken over by another run; this run's output may mix", self.uri
                    )
                    return
                self.location.write_bytes(self._record())
            except Exception as exc:  # a renewal that fails is retried; the run itself goes on
                log.warning("could not renew the lock %s: %s", self.uri, exc)

    @staticmethod
    def _read(fs: Any, path: str) -> dict | None:
        try:
            fs.invalidate_cache()
            return json.loads(fs.cat_file(path))
        except FileNotFoundError:
            return None
        except ValueError:
            return {"token": None, "expires_at": 0}  # unreadable (a torn write on a store): stale


def _holder_record(run_id: str) -> dict[str, Any]:
    import psutil

    pid = os.getpid()
    return {
        "run_id": run_id,
        "host": socket.gethostname(),
        "pid": pid,
        "pid_started": psutil.Process(pid).create_time(),
        "acquired_at": iso_time(time.time()),
        "token": uuid.uuid4().hex,
    }


def is_stale(record: Mapping[str, Any], now: float | None = None) -> bool:
    import psutil

    if float(record.get("expires_at") or 0) < (now or time.time()):
        return True
    if record.get("host") != socket.gethostname():
        return False
    try:
        process = psutil.Process(int(record.get("pid")))
        return abs(process.create_time() - float(record.get("pid_started") or 0)) > 1.0
    except (psutil.NoSuchProcess, TypeError, ValueError):
        return True


def _move_aside(path: str, stale: Mapping[str, Any]) -> bool:
    """Moves a stale lock out of the way, unless another run replaced it in the meantime."""
    aside = layout.lock_aside_name(path, uuid.uuid4().hex)
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return True
    try:
        with open(aside, "rb") as f:
            moved = json.loads(f.read() or b"{}")
    except ValueError:
        moved = {}
    if moved.get("token") != stale.get("token"):  # a fresh lock: put it back
        with contextlib.suppress(FileExistsError):
            os.link(aside, path)
        os.remove(aside)
        return False
    os.remove(aside)
    return True


def _locked_message(uri: str, holder: Mapping[str, Any]) -> str:
    expires = iso_time(float(holder.get("expires_at") or 0))
    return (
        f"output.path is in use by run {holder.get('run_id')} "
        f"(pid {holder.get('pid')} on {holder.get('host')}, since {holder.get('acquired_at')}); "
        f"its lock {uri} expires at {expires} unless renewed. Wait for that run to end; if it is dead "
        "on another machine, delete the lock file"
    )
