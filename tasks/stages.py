"""One Prefect task per pipeline stage: a thin wrapper around the library's stage function.

Each task takes the resolved params as a plain dict (what Prefect persists and shows) and
returns the stage's report as JSON (and logs its summary). Caching: a task's cache key is the content hash of its
input files, its params keys and the stage's own code (``autotransfer.stages.pipeline.stage_key``,
computed once by the flow and passed in as ``key``), with results persisted, so an
unchanged stage is a cache hit across runs; the flow forces
a refresh when the outputs on disk are not the ones that key produced
(``outputs_match``). ``register`` talks to a service: it retries with backoff and is never
cached (it is idempotent instead: a model is keyed by the hash of its weights). Every task writes
to the flow's live MLflow run (``autotransfer.registry.tracking``); a cached task does not
run, so it writes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from prefect import Task, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from autotransfer.artifacts import Report
from autotransfer.cli import library_log_to
from autotransfer.config import Params
from autotransfer.errors import AutotransferError
from autotransfer.registry.tracking import tracked
from autotransfer.stages.pipeline import write_stamp


class ValidationFailed(AutotransferError):
    """The data did not pass validation: nothing downstream may run."""


def _params(raw: dict[str, Any]) -> Params:
    return Params.model_validate(raw)


class _ToRunLog(logging.Handler):
    """The library's log lines (progress every 10 s, its warnings) into this task run's log."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.run_log = get_run_logger()

    def emit(self, record: logging.LogRecord) -> None:
        self.run_log.log(record.levelno, record.getMessage())


def library_log() -> AbstractContextManager[None]:
    """While a stage runs, ``autotransfer.*`` loggers reach Prefect's log (the terminal and the UI) and
    only there: the library does not know it runs under Prefect."""
    return library_log_to(_ToRunLog())


def _key(_context: Any, arguments: dict[str, Any]) -> str:
    return str(arguments["key"])  # computed once by the caller: hashing the inputs is the costly part


def _log(name: str, report: Report) -> dict[str, Any]:
    get_run_logger().info("%s: %s", name, report.summary())
    return report.to_json()


def _done(name: str, params: Params, key: str, report: Report) -> dict[str, Any]:
    write_stamp(name, params, key)
    return _log(name, report)


def _stage_task(name: str) -> Callable[[Callable[..., dict[str, Any]]], Task[Any, Any]]:
    """A cached stage task, called as ``task(params, key)`` with ``key = stage_key(name, params)``."""
    return task(name=name, cache_key_fn=_key, persist_result=True, result_serializer="json")


@_stage_task("validate")
def validate(params: dict[str, Any], key: str) -> dict[str, Any]:
    from autotransfer.stages.validate import validate as run

    p = _params(params)
    with library_log(), tracked(p, "validate") as tracker:
        result = run(p, progress=False)
        if not result.success:
            tracker.end("FAILED", f"validate: {result.report.failure()}")
    if not result.success:
        create_markdown_artifact(
            key="validation-report",
            markdown=result.markdown_path.read_text(),
            description="Great Expectations checks of the source and target data",
        )
        raise ValidationFailed(
            f"{result.report.failure()}; see {result.markdown_path} "
            "and the 'validation-report' artifact. Nothing was trained or registered."
        )
    return _done("validate", p, key, result.report)


@_stage_task("pretrain")
def pretrain(params: dict[str, Any], key: str) -> dict[str, Any]:
    from autotransfer.stages.pretrain import pretrain as run

    p = _params(params)
    with library_log(), tracked(p, "pretrain"):
        meta, _seconds = run(p, progress=False)
    return _done("pretrain", p, key, meta)


@_stage_task("similarity")
def similarity(params: dict[str, Any], key: str) -> dict[str, Any]:
    from autotransfer.stages.similarity import measure_similarity

    p = _params(params)
    with library_log(), tracked(p, "similarity"):
        return _done("similarity", p, key, measure_similarity(p, progress=False))


@_stage_task("plan")
def plan(params: dict[str, Any], key: str) -> dict[str, Any]:
    from autotransfer.stages.plan import make_plan

    p = _params(params)
    with library_log(), tracked(p, "plan"):
        return _done("plan", p, key, make_plan(p))


@_stage_task("train")
def train(params: dict[str, Any], key: str) -> dict[str, Any]:
    from autotransfer.stages.train import train_stage

    p = _params(params)
    with library_log(), tracked(p, "train"):
        return _done("train", p, key, train_stage(p, progress=False))


@_stage_task("evaluate")
def evaluate(params: dict[str, Any], key: str) -> dict[str, Any]:
    from autotransfer.stages.evaluate import evaluate as run

    p = _params(params)
    with library_log(), tracked(p, "evaluate"):
        return _done("evaluate", p, key, run(p, progress=False))


# Retries: the flow sets them from registry.task_retries / registry.retry_delay.
@task(name="register", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[10, 20])
def register(params: dict[str, Any]) -> dict[str, Any]:
    from autotransfer.stages.register import register as run

    p = _params(params)
    with library_log(), tracked(p, "register"):
        return _log("register", run(p))


@task(name="already-trained", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[10, 20])
def already_trained(params: dict[str, Any], data_hash: str) -> dict[str, str] | None:
    """The registered version already trained on this data with these params, if any."""
    from autotransfer.registry.register import already_trained as find

    return find(_params(params), data_hash)


STAGE_TASKS: dict[str, Task[Any, Any]] = {
    t.name: t for t in (validate, pretrain, similarity, plan, train, evaluate, register)
}
