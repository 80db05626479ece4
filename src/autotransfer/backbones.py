"""Backbone registry: architectures, their layer groups, head replacement, safe weight loading.

A ``TransferModel`` is ``body`` (the architecture with its classifier's last Linear
replaced by Identity, so ``body(x)`` is the feature vector) plus ``head`` (a new Linear for
the target classes). ``layer_groups`` names the body's parts from the stem to the last
block; partial and progressive unfreezing and discriminative learning rates work on them.

Weights come from, in order of the ``backbone.weights`` spec:
- a local file: ``.safetensors`` (ours or any state dict) or ``.pt``/``.pth`` loaded with
  ``torch.load(weights_only=True)`` — a pickle with anything but tensors is refused;
- ``imagenet`` (or a torchvision enum name such as ``IMAGENET1K_V1``): the file in the torch
  hub cache; offline and not cached, the error names the exact file and folder.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class WeightsError(RuntimeError):
    """Weights that cannot be found or must not be loaded; the message says which file and why."""


@dataclass(frozen=True)
class Arch:
    name: str
    build: Callable[[int], nn.Module]  # input size -> body whose forward returns features
    groups: Callable[[nn.Module], list[tuple[str, list[nn.Module]]]]
    strip_prefixes: tuple[str, ...]  # torchvision state-dict keys of the replaced classifier
    min_input: int = 16


class SmallCNN(nn.Module):
    """The DANN paper's digit network: conv 32-5x5, pool, conv 48-5x5, pool, fc 100, fc 100."""

    def __init__(self, input_size: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, 32, 5), nn.BatchNorm2d(32), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        self.conv2 = nn.Sequential(nn.Conv2d(32, 48, 5), nn.BatchNorm2d(48), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        side = ((input_size - 4) // 2 - 4) // 2
        self.fc = nn.Sequential(nn.Flatten(), nn.Linear(48 * side * side, 100), nn.ReLU(inplace=True),
                                nn.Linear(100, 100), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv2(self.conv1(x)))


def _torchvision(name: str, **kwargs) -> Callable[[int], nn.Module]:
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


def _resnet_groups(body: nn.Module) -> list[tuple[str, list[nn.Module]]]:
    return [("stem", [body.conv1, body.bn1]), ("layer1", [body.layer1]), ("layer2", [body.layer2]),
            ("layer3", [body.layer3]), ("layer4", [body.layer4])]


def _split(modules: list[nn.Module], parts: int) -> list[list[nn.Module]]:
    size = -(-len(modules) // parts)
    return [modules[i: i + size] for i in range(0, len(modules), size)]


def _conv_net_groups(body: nn.Module) -> list[tuple[str, list[nn.Module]]]:
    blocks = list(body.features)[1:]
    chunks = _split(blocks, 4)
    chunks[-1] = chunks[-1] + [body.classifier]  # mobilenet's pre-logit Linear belongs to the top
    return [("stem", [body.features[0]])] + [(f"blocks{i + 1}", chunk) for i, chunk in enumerate(chunks)]


def _vit_groups(body: nn.Module) -> list[tuple[str, list[nn.Module]]]:
    class Embedding(nn.Module):  # a view that owns the loose embedding parameters
        def __init__(self) -> None:
            super().__init__()
            self.conv_proj = body.conv_proj
            self.class_token = body.class_token
            self.pos_embedding = body.encoder.pos_embedding

    chunks = _split(list(body.encoder.layers), 4)
    chunks[-1] = chunks[-1] + [body.encoder.ln]
    return [("stem", [Embedding()])] + [(f"blocks{i + 1}", chunk) for i, chunk in enumerate(chunks)]


def _small_cnn_groups(body: nn.Module) -> list[tuple[str, list[nn.Module]]]:
    return [("stem", [body.conv1]), ("conv2", [body.conv2]), ("fc", [body.fc])]


ARCHS: dict[str, Arch] = {
    "small_cnn": Arch("small_cnn", SmallCNN, _small_cnn_groups, (), min_input=16),
    **{n: Arch(n, _torchvision(n), _resnet_groups, ("fc.",)) for n in ("resnet18", "resnet34", "resnet50")},
    **{n: Arch(n, _torchvision(n), _conv_net_groups, ("classifier.3.",))
       for n in ("mobilenet_v3_small", "mobilenet_v3_large")},
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

    def layer_groups(self) -> list[tuple[str, list[nn.Module]]]:
        """Body groups from the stem to the last block, then the head (with the neck, if any)."""
        return ARCHS[self.arch].groups(self.body) + [("head", [self.neck, self.head])]

    def replace_head(self, num_classes: int) -> None:
        self.head = nn.Linear(self.bottleneck or self.feature_dim, num_classes)

    def add_bottleneck(self, width: int) -> None:
        """A new Linear-BN-ReLU between features and head (the head is re-created to match)."""
        self.bottleneck = width
        self.neck = nn.Sequential(nn.Linear(self.feature_dim, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True))
        self.head = nn.Linear(width, self.head.out_features)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a tensors-only pickle; anything else is refused."""
    if not path.is_file():
        raise WeightsError(f"backbone.weights: file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:
            raise WeightsError(f"{path}: not a readable safetensors file: {exc}") from exc
    if path.suffix not in (".pt", ".pth", ".bin"):
        raise WeightsError(f"{path}: unsupported weights format (use .safetensors, .pt or .pth)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        raise WeightsError(
            f"{path}: refused: not a plain state dict of tensors (loaded with weights_only=True; "
            f"arbitrary pickled objects are never executed): {str(exc).splitlines()[0]}"
        ) from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path}: refused: expected a mapping of parameter names to tensors")
    return state


def torchvision_weights_file(arch: str, spec: str) -> tuple[Path, str]:
    """Where the torch hub cache keeps ``arch``'s weights ``spec`` (imagenet = the DEFAULT enum)."""
    import torchvision

    enum = torchvision.models.get_model_weights(arch)
    weights = enum.DEFAULT if spec.lower() in ("imagenet", "default") else enum[spec]
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    return folder / Path(weights.url).name, weights.url


@dataclass(frozen=True)
class LoadReport:
    source: str
    unexpected_keys: list[str]  # in the file but not in the body (reported, not an error)
    head_loaded: bool  # the file had a head of the right shape (e.g. the source model's)


def load_weights(model: TransferModel, spec: str | Path) -> LoadReport:
    """Load ``spec`` into ``model.body`` (and ``model.head`` when the file has a matching one)."""
    spec_text = str(spec)
    if Path(spec_text).suffix in (".safetensors", ".pt", ".pth", ".bin") or Path(spec_text).exists():
        state = read_state_dict(Path(spec_text))
    elif model.arch == "small_cnn":
        raise WeightsError(f"backbone.weights: {spec_text!r}: small_cnn has no torchvision weights; give a file")
    else:
        try:
            path, url = torchvision_weights_file(model.arch, spec_text)
        except KeyError as exc:
            raise WeightsError(f"backbone.weights: unknown torchvision weights {spec_text!r} for {model.arch}") from exc
        if not path.is_file():
            raise WeightsError(
                f"backbone.weights={spec_text!r}: {path.name} is not in the torch hub cache and this machine "
                f"cannot download it. Place the file at {path} (from {url}), or set TORCH_HOME to a folder "
                f"whose hub/checkpoints/ holds it."
            )
        state = read_state_dict(path)
    neck_state: dict[str, torch.Tensor] = {}
    if any(key.startswith("body.") for key in state):  # a TransferModel checkpoint (e.g. models/source)
        body_state = {k[5:]: v for k, v in state.items() if k.startswith("body.")}
        head_state = {k[5:]: v for k, v in state.items() if k.startswith("head.")}
        neck_state = {k[5:]: v for k, v in state.items() if k.startswith("neck.")}
    else:  # a torchvision state dict: drop its ImageNet classifier
        prefixes = ARCHS[model.arch].strip_prefixes
        body_state = {k: v for k, v in state.items() if not k.startswith(prefixes)}
        head_state = {}
    result = model.body.load_state_dict(body_state, strict=False)
    if result.missing_keys:
        raise WeightsError(
            f"backbone.weights={spec_text!r}: does not fit {model.arch}: {len(result.missing_keys)} parameters "
            f"missing, e.g. {result.missing_keys[:3]}"
        )
    if neck_state and model.bottleneck:
        model.neck.load_state_dict(neck_state)
    head_loaded = bool(head_state) and head_state["weight"].shape == model.head.weight.shape
    if head_loaded and bool(neck_state) == bool(model.bottleneck):
        model.head.load_state_dict(head_state)
    else:
        head_loaded = False
    return LoadReport(spec_text, list(result.unexpected_keys), head_loaded)
