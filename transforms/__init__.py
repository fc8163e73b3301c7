"""Reusable Beam transforms of distilbeam: reading shards, batching, task model handlers, writing Parquet."""


class SetupError(ValueError):
    """A problem found before the pipeline starts: the message names the key, path or model at fault."""
