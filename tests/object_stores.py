"""Object stores on loopback for the tests: an S3 server (moto in server mode), a GCS emulator
(gcp-storage-emulator), and a fault-injecting HTTP proxy to put in front of either. All run in this process
on ports the OS picks; the fixtures start them once per test session and stop them at its end.

Clients find the servers through the variables they read in production: ``AWS_ENDPOINT_URL`` (with
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``) for S3, ``STORAGE_EMULATOR_HOST``
for GCS. ``s3_store`` and ``gcs_store`` set them for the test that asks (with fresh clients, since fsspec
reuses clients across tests); ``Store.env`` gives them to a child process."""

from __future__ import annotations

import dataclasses
import http.client
import http.server
import json
import logging
import os
import random
import socket
import struct
import threading
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# gcsfs asks a gRPC control API for each bucket's layout unless told not to; an emulator has no such API
# and each call waits out a 60 s timeout. It is read when gcsfs is imported.
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"

S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "test-access-key",
    "AWS_SECRET_ACCESS_KEY": "test-secret-key",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclasses.dataclass
class Store:
    """A running object store: its URL scheme, endpoint and the variables a client needs to find it."""

    scheme: str  # s3 | gs
    endpoint: str  # http://127.0.0.1:PORT
    env: dict[str, str]

    @property
    def endpoint_variable(self) -> tuple[str, str]:
        """The environment variable that points this store's client at the endpoint, and its value."""
        return ("AWS_ENDPOINT_URL" if self.scheme == "s3" else "STORAGE_EMULATOR_HOST"), self.endpoint

    def fs(self):
        """A client of this endpoint, whatever the environment says (tests point it at proxies)."""
        import fsspec

        if self.scheme == "s3":
            keys = {"key": self.env["AWS_ACCESS_KEY_ID"], "secret": self.env["AWS_SECRET_ACCESS_KEY"]}
            return fsspec.filesystem("s3", endpoint_url=self.endpoint, **keys)
        return fsspec.filesystem("gs", endpoint_url=self.endpoint, token="anon")

    def new_bucket(self, prefix: str = "b") -> str:
        """A fresh, empty bucket; tests share a server, never a bucket."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.fs().mkdir(name)
        return name

    def put(self, path: str, data: bytes) -> None:
        """Stores ``data`` at ``bucket/key``. Streamed (a resumable upload on GCS), because the emulator's
        parser of one-request multipart uploads drops a final carriage return from the content."""
        with self.fs().open(path, "wb") as f:
            f.write(data)

    def put_tree(self, local: Path, path: str) -> None:
        for file in sorted(p for p in local.rglob("*") if p.is_file()):
            self.put(f"{path}/{file.relative_to(local).as_posix()}", file.read_bytes())

    def url(self, bucket: str, *parts: str) -> str:
        return "/".join([f"{self.scheme}://{bucket}", *parts])

    def via(self, endpoint: str) -> Store:
        """The same store reached through another endpoint (a proxy in front of it)."""
        env = {k: (endpoint if v == self.endpoint else v) for k, v in self.env.items()}
        return Store(self.scheme, endpoint, env)


def start_s3() -> tuple[Store, object]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    return Store("s3", endpoint, {"AWS_ENDPOINT_URL": endpoint, **S3_CREDENTIALS}), server


def start_gcs() -> tuple[Store, object]:
    from gcp_storage_emulator.server import create_server

    logging.getLogger("gcp_storage_emulator").setLevel(logging.WARNING)
    server = create_server("127.0.0.1", 0, in_memory=True)
    server.start()
    port = server._api._httpd.server_address[1]
    endpoint = f"http://127.0.0.1:{port}"
    return Store("gs", endpoint, {"STORAGE_EMULATOR_HOST": endpoint}), server


@pytest.fixture(scope="session")
def s3_server() -> Iterator[Store]:
    store, server = start_s3()
    yield store
    server.stop()


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[Store]:
    store, server = start_gcs()
    yield store
    server.stop()


@pytest.fixture
def s3_store(s3_server, monkeypatch) -> Iterator[Store]:
    """The session's S3 server, with the environment pointing this test's clients at it."""
    yield from _use(s3_server, monkeypatch)


@pytest.fixture
def gcs_store(gcs_server, monkeypatch) -> Iterator[Store]:
    """The session's GCS emulator, with the environment pointing this test's clients at it."""
    yield from _use(gcs_server, monkeypatch)


def _use(store: Store, monkeypatch) -> Iterator[Store]:
    for key, value in store.env.items():
        monkeypatch.setenv(key, value)
    _forget_clients()
    yield store
    _forget_clients()


def _forget_clients() -> None:
    """fsspec reuses one client per set of arguments, made with the environment of its day: after a test
    that pointed the environment at another server, the next one needs new clients."""
    import fsspec

    for protocol in ("s3", "gs"):
        fsspec.get_filesystem_class(protocol).clear_instance_cache()


@pytest.fixture(params=["s3", "gs"])
def store(request) -> Store:
    """Each test using it runs once against the S3 server and once against the GCS emulator."""
    return request.getfixturevalue("s3_store" if request.param == "s3" else "gcs_store")


@pytest.fixture
def fault_proxy(store) -> Iterator[FaultProxy]:
    proxy = FaultProxy(store)
    proxy.start()
    yield proxy
    proxy.stop()


# -- fault injection ---------------------------------------------------------------------------------------

HOP_HEADERS = ("transfer-encoding", "content-length", "connection", "date", "server")
FAULTS = ("503", "reset", "cut")  # a 503 reply; the connection reset with no reply; the body cut short


class FaultProxy:
    """An HTTP proxy in front of a store that makes a fraction of requests fail the ways networks and object
    stores fail: a 503 (throttling or a busy backend) in the store's own error format, a connection reset
    after the store handled the request but before any reply, and a reply whose body stops part-way.

    The first requests fail until each kind of fault has happened once; after that, which requests fail is
    decided from the request itself (method, path, query, range) with a seeded generator. No request fails
    more than ``max_in_a_row`` times in a row, so a client that retries always gets through. Requests about
    a bucket named in ``deny`` get 403 Access Denied every time (a permanent error). ``counts`` tallies
    what was injected; ``rate=0`` makes a plain relay (to count requests)."""

    def __init__(self, store: Store, rate: float = 0.25, max_in_a_row: int = 2, seed: int = 0):
        self.upstream = urllib.parse.urlsplit(store.endpoint)
        self.flavour = store.scheme
        self.rate = rate
        self.max_in_a_row = max_in_a_row
        self.seed = seed
        self.deny: set[str] = set()
        self.on_request: Callable[[str, str], None] | None = None  # sees (method, path) before any decision
        self.counts: Counter[str] = Counter()
        self.log: list[tuple[str, str]] = []  # (method, path) of every request, in arrival order
        self._attempts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.store = store.via(self.endpoint)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def decide(self, method: str, target: str, headers: http.client.HTTPMessage) -> str | None:
        """The fault to inject into this request, or None to pass it through."""
        path = urllib.parse.urlsplit(target).path
        if self.on_request:
            self.on_request(method, urllib.parse.unquote(path))
        if self._bucket(path) in self.deny:
            with self._lock:
                self.log.append((method, urllib.parse.unquote(path)))
            return "deny"
        # Buckets have random names; leaving them out makes the same test fail the same requests every run.
        bucket = self._bucket(path)
        stable = _stable_target(target)
        if bucket:
            stable = stable.replace(urllib.parse.quote(bucket), "BUCKET").replace(bucket, "BUCKET")
        key = f"{method} {stable} {headers.get('Range', '')}"
        with self._lock:
            self.log.append((method, urllib.parse.unquote(path)))
            attempt = self._attempts[key]
            self._attempts[key] += 1
        if attempt >= self.max_in_a_row or self.rate == 0:
            return None
        kinds = FAULTS if method == "GET" else FAULTS[:2]  # only a GET's reply has a body to cut
        with self._lock:
            not_yet = [kind for kind in kinds if not self.counts[kind]]
        if attempt == 0 and not_yet:
            return not_yet[0]  # every kind of fault early in the run, then a fraction at random
        rng = random.Random(f"{self.seed}\0{key}\0{attempt}")
        if attempt > 0 and rng.random() < 0.5:
            return None  # a retry succeeds half the time
        if attempt == 0 and rng.random() >= self.rate:
            return None
        return rng.choice(kinds)

    def _bucket(self, path: str) -> str | None:
        """The bucket a request is about: /BUCKET/key on S3, .../b/BUCKET/o/... on GCS."""
        segments = urllib.parse.unquote(path).split("/")
        if self.flavour == "s3":
            return segments[1] if len(segments) > 1 else None
        return segments[segments.index("b") + 1] if "b" in segments[:-1] else None

    def count(self, fault: str) -> None:
        with self._lock:
            self.counts[fault] += 1

    def error_reply(self, status: int) -> tuple[bytes, str]:
        if self.flavour == "s3":
            code, message = {503: ("SlowDown", "Please reduce your request rate.")}.get(
                status, ("AccessDenied", "Access Denied")
            )
            body = f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
            return body.encode(), "application/xml"
        reason = "backendError" if status == 503 else "forbidden"
        body = json.dumps({"error": {"code": status, "message": reason, "errors": [{"reason": reason}]}})
        return body.encode(), "application/json"


def _stable_target(target: str) -> str:
    """The request target without parts that change between retries of the same request (GCS resumable
    upload ids carry a timestamp)."""
    parts = urllib.parse.urlsplit(target)
    query = [
        (k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True) if k != "upload_id"
    ]
    return parts.path + "?" + urllib.parse.urlencode(sorted(query))


def _handler(proxy: FaultProxy) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # quiet
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                data = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return data
                    data += self.rfile.read(size)
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _reset(self) -> None:
            # SO_LINGER with a zero timeout makes close() send a TCP reset instead of an orderly FIN.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()

        def _relay(self) -> None:
            body = self._body()
            fault = proxy.decide(self.command, self.path, self.headers)
            if fault in ("deny", "503"):
                proxy.count(fault)
                status = 403 if fault == "deny" else 503
                payload, content_type = proxy.error_reply(status)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)
                return
            upstream = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=60)
            try:
                upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for name, value in self.headers.items():
                    if name.lower() not in ("transfer-encoding", "content-length", "connection"):
                        upstream.putheader(name, value)
                upstream.putheader("Content-Length", str(len(body)))
                upstream.endheaders(body)
                reply = upstream.getresponse()
                payload = reply.read()
            finally:
                upstream.close()
            if fault == "reset" or (fault == "cut" and len(payload) < 2):
                proxy.count("reset")
                self._reset()
                return
            self.send_response_only(reply.status, reply.reason)
            for name, value in reply.getheaders():
                if name.lower() not in HOP_HEADERS:
                    self.send_header(name, value)
            length = reply.getheader("Content-Length", "0") if self.command == "HEAD" else len(payload)
            self.send_header("Content-Length", str(length))
            self.end_headers()
            if self.command == "HEAD":
                return
            if fault == "cut":
                proxy.count("cut")
                self.wfile.write(payload[: len(payload) // 2])
                self.wfile.flush()
                self._reset()
                return
            self.wfile.write(payload)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = _relay

    return Handler
