"""``autotransfer``: one subcommand per pipeline stage, plus the demo data.

Exit codes: 0 success, 1 the stage ran and found a problem (e.g. invalid data),
2 bad usage or configuration (the message names the key or file), 130 / 143 stopped by
SIGINT / SIGTERM (the last checkpoint is kept; the same command resumes).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from autotransfer.commands import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    cmd_predict,
    cmd_promote,
    cmd_rollback,
    cmd_summary,
    cmd_verify,
    force_overrides,
    params_of,
    progress_of,
    tracked_stage,
)
from autotransfer.config import DEFAULT_PARAMS_FILE
from autotransfer.errors import AutotransferError, ConfigError, ImageDecodeError
from autotransfer.ops.stopping import RunStopped, handling, kill_descendants

EXAMPLES = """\
examples:
  autotransfer demo-data                      build the demo domains into data/ (and data.dvc)
  autotransfer run                            the whole retrain flow (Prefect): validate … register
  autotransfer run -S data.target=digits-m    the same on another target domain
  autotransfer plan --force linear_probe      rank the strategies, but use this one
  autotransfer summary                        what the last run decided and scored
  autotransfer predict data/digits/test --out predictions.csv --top-k 3
  autotransfer rollback                       give champion back to the version it replaced
  autotransfer verify                         check the champion's stored files against those registered

exit codes: 0 success, 1 the command ran and found a problem, 2 bad usage or configuration,
130 / 143 stopped by SIGINT / SIGTERM (the same command resumes).
`autotransfer COMMAND --help` shows a command's options."""
STOPPED = "nothing more was done; the last checkpoint is kept, and the same command resumes from it"


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    import autotransfer

    try:
        return version("autotransfer")
    except PackageNotFoundError:  # a source tree that was never installed
        return autotransfer.__version__


def common_options() -> argparse.ArgumentParser:
    """--params, -S and --no-progress: every stage command's, and `python -m flows.retrain`'s."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--params",
        type=Path,
        default=DEFAULT_PARAMS_FILE,
        help="params file (default: params.yaml; missing means all defaults)",
    )
    common.add_argument(
        "-S",
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a parameter, e.g. -S data.target=digits-m (repeatable)",
    )
    common.add_argument("--no-progress", action="store_true", help="no progress bars")
    return common


def run_options() -> argparse.ArgumentParser:
    """What `autotransfer run` takes beyond the common options (and forwards to the flow)."""
    run = argparse.ArgumentParser(add_help=False)
    run.add_argument(
        "--force",
        action="store_true",
        help="retrain even if this data and these params were trained and registered before",
    )
    run.add_argument(
        "--no-register",
        action="store_true",
        help="train and evaluate, write reports/report.html, and leave MLflow alone (no run, no version, "
        "no alias moved)",
    )
    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autotransfer",
        description=__doc__.splitlines()[0],
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = common_options()

    demo = sub.add_parser("demo-data", parents=[common], help="build the demo domains (synth-digits, digits, digits-m)")
    demo.add_argument("--out", type=Path, help="output folder (default: demo.out, i.e. data/)")
    demo.add_argument("--no-dvc", action="store_true", help="do not record the data in data.dvc / the DVC cache")
    demo.set_defaults(handler=cmd_demo_data)

    from autotransfer.stages.pipeline import PLAN, STAGES, TRAIN, VALIDATE  # numpy and PIL; no torch, no mlflow

    stages = {spec.name: sub.add_parser(spec.name, parents=[common], help=spec.summary) for spec in STAGES}
    for stage_parser in stages.values():
        stage_parser.set_defaults(handler=cmd_stage)
    validate, plan, train = stages[VALIDATE.name], stages[PLAN.name], stages[TRAIN.name]
    validate.add_argument("--data", type=str, help="data root holding the domains (overrides data.root)")
    validate.add_argument("--reports", type=Path, help="report folder (overrides reports.dir)")
    validate.set_defaults(handler=cmd_validate)
    plan.add_argument("--force", help="use this strategy (overrides strategy.force)")
    train.add_argument("--force", help="train this strategy instead of the plan's (overrides strategy.force)")
    train.add_argument(
        "--nproc", type=int, help="data-parallel processes (torch DDP via torchrun; overrides train.distributed)"
    )

    promote = sub.add_parser("promote", parents=[common], help="make a registered version the champion (by hand)")
    promote.add_argument("--version", required=True, help="model version number")
    promote.set_defaults(handler=cmd_promote)

    rollback = sub.add_parser("rollback", parents=[common], help="give champion back to the version it replaced")
    rollback.set_defaults(handler=cmd_rollback)

    verify = sub.add_parser(
        "verify",
        parents=[common],
        help="check a registered version's stored files against those registered (before `mlflow models serve`)",
    )
    verify.add_argument("model", nargs="?", help="models:/NAME@ALIAS or models:/NAME/N (default: the champion)")
    verify.set_defaults(handler=cmd_verify)

    _add_predict(sub, common)

    run = sub.add_parser(
        "run", parents=[common, run_options()], help="run the Prefect retrain flow: every stage, then register"
    )
    run.set_defaults(handler=cmd_run)

    summary = sub.add_parser("summary", parents=[common], help="what the last pipeline run decided and scored")
    summary.set_defaults(handler=cmd_summary)

    _add_stack(sub)
    return parser


def _add_predict(sub: Any, common: argparse.ArgumentParser) -> None:
    predict = sub.add_parser(
        "predict",
        parents=[common],
        help="label image files and folders with a model (stdout, or a CSV with --out)",
        description="Label image files, and folders searched recursively for images, in batches.\n"
        "A file that does not decode is listed (stderr, and the CSV's error column) and the\n"
        "others are still labeled; the exit code is then 1.",
        epilog="examples:\n"
        "  autotransfer predict data/digits/test --out predictions.csv --top-k 3\n"
        "  autotransfer predict photo.jpg --model models/target --json\n"
        "  autotransfer predict scans/ --model models:/autotransfer-digits/4 --out scans.csv",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    predict.add_argument(
        "--model",
        help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/… or a model folder "
        "(default: models:/<registry.model_name>@champion, {target} being data.target's folder name)",
    )
    output = predict.add_mutually_exclusive_group()
    output.add_argument("--out", type=Path, help="write a CSV: path, label, probability[, label_2, …], error")
    output.add_argument("--json", action="store_true", help="print one JSON object per image")
    predict.add_argument("--top-k", type=int, default=1, help="the K most probable labels per image (default: 1)")
    predict.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default: 64)")
    predict.add_argument("images", nargs="+", type=Path, metavar="PATH", help="image file or folder (recursive)")
    predict.set_defaults(handler=cmd_predict)


def _add_stack(sub: Any) -> None:
    stack = sub.add_parser(
        "stack",
        help="start/stop the team stack on loopback: PostgreSQL, S3, MLflow and "
        "Prefect servers, a worker (make stack-up / stack-down)",
    )
    stack.add_argument("action", choices=["up", "down", "status"], help="start, stop, or show what runs and where")
    stack.add_argument("--root", type=Path, default=Path(".stack"), help="state, data and logs (default .stack/)")
    stack.add_argument("--no-worker", action="store_true", help="up: no Prefect worker")
    stack.set_defaults(handler=cmd_stack)


@contextlib.contextmanager
def library_log_to(handler: logging.Handler) -> Iterator[None]:
    """While the block runs, the library's log lines (``autotransfer.*`` at INFO and up: progress, warnings)
    go to ``handler`` and only there; after it, the logger is as it was. How the commands (stderr) and the
    Prefect tasks (the run's log, tasks/stages.py) each route them."""
    library = logging.getLogger("autotransfer")
    level, propagate = library.level, library.propagate
    library.addHandler(handler)
    library.setLevel(logging.INFO)
    library.propagate = False
    try:
        yield
    finally:
        library.removeHandler(handler)
        library.setLevel(level)
        library.propagate = propagate


@contextlib.contextmanager
def library_log_to_stderr() -> Iterator[None]:
    """While a command runs, the library's log lines (a stage's progress about every 10 s when no bar is
    shown, its warnings) go to stderr, stamped with the time: how a stage command under ``dvc repro`` or a
    job's log says what it does. Removed after, so an in-process caller's logging is as it was."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    with library_log_to(handler):
        yield


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # SIGINT/SIGTERM: stop at once, in order (ops/stopping.py); for the whole process when it is the command's
    with handling(process_wide=argv is None), library_log_to_stderr():
        return guarded(args.command, lambda: args.handler(args))


def guarded(command: str, action: Callable[[], int]) -> int:
    """Run ``action``; the library's own errors become one message and an exit code (1, or 2 for configuration)."""
    try:
        return action()
    except ConfigError as exc:
        print(f"autotransfer: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (AutotransferError, ImageDecodeError) as exc:
        print(f"autotransfer {command}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except RunStopped as exc:
        kill_descendants()  # torchrun ranks, data workers: nothing of the run outlives it
        print(f"autotransfer {command}: {exc}; {STOPPED}", file=sys.stderr)
        return exc.exit_code


def cmd_stack(args: argparse.Namespace) -> int:
    from autotransfer.ops.processes import StackError  # no torch, no mlflow
    from autotransfer.ops.stack import Stack, describe

    root = args.root.resolve()
    exists = (root / "state.json").exists()
    try:
        if args.action == "up":
            stack = Stack.load(root) if exists else Stack(root)
            if exists and any(stack.pids.values()):
                print(f"a stack is already up (state in {root}); `autotransfer stack down` first", file=sys.stderr)
                return EXIT_FAILED
            started = time.perf_counter()
            stack.up(repo=Path.cwd(), worker=not args.no_worker)
            print(describe(stack))
            print(f"up in {time.perf_counter() - started:.1f} s; stop with `make stack-down`")
        elif args.action == "down":
            if not exists:
                print(f"no stack in {root}")
                return EXIT_OK
            stopped = Stack.load(root).down()
            print(f"stopped: {', '.join(stopped) or 'nothing was running'}")
        else:
            if not exists:
                print(f"no stack in {root}")
                return EXIT_FAILED
            stack = Stack.load(root)
            print(describe(stack))
            print(f"processes: {stack.pids or 'none'}")
    except StackError as exc:
        print(f"autotransfer stack {args.action}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def cmd_demo_data(args: argparse.Namespace) -> int:
    from autotransfer.io.demo_data import build_demo_data
    from autotransfer.ops.dvc import commit_data

    params = params_of(args)
    out = Path(args.out or params.demo.out)
    started = time.perf_counter()
    counts = build_demo_data(params.demo, out=out, progress=progress_of(args))
    for domain, splits in counts.items():
        print(f"{(out / domain).as_posix()}: " + ", ".join(f"{split} {n}" for split, n in splits.items()))
    print(f"built in {time.perf_counter() - started:.1f} s")
    if not args.no_dvc:
        try:
            print(commit_data(out))
        except RuntimeError as exc:
            print(f"autotransfer: {exc}", file=sys.stderr)
            return EXIT_FAILED
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    """``autotransfer validate``: the stage's own function rather than ``VALIDATE.run``, for what only a person
    at the console needs: the offending files, the scan's read/unchanged counts, and ``--reports``, a check
    into another folder that is not a pipeline run."""
    from autotransfer.stages.pipeline import VALIDATE
    from autotransfer.stages.validate import summary_lines, validate

    params = params_of(args, *([f"data.root={json.dumps(args.data)}"] if args.data else []))
    started = time.perf_counter()
    # a check into another report folder (--reports) is not a pipeline run: not tracked
    with tracked_stage(params, VALIDATE.name) if args.reports is None else contextlib.nullcontext() as tracking:
        result = validate(params, reports_dir=args.reports, progress=progress_of(args))
        if tracking is not None:
            tracking.ran(result.report)
    for line in summary_lines(result.report, params.validation.max_listed):
        print(line)
    print(
        f"report: {result.json_path.as_posix()} and {result.markdown_path.as_posix()} "
        f"({time.perf_counter() - started:.1f} s; {result.read} files read, {result.reused} unchanged since "
        "the last scan and not read again)"
    )
    return EXIT_OK if result.success else EXIT_FAILED


def cmd_stage(args: argparse.Namespace) -> int:
    """``autotransfer <stage>``: the stage of that name (stages.pipeline), its report's summary and seconds."""
    from autotransfer.stages.pipeline import stage

    spec = stage(args.command)
    nproc = [f"train.distributed={args.nproc}"] if getattr(args, "nproc", None) else []
    params = params_of(args, *force_overrides(args), *nproc)
    started = time.perf_counter()
    with tracked_stage(params, spec.name) as tracking:
        report = tracking.ran(spec.run(params, progress=progress_of(args)))
    print(f"{report.summary()} ({time.perf_counter() - started:.1f} s)")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    """The flow lives in flows/ (Prefect stays out of the library): this process becomes it."""
    params_of(args)  # a configuration error is reported before Prefect starts
    command = [sys.executable, "-m", "flows.retrain", "--params", str(args.params)]
    command += [f"--set={override}" for override in args.overrides] + (["--force"] if args.force else [])
    command += ["--no-register"] if args.no_register else []
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, command)


if __name__ == "__main__":
    sys.exit(main())
