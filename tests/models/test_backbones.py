import os
import pickle
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from autotransfer.errors import WeightsError
from autotransfer.models.backbones import ARCHS, TransferModel
from autotransfer.models.weights import load_weights

FAST_ARCHS = ["small_cnn", "resnet18", "mobilenet_v3_small", "efficientnet_b0"]


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_every_arch_builds_at_32px_and_groups_cover_every_parameter_once(arch):
    # given a model for 7 classes at the demo's 32 px
    model = TransferModel(arch, num_classes=7, input_size=32).eval()
    # then it classifies a batch
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 7)
    # and its layer groups, stem first and head last, hold every parameter exactly once
    groups = model.layer_groups()
    assert groups[0][0] == "stem" and groups[-1][0] == "head" and len(groups) >= 4
    seen = [id(p) for _, modules in groups for m in modules for p in m.parameters()]
    assert len(seen) == len(set(seen))
    assert set(seen) == {id(p) for p in model.parameters()}


def test_unknown_arch_names_the_key():
    with pytest.raises(ValueError, match="backbone.arch: unknown architecture 'resnet19'"):
        TransferModel("resnet19", 2, 32)


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small"])
def test_torchvision_state_dict_loads_into_the_body_and_drops_the_imagenet_classifier(tmp_path, arch):
    import torchvision

    # given a full torchvision model's state dict (1000-class classifier included), as .pt
    reference = torchvision.models.get_model(arch, weights=None)
    torch.save(reference.state_dict(), tmp_path / "w.pt")
    # when loaded into a 10-class transfer model
    model = TransferModel(arch, 10, 32)
    report = load_weights(model, tmp_path / "w.pt")
    # then every body tensor equals the file's, the new head is untouched
    state = reference.state_dict()
    for key, value in model.body.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert not report.head_loaded and report.unexpected_keys == []


def test_transfer_checkpoint_roundtrip_with_safetensors_restores_the_head(tmp_path):
    source = TransferModel("small_cnn", 10, 32)
    save_file(source.state_dict(), str(tmp_path / "model.safetensors"))
    target = TransferModel("small_cnn", 10, 32)
    report = load_weights(target, tmp_path / "model.safetensors")
    assert report.head_loaded
    x = torch.randn(4, 3, 32, 32)
    assert torch.equal(source.eval()(x), target.eval()(x))


def test_head_of_another_class_count_is_not_loaded(tmp_path):
    save_file(TransferModel("small_cnn", 10, 32).state_dict(), str(tmp_path / "m.safetensors"))
    assert not load_weights(TransferModel("small_cnn", 3, 32), tmp_path / "m.safetensors").head_loaded


def test_weights_of_another_arch_are_refused(tmp_path):
    save_file(TransferModel("small_cnn", 10, 32).state_dict(), str(tmp_path / "m.safetensors"))
    with pytest.raises(WeightsError, match="does not fit resnet18"):
        load_weights(TransferModel("resnet18", 10, 32), tmp_path / "m.safetensors")


def test_offline_torchvision_weights_name_the_file_and_folder(tmp_path, monkeypatch):
    # given an empty torch hub cache and no network
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    started = time.perf_counter()
    with pytest.raises(WeightsError) as err:
        load_weights(TransferModel("resnet18", 10, 32), "imagenet")
    # then the error names the exact file and where to put it, at once
    assert time.perf_counter() - started < 5
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    assert "resnet18-f37072fd.pth" in str(err.value) and str(folder) in str(err.value)


def test_cached_torchvision_weights_are_used_offline(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    reference = torchvision.models.mobilenet_v3_small()
    torch.save(reference.state_dict(), folder / Path(torchvision.models.MobileNet_V3_Small_Weights.DEFAULT.url).name)
    model = TransferModel("mobilenet_v3_small", 10, 32)
    load_weights(model, "imagenet")
    assert torch.equal(model.body.features[0][0].weight, reference.features[0][0].weight)


class Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_with_code_is_refused_and_never_runs(tmp_path):
    # given a .pt file whose unpickling would run a shell command
    marker = tmp_path / "pwned"
    with open(tmp_path / "evil.pt", "wb") as handle:
        pickle.dump({"conv1.weight": Payload(marker)}, handle)
    # when it is given as backbone weights, then it is refused and the payload did not run
    with pytest.raises(WeightsError, match="refused"):
        load_weights(TransferModel("resnet18", 10, 32), tmp_path / "evil.pt")
    assert not marker.exists()


def test_pickled_non_tensor_values_are_refused(tmp_path):
    torch.save({"conv1.weight": [1, 2, 3]}, tmp_path / "odd.pt")
    with pytest.raises(WeightsError, match="refused"):
        load_weights(TransferModel("resnet18", 10, 32), tmp_path / "odd.pt")


def test_missing_weights_file_names_the_key_and_path(tmp_path):
    with pytest.raises(WeightsError, match=r"backbone.weights: file not found: .*nope.safetensors"):
        load_weights(TransferModel("small_cnn", 10, 32), tmp_path / "nope.safetensors")
