"""timm backbones: layer groups from timm's group_matcher, input settings from pretrained_cfg, offline weights."""

from pathlib import Path

import pytest
import torch

from autotransfer.config import load_params
from autotransfer.errors import WeightsError
from autotransfer.models.backbones import TransferModel, input_spec
from autotransfer.models.weights import load_weights, timm_weights_candidates

TIMM_ARCHS = ["tf_efficientnet_lite0", "timm/resnet18", "vit_tiny_patch16_224", "convnext_atto"]


@pytest.mark.parametrize("arch", TIMM_ARCHS)
def test_timm_groups_follow_its_group_matcher_and_cover_every_parameter_once(arch):
    # given a timm model for 5 classes at 32 px
    model = TransferModel(arch, num_classes=5, input_size=32).eval()
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 5)
    groups = model.layer_groups()
    names = [name for name, _ in groups]
    # then the groups run stem ... stages ... head, as timm's coarse matcher orders them
    assert names[0] == "stem" and names[-1] == "head" and len(names) >= 5
    # and hold every parameter and buffer exactly once
    seen = [id(p) for _, modules in groups for m in modules for p in m.parameters()]
    assert len(seen) == len(set(seen)) and set(seen) == {id(p) for p in model.parameters()}
    buffers = [id(b) for _, modules in groups for m in modules for b in m.buffers()]
    assert set(buffers) == {id(b) for b in model.buffers()}


def test_vit_loose_parameters_sit_in_the_stem_without_dragging_the_whole_model():
    model = TransferModel("vit_tiny_patch16_224", 3, 32)
    stem = dict(model.layer_groups())["stem"]
    stem_params = {id(p) for m in stem for p in m.parameters()}
    assert id(model.body.cls_token) in stem_params and id(model.body.pos_embed) in stem_params
    assert id(model.body.blocks[0].attn.qkv.weight) not in stem_params


def test_finetune_top_on_a_timm_model_trains_only_its_last_stage_and_the_head():
    from autotransfer.transfer.strategies import Phase, apply_phase

    model = TransferModel("tf_efficientnet_lite0", 4, 32)
    groups = [name for name, _ in model.layer_groups()]
    frozen = apply_phase(model, Phase(0, 0, 1, (groups[-2], "head")))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("body.blocks.6", "body.conv_head", "body.bn2", "head")) for n in trainable)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in frozen)  # frozen BN stays in eval mode


def test_input_settings_come_from_pretrained_cfg_unless_params_set_them():
    # given the lite0 backbone with nothing set: timm's pretrained_cfg
    cfg = load_params(None, ["backbone.input_size=null"]).backbone
    spec = input_spec(cfg)
    assert (spec.size, spec.interpolation) == (224, "bicubic")
    assert spec.normalization.mean == (0.5, 0.5, 0.5) and spec.normalization.std == (0.5, 0.5, 0.5)
    # when params.yaml sets them, they win
    cfg = load_params(
        None, ["backbone.input_size=96", "backbone.interpolation=nearest", "backbone.mean=[0.1, 0.2, 0.3]"]
    ).backbone
    spec = input_spec(cfg)
    assert (spec.size, spec.interpolation, spec.normalization.mean) == (96, "nearest", (0.1, 0.2, 0.3))
    assert spec.normalization.std == (0.5, 0.5, 0.5)
    # and a torchvision architecture keeps torchvision's conventions
    spec = input_spec(load_params(None, ["backbone.arch=resnet18", "backbone.input_size=null"]).backbone)
    assert (spec.size, spec.interpolation, spec.normalization.mean) == (224, "bilinear", (0.485, 0.456, 0.406))
    # and auto is the backbone's own pretrained resolution, like null
    assert input_spec(load_params(None, ["backbone.input_size=auto"]).backbone).size == 224
    with pytest.raises(ValueError, match="backbone.input_size"):
        load_params(None, ["backbone.input_size=big"])


def test_unknown_timm_name_is_an_error_naming_the_key():
    with pytest.raises(ValueError, match=r"backbone.arch: unknown architecture 'tf_efficientnet_lite9'"):
        TransferModel("tf_efficientnet_lite9", 2, 32)


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    torch.hub.set_dir(str(tmp_path / "torch"))
    yield tmp_path
    torch.hub.set_dir(str(Path(torch.hub._get_torch_home()) / "hub"))


def test_missing_imagenet_weights_name_every_file_and_folder_tried(empty_caches):
    # given timm's resnet18 (no weights package) and empty local caches, offline
    with pytest.raises(WeightsError) as err:
        load_weights(TransferModel("timm/resnet18", 3, 32), "imagenet")
    message = str(err.value)
    # then the error says where the file may go: the Hugging Face cache and the torch hub cache
    assert "backbone.weights='imagenet'" in message and "nothing is downloaded" in message
    assert str(empty_caches / "hf" / "models--timm--resnet18.a1_in1k" / "snapshots") in message
    assert str(empty_caches / "torch" / "checkpoints" / "resnet18_a1_0-d63eafa0.pth") in message


def test_imagenet_weights_load_offline_from_the_torch_hub_cache(empty_caches):
    import timm

    # given timm's resnet18 ImageNet checkpoint (1000 classes) where the torch hub cache keeps it
    reference = timm.create_model("resnet18")
    (path,) = [p for p in timm_weights_candidates("timm/resnet18") if "checkpoints" in str(p)]
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    # when a 3-class model loads 'imagenet'
    model = TransferModel("timm/resnet18", 3, 32)
    report = load_weights(model, "imagenet")
    # then the body holds the file's tensors, the ImageNet classifier dropped, the report names the file only
    state = reference.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in model.body.state_dict().items())
    assert report.source == f"imagenet:{path.name}" and not report.head_loaded


def test_weights_of_another_input_size_are_refused_by_name_not_with_a_traceback(tmp_path):
    from safetensors.torch import save_file

    # given a ViT's weights at 224 px (its position embedding has 14x14 patches)
    save_file(TransferModel("vit_tiny_patch16_224", 3, 224).state_dict(), str(tmp_path / "vit224.safetensors"))
    # when loaded into the same ViT at 64 px, then the error names the file, the model and the size
    with pytest.raises(WeightsError, match=r"vit224.safetensors'.*does not fit vit_tiny_patch16_224 at 64 px"):
        load_weights(TransferModel("vit_tiny_patch16_224", 3, 64), tmp_path / "vit224.safetensors")
