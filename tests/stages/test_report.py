"""reports/report.html: written by the register stage, self-contained, rendered by a real headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from PIL import Image

from autotransfer.stages.report import SECTIONS, WORST_SHOWN, write_run_report
from conftest import make_domain
from stage_helpers import plan_ready, tiny_params

pytestmark = pytest.mark.slow


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if found is None:  # .ci/run installs Debian's chromium; only a machine without apt gets here
        pytest.skip("no chromium on PATH (apt-get install chromium)")
    return found


def browse(page: Path, tmp_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    command = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=10000", *flags,
               page.resolve().as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=True)


@pytest.fixture(scope="module")
def registered(tmp_path_factory):
    """A tiny pipeline through register (which writes the report)."""
    from autotransfer.stages.pipeline import EVALUATE, REGISTER, TRAIN

    work = tmp_path_factory.mktemp("report")
    make_domain(work / "data", "src", classes=("a", "b", "c"), seed=1)
    make_domain(work / "data", "tgt", classes=("a", "b", "c"), seed=2)
    params = plan_ready(tiny_params(work / "data", work, train={"epochs": 2, "patience": 0},
                                    registry={"tracking_uri": f"sqlite:///{work}/mlflow.db"}))
    TRAIN.run(params, progress=False)
    EVALUATE.run(params, progress=False)
    return params, REGISTER.run(params)


def test_the_report_renders_every_section_in_a_headless_browser(registered, tmp_path):
    params, registration = registered
    page = Path(params.reports.dir) / "report.html"
    text = page.read_text()
    # self-contained: nothing is fetched from anywhere
    assert not re.search(r"(src|href)=['\"](https?:|//|file:)", text)
    # every section is in the DOM Chromium built, and every image in it decoded
    dom = browse(page, tmp_path, "--dump-dom").stdout
    rendered = dict(re.findall(r'<section id="(\w+)" data-rendered="([\w-]+)"', dom))
    assert rendered == {name: "yes" for name in SECTIONS}, rendered
    # the decision and the plan's reasoning are there in words
    assert registration.decision in dom and "Chosen:" in dom and "threshold" in dom
    # and the run's facts: when, from which code, with which params, each class's scores, where in MLflow
    assert "UTC" in dom and "<summary>params</summary>" in dom and "labeled_per_class" in dom
    per_class = dom[dom.index('id="per_class"'):dom.index('id="worst"')]
    assert all(f"<td>{name}</td>" in per_class for name in ("a", "b", "c"))
    assert registration.run_id in dom and "mlflow ui --backend-store-uri" in dom
    # the grid holds the most confidently wrong test images, with true and predicted labels
    predictions = pd.read_csv(Path(params.reports.dir) / "predictions.csv", dtype=str)
    wrong = int((predictions["actual"] != predictions["predicted"]).sum())
    assert dom.count("<figure>") == min(WORST_SHOWN, wrong) and (wrong == 0 or "predicted <b>" in dom)
    # and a screenshot of it is a real page, not a blank one
    shot = tmp_path / "report.png"
    browse(page, tmp_path, f"--screenshot={shot}", "--window-size=1200,4000")
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.shape == (4000, 1200) and pixels.std() > 10 and (pixels < 128).mean() > 0.01
    print(f"\nreport.html: {page.stat().st_size / 1024:.0f} KiB, sections {', '.join(rendered)}, "
          f"screenshot {shot.stat().st_size / 1024:.0f} KiB, dark pixels {(pixels < 128).mean():.1%}")


def test_the_report_is_attached_to_the_versions_mlflow_run(registered):
    params, registration = registered
    artifacts = MlflowClient(params.registry.tracking_uri).list_artifacts(registration.run_id, "reports")
    assert "reports/report.html" in {a.path for a in artifacts}


def test_a_report_of_a_run_that_stopped_early_says_what_is_missing(tmp_path):
    params = tiny_params(tmp_path / "data", tmp_path)
    page = write_run_report(params)
    text = page.read_text()
    assert all(f"<section id='{name}'>" in text for name in SECTIONS)
    assert "registration.json not found" in text and "predictions.csv not found" in text


def test_a_report_links_the_run_and_the_model_on_a_tracking_server(tmp_path):
    import json

    params = tiny_params(tmp_path / "data", tmp_path)
    reports = Path(params.reports.dir)
    reports.mkdir(parents=True)
    (reports / "registration.json").write_text(json.dumps({
        "tracking_uri": "http://mlflow.internal:5000", "model_name": "autotransfer-photos", "version": "3",
        "model_uri": "models:/autotransfer-photos/3", "run_id": "abc123", "experiment_id": "7",
        "already_registered": False, "decision": "promoted", "reason": "better", "metric": "accuracy",
        "test_set_hash": "h", "min_delta": 0.005, "challenger_score": 0.9, "champion_before": "2",
        "champion_score": 0.8, "champion": "3", "model_sha256": "s", "data_hash": "d", "seconds": 1.0}))
    text = write_run_report(params).read_text()
    assert "href='http://mlflow.internal:5000/#/models/autotransfer-photos/versions/3'" in text
    assert "href='http://mlflow.internal:5000/#/experiments/7/runs/abc123'" in text


def test_classes_named_like_missing_values_are_classes_everywhere(tmp_path):
    from autotransfer.stages.pipeline import EVALUATE, TRAIN

    # given class folders named as pandas' default missing values ("NA", "null", "nan")
    classes = ("NA", "null", "nan")
    make_domain(tmp_path / "data", "src", classes=classes, seed=1)
    make_domain(tmp_path / "data", "tgt", classes=classes, seed=2)
    params = plan_ready(tiny_params(tmp_path / "data", tmp_path, train={"epochs": 1, "patience": 0}))
    # when trained, evaluated and reported
    TRAIN.run(params, progress=False)
    metrics = EVALUATE.run(params, progress=False)
    page = write_run_report(params, registered=False).read_text()
    # then every stage kept them as the classes they are
    assert set(metrics.per_class) == set(classes)
    predictions = pd.read_csv(tmp_path / "reports" / "predictions.csv", keep_default_na=False)
    assert set(predictions["actual"]) == set(classes)
    wrong = (predictions["actual"] != predictions["predicted"]).sum()
    assert page.count("<figcaption>true ") == min(int(wrong), WORST_SHOWN)
    assert "<figcaption>true NA<br>" in page or "<figcaption>true null<br>" in page or wrong == 0
