"""The ``distilbeam`` command.

    distilbeam run --config FILE [--set dotted.key=value ...] [--force] [--full-refresh] [--detach]
                   [Beam flags ...]
    distilbeam demo-models DIR
    distilbeam bench [--docs N | --quick | --corpus FILE] [--out FILE]
    distilbeam train --config FILE [--set dotted.key=value ...]
    distilbeam distil --config FILE [--set dotted.key=value ...]

Flags ``run`` does not know are Beam's and go to ``PipelineOptions`` untouched. Exit status: 0 when every
document was written or dead-lettered, 1 when the run failed or lost track of a document, 2 for a mistake
in the config or the command line, 3 when dead-letter rows exceed ``output.max_failed_fraction`` of the
output's documents, 4 when another run holds the output directory."""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from pathlib import Path

from distilbeam.pipeline import bench, config, metrics, runs, training
from distilbeam.pipeline.options import pipeline_options, worker_processes
from distilbeam.transforms import SetupError, state, storage
from distilbeam.transforms.devices import cpu_cores
from distilbeam.transforms.report import REPORT_HTML, REPORT_MD
from distilbeam.transforms.write import ERRORS_DIR, SUMMARY_FILE

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
        "--detach", action="store_true", help="submit the job and return without waiting for it to finish"
    )
    run_p.add_argument(
        "--full-refresh",
        action="store_true",
        help="incremental mode: annotate every shard again, whatever the output already holds",
    )
    run_p.add_argument(
        "--metrics", metavar="FILE", help="write the run's metrics (tokens, padding, model time) as JSON"
    )
    demo_p = commands.add_parser("demo-models", help="write small random-weight models for offline runs")
    demo_p.add_argument("dir", type=Path)
    bench_p = commands.add_parser("bench", help="time distilbeam against the stock approaches")
    bench.add_arguments(bench_p)
    training.add_arguments(commands.add_parser("train", help="fine-tune a model for classify or ner"))
    training.add_arguments(commands.add_parser("distil", help="distil a smaller student from a run's labels"))
    args, rest = parser.parse_known_args(argv)
    _configure_logging()
    try:
        if args.command == "demo-models":
            if rest:
                parser.error(f"unrecognized arguments: {' '.join(rest)}")
            return demo_models(args.dir)
        if args.command in ("train", "distil"):
            if rest:
                parser.error(f"unrecognized arguments: {' '.join(rest)}")
            return training.main(args)
        if args.command == "bench":
            if rest:
                parser.error(f"unrecognized arguments: {' '.join(rest)}")
            return bench.main(args)
        return run(
            args.config,
            args.set,
            args.force,
            rest,
            detach=args.detach,
            full_refresh=args.full_refresh,
            metrics_path=args.metrics,
        )
    except state.OutputLocked as exc:
        print(f"distilbeam: error: {exc}", file=sys.stderr)
        return runs.EXIT_LOCKED
    except SetupError as exc:
        # One line, even when the message quotes a library's multi-line error.
        print(f"distilbeam: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return runs.EXIT_CONFIG


def run(
    config_path: str,
    overrides: list[str],
    force: bool,
    beam_argv: list[str],
    detach: bool = False,
    full_refresh: bool = False,
    metrics_path: str | None = None,
) -> int:
    from distilbeam.pipeline import runners

    cfg = config.load(config_path, overrides)
    options = pipeline_options(cfg.beam, beam_argv)
    runners.check_paths(cfg, options)
    run_id = state.new_run_id()
    if runners.is_dry_run(options):  # the job is built and checked; the output is not touched
        return _launch(cfg, options, run_id, force, full_refresh, detach, dry_run=True, metrics_path=None)
    check_output_folder(cfg.output.path, cfg.output.storage_options, writable=True)
    with state.OutputLock(cfg.output.path, cfg.output.storage_options, run_id):
        return _launch(
            cfg, options, run_id, force, full_refresh, detach, dry_run=False, metrics_path=metrics_path
        )


def _launch(
    cfg: config.Config,
    options,
    run_id: str,
    force: bool,
    full_refresh: bool,
    detach: bool,
    dry_run: bool,
    metrics_path: str | None,
) -> int:
    import apache_beam as beam

    from distilbeam.pipeline import runners
    from distilbeam.pipeline.graph import build
    from distilbeam.pipeline.plan import prepare

    if not dry_run:
        prepare_output(cfg.output.path, cfg.output.storage_options, force, cfg.output.mode)
    plan = prepare(cfg, worker_processes(options), options)
    local = runs.runs_locally(options)
    progress = runs.Progress(enabled=local and not dry_run)
    try:
        plan = runs.choose_shards(plan, run_id, full_refresh, progress.dir, read_output=not dry_run)
        chosen = ", ".join(f"{n} {why}" for why, n in plan.run.selection.items() if n)
        # On a remote runner an empty pipeline still runs, so that a scheduler launching a job (a Dataflow
        # Flex Template) gets one, ending in success, on a night with nothing new.
        if not plan.shards and local and not dry_run:
            summary = runs.record_idle_run(plan)
            print(f"distilbeam: run {run_id}: nothing to annotate ({chosen}) -> {cfg.output.path}")
            return _report_status(summary)
        log.info(
            "run %s: annotating %d shards (%s) with %d tasks into %s",
            run_id,
            len(plan.shards),
            chosen,
            len(cfg.tasks),
            cfg.output.path,
        )
        if local:
            workers = runs.choose_local_workers(plan, options)
            threads = plan.groups[0].handlers[0].runtime.threads()
            log.info(
                "local run: %d worker%s x %d torch thread%s on %d cores",
                workers,
                "s" if workers > 1 else "",
                threads,
                "s" if threads > 1 else "",
                cpu_cores(),
            )
        pipeline = beam.Pipeline(options=options)
        build(pipeline, plan)
        progress.start(plan)
        result = pipeline.run()
        if dry_run:
            print("distilbeam: dry run: the job was built and checked, not submitted")
            return 0
        if detach:
            print(f"distilbeam: submitted {runners.job_name(result)}; outputs go to {cfg.output.path}")
            return 0
        result_state = result.wait_until_finish()
        metrics.report(result, metrics_path)
    except Exception as exc:  # the traceback for whoever debugs it, then what happened, in one line
        traceback.print_exc()
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        print(f"distilbeam: error: the pipeline failed: {reason}", file=sys.stderr)
        return runs.EXIT_FAILED
    finally:
        progress.stop()
    for task, seen in sorted(runners.worker_report(result).items()):
        log.info(
            "task %s: model loaded %d times by workers, %s torch threads each",
            task,
            seen.get("model_loads", 0),
            _span(seen.get("min_threads"), seen.get("max_threads")),
        )
    summary = runs.read_run_summary(cfg, run_id)
    if summary is None:
        print(f"distilbeam: pipeline ended in state {result_state}; no summary was written", file=sys.stderr)
        return runs.EXIT_FAILED
    print(
        f"distilbeam: run {run_id}: {summary['docs_read']} documents read, "
        f"{summary['docs_written']} written, {summary['docs_failed']} dead-lettered in "
        f"{summary['wall_seconds']:.1f}s -> {cfg.output.path}"
    )
    return _report_status(summary)


def _report_status(summary: dict) -> int:
    status = runs.exit_status(summary)
    if summary.get("status") == "incomplete":
        print(
            "distilbeam: error: documents read and documents written or failed do not add up", file=sys.stderr
        )
    elif summary.get("status") == "dead_letter_exceeded":
        out = summary["output"]
        print(
            f"distilbeam: error: {out['docs_failed']} of the output's {out['docs_read']} documents are "
            f"dead-lettered ({100 * out['failed_fraction']:.2f}%), over output.max_failed_fraction "
            f"({100 * summary['max_failed_fraction']:.2f}%)",
            file=sys.stderr,
        )
    return status


def prepare_output(path: str, storage_options: dict, force: bool, mode: str = "overwrite") -> None:
    """Refuses to mix a run's files with an earlier run's; with ``force``, removes the earlier outputs
    (and only those: files distilbeam did not write stay where they are). In incremental mode a folder
    holding only distilbeam's files is expected (an earlier run's, or an interrupted one's); a folder
    with anything else in it is refused the same way, and --force starts it over."""
    fs, root = storage.filesystem(path, storage_options)
    if not fs.exists(root):
        return
    check_output_folder(path, storage_options)
    entries = [e for e in fs.ls(root, detail=False) if not _only_lock(fs, e)]
    if not entries:
        return
    if mode == "incremental" and not force and all(_ours(e) for e in entries):
        return
    if not force:
        raise config.ConfigError(
            f"output.path: {path} is not empty; choose another path, or pass --force to replace "
            "the distilbeam outputs in it"
        )
    for entry in entries:
        name = entry.rstrip("/").rsplit("/", 1)[-1]
        if (
            (name.startswith("part-") and name.endswith(".parquet"))
            or name in (SUMMARY_FILE, REPORT_MD, REPORT_HTML)
            or name.startswith(storage.WRITE_CHECK_PREFIX)
        ):
            storage.remove(storage.join(path, name), storage_options)
        elif name == ERRORS_DIR or name.startswith("run_date="):
            storage.remove(storage.join(path, name), storage_options, recursive=True)
        elif name == state.STATE_DIR:  # the manifest goes; the earlier runs' records stay
            storage.remove(state.state_uri(path, state.SHARDS_DIR), storage_options, recursive=True)
    fs.invalidate_cache()


def _is_dir(fs, root: str, path: str) -> bool:
    return storage.retrying("look up", path, lambda: fs.isdir(root))


def check_output_folder(path: str, storage_options: dict, writable: bool = False) -> None:
    """output.path is a folder or nothing yet; with ``writable``, also one this run can write in, so that a
    missing bucket or a denied write ends the run here rather than after the work is done."""
    fs, root = storage.filesystem(path, storage_options)
    try:
        if storage.exists(path, storage_options) and not _is_dir(fs, root, path):
            raise config.ConfigError(f"output.path: {path} exists and is not a directory")
        if writable:
            storage.check_writable(path, storage_options)
    except OSError as exc:
        raise config.ConfigError(f"output.path: {exc}") from None


def _ours(entry: str) -> bool:
    name = entry.rstrip("/").rsplit("/", 1)[-1]
    return (
        (name.startswith("part-") and name.endswith(".parquet"))
        or name in (SUMMARY_FILE, REPORT_MD, REPORT_HTML, ERRORS_DIR, state.STATE_DIR)
        or name.startswith("run_date=")
        or (name.startswith(".") and name.endswith(".tmp"))
        or name.startswith(storage.WRITE_CHECK_PREFIX)  # left only if the store let us write, not delete
    )


def _only_lock(fs, entry: str) -> bool:
    """The _state folder holding nothing but the lock (this run's): not an earlier output."""
    if entry.rstrip("/").rsplit("/", 1)[-1] != state.STATE_DIR:
        return False
    names = {n.rstrip("/").rsplit("/", 1)[-1] for n in fs.ls(entry, detail=False)}
    return names <= {state.LOCK_FILE, state.RUNS_DIR}


def demo_models(directory: Path) -> int:
    from distilbeam.pipeline.demo import write_demo_models

    written = write_demo_models(directory)
    for name, path in written.items():
        print(f"distilbeam: wrote {name} model to {path}")
    return 0


def _span(low: int | None, high: int | None) -> str:
    if low is None:
        return "unknown"
    return str(low) if low == high else f"{low}-{high}"


def _configure_logging() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("distilbeam").setLevel(logging.INFO)


if __name__ == "__main__":
    sys.exit(main())
