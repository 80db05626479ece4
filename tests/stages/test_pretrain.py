import json

import pytest
import torch

from autotransfer.errors import WeightsError
from autotransfer.errors import StageInputError
from autotransfer.models.weights import load_backbone
from autotransfer.stages.pipeline import PRETRAIN, VALIDATE
from stage_helpers import nan_cross_entropy, tiny_params


def test_pretrain_writes_weights_and_metadata_and_is_deterministic(data_root, tmp_path):
    # given validated data
    params = tiny_params(data_root, tmp_path)
    VALIDATE.run(params, progress=False)
    # when the source model is pretrained twice with the same seed
    PRETRAIN.run(params, progress=False)
    out = tmp_path / "models/source"
    first = (out / "model.safetensors").read_bytes()
    PRETRAIN.run(params, progress=False)
    # then the weights are byte-identical and the metadata says what the model is
    assert (out / "model.safetensors").read_bytes() == first
    written = json.loads((out / "meta.json").read_text())
    assert written["arch"] == "small_cnn" and written["classes"] == ["a", "b"] and written["input_size"] == 32
    assert written["normalization"]["mean"] and len(written["data_hash"]) == 64
    assert written["train_images"] == 12 and len(written["history"]) == 2
    assert "seconds" not in written


def test_load_backbone_returns_the_source_model_with_its_head(data_root, tmp_path):
    params = tiny_params(data_root, tmp_path)
    VALIDATE.run(params, progress=False)
    PRETRAIN.run(params, progress=False)
    backbone = load_backbone(params, num_classes=2)
    assert backbone.source_classes == ("a", "b")
    assert backbone.weights_id.startswith("source:")
    assert backbone.model(torch.zeros(1, 3, 32, 32)).shape == (1, 2)


def test_pretrain_is_skipped_when_weights_are_given(data_root, tmp_path):
    params = tiny_params(data_root, tmp_path, backbone={"weights": str(tmp_path / "w.safetensors")})
    meta = PRETRAIN.run(params, progress=False)
    assert meta.skipped and "backbone.weights" in meta.reason
    assert not (tmp_path / "models/source/model.safetensors").exists()


def test_missing_source_model_says_what_to_run(data_root, tmp_path):
    with pytest.raises(WeightsError, match="autotransfer pretrain"):
        load_backbone(tiny_params(data_root, tmp_path), 2)


def test_source_model_of_another_arch_is_refused(data_root, tmp_path):
    params = tiny_params(data_root, tmp_path)
    VALIDATE.run(params, progress=False)
    PRETRAIN.run(params, progress=False)
    with pytest.raises(WeightsError, match="rerun `autotransfer pretrain`"):
        load_backbone(tiny_params(data_root, tmp_path, backbone={"arch": "resnet18"}), 2)


def test_pretrain_without_validation_says_what_to_run(data_root, tmp_path):
    with pytest.raises(StageInputError, match="autotransfer validate"):
        PRETRAIN.run(tiny_params(data_root, tmp_path), progress=False)


def test_pretrain_runs_the_training_loop_and_a_non_finite_loss_is_a_training_error(data_root, tmp_path, monkeypatch):
    from autotransfer.errors import TrainingError

    # given validated data and a loss that turns NaN
    params = tiny_params(data_root, tmp_path)
    VALIDATE.run(params, progress=False)

    nan_cross_entropy(monkeypatch)
    # then pretrain stops with the loop's TrainingError (the CLI's exit 1, no traceback) and writes no model
    with pytest.raises(TrainingError, match=r"pretrain small_cnn: non-finite loss \(nan\) at epoch 1, step 1"):
        PRETRAIN.run(params, progress=False)
    assert not (tmp_path / "models/source/model.safetensors").exists()
