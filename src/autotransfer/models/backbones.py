"""Backbone registry: architectures, their layer groups, head replacement.

Two families: the torchvision names in ``ARCHS`` (and ``small_cnn``), and any timm model
(``backbone.arch: tf_efficientnet_lite0``, or ``timm/<name>`` where a name is in both).
A timm model's layer groups come from its own ``group_matcher`` (coarse: stem, each
stage, the final conv), and its input size, interpolation and mean/std from its
``pretrained_cfg`` unless params.yaml sets them (``input_spec``).

A ``TransferModel`` is ``body`` (the architecture with its classifier's last Linear
replaced by Identity, so ``body(x)`` is the feature vector) plus ``head`` (a new Linear for
the target classes). ``layer_groups`` names the body's parts from the stem to the last
block; partial and progressive unfreezing and discriminative learning rates work on them.

Adding an architecture = one ``Arch`` entry in ``ARCHS`` (its builder, its layer groups and
the state-dict prefix of the classifier it replaces), the one list of them;
docs/extending.md walks through it. Weights are loaded by ``models.weights``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from autotransfer.config import BackboneConfig
from autotransfer.io.data import InputSpec, Normalization
from autotransfer.io.images import WHITE

TIMM_PREFIX = "timm/"
PIXELS = "pixels"  # the floor's pixel baseline (transfer/floor.py), not a backbone to configure
PIXEL_SIDE = 8
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


def is_timm(arch: str) -> bool:
    return arch.startswith(TIMM_PREFIX) or arch not in (*ARCHS, PIXELS)


class PixelBody(nn.Module):
    """Average-pools the image to ``side`` x ``side`` and flattens it: no parameters."""

    def __init__(self, side: int = PIXEL_SIDE) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(side)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x).flatten(1)


def timm_name(arch: str) -> str:
    return arch.removeprefix(TIMM_PREFIX)


def timm_pretrained_cfg(arch: str) -> Any:
    """timm's ``PretrainedCfg`` of ``arch`` (name or name.tag); an unknown name is an error naming the key."""
    import timm
    from timm.models import get_pretrained_cfg

    name = timm_name(arch)
    cfg = get_pretrained_cfg(name) if timm.is_model(name) else None
    if cfg is None:
        raise ValueError(
            f"backbone.arch: unknown architecture {arch!r}: neither torchvision's ({', '.join(sorted(ARCHS))}) "
            "nor a timm model name (timm.list_models() lists them)"
        )
    return cfg


def input_spec(cfg: BackboneConfig, background: Sequence[int] = WHITE) -> InputSpec:
    """How images are fed to ``cfg.arch``: params.yaml's values, else the timm model's pretrained_cfg.

    torchvision architectures default to 224 px (32 for small_cnn), bilinear, ImageNet mean/std;
    ``background`` is data.alpha_background.
    """
    if is_timm(cfg.arch):
        pretrained = timm_pretrained_cfg(cfg.arch)
        size, interpolation = int(pretrained.input_size[-1]), str(pretrained.interpolation or "bilinear")
        mean, std = list(pretrained.mean), list(pretrained.std)
    else:
        size, interpolation = (32 if cfg.arch == "small_cnn" else 224), "bilinear"
        mean, std = list(IMAGENET_MEAN), list(IMAGENET_STD)
    if interpolation not in ("bilinear", "bicubic", "nearest"):
        interpolation = "bicubic"  # timm's "random" and others are training-time choices
    mean, std = cfg.mean or mean, cfg.std or std
    return InputSpec(
        cfg.input_size if isinstance(cfg.input_size, int) else size,  # auto / null: the pretrained resolution
        cfg.interpolation or interpolation,  # type: ignore[arg-type]
        Normalization((mean[0], mean[1], mean[2]), (std[0], std[1], std[2])),
        (background[0], background[1], background[2]),
    )


def resolutions(cfg: BackboneConfig, ladder: tuple[int, ...]) -> tuple[int, ...]:
    """The input sizes ``cfg`` can train at, largest first: its configured size, then ``ladder``'s smaller ones.

    Only the configured size where the weights fix it: the pretrain stage's source model
    (``weights`` null) was built for its size, and a model with a fixed input size (a ViT's
    position embeddings) is loaded at the size its weights were made for.
    """
    size = input_spec(cfg).size
    if cfg.weights is None:
        return (size,)
    if is_timm(cfg.arch):
        fixed, smallest = bool(timm_pretrained_cfg(cfg.arch).fixed_input_size), 32
    else:
        fixed, smallest = cfg.arch.startswith("vit"), ARCHS[cfg.arch].min_input
    if fixed:
        return (size,)
    return (size, *(s for s in ladder if smallest <= s < size))


def _timm_body(arch: str, input_size: int) -> nn.Module:
    import timm

    pretrained = timm_pretrained_cfg(arch)
    extra: dict[str, Any] = {"img_size": input_size} if pretrained.fixed_input_size else {}
    # num_classes=0: timm's own "features" mode, forward() returns the pooled pre-logits.
    return timm.create_model(timm_name(arch), pretrained=False, num_classes=0, **extra)


class _DirectState(nn.Module):
    """A view owning a module's own parameters and buffers but not its children's.

    timm models keep some parameters on a parent (ViT's ``cls_token`` and ``pos_embed`` on
    the root): a group must hold those without holding every child of the parent.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        for name, param in module.named_parameters(recurse=False):
            self.register_parameter(name, param)
        for name, buffer in module.named_buffers(recurse=False):
            self.register_buffer(name, buffer)


def _timm_groups(body: Any) -> LayerGroups:
    """timm's coarse ``group_matcher`` over the modules that own state (unmatched ones join the top)."""
    from timm.models._manipulate import group_with_matcher  # what timm's own param_groups_layer_decay uses

    owners: list[tuple[str, tuple[str, nn.Module]]] = []
    for name, module in body.named_modules():
        own = [n for n, _ in module.named_parameters(recurse=False)] + [
            n for n, _ in module.named_buffers(recurse=False)
        ]
        if own:
            # The module itself where its children own nothing (timm's BatchNormAct2d holds an
            # activation): .eval() on a frozen group must reach its BatchNorm.
            children_own_state = any(
                True for child in module.children() for _ in (*child.parameters(), *child.buffers())
            )
            unit = _DirectState(module) if children_own_state else module
            owners.append((f"{name}.{own[0]}" if name else own[0], (name, unit)))
    grouped = group_with_matcher(iter(owners), body.group_matcher(coarse=True), return_values=True)
    groups: LayerGroups = []
    for index in sorted(grouped):
        members: list[tuple[str, nn.Module]] = grouped[index]
        label: list[str] = []
        for name, _ in members:
            parts = name.split(".")
            top = ".".join(parts[:2]) if len(parts) > 1 and parts[1].isdigit() else parts[0] or "root"
            if top not in label:
                label.append(top)
        groups.append(("stem" if index == 0 else "+".join(label), [unit for _, unit in members]))
    return groups


class TransferModel(nn.Module):
    """``head(neck(body(x)))``; ``neck`` is Identity unless a bottleneck is asked for (DANN)."""

    def __init__(self, arch: str, num_classes: int, input_size: int, bottleneck: int = 0) -> None:
        super().__init__()
        self.body: nn.Module
        if arch == PIXELS:
            self.body = PixelBody()
        elif is_timm(arch):
            self.body = _timm_body(arch, input_size)
        else:
            if input_size < ARCHS[arch].min_input:
                raise ValueError(f"input size {input_size} is below {ARCHS[arch].min_input} px for {arch}")
            self.body = ARCHS[arch].build(input_size)
        self.arch = arch
        self.input_size = input_size
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
        if is_timm(self.arch):
            if "_body_groups" not in self.__dict__:  # a plain attribute: the views are not submodules
                self.__dict__["_body_groups"] = _timm_groups(self.body)
            body = self.__dict__["_body_groups"]
        elif self.arch == PIXELS:
            body = [("stem", [self.body])]
        else:
            body = ARCHS[self.arch].groups(self.body)
        return [*body, ("head", [self.neck, self.head])]

    def replace_head(self, num_classes: int) -> None:
        self.head = nn.Linear(self.bottleneck or self.feature_dim, num_classes)

    def add_bottleneck(self, width: int) -> None:
        """A new Linear-BN-ReLU between features and head (the head is re-created to match)."""
        self.bottleneck = width
        self.neck = nn.Sequential(nn.Linear(self.feature_dim, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True))
        self.head = nn.Linear(width, self.head.out_features)
