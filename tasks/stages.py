"""One Prefect task per pipeline stage (``stages.pipeline.STAGES``), each made by ``stage_task``.

Each task takes the resolved params and returns the stage's typed report (and logs its
summary); Prefect persists it as JSON with its class, so a cache hit gives the same type back.
Caching: a task's cache key is the content hash of its input files, its params keys and the
stage's own code (``autotransfer.stages.pipeline.stage_key``, computed once by the flow and
passed in as ``key``), with results persisted, so an unchanged stage is a cache hit across
runs; the flow forces a refresh when the outputs on disk are not the ones that key produced
(``outputs_match``). A stage that talks to a service (``Stage.service``: register) retries with
backoff and is never cached (it is idempotent instead: a model is keyed by the hash of its
weights). Every task writes to the flow's live MLflow run (``autotransfer.registry.tracking``);
a cached task does not run, so it writes nothing.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from prefect import Task, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from autotransfer.artifacts import VALIDATION_MD, Report
from autotransfer.cli import library_log_to
from autotransfer.config import Params
from autotransfer.errors import AutotransferError
from autotransfer.registry.tracking import tracked
from autotransfer.stages.pipeline import STAGES, Stage, write_stamp


class ValidationFailed(AutotransferError):
    """The data did not pass validation: nothing downstream may run."""


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


# Results persisted by earlier versions were JSON dicts, not typed reports: a key of their own.
RESULT_FORMAT = "report-v2"


def _key(_context: Any, arguments: dict[str, Any]) -> str:
    # computed once by the caller: hashing the inputs is the costly part
    return f"{RESULT_FORMAT}-{arguments['key']}"


def _stop_on_failed_validation(params: Params, failure: str) -> None:
    """validation.md as a Prefect artifact, then the error that stops the flow before anything trains."""
    markdown = Path(params.reports.dir) / VALIDATION_MD
    create_markdown_artifact(
        key="validation-report",
        markdown=markdown.read_text(),
        description="Great Expectations checks of the source and target data",
    )
    raise ValidationFailed(
        f"{failure}; see {markdown} and the 'validation-report' artifact. Nothing was trained or registered."
    )


def stage_task(stage: Stage[Report]) -> Task[..., Report]:
    """The Prefect task of ``stage``, called as ``task(params, key)`` with ``key = stage_key(name, params)``.

    A cached stage's task persists its result and stamps its outputs with ``key``; one that is not
    cached (register: it talks to a service) retries instead (the flow sets how often) and ignores ``key``.
    """

    def run(params: Params, key: str) -> Report:
        with library_log(), tracked(params, stage.name) as tracker:
            report = tracker.ran(stage.run(params, progress=False))
        failure = report.failed()
        if failure is not None:
            _stop_on_failed_validation(params, failure)
        if stage.cached:
            write_stamp(stage.name, params, key)
        get_run_logger().info("%s: %s", stage.name, report.summary())
        return report

    run.__name__ = run.__qualname__ = stage.name
    if stage.cached:  # keyed by stage_key (its inputs, params and code): a hit across runs
        return task(run, name=stage.name, cache_key_fn=_key, persist_result=True, result_serializer="json")
    return task(run, name=stage.name, cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[10, 20])


STAGE_TASKS: dict[str, Task[..., Report]] = {stage.name: stage_task(stage) for stage in STAGES}


@task(name="already-trained", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[10, 20])
def already_trained(params: Params, data_hash: str) -> dict[str, str] | None:
    """The registered version already trained on this data with these params, if any."""
    from autotransfer.registry.versions import already_trained as find

    return find(params, data_hash)
