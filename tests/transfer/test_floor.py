"""The floor: cheap baselines the trained model must beat on target val, servable when they win."""

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from autotransfer.io.data import ImageSet, TrainData
from autotransfer.transfer.floor import PIXEL_NORMALIZATION, fit_logistic_pixels, pixel_features
from registry_helpers import run_pipeline
from stage_helpers import tiny_params


def brightness_domain(root: Path, name: str, seed: int, classes=("dark", "mid", "bright")) -> None:
    """Noise images whose class is their brightness: pixels separate them, a barely trained CNN does not."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", 8), ("val", 4), ("test", 4)):
        for level, label in enumerate(classes):
            for i in range(n):
                pixels = rng.integers(0, 100, size=(16, 16, 3)) + 70 * level
                path = root / name / split / label / f"{i:02d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels.astype(np.uint8), "RGB").save(path)


def image_set(n_per_class: int, classes: tuple[str, ...], seed: int) -> ImageSet:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(classes)), n_per_class)
    images = rng.integers(0, 120, size=(len(labels), 3, 16, 16)) + 60 * labels[:, None, None, None]
    hashes = tuple(f"{seed}-{i}" for i in range(len(labels)))
    return ImageSet(torch.from_numpy(images.astype(np.uint8)), torch.from_numpy(labels), classes, hashes, hashes)


def test_the_pixel_baseline_folded_into_a_model_predicts_what_sklearn_predicts():
    from sklearn.linear_model import LogisticRegression

    from autotransfer.config import TrainConfig

    # given labeled train and val images of three classes, val large enough to choose on
    classes = ("a", "b", "c")
    train, val = image_set(10, classes, seed=0), image_set(5, classes, seed=1)
    test = image_set(5, classes, seed=2)
    data = TrainData(classes, train, val, ImageSet.empty(16, classes))
    cfg = TrainConfig(min_val_per_class=5)
    # when the floor fits its logistic regression and folds it into a pixels model
    model = fit_logistic_pixels(data, cfg)
    with torch.no_grad():
        ours = torch.softmax(model(PIXEL_NORMALIZATION(test.images[:])), 1).numpy()
    # then the served model gives sklearn's own probabilities (at the C chosen on val) on new images
    from autotransfer.transfer.logistic import fit_logistic

    x = pixel_features(train.images)
    chosen = fit_logistic(x, train.labels.numpy(), pixel_features(val.images), val.labels.numpy(), 3, 5).selection
    assert chosen.rule == "val"
    mean, std = x.mean(0), x.std(0) + 1e-6
    reference = LogisticRegression(C=chosen.C, max_iter=20000, tol=1e-10).fit((x - mean) / std, train.labels.numpy())
    expected = reference.predict_proba((pixel_features(test.images) - mean) / std)
    np.testing.assert_allclose(ours, expected, atol=2e-3)  # within scikit-learn's own tolerance of the optimum


def test_a_trained_model_below_the_floor_is_replaced_by_the_floor_model(tmp_path):
    from autotransfer.models.weights import load_trained_model
    from autotransfer.serving.predict import classify

    # given a target whose classes are its brightness and a run that cannot learn (scratch, lr 1e-6, 1 epoch)
    root = tmp_path / "data"
    brightness_domain(root, "src", seed=1)
    brightness_domain(root, "tgt", seed=2)
    params = tiny_params(
        root,
        tmp_path,
        strategy={"force": "scratch"},
        train={"epochs": 1, "batch_size": 4, "lr": 1e-6, "floor": True, "min_val_per_class": 4},
    )
    # when the pipeline runs
    run_pipeline(params)
    report = json.loads((tmp_path / "reports/train.json").read_text())
    floor = report["floor"]
    # then the train report shows both baselines, the trained model's val score, and the swap
    assert [row["model"] for row in floor["rows"]] == ["linear_probe", "logistic_pixels"]
    best = max(row["val_accuracy"] for row in floor["rows"])
    assert floor["trained"] == "scratch" and floor["trained_val_accuracy"] <= best
    assert floor["used"] in ("linear_probe", "logistic_pixels") and "is not better than the floor" in floor["note"]
    assert report["strategy"] == floor["used"] and report["val_accuracy"] == best
    # and the floor's model is the one written, evaluated and served
    trained = load_trained_model(params.train.out)
    assert trained.meta.strategy == floor["used"]
    metrics = json.loads((tmp_path / "reports/metrics.json").read_text())
    assert metrics["strategy"] == floor["used"] and metrics["accuracy"] >= 0.9
    tests = sorted((root / "tgt" / "test").glob("*/*.png"))
    served = [p.label for p in classify(trained, [t.read_bytes() for t in tests])]
    assert np.mean([label == t.parent.name for label, t in zip(served, tests)]) == metrics["accuracy"]


def test_the_trained_model_stays_when_it_beats_the_floor_and_goes_when_it_does_not(data_root, tmp_path):
    import dataclasses

    from autotransfer.engine.loop import fit
    from autotransfer.io.data import load_train_data
    from autotransfer.models.weights import backbone_input
    from autotransfer.stages.train import apply_floor, selection_rule
    from autotransfer.transfer.strategies import Candidate
    from stage_helpers import plan_ready

    params = plan_ready(tiny_params(data_root, tmp_path, train={"epochs": 2, "batch_size": 4}))
    data, selection = selection_rule(params, load_train_data(params, False, backbone_input(params), progress=False))
    assert selection.rule == "val"

    def fit_candidate(candidate):
        return fit(params, candidate, data, tmp_path / "runs" / candidate.label, 2, False)

    trained = fit_candidate(Candidate("finetune_all"))
    # given the trained model scored perfect on val: it stays, and the report says it beat the floor
    perfect = dataclasses.replace(trained, val_accuracy=1.0)
    kept, floor = apply_floor(params, perfect, data, fit_candidate, selection)
    assert kept is perfect and floor.used is None and "beats the floor" in floor.note
    assert [row.model for row in floor.rows] == ["linear_probe", "logistic_pixels"]
    # given the same model scored 0 on val: the best baseline replaces it
    swapped, floor = apply_floor(params, dataclasses.replace(trained, val_accuracy=0.0), data, fit_candidate, selection)
    assert floor.used == swapped.candidate.label
    assert swapped.val_accuracy == max(row.val_accuracy for row in floor.rows)
    assert "a tie" not in floor.note
    # given a tie with the best baseline: the baseline (the simpler model) is written, and the note says val tied
    tied = dataclasses.replace(trained, val_accuracy=swapped.val_accuracy)
    kept, floor = apply_floor(params, tied, data, fit_candidate, selection)
    assert floor.used == kept.candidate.label != "finetune_all"
    assert f"a tie on {len(data.val)} val images" in floor.note
    # given a trained linear probe: it is the floor's probe, so it meets only the pixel baseline
    probe = fit_candidate(Candidate("linear_probe"))
    kept, floor = apply_floor(params, dataclasses.replace(probe, val_accuracy=1.0), data, fit_candidate, selection)
    assert [row.model for row in floor.rows] == ["logistic_pixels"] and floor.used is None
    _, floor = apply_floor(params, dataclasses.replace(probe, val_accuracy=0.0), data, fit_candidate, selection)
    assert floor.used == "logistic_pixels" and "linear_probe (val 0.000) is not better" in floor.note
    # given no labeled val images: nothing to compare on, the floor is skipped and says why
    empty_val = dataclasses.replace(data, val=ImageSet.empty(16, data.classes))
    _, no_val = selection_rule(params, empty_val)
    kept, floor = apply_floor(params, perfect, empty_val, fit_candidate, no_val)
    assert kept is perfect and floor.rows == [] and floor.note.startswith("skipped")
    assert "no labeled target val images" in floor.note
