"""Backbone registry: architectures, their layer groups, head replacement.

A ``TransferModel`` is ``body`` (the architecture with its classifier's last Linear
replaced by Identity, so ``body(x)`` is the feature vector) plus ``head`` (a new Linear for
the target classes). ``layer_groups`` names the body's parts from the stem to the last
block; partial and progressive unfreezing and discriminative learning rates work on them.

Adding an architecture = one ``Arch`` entry in ``ARCHS`` (its builder, its layer groups and
the state-dict prefix of the classifier it replaces) and its name in ``config.ArchName``;
docs/extending.md walks through it. Weights are loaded by ``models.weights``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LayerGroups = list[tuple[str, list[nn.Module]]]


@dataclass(frozen=True)
class Arch:
    name: str
    build: Callable[[int], nn.Module]  # input size -> body whose forward returns features
    groups: Callable[[Any], LayerGroups]
    strip_prefixes: tuple[str, ...]  # torchvision state-dict keys of the replaced classifier
    min_input: int = 16


class SmallCNN(nn.Module):
    """The DANN paper's digit network: conv 32-5x5, pool, conv 48-5x5, pool, fc 100, fc 100."""

    def __init__(self, input_size: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, 32, 5), nn.BatchNorm2d(32), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        self.conv2 = nn.Sequential(nn.Conv2d(32, 48, 5), nn.BatchNorm2d(48), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        side = ((input_size - 4) // 2 - 4) // 2
        self.fc = nn.Sequential(
            nn.Flatten(),
            nn.Linear(48 * side * side, 100),
            nn.ReLU(inplace=True),
            nn.Linear(100, 100),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv2(self.conv1(x)))


def _torchvision(name: str, **kwargs: Any) -> Callable[[int], nn.Module]:
    def build(input_size: int) -> nn.Module:
        import torchvision

        extra = {"image_size": input_size} if name.startswith("vit") else {}
        model = torchvision.models.get_model(name, weights=None, **extra, **kwargs)
        if name.startswith("resnet"):
            model.fc = nn.Identity()
        elif name.startswith("vit"):
            model.heads.head = nn.Identity()
        else:  # mobilenet_v3_*, efficientnet_*: the classifier's last Linear
            model.classifier[-1] = nn.Identity()
        return model

    return build


def _resnet_groups(body: Any) -> LayerGroups:
    return [
        ("stem", [body.conv1, body.bn1]),
        ("layer1", [body.layer1]),
        ("layer2", [body.layer2]),
        ("layer3", [body.layer3]),
        ("layer4", [body.layer4]),
    ]


def _split(modules: list[nn.Module], parts: int) -> list[list[nn.Module]]:
    size = -(-len(modules) // parts)
    return [modules[i : i + size] for i in range(0, len(modules), size)]


def _conv_net_groups(body: Any) -> LayerGroups:
    blocks = list(body.features)[1:]
    chunks = _split(blocks, 4)
    chunks[-1] = chunks[-1] + [body.classifier]  # mobilenet's pre-logit Linear belongs to the top
    return [("stem", [body.features[0]])] + [(f"blocks{i + 1}", chunk) for i, chunk in enumerate(chunks)]


def _vit_groups(body: Any) -> LayerGroups:
    class Embedding(nn.Module):  # a view that owns the loose embedding parameters
        def __init__(self) -> None:
            super().__init__()
            self.conv_proj = body.conv_proj
            self.class_token = body.class_token
            self.pos_embedding = body.encoder.pos_embedding

    chunks = _split(list(body.encoder.layers), 4)
    chunks[-1] = chunks[-1] + [body.encoder.ln]
    stem: list[nn.Module] = [Embedding()]
    return [("stem", stem)] + [(f"blocks{i + 1}", chunk) for i, chunk in enumerate(chunks)]


def _small_cnn_groups(body: Any) -> LayerGroups:
    return [("stem", [body.conv1]), ("conv2", [body.conv2]), ("fc", [body.fc])]


ARCHS: dict[str, Arch] = {
    "small_cnn": Arch("small_cnn", SmallCNN, _small_cnn_groups, (), min_input=16),
    **{n: Arch(n, _torchvision(n), _resnet_groups, ("fc.",)) for n in ("resnet18", "resnet34", "resnet50")},
    **{
        n: Arch(n, _torchvision(n), _conv_net_groups, ("classifier.3.",))
        for n in ("mobilenet_v3_small", "mobilenet_v3_large")
    },
    "efficientnet_b0": Arch("efficientnet_b0", _torchvision("efficientnet_b0"), _conv_net_groups, ("classifier.1.",)),
    "vit_b_16": Arch("vit_b_16", _torchvision("vit_b_16"), _vit_groups, ("heads.head.",), min_input=16),
}


class TransferModel(nn.Module):
    """``head(neck(body(x)))``; ``neck`` is Identity unless a bottleneck is asked for (DANN)."""

    def __init__(self, arch: str, num_classes: int, input_size: int, bottleneck: int = 0) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"backbone.arch: unknown architecture {arch!r} (known: {', '.join(sorted(ARCHS))})")
        if input_size < ARCHS[arch].min_input:
            raise ValueError(f"input size {input_size} is below {ARCHS[arch].min_input} px for {arch}")
        self.arch = arch
        self.input_size = input_size
        self.body = ARCHS[arch].build(input_size)
        with torch.no_grad():
            was_training = self.body.training
            self.body.eval()
            self.feature_dim = int(self.body(torch.zeros(1, 3, input_size, input_size)).shape[1])
            self.body.train(was_training)
        self.bottleneck = bottleneck
        self.neck: nn.Module = nn.Identity()
        self.head = nn.Linear(self.feature_dim, num_classes)
        if bottleneck:
            self.add_bottleneck(bottleneck)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.neck(self.body(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.neck(self.body(x)))

    def layer_groups(self) -> LayerGroups:
        """Body groups from the stem to the last block, then the head (with the neck, if any)."""
        return [*ARCHS[self.arch].groups(self.body), ("head", [self.neck, self.head])]

    def replace_head(self, num_classes: int) -> None:
        self.head = nn.Linear(self.bottleneck or self.feature_dim, num_classes)

    def add_bottleneck(self, width: int) -> None:
        """A new Linear-BN-ReLU between features and head (the head is re-created to match)."""
        self.bottleneck = width
        self.neck = nn.Sequential(nn.Linear(self.feature_dim, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True))
        self.head = nn.Linear(width, self.head.out_features)
