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

import base64
import html
import io
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
from autotransfer.io.images import open_limited, to_rgb

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
        f"<h1>autotransfer run: {_e(source_name(params.data.source))} &rarr; {_e(params.data.target)}</h1>",
        _run(params, read),
        _validation(read(VALIDATION_JSON)),
        _similarity(read(SIMILARITY_JSON), read(PLAN_JSON)),
        _plan(read(PLAN_JSON)),
        _race(read(TRAIN_JSON)),
        _section("curves", "Training curves", _png(reports / PLOTS_DIR / "training_curves.png")),
        _section("confusion", "Confusion matrix (target test)", _confusion(read(METRICS_JSON), reports)),
        _per_class(read(METRICS_JSON)),
        _worst(reports / PREDICTIONS_CSV, params.validation.max_pixels),
        _section(
            "features", "Feature map (PCA of source and target features)", _png(reports / PLOTS_DIR / "feature_map.png")
        ),
        _registry(read(REGISTRATION_JSON))
        if registered
        else _section("registry", "Registry decision", "<p>Not registered: run with --no-register.</p>"),
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
    text = _table(["", ""], rows) + f"<details><summary>params</summary><pre>{_e(dumped)}</pre></details>"
    return _section("run", "Run", text)


def _validation(report: dict[str, Any] | None) -> str:
    if report is None:
        return _section("validation", "Validation", _missing(VALIDATION_JSON))
    checks = report["checks"]
    passed = sum(c["success"] for c in checks)
    rows = [[c["id"], _status(c["success"]), c["severity"], c.get("unexpected_count", 0)] for c in checks]
    domains = [
        [role, d["name"], *(d["images"].get(split, 0) for split in ("train", "val", "test", "unlabeled"))]
        for role, d in report["domains"].items()
    ]
    text = (
        f"<p>{_status(report['success'])} {passed}/{len(checks)} checks passed"
        + (f"; failed: {_e(', '.join(report['failed_checks']))}" if report["failed_checks"] else "")
        + "</p>"
        + _table(["domain", "name", "train", "val", "test", "unlabeled"], domains)
        + _table(["check", "result", "severity", "unexpected"], rows)
    )
    return _section("validation", "Validation", text)


def _similarity(similarity: dict[str, Any] | None, plan: dict[str, Any] | None) -> str:
    if similarity is None:
        return _section("similarity", "Similarity", _missing(SIMILARITY_JSON))
    measures = []
    for group in ("domain", "transferability", "zero_shot"):
        for key, value in (similarity.get(group) or {}).items():
            fields = value if isinstance(value, dict) else {"": value}
            shown = {k: v for k, v in fields.items() if k not in ("seconds", "method") and _scalar(v)}
            if shown:
                measures.append([f"{group}.{key}", ", ".join(f"{k} {_fmt(v)}".strip() for k, v in shown.items())])
    compared = [
        [c["signal"], _fmt(c["value"]), f"{c['threshold_key']} {c['test']}", _status(c["outcome"]), c["meaning"]]
        for c in (plan or {}).get("comparisons", [])
    ]
    text = (
        "<h3>Compared with the plan's thresholds</h3>"
        + (_table(["signal", "value", "threshold", "holds", "meaning"], compared) if compared else _missing(PLAN_JSON))
        + "<h3>Measured</h3>"
        + _table(["measure", "value"], measures)
    )
    return _section("similarity", "Similarity", text)


def _plan(plan: dict[str, Any] | None) -> str:
    if plan is None:
        return _section("plan", "Plan", _missing(PLAN_JSON))
    ranking = "".join(f"<li>{_e(name)}</li>" for name in plan["ranking"])
    text = (
        f"<p><b>Chosen: {_e(plan['chosen'])}</b> (runner-up: {_e(plan.get('runner_up') or 'none')}; "
        f"mode {_e(plan['mode'])})</p><p>{_e(plan['reason'])}</p><h3>Ranking</h3><ol>{ranking}</ol>"
    )
    excluded = plan.get("excluded") or {}
    if excluded:
        text += "<h3>Excluded</h3>" + _table(["strategy", "why"], [[k, v] for k, v in excluded.items()])
    signals = plan.get("signals")
    if signals:
        rows = [
            ["used by the rules", ", ".join(signals["used"])],
            ["reported only", ", ".join(signals["reported_only"])],
        ]
        rows += [[f"unavailable: {name}", why] for name, why in signals["unavailable"].items()]
        text += "<h3>Signals</h3>" + _table(["", ""], rows)
    return _section("plan", "Plan: strategy and why", text)


def _race(train: dict[str, Any] | None) -> str:
    if train is None:
        return _section("race", "Training and race", _missing(TRAIN_JSON))
    summary = (
        f"<p>Trained <b>{_e(train['candidate'])}</b> ({_e(train['mode'])}): {train['epochs_run']} epochs, "
        f"best epoch {train['best_epoch']}, val accuracy {_fmt(train['val_accuracy'])}, {train['seconds']} s.</p>"
    )
    if train.get("race"):
        rows = [
            [
                r["round"],
                r["candidate"],
                r["budget_epochs"],
                r["epochs_trained"],
                _fmt(r["val_accuracy"]),
                _fmt(r.get("projected_val")),
                _went_on(r.get("went_on")),
                r["seconds"],
            ]
            for r in train["race"]
        ]
        table = _table(
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
        table = f"<p class='missing'>{_e(train.get('race_note') or 'no race: strategy.mode is ' + train['mode'])}</p>"
    floor = train.get("floor")
    if floor:
        rows = [[floor["trained"] + " (trained)", _fmt(floor["trained_val_accuracy"]), ""]]
        rows += [[r["model"], _fmt(r["val_accuracy"]), r["seconds"]] for r in floor["rows"]]
        table += f"<h3>Floor (target val)</h3><p>{_e(floor['note'])}</p>" + _table(
            ["model", "val accuracy", "seconds"], rows
        )
    return _section("race", "Training and race", summary + table)


def _went_on(went_on: bool | None) -> str:
    return "—" if went_on is None else "goes on" if went_on else "cut"


def _confusion(metrics: dict[str, Any] | None, reports: Path) -> str:
    head = (
        ""
        if metrics is None
        else (
            f"<p>Accuracy {_fmt(metrics['accuracy'])}, macro-F1 {_fmt(metrics['macro_f1'])} "
            f"on {metrics['n']} images.</p>"
        )
    )
    return head + _png(reports / PLOTS_DIR / "confusion_matrix.png")


def _per_class(metrics: dict[str, Any] | None) -> str:
    title = "Per class (target test)"
    if metrics is None:
        return _section("per_class", title, _missing(METRICS_JSON))
    rows = [
        [name, _fmt(s["precision"]), _fmt(s["recall"]), _fmt(s["f1"]), s["support"]]
        for name, s in sorted(metrics["per_class"].items(), key=lambda item: item[1]["f1"])
    ]
    return _section(
        "per_class", title, "<p>Worst first.</p>" + _table(["class", "precision", "recall", "F1", "images"], rows)
    )


def _worst(predictions_csv: Path, max_pixels: int) -> str:
    title = "Most confidently wrong test images"
    if not predictions_csv.exists():
        return _section("worst", title, _missing(PREDICTIONS_CSV))
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
        return _section("worst", title, "<p class='ok'>every test image was classified correctly</p>")
    figures = []
    for row in wrong.itertuples():
        figures.append(
            f"<figure><img alt='{_e(str(row.path))}' title='{_e(str(row.path))}' "
            f"src='{_thumbnail(Path(row.path), max_pixels)}'>"
            f"<figcaption>true {_e(row.actual)}<br>predicted <b>{_e(row.predicted)}</b> {row.probability:.2f}"
            "</figcaption></figure>"
        )
    n_wrong = int((rows["actual"] != rows["predicted"]).sum())
    text = f"<p>{n_wrong} of {len(rows)} wrong; the {len(wrong)} most confident:</p>"
    return _section("worst", title, text + f"<div class='grid'>{''.join(figures)}</div>")


def _registry(registration: dict[str, Any] | None) -> str:
    if registration is None:
        return _section("registry", "Registry decision", _missing(REGISTRATION_JSON))
    r = registration
    text = (
        f"<p><b>{_e(r['decision'])}</b>: {_e(r['reason'])}</p>"
        + _links(r)
        + _table(
            ["model", "version", "challenger score", "champion before", "champion score", "champion now", "run"],
            [
                [
                    r["model_name"],
                    r["version"],
                    _fmt(r["challenger_score"]),
                    r["champion_before"] or "none",
                    _fmt(r["champion_score"]),
                    r["champion"],
                    r["run_id"],
                ]
            ],
        )
    )
    return _section("registry", "Registry decision", text)


def _links(r: dict[str, Any]) -> str:
    """The MLflow run and model version: links on a tracking server, how to open them for a local store."""
    uri = str(r["tracking_uri"]).rstrip("/")
    name, version, run, experiment = r["model_name"], r["version"], r["run_id"], r.get("experiment_id")
    if uri.startswith(("http://", "https://")):
        model = f"{uri}/#/models/{quote(name)}/versions/{quote(str(version))}"
        links = [f"<a href='{_e(model)}'>model {_e(name)} v{_e(version)}</a>"]
        if experiment:
            links.append(f"<a href='{_e(f'{uri}/#/experiments/{experiment}/runs/{run}')}'>MLflow run {_e(run)}</a>")
        return "<p>" + " · ".join(links) + "</p>"
    return (
        f"<p>MLflow run {_e(run)}, model <code>{_e(r['model_uri'])}</code> in {_e(uri)}: "
        f"<code>mlflow ui --backend-store-uri {_e(uri)} --host 127.0.0.1</code> shows them.</p>"
    )


# --------------------------------------------------------------------------- helpers


def _reader(reports: Path) -> Any:
    def read(name: str) -> dict[str, Any] | None:
        try:
            return json.loads((reports / name).read_text())
        except (OSError, ValueError):
            return None

    return read


def _section(key: str, title: str, content: str) -> str:
    return f"<section id='{key}'><h2>{_e(title)}</h2>{content}</section>"


def _png(path: Path) -> str:
    if not path.exists():
        return _missing(path.name)
    data = base64.b64encode(path.read_bytes()).decode()
    return f"<img class='plot' alt='{_e(path.name)}' src='data:image/png;base64,{data}'>"


def _thumbnail(path: Path, max_pixels: int) -> str:
    try:
        with open_limited(path, max_pixels) as image:
            image.load()
            rgb = to_rgb(image)
            rgb.thumbnail((144, 144))
            buffer = io.BytesIO()
            rgb.save(buffer, "PNG")
    except Exception:  # a file gone since evaluate: an empty tile, not a broken report
        return ""
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{c if str(c).startswith('<span') else _e(str(c))}</td>" for c in row) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _status(ok: bool) -> str:
    return "<span class='ok'>&#10003;</span>" if ok else "<span class='bad'>&#10007;</span>"


def _missing(name: str) -> str:
    return f"<p class='missing'>{_e(name)} not found: its stage has not run</p>"


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, int | float | str | bool)


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _e(text: str) -> str:
    return html.escape(text, quote=True)
