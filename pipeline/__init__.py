"""distilbeam's entry point and wiring: the command line, the config model and the pipeline graph."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("distilbeam")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
