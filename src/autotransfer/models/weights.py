"""All weight loading: files and torchvision's cache, the configured backbone, a trained model.

Weights come from, in order of the ``backbone.weights`` spec:
- a local file: ``.safetensors`` (ours or any state dict) or ``.pt``/``.pth`` loaded with
  ``torch.load(weights_only=True)``: a pickle with anything but tensors is refused;
- ``imagenet`` (or a torchvision enum name such as ``IMAGENET1K_V1``): the file in the torch
  hub cache; offline and not cached, the error names the exact file and folder.
``null`` means the pretrain stage's source model (models/source), with its source head.
"""

from __future__ import annotations

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
from autotransfer.io.data import Normalization
from autotransfer.models.backbones import ARCHS, IMAGENET_MEAN, IMAGENET_STD, TransferModel

DEFAULT_NORMALIZATION = Normalization(IMAGENET_MEAN, IMAGENET_STD)


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


@dataclass
class Backbone:
    """A backbone ready for the target: the model, how to feed it, and where it came from."""

    model: TransferModel
    normalization: Normalization
    weights_id: str  # what the weights are, for cache keys and reports
    source_classes: tuple[str, ...] | None  # classes of a loaded source head, if any


def normalization_of(spec: NormalizationSpec) -> Normalization:
    mean, std = spec.mean, spec.std
    return Normalization((mean[0], mean[1], mean[2]), (std[0], std[1], std[2]))


def load_backbone(params: Params, num_classes: int) -> Backbone:
    """The configured backbone.

    ``backbone.weights`` null means the pretrain stage's source model, returned with its
    source head (``source_classes`` says which classes it predicts: it can be scored
    zero-shot on the target). Other weights come with a fresh head for ``num_classes``.
    """
    arch, size = params.backbone.arch, params.backbone.input_size
    spec = params.backbone.weights
    if spec is None:
        folder = Path(params.pretrain.out)
        if not (folder / MODEL_FILE).exists() or not (folder / META_FILE).exists():
            raise WeightsError(
                f"{folder / MODEL_FILE}: no source model; run `autotransfer pretrain` first (or set backbone.weights)"
            )
        meta = read_source_meta(folder / META_FILE)
        if not isinstance(meta, SourceModelMeta):
            raise WeightsError(
                f"{folder / META_FILE}: pretrain was skipped ({meta.reason}) but backbone.weights "
                "is null; rerun `autotransfer pretrain`"
            )
        if meta.arch != arch or meta.input_size != size:
            raise WeightsError(
                f"{folder}: holds a {meta.arch} at {meta.input_size} px but "
                f"backbone is {arch} at {size} px; rerun `autotransfer pretrain`"
            )
        model = TransferModel(arch, len(meta.classes), size)
        load_weights(model, folder / MODEL_FILE)
        return Backbone(
            model, normalization_of(meta.normalization), f"source:{meta.data_hash[:16]}", tuple(meta.classes)
        )
    model = TransferModel(arch, num_classes, size)
    load_weights(model, spec)
    return Backbone(model, DEFAULT_NORMALIZATION, str(spec), None)


@dataclass
class TrainedModel:
    """A trained target model as evaluate, the registry and serving use it."""

    model: TransferModel
    normalization: Normalization
    head_classes: tuple[str, ...]
    meta: TargetModelMeta


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
