"""The ``distilbeam`` command.

    distilbeam run --config FILE [--set dotted.key=value ...] [--force] [Beam flags ...]
    distilbeam demo-models DIR
    distilbeam bench [--docs N | --quick | --corpus FILE] [--out FILE]

Flags ``run`` does not know are Beam's and go to ``PipelineOptions`` untouched. Exit status: 0 when every
document was written or dead-lettered, 1 when the run failed or lost track of a document, 2 for a mistake
in the config or the command line."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from pipeline import bench, config, metrics
from pipeline.options import pipeline_options, worker_processes
from transforms import SetupError, storage
from transforms.write import ERRORS_DIR, SUMMARY_FILE

log = logging.getLogger("distilbeam")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="distilbeam", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run_p = commands.add_parser("run", help="annotate the shards a config names")
    run_p.add_argument("--config", required=True, help="YAML config file")
    run_p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key"
    )
    run_p.add_argument("--force", action="store_true", help="replace earlier outputs in output.path")
    run_p.add_argument(
        "--metrics", metavar="FILE", help="write the run's metrics (tokens, padding, model time) as JSON"
    )
    demo_p = commands.add_parser("demo-models", help="write small random-weight models for offline runs")
    demo_p.add_argument("dir", type=Path)
    bench_p = commands.add_parser("bench", help="time distilbeam against the stock approaches")
    bench.add_arguments(bench_p)
    args, rest = parser.parse_known_args(argv)
    _configure_logging()
    try:
        if args.command == "demo-models":
            if rest:
                parser.error(f"unrecognized arguments: {' '.join(rest)}")
            return demo_models(args.dir)
        if args.command == "bench":
            if rest:
                parser.error(f"unrecognized arguments: {' '.join(rest)}")
            return bench.main(args)
        return run(args.config, args.set, args.force, rest, args.metrics)
    except SetupError as exc:
        print(f"distilbeam: error: {exc}", file=sys.stderr)
        return 2


def run(
    config_path: str,
    overrides: list[str],
    force: bool,
    beam_argv: list[str],
    metrics_path: str | None = None,
) -> int:
    import apache_beam as beam

    from pipeline.graph import build
    from pipeline.plan import prepare

    cfg = config.load(config_path, overrides)
    options = pipeline_options(cfg.beam, beam_argv)
    prepare_output(cfg.output.path, cfg.output.storage_options, force)
    plan = prepare(cfg, worker_processes(options))
    log.info("annotating %d shards with %d tasks into %s", len(plan.shards), len(cfg.tasks), cfg.output.path)
    pipeline = beam.Pipeline(options=options)
    build(pipeline, plan)
    result = pipeline.run()
    state = result.wait_until_finish()
    metrics.report(result, metrics_path)
    summary = read_summary(cfg.output.path, cfg.output.storage_options)
    if summary is None:
        print(f"distilbeam: pipeline ended in state {state}; no summary was written", file=sys.stderr)
        return 1
    print(
        f"distilbeam: {summary['docs_read']} documents read, {summary['docs_written']} written, "
        f"{summary['docs_failed']} dead-lettered in {summary['wall_seconds']:.1f}s -> {cfg.output.path}"
    )
    if not summary["complete"]:
        print(
            "distilbeam: error: documents read and documents written or failed do not add up", file=sys.stderr
        )
        return 1
    return 0


def prepare_output(path: str, storage_options: dict, force: bool) -> None:
    """Refuses to mix a run's files with an earlier run's; with ``force``, removes the earlier outputs
    (and only those: files distilbeam did not write stay where they are)."""
    fs, root = storage.filesystem(path, storage_options)
    if not fs.exists(root):
        return
    if not fs.isdir(root):
        raise config.ConfigError(f"output.path: {path} exists and is not a directory")
    entries = fs.ls(root, detail=False)
    if not entries:
        return
    if not force:
        raise config.ConfigError(
            f"output.path: {path} is not empty; choose another path, or pass --force to replace "
            "the distilbeam outputs in it"
        )
    for entry in entries:
        name = entry.rstrip("/").rsplit("/", 1)[-1]
        if (name.startswith("part-") and name.endswith(".parquet")) or name == SUMMARY_FILE:
            fs.rm(entry)
        elif name == ERRORS_DIR:
            fs.rm(entry, recursive=True)
    fs.invalidate_cache()


def read_summary(path: str, storage_options: dict) -> dict | None:
    fs, root = storage.filesystem(storage.join(path, SUMMARY_FILE), storage_options)
    fs.invalidate_cache()
    if not fs.exists(root):
        return None
    with fs.open(root, "rb") as f:
        return json.load(f)


def demo_models(directory: Path) -> int:
    from pipeline.demo import write_demo_models

    written = write_demo_models(directory)
    for name, path in written.items():
        print(f"distilbeam: wrote {name} model to {path}")
    return 0


def _configure_logging() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("distilbeam", "pipeline", "transforms"):
        logging.getLogger(name).setLevel(logging.INFO)


if __name__ == "__main__":
    sys.exit(main())
