"""Failures sorted in two: transient ones (throttling, 5xx replies, dropped connections, timeouts) are
retried with exponential backoff; permanent ones (no such bucket or object, access denied, a bad request)
are not, and end in a ``StorageError`` whose message names the URL. Each request is first retried by the
store's own client (botocore and s3fs for S3, gcsfs for GCS), which knows which requests are safe to
repeat; ``retrying`` retries whole operations on top of that, for clients that do not retry and for
outages longer than a client's own budget."""

from __future__ import annotations

import errno
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRY_ATTEMPTS = 5  # tries of one operation, each of them retried inside the client too
RETRY_FIRST_WAIT = 0.5  # seconds before the second try; doubles each time, with jitter
RETRY_MAX_WAIT = 20.0

# Exception classes (by name, so that no client library has to be installed) that mean a dropped
# connection, a timeout or a reply cut short: aiohttp, botocore, requests, urllib3, http.client, fsspec.
_TRANSIENT_CLASSES = {
    "ClientConnectionError",
    "ClientPayloadError",
    "ServerDisconnectedError",
    "ServerTimeoutError",
    "EndpointConnectionError",
    "ConnectionClosedError",
    "ReadTimeoutError",
    "ConnectTimeoutError",
    "IncompleteReadError",
    "ResponseStreamingError",
    "IncompleteRead",
    "ProtocolError",
    "ChunkedEncodingError",
    "ProxyError",
    "FSTimeoutError",
}
# Error codes S3 (and S3-compatible stores) send for throttling and for failures on their side.
_TRANSIENT_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "ServiceUnavailable",
}
_TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
_TRANSIENT_ERRNO = {
    errno.EBUSY,  # s3fs: SlowDown, ServiceUnavailable, 503
    getattr(errno, "EREMOTEIO", 121),  # s3fs: InternalError, 500
    errno.ECONNRESET,
    errno.ECONNABORTED,
    errno.ECONNREFUSED,
    errno.EPIPE,
    errno.ETIMEDOUT,
}


class StorageError(OSError):
    """A storage operation that failed for good: a permanent error, or a transient one that outlasted
    every retry (``transient`` tells which). The message names the URL and what the store said."""

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient

    def __reduce__(self):  # keep the message and flag when Beam pickles the error between processes
        return StorageError, (str(self), self.transient)


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the operation that raised ``exc`` can succeed."""
    if isinstance(exc, StorageError):
        return False  # already retried
    if isinstance(exc, FileNotFoundError | PermissionError | FileExistsError | IsADirectoryError):
        return False
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if _transient_here(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _transient_here(exc: BaseException) -> bool:
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    if _TRANSIENT_CLASSES & {c.__name__ for c in type(exc).__mro__}:
        return True
    if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNO:
        return True
    response = getattr(exc, "response", None)  # botocore ClientError
    if isinstance(response, Mapping):
        code = response.get("Error", {}).get("Code")
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in _TRANSIENT_CODES or status in _TRANSIENT_STATUS:
            return True
    if type(exc).__name__ == "HttpError":  # gcsfs
        return str(getattr(exc, "code", "")) in {str(s) for s in _TRANSIENT_STATUS}
    return False


def describe(exc: BaseException) -> str:
    """What went wrong, in a line."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, FileNotFoundError):  # gcsfs puts a request path in the message, s3fs a sentence
        return f"no such bucket or object ({text})" if " " in text else "no such bucket or object"
    if isinstance(exc, PermissionError) or text.startswith("Forbidden") or "AccessDenied" in text:
        return f"access denied ({text})"
    return f"{type(exc).__name__}: {text}"


def retrying(action: str, uri: str, operation: Callable[[], T], attempts: int = RETRY_ATTEMPTS) -> T:
    """Runs ``operation``, retrying transient errors with exponential backoff and jitter; any other error,
    or the last transient one, becomes a StorageError naming ``action`` and ``uri``."""
    for attempt in range(1, attempts + 1):
        try:
            return operation()
        except StorageError:
            raise
        except Exception as exc:
            transient = is_transient(exc)
            if not transient or attempt == attempts:
                tries = f" after {attempts} tries" if transient else ""
                raise StorageError(f"cannot {action} {uri}{tries}: {describe(exc)}", transient) from exc
            wait = min(RETRY_MAX_WAIT, RETRY_FIRST_WAIT * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
            log.warning("%s %s failed (%s); retrying in %.1fs", action, uri, describe(exc), wait)
            time.sleep(wait)
    raise AssertionError("unreachable")
