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
import gc
import logging
import sys
import traceback
from pathlib import Path

from distilbeam.pipeline import bench, config, metrics, runs, training
from distilbeam.pipeline.options import pipeline_options, worker_processes
from distilbeam.transforms import SetupError, layout, lock, state
from distilbeam.transforms.devices import cpu_cores

log = logging.getLogger("distilbeam")


def main(argv: list[str] | None = None) -> int:
    """The command line (``argv``, else ``sys.argv``) in, an exit status out. In order: the subcommand and
    its flags are parsed (flags ``run`` does not know are kept for Beam), logging is set up, and the
    subcommand runs: every one but ``run`` refuses stray flags; ``run`` gets the config path, the ``--set``
    overrides, ``--force``, the Beam flags, ``--detach``, ``--full-refresh`` and ``--metrics``.
    A run that finds the output locked prints why and returns 4; a mistake found before the pipeline
    starts (``SetupError``) prints one line and returns 2; otherwise the subcommand's status is returned."""
    parser = argparse.ArgumentParser(prog="distilbeam", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run_p = commands.add_parser(
        "run",
        help="annotate the shards a config names",
        description="Annotate the shards a config names and write Parquet, a summary and a report to "
        "output.path.",
        epilog="Beam pipeline flags pass through: any flag not listed above (--runner=DataflowRunner, "
        "--direct_num_workers=2, --job_endpoint=..., --project=..., ...) goes to Beam's PipelineOptions "
        "as given, and wins over the config's beam: section. Exit statuses: docs/output.md.",
    )
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
    except lock.OutputLocked as exc:
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
    layout.check_output_folder(cfg.output.location, writable=True)
    with lock.OutputLock(cfg.output.location, run_id):
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
    """One run, from a checked config to its exit status, called with the output's lock held (but for a
    dry run, which leaves the output alone). In order: the output folder is prepared (an earlier output
    refused, resumed, or with ``force`` cleared; see ``layout.prepare_output``); the run is planned (models
    resolved, settings hashed); the shards to annotate are chosen against the manifest (what a crashed run
    left is cleaned up first); a local run with nothing to annotate records an idle run and returns. Then
    the pipeline is built and run, with a progress line on local runs: a dry run returns 0 once the job is
    checked, ``detach`` returns 0 once it is submitted; otherwise it is waited for and its metrics go to
    ``metrics_path``. Last, the run's summary is read back from ``_state/runs/<run id>/``, told in one line,
    and its status returned (see ``runs.exit_status``); a pipeline that failed, or wrote no summary,
    returns 1."""
    import apache_beam as beam

    from distilbeam.pipeline import runners
    from distilbeam.pipeline.graph import build
    from distilbeam.pipeline.plan import prepare

    if not dry_run:
        layout.prepare_output(cfg.output.location, force, cfg.output.mode)
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


class QuietBeamNotices(logging.Filter):
    """Drops the notices Beam repeats for every model a worker loads and that say nothing about the run.
    RunInference logs "Resource module is not available for current platform" through the root logger
    whenever its optional model manager cannot be imported (it needs scipy, which distilbeam does not):
    it only means that Beam does not record the worker's memory after a model load."""

    NOTICES = ("Resource module is not available for current platform",)

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name == "root" and str(record.msg).startswith(self.NOTICES))


def _configure_logging() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("distilbeam").setLevel(logging.INFO)
    root = logging.getLogger()
    if not any(isinstance(f, QuietBeamNotices) for f in root.filters):
        root.addFilter(QuietBeamNotices())  # Beam logs them through the root logger itself


def console() -> None:
    """The installed ``distilbeam`` command: ``main``, then exit with its status. Before the interpreter
    exits, every object left is moved out of the garbage collector's view (``gc.freeze``): its final
    collection would otherwise walk the whole heap of torch, transformers and Beam, about 1.5 s of every
    run on 2 cores, to free memory the process is about to hand back anyway. Exit handlers still run;
    a local run has committed its outputs, summary and report before ``main`` returns."""
    status = main()
    gc.freeze()
    sys.exit(status)


if __name__ == "__main__":
    console()
