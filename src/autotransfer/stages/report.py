"""``reports/report.html``: one self-contained page per pipeline run (written by the register stage).

Sections, each from the report file the stage before wrote (a missing one says so): the
validation summary, the similarity measures next to the thresholds the plan compared them
with, the plan's reasoning and ranking, the race table, the training curves, the test
confusion matrix, the test images the model got most confidently wrong (true and
predicted label), the feature map and the registry decision. Images are inlined (base64),
so the file can be mailed, attached to the MLflow run and opened anywhere. A small script
marks each section ``data-rendered`` once the page and its images have loaded: what the
headless-browser test reads.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd
import yaml

from autotransfer.artifacts import (
    METRICS_JSON,
    PLAN_JSON,
    PLOTS_DIR,
    PREDICTIONS_CSV,
    REGISTRATION_JSON,
    REPORT_HTML,
    SIMILARITY_JSON,
    TRAIN_JSON,
    VALIDATION_JSON,
    source_name,
)
from autotransfer.config import Params
from autotransfer.io.files import write_text
from autotransfer.io.git import git_commit
from autotransfer.stages import report_html as h

SECTIONS = (
    "run",
    "validation",
    "similarity",
    "plan",
    "race",
    "curves",
    "confusion",
    "per_class",
    "worst",
    "features",
    "registry",
)
WORST_SHOWN = 24
STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: .5em 0; } td, th { border: 1px solid #ddd; padding: 3px 8px; }
th { background: #f4f4f4; text-align: left; } .ok { color: #176f2c; } .bad { color: #b3261e; }
.grid { display: flex; flex-wrap: wrap; gap: 8px; } .grid figure { margin: 0; text-align: center; font-size: 12px; }
.grid img { width: 72px; height: 72px; image-rendering: pixelated; border: 1px solid #ccc; }
img.plot { max-width: 100%; } .missing { color: #888; font-style: italic; }
"""
SCRIPT = """
window.addEventListener('load', () => {
  for (const section of document.querySelectorAll('section')) {
    const ok = [...section.querySelectorAll('img')].every(i => i.complete && i.naturalWidth > 0);
    section.dataset.rendered = ok ? 'yes' : 'broken-image';
  }
});
"""


def write_run_report(params: Params, registered: bool = True) -> Path:
    """Render ``reports/report.html`` from the run's reports; its path (``registered``: false for a run
    that was not registered on purpose, `autotransfer run --no-register`)."""
    reports = Path(params.reports.dir)
    read = _reader(reports)
    body = [
        f"<h1>autotransfer run: {h.escape(source_name(params.data.source))} &rarr; {h.escape(params.data.target)}</h1>",
        _run(params, read),
        _validation(read(VALIDATION_JSON)),
        _similarity(read(SIMILARITY_JSON), read(PLAN_JSON)),
        _plan(read(PLAN_JSON)),
        _race(read(TRAIN_JSON)),
        h.section("curves", "Training curves", h.png(reports / PLOTS_DIR / "training_curves.png")),
        h.section("confusion", "Confusion matrix (target test)", _confusion(read(METRICS_JSON), reports)),
        _per_class(read(METRICS_JSON)),
        _worst(reports / PREDICTIONS_CSV, params.validation.max_pixels),
        h.section(
            "features",
            "Feature map (PCA of source and target features)",
            h.png(reports / PLOTS_DIR / "feature_map.png"),
        ),
        _registry(read(REGISTRATION_JSON))
        if registered
        else h.section("registry", "Registry decision", "<p>Not registered: run with --no-register.</p>"),
    ]
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>autotransfer report</title>"
        f"<style>{STYLE}</style></head><body>{''.join(body)}<script>{SCRIPT}</script></body></html>\n"
    )
    path = reports / REPORT_HTML
    write_text(path, page)
    return path


# --------------------------------------------------------------------------- sections


def _run(params: Params, read: Any) -> str:
    """When, from which code, with which params, and how long each stage took."""
    seconds = {
        "similarity": ((read(SIMILARITY_JSON) or {}).get("cost") or {}).get("feature_seconds"),
        "train": (read(TRAIN_JSON) or {}).get("seconds"),
        "register": (read(REGISTRATION_JSON) or {}).get("seconds"),
    }
    timed = ", ".join(f"{stage} {value:.0f} s" for stage, value in seconds.items() if isinstance(value, (int, float)))
    rows = [
        ["written", datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")],
        ["code", git_commit()],
        ["duration", timed or "n/a"],
    ]
    dumped = yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False)
    text = h.table(["", ""], rows) + f"<details><summary>params</summary><pre>{h.escape(dumped)}</pre></details>"
    return h.section("run", "Run", text)


def _validation(report: dict[str, Any] | None) -> str:
    if report is None:
        return h.section("validation", "Validation", h.missing(VALIDATION_JSON))
    checks = report["checks"]
    passed = sum(c["success"] for c in checks)
    rows = [[c["id"], h.status(c["success"]), c["severity"], c.get("unexpected_count", 0)] for c in checks]
    domains = [
        [role, d["name"], *(d["images"].get(split, 0) for split in ("train", "val", "test", "unlabeled"))]
        for role, d in report["domains"].items()
    ]
    text = (
        f"<p>{h.status(report['success'])} {passed}/{len(checks)} checks passed"
        + (f"; failed: {h.escape(', '.join(report['failed_checks']))}" if report["failed_checks"] else "")
        + "</p>"
        + h.table(["domain", "name", "train", "val", "test", "unlabeled"], domains)
        + h.table(["check", "result", "severity", "unexpected"], rows)
    )
    return h.section("validation", "Validation", text)


def _similarity(similarity: dict[str, Any] | None, plan: dict[str, Any] | None) -> str:
    if similarity is None:
        return h.section("similarity", "Similarity", h.missing(SIMILARITY_JSON))
    measures = []
    for group in ("domain", "transferability", "zero_shot"):
        for key, value in (similarity.get(group) or {}).items():
            fields = value if isinstance(value, dict) else {"": value}
            shown = {k: v for k, v in fields.items() if k not in ("seconds", "method") and h.scalar(v)}
            if shown:
                measures.append([f"{group}.{key}", ", ".join(f"{k} {h.fmt(v)}".strip() for k, v in shown.items())])
    compared = [
        [c["signal"], h.fmt(c["value"]), f"{c['threshold_key']} {c['test']}", h.status(c["outcome"]), c["meaning"]]
        for c in (plan or {}).get("comparisons", [])
    ]
    text = (
        "<h3>Compared with the plan's thresholds</h3>"
        + (
            h.table(["signal", "value", "threshold", "holds", "meaning"], compared)
            if compared
            else h.missing(PLAN_JSON)
        )
        + "<h3>Measured</h3>"
        + h.table(["measure", "value"], measures)
    )
    return h.section("similarity", "Similarity", text)


def _plan(plan: dict[str, Any] | None) -> str:
    if plan is None:
        return h.section("plan", "Plan", h.missing(PLAN_JSON))
    ranking = "".join(f"<li>{h.escape(name)}</li>" for name in plan["ranking"])
    text = (
        f"<p><b>Chosen: {h.escape(plan['chosen'])}</b> (runner-up: {h.escape(plan.get('runner_up') or 'none')}; "
        f"mode {h.escape(plan['mode'])})</p><p>{h.escape(plan['reason'])}</p><h3>Ranking</h3><ol>{ranking}</ol>"
    )
    excluded = plan.get("excluded") or {}
    if excluded:
        text += "<h3>Excluded</h3>" + h.table(["strategy", "why"], [[k, v] for k, v in excluded.items()])
    signals = plan.get("signals")
    if signals:
        rows = [
            ["used by the rules", ", ".join(signals["used"])],
            ["reported only", ", ".join(signals["reported_only"])],
        ]
        rows += [[f"unavailable: {name}", why] for name, why in signals["unavailable"].items()]
        text += "<h3>Signals</h3>" + h.table(["", ""], rows)
    return h.section("plan", "Plan: strategy and why", text)


def _race(train: dict[str, Any] | None) -> str:
    if train is None:
        return h.section("race", "Training and race", h.missing(TRAIN_JSON))
    summary = (
        f"<p>Trained <b>{h.escape(train['candidate'])}</b> ({h.escape(train['mode'])}): {train['epochs_run']} epochs, "
        f"best epoch {train['best_epoch']}, val accuracy {h.fmt(train['val_accuracy'])}, {train['seconds']} s.</p>"
    )
    if train.get("race"):
        rows = [
            [
                r["round"],
                r["candidate"],
                r["budget_epochs"],
                r["epochs_trained"],
                h.fmt(r["val_accuracy"]),
                h.fmt(r.get("projected_val")),
                _went_on(r.get("went_on")),
                r["seconds"],
            ]
            for r in train["race"]
        ]
        table = h.table(
            [
                "round",
                "candidate",
                "budget epochs",
                "epochs trained",
                "val accuracy",
                "projected val",
                "next round",
                "seconds",
            ],
            rows,
        )
    else:
        table = (
            f"<p class='missing'>{h.escape(train.get('race_note') or 'no race: strategy.mode is ' + train['mode'])}</p>"
        )
    floor = train.get("floor")
    if floor:
        rows = [[floor["trained"] + " (trained)", h.fmt(floor["trained_val_accuracy"]), ""]]
        rows += [[r["model"], h.fmt(r["val_accuracy"]), r["seconds"]] for r in floor["rows"]]
        table += f"<h3>Floor (target val)</h3><p>{h.escape(floor['note'])}</p>" + h.table(
            ["model", "val accuracy", "seconds"], rows
        )
    return h.section("race", "Training and race", summary + table)


def _went_on(went_on: bool | None) -> str:
    return "—" if went_on is None else "goes on" if went_on else "cut"


def _confusion(metrics: dict[str, Any] | None, reports: Path) -> str:
    head = (
        ""
        if metrics is None
        else (
            f"<p>Accuracy {h.fmt(metrics['accuracy'])}, macro-F1 {h.fmt(metrics['macro_f1'])} "
            f"on {metrics['n']} images.</p>"
        )
    )
    return head + h.png(reports / PLOTS_DIR / "confusion_matrix.png")


def _per_class(metrics: dict[str, Any] | None) -> str:
    title = "Per class (target test)"
    if metrics is None:
        return h.section("per_class", title, h.missing(METRICS_JSON))
    rows = [
        [name, h.fmt(s["precision"]), h.fmt(s["recall"]), h.fmt(s["f1"]), s["support"]]
        for name, s in sorted(metrics["per_class"].items(), key=lambda item: item[1]["f1"])
    ]
    return h.section(
        "per_class", title, "<p>Worst first.</p>" + h.table(["class", "precision", "recall", "F1", "images"], rows)
    )


def _worst(predictions_csv: Path, max_pixels: int) -> str:
    title = "Most confidently wrong test images"
    if not predictions_csv.exists():
        return h.section("worst", title, h.missing(PREDICTIONS_CSV))
    # A class may be named "NA", "null" or "nan": class columns are text, never pandas' missing values.
    rows = pd.read_csv(
        predictions_csv,
        dtype={"actual": str, "predicted": str},
        keep_default_na=False,
        na_values={"probability": ["", "nan", "NaN"]},
    )
    if "probability" not in rows:  # written by an evaluate before probabilities were recorded
        rows["probability"] = float("nan")
    wrong = rows[rows["actual"] != rows["predicted"]].sort_values("probability", ascending=False).head(WORST_SHOWN)
    if wrong.empty:
        return h.section("worst", title, "<p class='ok'>every test image was classified correctly</p>")
    figures = []
    for row in wrong.itertuples():
        figures.append(
            f"<figure><img alt='{h.escape(str(row.path))}' title='{h.escape(str(row.path))}' "
            f"src='{h.thumbnail(Path(row.path), max_pixels)}'>"
            f"<figcaption>true {h.escape(row.actual)}<br>"
            f"predicted <b>{h.escape(row.predicted)}</b> {row.probability:.2f}"
            "</figcaption></figure>"
        )
    n_wrong = int((rows["actual"] != rows["predicted"]).sum())
    text = f"<p>{n_wrong} of {len(rows)} wrong; the {len(wrong)} most confident:</p>"
    return h.section("worst", title, text + f"<div class='grid'>{''.join(figures)}</div>")


def _registry(registration: dict[str, Any] | None) -> str:
    if registration is None:
        return h.section("registry", "Registry decision", h.missing(REGISTRATION_JSON))
    r = registration
    text = (
        f"<p><b>{h.escape(r['decision'])}</b>: {h.escape(r['reason'])}</p>"
        + _links(r)
        + h.table(
            ["model", "version", "challenger score", "champion before", "champion score", "champion now", "run"],
            [
                [
                    r["model_name"],
                    r["version"],
                    h.fmt(r["challenger_score"]),
                    r["champion_before"] or "none",
                    h.fmt(r["champion_score"]),
                    r["champion"],
                    r["run_id"],
                ]
            ],
        )
    )
    return h.section("registry", "Registry decision", text)


def _links(r: dict[str, Any]) -> str:
    """The MLflow run and model version: links on a tracking server, how to open them for a local store."""
    uri = str(r["tracking_uri"]).rstrip("/")
    name, version, run, experiment = r["model_name"], r["version"], r["run_id"], r.get("experiment_id")
    if uri.startswith(("http://", "https://")):
        model = f"{uri}/#/models/{quote(name)}/versions/{quote(str(version))}"
        links = [f"<a href='{h.escape(model)}'>model {h.escape(name)} v{h.escape(version)}</a>"]
        if experiment:
            links.append(
                f"<a href='{h.escape(f'{uri}/#/experiments/{experiment}/runs/{run}')}'>MLflow run {h.escape(run)}</a>"
            )
        return "<p>" + " · ".join(links) + "</p>"
    return (
        f"<p>MLflow run {h.escape(run)}, model <code>{h.escape(r['model_uri'])}</code> in {h.escape(uri)}: "
        f"<code>mlflow ui --backend-store-uri {h.escape(uri)} --host 127.0.0.1</code> shows them.</p>"
    )


# --------------------------------------------------------------------------- helpers


def _reader(reports: Path) -> Any:
    def read(name: str) -> dict[str, Any] | None:
        try:
            return json.loads((reports / name).read_text())
        except (OSError, ValueError):
            return None

    return read
