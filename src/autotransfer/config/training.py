"""params.yaml's ``train`` section: the budget, the optimiser, augmentation, DANN, the race, health."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from autotransfer.config.sections import OutputPath, Section, StrategyName


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
    phase_epochs: int = Field(2, ge=1, description="progressive: epochs per unfreezing phase.")
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
