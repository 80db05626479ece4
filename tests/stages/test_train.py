"""The train and evaluate stages end to end on tiny data: plan in, model and reports out."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from autotransfer.errors import StageInputError
from autotransfer.analysis.metrics import classification_metrics
from autotransfer.models.weights import load_trained_model
from autotransfer.stages.pipeline import EVALUATE, PLAN, PRETRAIN, SIMILARITY, TRAIN
from autotransfer.io.data import load_train_data
from autotransfer.models.weights import backbone_input
from autotransfer.stages.pipeline import VALIDATE
from stage_helpers import tiny_params


def planned(params):
    VALIDATE.run(params, progress=False)
    PRETRAIN.run(params, progress=False)
    SIMILARITY.run(params, progress=False)
    PLAN.run(params)
    return params


@pytest.fixture
def ready(data_root, tmp_path):
    return planned(tiny_params(data_root, tmp_path, train={"epochs": 4, "batch_size": 4, "patience": 0}))


def test_train_executes_the_plan_and_writes_model_history_and_report(ready, tmp_path):
    plan = json.loads((tmp_path / "reports/plan.json").read_text())
    report = TRAIN.run(ready, progress=False).to_json()
    assert report["strategy"] == plan["chosen"] and report["mode"] == "rules"
    meta = json.loads((tmp_path / "models/target/meta.json").read_text())
    assert meta["strategy"] == plan["chosen"] and meta["target_classes"] == ["a", "b"]
    history = (tmp_path / "reports/train_history.csv").read_text().splitlines()
    assert history[0].startswith("epoch,phase,train_loss") and len(history) == 1 + report["epochs_run"]
    assert json.loads((tmp_path / "reports/train.json").read_text()) == report


def test_rerun_resumes_the_finished_run_instead_of_retraining(ready):
    first = TRAIN.run(ready, progress=False).to_json()
    again = TRAIN.run(ready, progress=False).to_json()
    assert again["resumed_from_epoch"] == first["epochs_run"] and again["val_accuracy"] == first["val_accuracy"]


def test_race_trains_the_top_candidates_on_a_short_budget_then_the_winner_to_the_end(data_root, tmp_path):
    params = planned(tiny_params(data_root, tmp_path, strategy={"mode": "race", "top_k": 3},
                                 train={"epochs": 4, "batch_size": 4, "patience": 0,
                                        "race": {"budget_fraction": 0.25, "keep": 0.5, "min_round_steps": 1}}))
    report = TRAIN.run(params, progress=False).to_json()
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
    report = TRAIN.run(floored, progress=False).to_json()
    # then its first round is 3 epochs, not 1
    first = [row for row in report["race"] if row["round"] == 1]
    assert len(first) == 2 and {row["budget_epochs"] for row in first} == {3}


def test_forced_strategy_is_trained(ready):
    forced = ready.model_copy(update={"strategy": ready.strategy.model_copy(update={"force": "scratch"})})
    assert TRAIN.run(forced, progress=False).to_json()["strategy"] == "scratch"


def test_train_without_a_plan_says_what_to_run(data_root, tmp_path):
    with pytest.raises(StageInputError, match="autotransfer plan"):
        TRAIN.run(tiny_params(data_root, tmp_path), progress=False)


def test_evaluate_scores_the_test_split_and_draws_the_plots(ready, tmp_path):
    TRAIN.run(ready, progress=False)
    metrics = EVALUATE.run(ready, progress=False).to_json()
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
        EVALUATE.run(ready, progress=False)


def test_with_a_handful_of_val_images_nothing_is_chosen_on_val_and_they_train(data_root, tmp_path):
    # given the product's defaults: a val split of 2 images per class is below train.min_val_per_class (10)
    params = planned(tiny_params(data_root, tmp_path, strategy={"force": "finetune_all"},
                                 train={"min_val_per_class": 10, "min_steps": 20, "batch_size": 4, "floor": True}))
    # when it trains
    report = TRAIN.run(params, progress=False)
    # then the report says val chose nothing: the last epoch is kept, the floor is skipped, and val trained
    assert report.selection.rule == "no_val" and report.selection.val_smallest_class == 2
    assert "train.min_val_per_class=10" in report.selection.note
    assert report.best_epoch == report.epochs_run and report.val_accuracy is None
    assert report.floor.rows == [] and report.floor.note.startswith("skipped")
    # 6 train + 2 val images per class, 2 classes: 16 images, 4 steps per epoch at batch 4
    assert report.budget.pool == 16 and report.budget.steps_per_epoch == 4
    assert report.budget.epochs == 10 and "train.min_epochs decides" in report.budget.rule


def test_the_step_rule_gives_a_small_pool_more_epochs_and_says_why(data_root, tmp_path):
    params = planned(tiny_params(data_root, tmp_path, strategy={"force": "finetune_top"},
                                 train={"min_steps": 60, "batch_size": 8, "patience": 0}))
    report = TRAIN.run(params, progress=False)
    # 12 labeled train images at batch 8: 2 steps per epoch; 60 steps need 30 epochs (more than min_epochs 10)
    assert (report.budget.steps_per_epoch, report.budget.epochs, report.budget.steps) == (2, 30, 60)
    assert report.epochs_run == 30 and "train.min_steps decides" in report.budget.rule
    assert report.selection.rule == "val"


def test_the_linear_probe_is_fitted_in_closed_form_and_says_how(data_root, tmp_path):
    params = planned(tiny_params(data_root, tmp_path, strategy={"force": "linear_probe"},
                                 train={"min_val_per_class": 10}))
    report = TRAIN.run(params, progress=False)
    assert report.strategy == "linear_probe" and report.epochs_run == 1
    assert report.budget.steps == 0 and report.budget.rule.startswith("closed form")
    # 8 labels per class once val trains: its L2 strength by cross-validation
    assert report.fit.startswith("converged logistic regression") and "cross-validation" in report.fit


def test_step_budget_rule_by_hand():
    from autotransfer.config import TrainConfig
    from autotransfer.transfer.budget import step_budget

    cfg = TrainConfig()  # min_steps 150, min_epochs 10, batch 64
    assert (step_budget(cfg, 1079).epochs, step_budget(cfg, 1079).steps) == (10, 170)  # the demo: unchanged
    assert (step_budget(cfg, 100).epochs, step_budget(cfg, 100).steps) == (75, 150)
    assert step_budget(cfg, 30).epochs == 150
    assert step_budget(cfg.model_copy(update={"epochs": 3}), 30).epochs == 3  # train.epochs overrides
    assert step_budget(cfg, 30, closed_form=True).steps == 0


def test_race_mode_with_a_handful_of_val_images_trains_the_rules_choice_and_says_why(data_root, tmp_path):
    params = planned(tiny_params(data_root, tmp_path, strategy={"mode": "race", "top_k": 3},
                                 train={"epochs": 2, "batch_size": 4, "min_val_per_class": 3}))
    report = TRAIN.run(params, progress=False)
    plan = json.loads((tmp_path / "reports/plan.json").read_text())
    assert report.race == [] and report.strategy == plan["chosen"] and report.selection.rule == "no_val"
    assert report.race_note.startswith("race skipped: target val has 2 labeled images in its smallest class")


def test_a_time_budget_gives_way_in_resolution_first_then_in_steps():
    from autotransfer.config import TrainConfig
    from autotransfer.transfer.budget import fit_time_budget, step_budget

    budget = step_budget(TrainConfig(), 100)  # 75 epochs, 150 steps
    sizes = (224, 192, 160, 128, 96, 64)
    asked = []

    def cost(size):  # seconds per epoch: a fixed part and one growing with the pixels
        asked.append(size)
        return 0.05 + 2e-5 * size**2

    # given time for the configured size: it stays, measured once
    fit = fit_time_budget(budget, 1e4, sizes, cost)
    assert (fit.input_size, fit.epochs, asked) == (224, 75, [224]) and fit.rule.endswith("fits")
    # given time for 75 epochs at about 130 px: 128 px, every step kept, found by bisection between the
    # configured and the smallest size (each step a measurement; none beyond what the search needs)
    allowed = 75 * cost(130)
    asked.clear()
    fit = fit_time_budget(budget, allowed, sizes, cost)
    assert (fit.input_size, fit.epochs) == (128, 75) and asked == [224, 64, 160, 128]
    assert fit.estimated_seconds <= allowed and "128 px is the largest size that fits" in fit.rule
    assert [t.input_size for t in fit.measured] == [224, 160, 128, 64]
    # given less than 75 epochs at the smallest size: the smallest, epochs cut to what fits
    fit = fit_time_budget(budget, 30.5 * cost(64), sizes, cost)
    assert (fit.input_size, fit.epochs) == (64, 30) and "epochs cut 75 -> 30" in fit.rule
    # given a backbone with one size (its weights fix it): epochs cut there, never below one
    fit = fit_time_budget(budget, 1e-9, (32,), cost)
    assert (fit.input_size, fit.epochs) == (32, 1) and "only size" in fit.rule
