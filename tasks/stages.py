"""One Prefect task per pipeline stage: a thin wrapper around the library's stage function.

Each task takes the resolved params as a plain dict (what Prefect persists and shows) and
returns a small JSON summary. Caching: a task's cache key is the content hash of its
input files, its params keys and the library's code (``autotransfer.stages.stage_key``,
computed once by the flow and passed in as ``key``), with results persisted, so an
unchanged stage is a cache hit across runs; the flow forces
a refresh when the outputs on disk are not the ones that key produced
(``outputs_match``). ``register`` talks to a service: it retries with backoff and is never
cached (it is idempotent instead: a model is keyed by the hash of its weights).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prefect import Task, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from autotransfer.config import Params
from autotransfer.stages import code_version, write_stamp

CODE_VERSION = code_version()


class ValidationFailed(RuntimeError):
    """The data did not pass validation: nothing downstream may run."""


def _params(raw: dict[str, Any]) -> Params:
    return Params.model_validate(raw)


def _key(_context: Any, arguments: dict[str, Any]) -> str:
    return arguments["key"]  # computed once by the caller: hashing the inputs is the costly part


def _log(name: str, summary: dict[str, Any]) -> dict[str, Any]:
    get_run_logger().info("%s: %s", name, ", ".join(f"{k}={v}" for k, v in summary.items()))
    return summary


def _done(name: str, params: Params, key: str, summary: dict[str, Any]) -> dict[str, Any]:
    write_stamp(name, params, key)
    return _log(name, summary)


def _stage_task(name: str) -> Callable[[Callable[..., dict[str, Any]]], Task]:
    """A cached stage task, called as ``task(params, key)`` with ``key = stage_key(name, params, CODE_VERSION)``."""
    return task(name=name, cache_key_fn=_key, persist_result=True, result_serializer="json")


@_stage_task("validate")
def validate(params: dict[str, Any], key: str) -> dict[str, Any]:
    from autotransfer.validation import validate as run

    p = _params(params)
    result = run(p, progress=False)
    if not result.success:
        create_markdown_artifact(key="validation-report", markdown=result.markdown_path.read_text(),
                                 description="Great Expectations checks of the source and target data")
        raise ValidationFailed(f"data validation failed ({', '.join(result.report['failed_checks'])}); "
                               f"see {result.markdown_path} "
                               "and the 'validation-report' artifact. Nothing was trained or registered.")
    return _done("validate", p, key, {"files": result.report["files"]["total"], "checks": len(result.report["checks"])})


@_stage_task("pretrain")
def pretrain(params: dict[str, Any], key: str) -> dict[str, Any]:
    from autotransfer.pretrain import pretrain as run

    p = _params(params)
    meta = run(p, progress=False)
    return _done("pretrain", p, key, {"skipped": meta["skipped"], "val_accuracy": meta.get("val_accuracy")})


@_stage_task("similarity")
def similarity(params: dict[str, Any], key: str) -> dict[str, Any]:
    from autotransfer.similarity_stage import measure_similarity

    p = _params(params)
    report = measure_similarity(p, progress=False)
    return _done("similarity", p, key, {"pad": report["domain"]["pad"]["pad"], "zero_shot": report["zero_shot"].get("value")})


@_stage_task("plan")
def plan(params: dict[str, Any], key: str) -> dict[str, Any]:
    from autotransfer.planning import make_plan

    p = _params(params)
    made = make_plan(p)
    return _done("plan", p, key, {"chosen": made["chosen"], "runner_up": made["runner_up"], "reason": made["reason"]})


@_stage_task("train")
def train(params: dict[str, Any], key: str) -> dict[str, Any]:
    from autotransfer.train_stage import train_stage

    p = _params(params)
    report = train_stage(p, progress=False)
    return _done("train", p, key, {"candidate": report["candidate"], "epochs_run": report["epochs_run"],
                              "val_accuracy": report["val_accuracy"], "seconds": report["seconds"]})


@_stage_task("evaluate")
def evaluate(params: dict[str, Any], key: str) -> dict[str, Any]:
    from autotransfer.evaluate import evaluate as run

    p = _params(params)
    metrics = run(p, progress=False)
    return _done("evaluate", p, key, {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"], "n": metrics["n"],
                                 "strategy": metrics["strategy"]})


# Retries: the flow sets them from registry.task_retries / registry.retry_delay.
@task(name="register", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[10, 20])
def register(params: dict[str, Any]) -> dict[str, Any]:
    from autotransfer.registry import register as run

    p = _params(params)
    report = run(p)
    keys = ("version", "decision", "reason", "champion", "challenger_score", "champion_score", "tracking_uri")
    return _log("register", {k: report[k] for k in keys})


@task(name="already-trained", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[10, 20])
def already_trained(params: dict[str, Any], data_hash: str) -> dict[str, str] | None:
    """The registered version already trained on this data with these params, if any."""
    from autotransfer.registry import already_trained as find

    return find(_params(params), data_hash)


STAGE_TASKS: dict[str, Task] = {t.name: t for t in (validate, pretrain, similarity, plan, train, evaluate, register)}
