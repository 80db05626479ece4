"""params.yaml's sections but train's: the data, its checks, the backbone, the plan's thresholds, the registry."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, model_validator

from autotransfer.catalog import KINDS, unknown_strategy


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
        # Checked when the model is built (loading params does not import torch): an unknown name's
        # error lists models/backbones.py's ARCHS, the one list of them.
        description="a torchvision architecture of models/backbones.py's ARCHS (small_cnn, the ResNets, "
        "MobileNetV3, EfficientNet-B0, ViT-B/16), or any timm model name (timm/<name> where a name is in both).",
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
    dann_below_per_class: int | None = Field(
        None,
        ge=0,
        description="With a labeled source that shares the target's classes and enough unlabeled target images, "
        "dann_mcc_pl ranks first below this many labels per class (docs/strategies.md gives the evidence). "
        "null: whatever the labels per class; 0: never.",
    )
    dann_min_unlabeled: int = Field(
        200,
        ge=1,
        description="Unlabeled target images dann_mcc_pl needs before the plan ranks it first (with a labeled "
        "source that shares the target's classes).",
    )
    top_k: int = Field(3, ge=1, description="Candidates raced in race mode.")


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
