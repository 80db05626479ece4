"""The train and evaluate stages end to end on tiny data: plan in, model and reports out."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from autotransfer.errors import StageInputError
from autotransfer.analysis.metrics import classification_metrics
from autotransfer.models.weights import load_trained_model
from autotransfer.stages.evaluate import evaluate
from autotransfer.stages.plan import make_plan
from autotransfer.stages.pretrain import pretrain
from autotransfer.stages.similarity import measure_similarity
from autotransfer.stages.train import train_stage
from autotransfer.io.data import load_train_data
from autotransfer.models.weights import backbone_input
from autotransfer.stages.validate import validate
from stage_helpers import tiny_params


def planned(params):
    validate(params, progress=False)
    pretrain(params, progress=False)
    measure_similarity(params, progress=False)
    make_plan(params)
    return params


@pytest.fixture
def ready(data_root, tmp_path):
    return planned(tiny_params(data_root, tmp_path, train={"epochs": 4, "batch_size": 4, "patience": 0}))


def test_train_executes_the_plan_and_writes_model_history_and_report(ready, tmp_path):
    plan = json.loads((tmp_path / "reports/plan.json").read_text())
    report = train_stage(ready, progress=False).to_json()
    assert report["strategy"] == plan["chosen"] and report["mode"] == "rules"
    meta = json.loads((tmp_path / "models/target/meta.json").read_text())
    assert meta["strategy"] == plan["chosen"] and meta["target_classes"] == ["a", "b"]
    history = (tmp_path / "reports/train_history.csv").read_text().splitlines()
    assert history[0].startswith("epoch,phase,train_loss") and len(history) == 1 + report["epochs_run"]
    assert json.loads((tmp_path / "reports/train.json").read_text()) == report


def test_rerun_resumes_the_finished_run_instead_of_retraining(ready):
    first = train_stage(ready, progress=False).to_json()
    again = train_stage(ready, progress=False).to_json()
    assert again["resumed_from_epoch"] == first["epochs_run"] and again["val_accuracy"] == first["val_accuracy"]


def test_race_trains_the_top_candidates_on_a_short_budget_then_the_winner_to_the_end(data_root, tmp_path):
    params = planned(tiny_params(data_root, tmp_path, strategy={"mode": "race", "top_k": 3},
                                 train={"epochs": 4, "batch_size": 4, "patience": 0,
                                        "race": {"budget_fraction": 0.25, "keep": 0.5, "min_round_steps": 1}}))
    report = train_stage(params, progress=False).to_json()
    rounds = [row for row in report["race"] if row["round"] != "final"]
    assert {row["budget_epochs"] for row in rounds} == {1, 2}
    assert len([r for r in rounds if r["budget_epochs"] == 1]) == 3
    assert len([r for r in rounds if r["budget_epochs"] == 2]) == 2
    # each row says whether it went on, and what the rising slot compared
    second = {r["candidate"] for r in rounds if r["round"] == 2}
    assert {r["candidate"] for r in rounds if r["round"] == 1 and r["went_on"]} == second
    assert all(r["projected_val"] >= r["val_accuracy"] for r in rounds if r["round"] == 1)
    assert all(r["projected_val"] is None for r in rounds if r["round"] == 2)  # one place: best val, no projection
    final = report["race"][-1]
    assert final["round"] == "final" and final["candidate"] == report["candidate"]
    assert [r["candidate"] for r in rounds if r["round"] == 2 and r["went_on"]] == [final["candidate"]]
    # the winner resumed its race run: only the remaining epochs were trained
    assert final["epochs_trained"] == 4 - 2
    assert report["race_cost_epochs"] < report["oracle_cost_epochs"]
    assert report["race_cost_epochs"] == sum(r["epochs_trained"] for r in report["race"])


def test_race_rounds_last_at_least_min_round_steps(data_root, tmp_path):
    # given 8 epochs, a 1/8 first round, but a floor of 3 epochs' worth of steps
    params = planned(tiny_params(data_root, tmp_path, strategy={"mode": "race", "top_k": 2},
                                 train={"epochs": 8, "batch_size": 4, "patience": 0,
                                        "race": {"budget_fraction": 0.125, "keep": 0.5}}))
    steps_per_epoch = -(-len(load_train_data(params, "", backbone_input(params), progress=False).train) // 4)
    floored = params.model_copy(update={"train": params.train.model_copy(update={"race": params.train.race.model_copy(
        update={"min_round_steps": 3 * steps_per_epoch})})})
    # when the race runs
    report = train_stage(floored, progress=False).to_json()
    # then its first round is 3 epochs, not 1
    first = [row for row in report["race"] if row["round"] == 1]
    assert len(first) == 2 and {row["budget_epochs"] for row in first} == {3}


def test_forced_strategy_is_trained(ready):
    forced = ready.model_copy(update={"strategy": ready.strategy.model_copy(update={"force": "scratch"})})
    assert train_stage(forced, progress=False).to_json()["strategy"] == "scratch"


def test_train_without_a_plan_says_what_to_run(data_root, tmp_path):
    with pytest.raises(StageInputError, match="autotransfer plan"):
        train_stage(tiny_params(data_root, tmp_path), progress=False)


def test_evaluate_scores_the_test_split_and_draws_the_plots(ready, tmp_path):
    train_stage(ready, progress=False)
    metrics = evaluate(ready, progress=False).to_json()
    assert metrics["n"] == 4 and 0 <= metrics["accuracy"] <= 1
    assert set(metrics["per_class"]) == {"a", "b"}
    for name in ("confusion_matrix", "training_curves", "feature_map"):
        assert (tmp_path / "reports/plots" / f"{name}.png").stat().st_size > 1000
    assert json.loads((tmp_path / "reports/metrics.json").read_text()) == metrics
    # one prediction row per test image, and they are what the accuracy was computed from
    rows = pd.read_csv(tmp_path / "reports/predictions.csv", dtype=str)
    assert list(rows.columns) == ["path", "actual", "predicted", "probability"] and len(rows) == metrics["n"]
    assert set(rows["actual"]) == {"a", "b"} and all(Path(p).exists() for p in rows["path"])
    assert (rows["actual"] == rows["predicted"]).mean() == pytest.approx(metrics["accuracy"])
    # the saved model reproduces the metric
    trained = load_trained_model(tmp_path / "models/target")
    assert trained.head_classes == ("a", "b")


def test_classification_metrics_by_hand():
    truth = np.array(["a", "a", "b", "b"], dtype=object)
    predicted = np.array(["a", "b", "b", "b"], dtype=object)
    m = classification_metrics(truth, predicted, ("a", "b"))
    assert m["accuracy"] == 0.75 and m["n"] == 4
    assert m["per_class"]["a"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert m["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)


def test_evaluate_without_a_model_says_what_to_run(ready):
    with pytest.raises(StageInputError, match="autotransfer train"):
        evaluate(ready, progress=False)
