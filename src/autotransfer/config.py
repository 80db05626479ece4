"""params.yaml as one strict, frozen pydantic model.

Every knob of the pipeline lives in params.yaml; DVC reads the same file by key, and the
CLI and the flows override it with ``section.key=value`` strings. A mistyped or unknown
key is an error that names its dotted path: silently ignoring ``train.lr`` when the user
meant ``train.learning_rate`` is how experiments go wrong without anyone noticing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema, model_validator

from autotransfer.catalog import KINDS, unknown_strategy
from autotransfer.errors import ConfigError

__all__ = ["ConfigError", "Params", "load_params", "params_from_dict", "registered_model_name", "resolve_domain"]

DEFAULT_PARAMS_FILE = Path("params.yaml")


def _no_parent_steps(value: str) -> str:
    """Outputs stay where the user pointed: a ``..`` step could walk a relative path out of the project."""
    if not value.strip():
        raise ValueError("an output path may not be empty")
    if ".." in Path(value).parts:
        raise ValueError(f"'..' is not allowed in an output path (got {value!r}); give a plain or absolute path")
    return value


OutputPath = Annotated[str, AfterValidator(_no_parent_steps)]


class Section(BaseModel):
    # allow_inf_nan=False: no parameter is a number that is not finite (.inf, .nan in YAML).
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid", allow_inf_nan=False)


class DataConfig(Section):
    root: str = Field("data", description="Folder holding one sub-folder per domain.")
    source: str | None = Field(
        "synth-digits",
        description="Labeled source domain: a folder name under root, or a path. null: none; the backbone's own "
        "pretraining data (ImageNet) is the source, and strategies that train on a labeled source are excluded.",
    )
    target: str = Field("digits", description="Target domain: a folder name under root, or a path.")
    labeled_per_class: int | None = Field(
        None,
        ge=0,
        description="Cap on labeled target images per class (train and val together); "
        "the rest of the target train split is treated as unlabeled. null: no cap.",
    )
    seed: int = Field(0, description="Seed of the deterministic choice of which target images keep labels.")
    val_share: float = Field(
        0.15,
        ge=0,
        lt=1,
        description="A domain of class folders (<domain>/<class>/*, no split folders): the share of its images "
        "that are val. Each image's split comes from its content hash, so it never changes as images arrive.",
    )
    test_share: float = Field(
        0.2, gt=0, lt=1, description="A domain of class folders: the share of its images that are test."
    )
    alpha_background: Annotated[list[Annotated[int, Field(ge=0, le=255)]], Field(min_length=3, max_length=3)] = Field(
        [255, 255, 255],
        description="RGB colour that transparent pixels (PNG, WebP, GIF) are laid on when an image is read; the model "
        "records it, so predict and serve read images the same way.",
    )
    decoded_cache: str | None = Field(
        ".cache/decoded",
        description="Decoded images at the training size live here and are read batch by batch, so memory does "
        "not grow with the number of images; null: decode into memory.",
    )
    workers: int = Field(
        0,
        ge=0,
        description="Worker processes (torch DataLoader) that decode images into the decoded cache and read "
        "training batches from it ahead of the step; 0: all in the calling process. Results do not depend on it.",
    )
    prefetch: int = Field(2, ge=1, description="Batches each worker reads ahead (data.workers > 0).")

    @model_validator(mode="after")
    def _train_keeps_a_share(self) -> DataConfig:
        if self.val_share + self.test_share >= 0.9:
            raise ValueError(
                f"val_share + test_share must leave train at least 10% (got {self.val_share} + {self.test_share})"
            )
        return self


class ValidationConfig(Section):
    min_images_per_class: int = Field(5, ge=1, description="Minimum readable images per class in a train split.")
    min_eval_images_per_class: int = Field(1, ge=0, description="Minimum readable images per class in val and test.")
    min_side: int = Field(8, ge=1, description="Smallest accepted image width or height, in pixels.")
    max_side: int = Field(4096, ge=1, description="Largest accepted image width or height, in pixels.")
    max_pixels: int = Field(
        4096 * 4096,
        ge=1,
        description="Images with more pixels are rejected before decoding (decompression bombs).",
    )
    max_listed: int = Field(10, ge=1, description="How many offending files the console summary lists per check.")
    state_dir: str | None = Field(
        ".cache/validate",
        description="Where the scan state lives: a rerun does not decode or hash a file whose path, size, mtime "
        "and inode are unchanged. null: read every file every time.",
    )


class DemoConfig(Section):
    out: OutputPath = Field("data", description="Where `autotransfer demo-data` writes the demo domains.")
    image_size: int = Field(32, ge=8, le=256, description="Side of the demo images, in pixels.")
    synth_per_class: int = Field(300, ge=10, description="Rendered synth-digits images per class.")
    seed: int = 0


class ReportsConfig(Section):
    dir: OutputPath = Field("reports", description="Where stages write their reports.")


# torchvision's names in models/backbones.py's ARCHS (a test checks they agree); any other
# name is a timm model, checked against timm when the model is built (loading params does
# not import torch).
TORCHVISION_ARCHS = (
    "small_cnn",
    "resnet18",
    "resnet34",
    "resnet50",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "vit_b_16",
)


def _known_strategy(name: str) -> str:
    if (why := unknown_strategy(name)) is not None:
        raise ValueError(why)
    return name


# A name from catalog.KINDS, the one list of strategies (the JSON schema lists them).
StrategyName = Annotated[str, AfterValidator(_known_strategy), WithJsonSchema({"type": "string", "enum": list(KINDS)})]


class BackboneConfig(Section):
    arch: str = Field(
        "tf_efficientnet_lite0",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_./-]*$",
        description=f"torchvision's {', '.join(TORCHVISION_ARCHS)}; any timm model name (timm/<name> "
        "where a name is in both).",
    )
    weights: str | None = Field(
        "imagenet",
        description="null: the pretrain stage's source model (models/source); a .safetensors/.pt/.pth file; "
        "or 'imagenet': the architecture's ImageNet weights from a local cache or an installed weights "
        "package (never downloaded; the error names the file and the folder to put it in).",
    )
    input_size: Annotated[int, Field(ge=16, le=1024)] | Literal["auto"] | None = Field(
        64,
        description="Images are resized to this square size; auto (or null): the backbone's pretrained resolution "
        "(its timm pretrained_cfg; 224 for torchvision's ImageNet models).",
    )
    interpolation: Literal["bilinear", "bicubic", "nearest"] | None = Field(
        None, description="Resize filter; null: the model's pretrained_cfg (bilinear for torchvision's)."
    )
    mean: list[float] | None = Field(
        None, min_length=3, max_length=3, description="Per-channel mean; null: the weights' own."
    )
    std: list[Annotated[float, Field(gt=0)]] | None = Field(
        None, min_length=3, max_length=3, description="Per-channel std; null: the weights' own."
    )


class PretrainConfig(Section):
    out: OutputPath = Field("models/source", description="Where the source model and its metadata go.")
    epochs: int = Field(6, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(0.05, gt=0, description="SGD learning rate (cosine schedule).")
    weight_decay: float = Field(5e-4, ge=0)
    augment: bool = Field(True, description="Random rotation, scale and shift while pretraining.")
    seed: int = 0


class SimilarityConfig(Section):
    n_per_domain: int = Field(
        500,
        ge=10,
        description="Images per domain for PAD, MMD and Fréchet (fixed so values compare; the smaller domain's size "
        "when it has fewer), both domains drawn at random to the same number.",
    )
    max_labeled: int = Field(2000, ge=10, description="Cap on labeled target images for LogME and the probe.")
    probe_folds: int = Field(5, ge=2)
    batch_size: int = Field(256, ge=1)
    cache_dir: OutputPath = Field(".cache/features", description="On-disk feature cache, keyed by content hashes.")
    seed: int = 0


class StrategyConfig(Section):
    mode: Literal["rules", "race"] = "rules"
    force: StrategyName | None = Field(None, description="Skip the selection and use this strategy.")
    none_below_per_class: int = Field(
        2, ge=1, description="Fewer labeled target images per class than this counts as 'none'."
    )
    large_from_per_class: int = Field(100, ge=1, description="At least this many labeled per class counts as 'large'.")
    similar_zero_shot: float = Field(
        0.5, ge=0, le=1, description="Zero-shot source-head accuracy from which the target counts as similar."
    )
    similar_logme_gain: float = Field(
        0.15, description="Without a zero-shot score: LogME gain over random features from which it counts as similar."
    )
    min_transfer_gain: float = Field(
        0.05, description="Below this LogME gain over random features the backbone is not worth freezing."
    )
    dann_below_per_class: int = Field(
        100,
        ge=0,
        description="A target with fewer labels per class than this (and enough unlabeled images) "
        "ranks dann_mcc_pl first (docs/strategies.md gives the evidence). 0: never.",
    )
    dann_min_unlabeled: int = Field(
        200, ge=1, description="Unlabeled target images dann_mcc_pl needs before label scarcity ranks it first."
    )
    top_k: int = Field(3, ge=1, description="Candidates raced in race mode.")


class AugmentConfig(Section):
    geometric: bool = Field(True, description="Random rotation, scale and shift.")
    color: bool | Literal["auto"] = Field(
        "auto",
        description="Channel shuffle, per-channel inversion, brightness/contrast, grayscale. "
        "auto: on for strategies that carry a model across domains (dann, dann_mcc_pl, source_only) when any image has "
        "colour, off for strategies trained on the target's labels (docs/strategies.md).",
    )
    crop: bool = Field(False, description="Random resized crop (area 25-100 %, aspect 3/4-4/3): for photos.")
    flip: bool = Field(False, description="Random horizontal flip: for photos (not for digits or text).")


class DannConfig(Section):
    bottleneck: int = Field(256, ge=8, description="Width of the bottleneck layer between features and heads.")
    domain_hidden: int = Field(1024, ge=8, description="Hidden width of the domain classifier.")
    entropy_weight: float = Field(0.1, ge=0, description="dann_mcc_pl: entropy minimisation on target predictions.")
    domain_weight: float = Field(1.0, ge=0, description="Scale of the adversarial loss (0: no adversarial term).")
    lr: float = Field(0.03, gt=0, description="SGD learning rate, annealed as lr·(1+10p)^-0.75.")
    layer_decay: float = Field(
        1.0,
        gt=0,
        le=1,
        description="DANN's own discriminative-LR factor per body group below the top: the "
        "adversarial loss must move the lower layers too (docs/strategies.md).",
    )
    mcc_weight: float = Field(
        1.0, ge=0, description="dann_mcc_pl: Minimum Class Confusion on target predictions (Jin et al. 2020; 0: off)."
    )
    pseudo_label_weight: float = Field(
        1.0,
        ge=0,
        description="dann_mcc_pl: consistency on unlabeled target images (FixMatch-style): the model's confident "
        "prediction on the plain image, under the target batch's own BatchNorm statistics, is the label for an "
        "augmented view of it (0: off).",
    )
    pseudo_label_threshold: float = Field(0.95, gt=0, le=1, description="Confidence a pseudo-label needs.")
    pseudo_label_from: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Share of the run after which the pseudo-label term is on: early "
        "pseudo-labels are the source model's mistakes, and training on them entrenches them.",
    )


class RaceConfig(Section):
    budget_fraction: float = Field(
        0.25, gt=0, le=1, description="First-round budget, as a share of train.epochs (rounded up)."
    )
    min_round_steps: int = Field(
        50,
        ge=1,
        description="Floor of the first round, in optimizer steps on the labeled target: learning "
        "curves cross early, and a round cut before that eliminates the winner (docs/strategies.md).",
    )
    keep: float = Field(0.5, gt=0, lt=1, description="Share of candidates kept after each round (successive halving).")
    rising_slot: bool = Field(
        True,
        description="The last place kept after a round goes to the best val projected to the next round's end "
        "(the round's second-half gain, extrapolated) instead of the best val: a slow starter (scratch) "
        "that overtakes later survives; as many candidates are kept either way.",
    )


class HealthConfig(Section):
    sample: int = Field(1000, ge=10, description="Target images (unlabeled and train) the label-free health reads.")
    collapse_classes: int = Field(
        2, ge=1, description="A model whose this-many most predicted classes take collapse_share of its target..."
    )
    collapse_share: float = Field(
        0.8,
        gt=0,
        le=1,
        description="... predictions is collapsed; with no labeled target val to check it, it is registered but "
        "never promoted. Fewer classes than 2 × collapse_classes: the top half of the classes.",
    )


class TrainConfig(Section):
    out: OutputPath = Field("models/target", description="Final model, metadata and checkpoints.")
    epochs: int | None = Field(
        None,
        ge=1,
        description="Passes over the strategy's labeled pool; null: from the step rule (min_steps, min_epochs), "
        "so a small target gets enough optimizer steps to converge (docs/strategies.md, 'Budgets').",
    )
    min_steps: int = Field(
        150, ge=1, description="Step rule: at least this many optimizer steps (more epochs on a small pool)."
    )
    min_epochs: int = Field(10, ge=1, description="Step rule: at least this many passes over the labeled pool.")
    time_budget: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = Field(
        None,
        description="Seconds the chosen strategy may train; null: no limit. The plan measures a few optimizer "
        "steps and keeps the step rule's steps at the largest resolution (up to backbone.input_size) that fits, "
        "cutting steps only when even the smallest does not (docs/strategies.md, 'A time budget').",
    )
    min_val_per_class: int = Field(
        10,
        ge=1,
        description="Fewer labeled val images in a class than this: nothing is chosen on val (no early stopping, "
        "floor or race; the probe's L2 strength by cross-validation) and val trains with train.",
    )
    cv_folds: int = Field(5, ge=2, description="Folds of the probe's cross-validation when val is too small.")
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0, description="Learning rate of the head (and of every layer for scratch).")
    weight_decay: float = Field(5e-4, ge=0, description="Not applied to biases and norm parameters.")
    warmup: float = Field(0.1, ge=0, lt=1, description="Share of each schedule (or phase) spent warming up.")
    schedule: Literal["cosine", "onecycle"] = "cosine"
    backbone_lr_mult: float = Field(1.0, gt=0, description="Backbone LR = lr × this (finetune_all, finetune_top).")
    layer_decay: float = Field(0.5, gt=0, le=1, description="Discriminative LRs: each group below the top × this.")
    top_groups: int = Field(1, ge=1, description="finetune_top: how many of the last layer groups train.")
    phase_epochs: int = Field(
        2, ge=1, description="progressive: epochs per unfreezing phase, at least (longer budgets share it out)."
    )
    lr_ratio: float = Field(
        2.6, ge=1, description="progressive: each newly unfrozen group's LR is the previous / this."
    )
    patience: int = Field(5, ge=0, description="Early stopping: epochs without val improvement (0: off).")
    select: Literal["best_val", "last"] = Field(
        "best_val",
        description="Which epoch's weights are kept: the best on labeled target val (the last when there is none), "
        "or the last (what an upper bound matched to an adaptation run without target val uses).",
    )
    floor: bool = Field(
        True,
        description="Compare the trained model on target val with a linear probe and a logistic regression on "
        "pixels; when it is not better, the best of those is the model written.",
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 0
    augment: AugmentConfig = AugmentConfig()
    augment_per_strategy: dict[StrategyName, AugmentConfig] = Field(
        default_factory=dict, description="Per-strategy augmentation, e.g. {scratch: {color: false}}."
    )
    distributed: int = Field(
        1,
        ge=1,
        description="Processes for data-parallel training (torch DDP under "
        "torchrun: gloo on CPU, NCCL on CUDA); 1 trains in the calling process.",
    )
    dann: DannConfig = DannConfig()
    race: RaceConfig = RaceConfig()
    health: HealthConfig = HealthConfig()


class ServingLimits(Section):
    """What one request to a served version may hold; recorded in the version when it is registered."""

    max_images: int = Field(512, ge=1, description="Images per request; the ones past it get an error row.")
    max_image_bytes: int = Field(
        20_000_000, ge=1, description="Bytes of one image file; a larger one gets an error row, never decoded."
    )


class RegistryConfig(Section):
    tracking_uri: str | None = Field(
        None,
        description="MLflow tracking URI. null: $MLFLOW_TRACKING_URI if set, else sqlite:///mlflow/mlflow.db "
        "with artifacts in mlflow/artifacts.",
    )
    experiment: str = Field("autotransfer", min_length=1, description="MLflow experiment of the pipeline runs.")
    model_name: str = Field(
        "autotransfer-{target}",
        min_length=1,
        pattern=r"^[A-Za-z0-9_.-]*(\{target\}[A-Za-z0-9_.-]*)?$",
        description="Registered model the runs become versions of; {target} stands for the target folder's name, "
        "so that each target has its own versions and champion. A name without {target} is shared by every "
        "target, but a run never re-scores nor replaces a champion trained on another target.",
    )
    metric: Literal["accuracy", "macro_f1"] = Field("accuracy", description="Test-split metric that decides promotion.")
    min_delta: float = Field(
        0.005,
        ge=0,
        le=1,
        description="A challenger becomes champion only when it beats the champion, re-scored "
        "on the same test split, by at least this much.",
    )
    request_retries: int = Field(2, ge=0, le=10, description="HTTP retries of each call to a tracking server.")
    request_timeout: float = Field(
        30, ge=1, description="Seconds before one call to a tracking server gives up (whole seconds: MLflow's unit)."
    )
    task_retries: int = Field(2, ge=0, le=10, description="Prefect retries of the register task.")
    retry_delay: float = Field(
        10, ge=0, description="Seconds before the register task's first retry; doubled for each next one."
    )
    live_tracking: bool = Field(
        True,
        description="One MLflow run per pipeline run, written while the stages run: per-epoch metrics, race "
        "candidates as nested runs, system metrics, dataset inputs; FAILED with the error when a stage fails. "
        "false: only `register` writes the run, at the end.",
    )
    system_metrics_interval: float = Field(
        10, gt=0, description="Seconds between two samples of CPU, memory (and GPU) use on the live run."
    )
    serving: ServingLimits = ServingLimits()


class Params(Section):
    data: DataConfig = DataConfig()
    validation: ValidationConfig = ValidationConfig()
    demo: DemoConfig = DemoConfig()
    reports: ReportsConfig = ReportsConfig()
    backbone: BackboneConfig = BackboneConfig()
    pretrain: PretrainConfig = PretrainConfig()
    similarity: SimilarityConfig = SimilarityConfig()
    strategy: StrategyConfig = StrategyConfig()
    train: TrainConfig = TrainConfig()
    registry: RegistryConfig = RegistryConfig()

    @model_validator(mode="after")
    def _pretraining_needs_a_source(self) -> Params:
        if self.data.source is None and self.backbone.weights is None:
            raise ValueError(
                "backbone.weights=null trains the backbone on data.source, and data.source is null: "
                "set data.source to a labeled folder, or backbone.weights to imagenet"
            )
        return self


# The sections that decide what model a run trains (not where files go, nor how it is registered).
MODEL_SECTIONS = ("data", "backbone", "pretrain", "similarity", "strategy", "train")


def model_params_hash(params: Params) -> str:
    import hashlib
    import json

    raw = params.model_dump(mode="json")
    for section, key in (("pretrain", "out"), ("train", "out"), ("similarity", "cache_dir"), ("data", "root")):
        raw[section].pop(key)  # paths: the same run elsewhere trains the same model
    payload = json.dumps({name: raw[name] for name in MODEL_SECTIONS}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def load_params(path: str | Path | None = DEFAULT_PARAMS_FILE, overrides: Iterable[str] = ()) -> Params:
    """Read ``path`` (a missing default file means all defaults), apply ``key=value`` overrides."""
    raw: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        if path.exists():
            source = str(path)
            try:
                loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
            except UnicodeDecodeError as exc:
                raise ConfigError(f"{path}: not UTF-8 text ({exc}); save it as UTF-8") from exc
            except yaml.YAMLError as exc:
                raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
            if loaded is None:
                # A truncated file (a full disk, an editor crash) must not become a run on every default.
                raise ConfigError(
                    f"{path}: empty (no sections); write the parameters, or remove the file to run on the defaults"
                )
            if not isinstance(loaded, dict):
                raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(loaded).__name__}")
            raw = loaded
        elif path != DEFAULT_PARAMS_FILE:
            raise ConfigError(f"{path}: params file not found")
    for override in overrides:
        apply_override(raw, override)
        source += f" + {override}"
    return params_from_dict(raw, source=source)


def params_from_dict(raw: Mapping[str, Any], source: str = "params") -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        lines = [describe_error(err) for err in exc.errors()]
        raise ConfigError(f"{source}: invalid parameters:\n  " + "\n  ".join(lines)) from None


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Set ``a.b.c=value`` in ``raw``; the value is parsed as YAML (``1``, ``0.5``, ``null``, ``[a, b]``)."""
    key, sep, text = override.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {override!r}: expected KEY=VALUE, e.g. data.target=digits-m")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {override!r}: value is not valid YAML: {exc}") from exc
    node = raw
    parts = key.split(".")
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{'.'.join(parts[: depth + 1])}: is a value, not a section (override {override!r})")
        node = child
    node[parts[-1]] = value


def describe_error(err: Mapping[str, Any]) -> str:
    """One pydantic error as ``dotted.key: problem (got value)``, with the allowed keys for typos."""
    loc = tuple(str(part) for part in err["loc"])
    key = ".".join(loc)
    if err["type"] == "extra_forbidden":
        allowed = sorted(_section_fields(loc[:-1]))
        return f"{key}: unknown key (allowed here: {', '.join(allowed)})"
    value = err.get("input")
    return f"{key}: {err['msg']} (got {value!r} of type {type(value).__name__})"


def _section_fields(loc: tuple[str, ...]) -> Iterable[str]:
    model: type[BaseModel] = Params
    for part in loc:
        annotation = model.model_fields[part].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return model.model_fields.keys()


def registered_model_name(params: Params) -> str:
    """``registry.model_name`` with ``{target}`` replaced by the target folder's name (characters
    MLflow's ``models:/<name>@alias`` URIs cannot carry become ``-``)."""
    folder = Path(params.data.target.rstrip("/\\")).name or "target"
    return params.registry.model_name.replace("{target}", re.sub(r"[^A-Za-z0-9_.-]", "-", folder))


def resolve_domain(data: DataConfig, name: str) -> Path:
    """A domain is a folder name under ``data.root`` or, for a user's own folders, a path."""
    candidate = Path(name)
    if candidate.is_absolute() or len(candidate.parts) > 1:
        return candidate
    return Path(data.root) / name
