"""Reusable Beam transforms of distilbeam: reading shards, batching, task model handlers, writing Parquet."""

import logging


class SetupError(ValueError):
    """A problem found before the pipeline starts: the message names the key, path or model at fault."""


def _import_beam_quietly() -> None:
    """Beam without its gcp extra (distilbeam's base install) logs "apitools not found" through the root
    logger when it is imported. That is noise for a local run, and logging it would configure the root
    logger before the command sets its own format. Import Beam once with that one message dropped."""
    root = logging.getLogger()
    quiet = logging.NullHandler()  # with a handler present, logging.warning() leaves the root logger as it is
    drop = logging.Filter()
    drop.filter = lambda record: "apitools not found" not in record.getMessage()  # type: ignore[method-assign]
    root.addHandler(quiet)
    root.addFilter(drop)
    try:
        import apache_beam  # noqa: F401
    finally:
        root.removeFilter(drop)
        root.removeHandler(quiet)


_import_beam_quietly()
