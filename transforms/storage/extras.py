"""Optional parts of distilbeam: the base install reads and writes local paths only, so that it stays
small, and each object store's fsspec filesystem comes with an extra (s3fs with ``s3``, gcsfs with
``gcs``). ``require_filesystem`` checks, without importing anything, that the store a URL names can be
reached, and otherwise raises ``MissingExtra`` naming the extra and the command that installs it; runners
use ``is_installed`` and ``MissingExtra`` the same way for their own packages."""

from __future__ import annotations

import importlib.util

from distilbeam.transforms import SetupError

# The extra that installs each object store's fsspec filesystem, and the module it provides. The base install
# reads and writes local paths only, so that it stays small.
EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}
EXTRA_MODULES = {"s3": "s3fs", "gcs": "gcsfs"}


class MissingExtra(SetupError):
    """A URL, or a runner, needs an optional part of distilbeam that is not installed. ``what`` says what
    is missing; the message adds the extra that brings it and the command that installs it."""

    def __init__(self, what: str, extra: str):
        super().__init__(f"{what}; it comes with the {extra} extra: pip install 'distilbeam[{extra}]'")
        self.what, self.extra = what, extra

    def __reduce__(self):  # Beam pickles errors between processes
        return MissingExtra, (self.what, self.extra)


def protocol(uri: str) -> str:
    return uri.split("://", 1)[0].lower() if "://" in uri else "file"


def is_installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it (a dotted name's parents may be missing)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require_filesystem(uri: str) -> None:
    """Raises MissingExtra, naming the extra to install, when the store ``uri`` names needs a package that
    is missing (s3fs for s3://, gcsfs for gs://)."""
    extra = EXTRAS.get(protocol(uri))
    if extra is not None and not is_installed(EXTRA_MODULES[extra]):
        module = EXTRA_MODULES[extra]
        raise MissingExtra(f"{uri}: {protocol(uri)}:// URLs need {module}, which is not installed", extra)
