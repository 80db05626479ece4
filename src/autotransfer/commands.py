"""The commands beside the pipeline's stages: the registry's (promote, rollback, verify), predict and summary,
and what every command shares (its params, its progress setting, its live MLflow run). ``cli`` parses.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from autotransfer.config import Params, load_params, registered_model_name
from autotransfer.errors import ConfigError, StageInputError

# The exit codes every command returns (cli.py's docstring says what each means).
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


if TYPE_CHECKING:
    from autotransfer.registry.tracking import TrackedStage


def tracked_stage(params: Params, stage: str) -> contextlib.AbstractContextManager[TrackedStage]:
    """The stage writes to the pipeline's live MLflow run (registry/tracking.py)."""
    from autotransfer.registry.tracking import tracked

    return tracked(params, stage)


def params_of(args: argparse.Namespace, *extra: str) -> Params:
    return load_params(args.params, [*args.overrides, *extra])


def force_overrides(args: argparse.Namespace) -> list[str]:
    """``--force X`` as the override it stands for (JSON-quoted, so any name stays a string)."""
    force = getattr(args, "force", None)  # plan and train take --force
    return [f"strategy.force={json.dumps(force)}"] if force else []


def progress_of(args: argparse.Namespace) -> bool | None:
    return False if args.no_progress else None


def cmd_promote(args: argparse.Namespace) -> int:
    from autotransfer.registry.people import promote

    report = promote(params_of(args), args.version)
    print(f"{report['model_name']}: champion is v{report['champion']} ({report['reason']})")
    return EXIT_OK


def cmd_rollback(args: argparse.Namespace) -> int:
    from autotransfer.registry.people import rollback

    report = rollback(params_of(args))
    print(f"{report['model_name']}: champion is v{report['champion']} ({report['reason']})")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from autotransfer.registry.integrity import FILES_TAG, verified_copy, version_of
    from autotransfer.registry.store import connect

    params = params_of(args)
    model = args.model or f"models:/{registered_model_name(params)}@champion"
    with connect(params.registry, exclusive=False) as (_, client), tempfile.TemporaryDirectory() as tmp:
        version = version_of(client, model)
        if version is None or FILES_TAG not in version.tags:
            raise StageInputError(f"{model}: no file hashes recorded for it (not a version registered by this tool)")
        verified_copy(client, model, Path(tmp))
    print(f"{model}: version {version.version}'s files are the ones registered ({FILES_TAG} {version.tags[FILES_TAG]})")
    return EXIT_OK


def cmd_predict(args: argparse.Namespace) -> int:
    from autotransfer.registry.pyfunc import load_predictor
    from autotransfer.serving.batch import Labeled, Unreadable, find_images, predict_files, write_csv

    for key, value in (("--top-k", args.top_k), ("--batch-size", args.batch_size)):
        if value < 1:
            raise ConfigError(f"{key} must be at least 1, got {value}")
    params = params_of(args)
    files, missing = find_images(args.images)
    if not files:
        reasons = [f"{m.path}: {m.error}" for m in missing] or [f"no image files in {', '.join(map(str, args.images))}"]
        raise StageInputError("; ".join(reasons))
    model = args.model or f"models:/{registered_model_name(params)}@champion"
    started = time.perf_counter()
    results = predict_files(
        load_predictor(model, params), files, args.batch_size, args.top_k, progress=False if args.no_progress else None
    )
    seconds = time.perf_counter() - started
    bad = missing + [r for r in results if isinstance(r, Unreadable)]
    if args.out:
        write_csv([*results, *missing], args.out, args.top_k)
    for result in results:
        if not isinstance(result, Labeled) or args.out:
            continue
        top = result.prediction.top
        if args.json:
            print(
                json.dumps(
                    {
                        "image": str(result.path),
                        "label": top[0][0],
                        "probability": round(top[0][1], 6),
                        **({"top": [[lab, round(p, 6)] for lab, p in top]} if args.top_k > 1 else {}),
                    }
                )
            )
        else:
            print("\t".join([str(result.path), *(f"{lab}\t{p:.4f}" for lab, p in top)]))
    for failure in bad:
        print(f"autotransfer predict: {failure.path}: {failure.error}", file=sys.stderr)
    labeled = len(results) - (len(bad) - len(missing))
    if args.out or bad:
        print(
            f"{labeled} of {labeled + len(bad)} images labeled in {seconds:.1f} s"
            + (f" -> {args.out}" if args.out else "")
            + (f"; {len(bad)} unreadable (listed above)" if bad else ""),
            file=sys.stderr,
        )
    return EXIT_FAILED if bad else EXIT_OK


def cmd_summary(args: argparse.Namespace) -> int:
    from autotransfer.artifacts import (
        METRICS_JSON,
        PLAN_JSON,
        REGISTRATION_JSON,
        TRAIN_JSON,
        MetricsReport,
        PlanReport,
        RegistrationReport,
        TrainReport,
        fmt_score,
        read_report,
        source_name,
    )

    reports = Path(params_of(args).reports.dir)
    if not (reports / PLAN_JSON).exists():
        raise StageInputError(f"{reports / PLAN_JSON}: not found; run `make run` (or `dvc repro`) first")
    plan = read_report(reports / PLAN_JSON, PlanReport, "plan")
    print(
        f"source {source_name(plan.source)} -> target {plan.target}: "
        f"strategy {plan.chosen} (runner-up {plan.runner_up})"
    )
    print(f"why: {plan.reason}")
    if (reports / TRAIN_JSON).exists():
        t = read_report(reports / TRAIN_JSON, TrainReport, "train")
        done = t.fit if t.fit else f"{t.epochs_run} epochs" + (f" ({t.budget.steps} steps)" if t.budget else "")
        print(f"trained: {t.candidate}, {done}, val accuracy {fmt_score(t.val_accuracy)}")
        if t.budget and not t.fit:
            print(f"  budget: {t.budget.rule}")
        if t.selection:
            print(f"  chosen {t.selection.note}" if t.selection.rule == "val" else f"  {t.selection.note}")
    if (reports / METRICS_JSON).exists():
        m = read_report(reports / METRICS_JSON, MetricsReport, "evaluate")
        print(f"target test accuracy: {fmt_score(m.accuracy)} (macro-F1 {fmt_score(m.macro_f1)}, {m.n} images)")
    if (reports / REGISTRATION_JSON).exists():
        r = read_report(reports / REGISTRATION_JSON, RegistrationReport, "register")
        print(f"registry: {r.model_name} v{r.version} {r.decision} ({r.reason}); champion is v{r.champion}")
        if r.tracking_uri.startswith("sqlite:///"):
            print(f"  browse: mlflow ui --backend-store-uri {r.tracking_uri} --host 127.0.0.1")
        else:
            print(f"  browse: {r.tracking_uri}")
    api = os.environ.get("PREFECT_API_URL")
    if api:
        print(f"  flow runs: {api.removesuffix('/api')}")
    else:
        print("  flow runs: prefect server start --host 127.0.0.1, then http://127.0.0.1:4200")
    print(
        f"reports: {reports.as_posix()}/ (validation.md, similarity.json, plan.json, metrics.json, plots/, "
        "registration.json)"
    )
    return EXIT_OK
