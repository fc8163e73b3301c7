"""The Dataflow Flex Template's entry point: turns the template's parameters into a ``distilbeam run``.

Dataflow's launcher runs ``configs/flex-template/launch.py`` in the template image with each parameter of
``configs/flex-template/metadata.json`` as a ``--name=value`` flag, followed by the pipeline options
Dataflow sets itself (project, region, staging and temp locations, ...), which go to Beam unchanged. The
job is submitted and not waited for: the launcher only builds and submits it."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from distilbeam.transforms import SetupError, storage

# The parameters metadata.json declares; each is a flag of this entry point.
PARAMETERS = ("config", "input_paths", "output_path", "overrides", "force")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="distilbeam-flex-template", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="config file: a path in the image or a gs:// URL")
    p.add_argument("--input_paths", help="comma-separated globs replacing input.paths")
    p.add_argument("--output_path", help="replaces output.path")
    p.add_argument(
        "--overrides", help='JSON object of dotted config keys to values, e.g. {"batching.max_tokens": 16384}'
    )
    p.add_argument(
        "--force", default="false", help="true replaces the outputs of an earlier run in output.path"
    )
    return p


def cli_args(argv: list[str]) -> list[str]:
    """The ``distilbeam`` command line the parameters stand for (the config fetched first if remote)."""
    args, beam_flags = parser().parse_known_args(argv)
    sets = []
    if args.input_paths:
        paths = [p.strip() for p in args.input_paths.split(",") if p.strip()]
        sets.append(f"input.paths={json.dumps(paths)}")
    if args.output_path:
        sets.append(f"output.path={json.dumps(args.output_path)}")
    if args.overrides:
        try:
            overrides = json.loads(args.overrides)
        except ValueError as exc:
            raise SetupError(f"--overrides: not valid JSON: {exc}") from None
        if not isinstance(overrides, dict):
            raise SetupError('--overrides: expected a JSON object such as {"batching.max_tokens": 16384}')
        sets += [f"{key}={json.dumps(value)}" for key, value in overrides.items()]
    force = args.force.strip().lower()
    if force not in ("true", "false"):
        raise SetupError(f"--force: expected true or false, got {args.force!r}")
    command = ["run", "--config", local_config(args.config), "--detach"]
    command += [item for s in sets for item in ("--set", s)]
    if force == "true":
        command.append("--force")
    return [*command, *beam_flags]


def local_config(uri: str) -> str:
    """A config in object storage is copied to a local file; a path in the image is used as it is."""
    if storage.is_local(uri):
        return uri
    fs, path = storage.Location(uri).filesystem()
    try:
        text = fs.cat_file(path)
    except Exception as exc:
        raise SetupError(f"--config: cannot read {uri}: {exc}") from exc
    target = Path(tempfile.mkdtemp(prefix="distilbeam-config-")) / Path(path).name
    target.write_bytes(text)
    return str(target)


def main(argv: list[str] | None = None) -> int:
    from distilbeam.pipeline import cli

    try:
        args = cli_args(sys.argv[1:] if argv is None else argv)
    except SetupError as exc:
        print(f"distilbeam: error: {exc}", file=sys.stderr)
        return 2
    return cli.main(args)
