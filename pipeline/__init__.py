"""distilbeam's entry point and wiring: the command line, the config model and the pipeline graph."""

from importlib.metadata import PackageNotFoundError, version

import distilbeam.transforms  # noqa: F401  (first: it imports Beam without its import-time log noise)

try:
    __version__ = version("distilbeam")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
