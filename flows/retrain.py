"""The main job: validate -> pretrain -> similarity -> plan -> train -> evaluate -> register.

Run it with ``autotransfer run`` (or ``python -m flows.retrain``); schedule it with
``flows/deploy.py``. Each stage is a task of ``tasks.stages`` calling the library's stage
function; the stage order is ``autotransfer.stages.pipeline.STAGES``, as in dvc.yaml.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, TypeVar

from filelock import FileLock, Timeout
from prefect import Task, flow, get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.context import get_run_context
from prefect.exceptions import CancelledRun
from prefect.states import Cancelled

from autotransfer import uninterrupted
from autotransfer.artifacts import (
    REPORT_HTML,
    MetricsReport,
    PlanReport,
    RegistrationReport,
    Report,
    TrainReport,
    source_name,
)
from autotransfer.config import DEFAULT_PARAMS_FILE, Params, load_params
from autotransfer.io.data import data_hash, read_manifest
from autotransfer.ops import stopping
from autotransfer.registry import tracking
from autotransfer.stages.pipeline import STAGES, Stage, outputs_match, stage_key, stage_names
from flows.server import owned_temporary_server
from tasks.stages import STAGE_TASKS, already_trained

R = TypeVar("R", bound=Report)

STOPPED_NOTE = "nothing was registered after the signal; the last checkpoint is kept, and the next run resumes from it"
LOCK_FILE = ".retrain.lock"
LOCK_WAIT_S = 6 * 3600


def _with_service_retries(task: Task[Any, Any], params: Params) -> Task[Any, Any]:
    """Tasks that talk to the registry retry with exponential backoff (registry.task_retries, retry_delay)."""
    config = params.registry
    return task.with_options(
        retries=config.task_retries, retry_delay_seconds=[config.retry_delay * 2**i for i in range(config.task_retries)]
    )


def run_stage(stage: Stage[Report], params: Params) -> Report:
    """The stage's task; a cached result stands in only while its outputs on disk are intact."""
    task = STAGE_TASKS[stage.name]
    if stage.service:  # retried against the service, never cached (no key to hash)
        return _with_service_retries(task, params)(params, "")
    key = stage_key(stage.name, params)
    return task.with_options(refresh_cache=not outputs_match(stage.name, params, key))(params, key)


@contextmanager
def exclusive_outputs(params: Params) -> Iterator[None]:
    """One retrain run at a time per output folder: a second one waits, then sees what the first did."""
    lock = FileLock(str(Path(params.reports.dir) / LOCK_FILE))
    Path(params.reports.dir).mkdir(parents=True, exist_ok=True)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        get_run_logger().info("another retrain run is using %s; waiting for it to finish", params.reports.dir)
        try:
            lock.acquire(timeout=LOCK_WAIT_S)
        except Timeout:
            raise RuntimeError(f"another retrain run held {lock.lock_file} for {LOCK_WAIT_S} s") from None
    try:
        yield
    finally:
        lock.release()


@contextmanager
def _live_run(params: Params) -> Iterator[tracking.Tracker]:
    """This flow run's MLflow run, opened now; ended FAILED (or KILLED) if the flow does not finish."""
    context = get_run_context()
    flow_run = getattr(context, "flow_run", None)
    run = tracking.begin(
        params,
        {
            "prefect_flow_run": str(flow_run.id) if flow_run else "",
            "prefect_flow_run_name": flow_run.name if flow_run else "",
        },
    )
    try:
        yield run
    except Exception as exc:
        run.end("FAILED", f"{type(exc).__name__}: {exc}")
        raise
    except BaseException as exc:
        run.end("KILLED", str(exc) or type(exc).__name__)
        raise


@flow(name="retrain", description=__doc__.splitlines()[0])
def retrain(
    params_file: str = str(DEFAULT_PARAMS_FILE),
    overrides: list[str] | None = None,
    force: bool = False,
    register_model: bool = True,
) -> dict[str, Any]:
    """Retrain on the current data, register the model, promote it if it wins.

    params_file: the params YAML (missing default file: all defaults).
    overrides: ``section.key=value`` strings applied on top, e.g. ``["data.target=digits-m"]``.
    force: retrain even when a registered version was trained on this data with these params.
    register_model: false: stop after evaluate and write report.html; MLflow is not touched (no run is
        tracked, no version registered, no alias moved), and the registry is not asked whether this
        was trained before.
    """
    logger = get_run_logger()
    # Without register nothing may reach MLflow, the live run included.
    params = load_params(
        params_file, [*(overrides or []), *([] if register_model else ["registry.live_tracking=false"])]
    )
    stage = STAGES[0]
    # Prefect's engine put its own SIGTERM handler in place for the run; ours stops it in order
    # (`main` installed it for the process; a worker's flow process gets it for the run).
    try:
        with stopping.handling() as signals, exclusive_outputs(params), _live_run(params) as run:
            results: dict[str, Report] = {stage.name: run_stage(stage, params)}  # validate: is there anything new?
            unchanged = _unchanged_since_registered(params) if register_model else None
            if unchanged and not force:
                logger.info(unchanged)
                run.set_tags({"skipped": unchanged})
                run.end("FINISHED")
                _decision_report(params, results, skipped=unchanged)
                return {"skipped": True, "reason": unchanged, **_as_json(results)}
            for stage in [stage for stage in STAGES[1:] if register_model or not stage.service]:
                signals.check()
                with uninterrupted.whole() if stage.service else nullcontext():  # a version is written whole
                    results[stage.name] = run_stage(stage, params)
            extra = {"report": str(_report_without_registry(params))} if not register_model else {}
            _decision_report(params, results)
            recorded = (
                _record_in_dvc(params_file, overrides) if register_model else "not registered: not recorded in dvc.lock"
            )
            logger.info(recorded)
            return {"skipped": False, **_as_json(results), **extra, "dvc": recorded}
    except stopping.RunStopped as stop:
        message = f"{stop} during {stage.name}: {STOPPED_NOTE}"
        logger.warning(message)
        return Cancelled(message=message)  # type: ignore[return-value]


def _as_json(results: dict[str, Report]) -> dict[str, Any]:
    """The flow's return value: each stage's report as JSON, by stage name (what Prefect shows and stores)."""
    return {name: report.to_json() for name, report in results.items()}


def _report_without_registry(params: Params) -> Path:
    """report.html of a run that was not registered: an earlier run's registration.json would not describe it."""
    from autotransfer.artifacts import REGISTRATION_JSON
    from autotransfer.stages.report import write_run_report

    (Path(params.reports.dir) / REGISTRATION_JSON).unlink(missing_ok=True)
    return write_run_report(params, registered=False)


def _unchanged_since_registered(params: Params) -> str | None:
    data = data_hash(read_manifest(params.reports.dir))
    state = _with_service_retries(already_trained, params)(params, data, return_state=True)
    if state.is_failed():  # the training need not wait for the registry: register retries on its own
        get_run_logger().warning(
            "cannot read the registry (%s); retraining, since nothing says this data and "
            "these params were trained before",
            state.message,
        )
        return None
    found = state.result()
    if found is None:
        return None
    return (
        f"data ({data[:12]}) and model params unchanged since v{found['version']} was trained and "
        f"{found['decision'] or 'registered'} (champion: v{found['champion']}): not retraining "
        "(pass force=True, or `autotransfer run --force`, to retrain anyway)"
    )


def _record_in_dvc(params_file: str, overrides: list[str] | None) -> str:
    from autotransfer.ops.dvc import commit_pipeline

    if overrides or Path(params_file).resolve() != DEFAULT_PARAMS_FILE.resolve():
        return "run with other params than params.yaml: not recorded in dvc.lock"
    try:
        return commit_pipeline(stage_names())
    except RuntimeError as exc:  # the run itself succeeded; DVC bookkeeping is best effort
        return f"not recorded in DVC: {exc}"


def _decision_report(params: Params, results: dict[str, Report], skipped: str | None = None) -> None:
    lines = [f"# retrain: {source_name(params.data.source)} -> {params.data.target}", ""]
    if skipped:
        lines += [f"**Skipped:** {skipped}"]
    else:
        plan, train = _report(results, PlanReport), _report(results, TrainReport)
        metrics = _report(results, MetricsReport)
        reg = next((r for r in results.values() if isinstance(r, RegistrationReport)), None)  # None: not registered
        lines += [
            "**Plan:** " + plan.summary().replace("\n", "\n\n**Why:** "),
            "",
            "**Trained:** " + next(line for line in train.summary().splitlines() if line.startswith("trained ")),
            "",
            *(["**Health:** " + train.health.line().removeprefix("health: "), ""] if train.health else []),
            "**Target test:** " + metrics.summary().splitlines()[0],
            "",
            "**Registry:** " + (reg.summary().replace("\n", ": ") if reg else "not registered (register_model=False)"),
        ]
        report = Path(params.reports.dir) / REPORT_HTML
        if report.exists():
            on_run = f" (also on MLflow run {reg.run_id})" if reg else ""
            lines += ["", f"**Report:** [{report.name}]({report.resolve().as_uri()}){on_run}"]
            create_link_artifact(
                key="retrain-report",
                link=report.resolve().as_uri(),
                link_text="report.html",
                description="this run on one page: validation, similarity, plan, race, curves, errors, decision",
            )
        create_table_artifact(
            key="retrain-metrics",
            description="target test metrics of this run",
            table=[
                {"metric": "accuracy", "value": metrics.accuracy},
                {"metric": "macro_f1", "value": metrics.macro_f1},
                {"metric": "challenger_score", "value": reg.challenger_score if reg else None},
                {"metric": "champion_score", "value": reg.champion_score if reg else None},
            ],
        )
    create_markdown_artifact(
        key="retrain-decision",
        markdown="\n".join(lines) + "\n",
        description="what this retraining run decided, and why",
    )


def _report(results: dict[str, Report], kind: type[R]) -> R:
    """The one report of type ``kind`` among the stages' results."""
    return next(r for r in results.values() if isinstance(r, kind))


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.retrain`` (what ``autotransfer run`` becomes): the CLI's options and exit codes."""
    import argparse
    import time

    from autotransfer.cli import common_options, guarded, run_options

    parser = argparse.ArgumentParser(
        prog="autotransfer run", description=__doc__.splitlines()[0], parents=[common_options(), run_options()]
    )
    args = parser.parse_args(argv)

    def run() -> int:
        started = time.perf_counter()
        # the server is stopped last: the flow's final state and its logs go to it after a stop signal too
        with stopping.handling(process_wide=argv is None) as signals, owned_temporary_server():
            try:
                result = retrain(
                    params_file=str(args.params),
                    overrides=args.overrides,
                    force=args.force,
                    register_model=not args.no_register,
                )
            except CancelledRun:
                if signals.received is None:
                    raise
                raise stopping.RunStopped(signals.received) from None
        print(
            f"retrain flow finished in {time.perf_counter() - started:.1f} s"
            + (f": {result['reason']}" if result["skipped"] else "")
        )
        return 0

    return guarded("run", run)


if __name__ == "__main__":
    sys.exit(main())
