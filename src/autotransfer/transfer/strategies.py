"""The transfer strategies: one class each, owning everything that makes it that strategy.

A strategy builds its model and head, says which layer groups train in which phase
(``phases``), at which learning rates (``param_groups``), under which schedule, with which
augmentation and on which data, and computes the loss of one batch (``step``). The
training loop (``engine.loop``) knows none of their names: it asks the strategy.

The pitfalls users report against fastai, Lightning and TLlib are handled here, once:
- frozen parameters have ``requires_grad=False`` and are in no param group, so neither the
  optimizer nor weight decay can move them;
- frozen layer groups run in eval mode, so BatchNorm keeps its running statistics;
- biases and norm parameters get no weight decay;
- a group unfrozen late gets its own param group and a fresh schedule (a new phase),
  never an LR already decayed by an earlier phase.

What a strategy needs from the data (``needs``: target labels, a labeled source, target
images) is checked by train before anything is built, and the plan excludes the strategy
on the same check (requirements.py).

Adding a strategy: add its row (name, needs, traits) to ``catalog.KINDS``, subclass ``Strategy``
(or a subclass), set ``name``, override what differs and decorate it with ``@register``;
docs/extending.md says how, and how to give the plan's rules a say over it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from autotransfer.catalog import KINDS, unknown_strategy
from autotransfer.config import Params
from autotransfer.errors import TrainingError
from autotransfer.io.data import ImageSet, Normalization, TrainData
from autotransfer.io.store import ImageStore
from autotransfer.models.backbones import TransferModel
from autotransfer.models.weights import DEFAULT_NORMALIZATION, load_backbone
from autotransfer.requirements import DataFacts, Needs
from autotransfer.transfer.augment import Augmentation, augment, to_device
from autotransfer.transfer.modes import autocast, set_train_mode
from autotransfer.transfer.optim import (
    decay_exempt,
    make_optimizer,
    plain_cosine,
    warmup_cosine,
    weight_decay_groups,
)

SharedGuard = Callable[[], contextlib.AbstractContextManager[Any]]


@dataclass(frozen=True)
class Phase:
    index: int
    start_epoch: int
    end_epoch: int  # exclusive
    trainable: tuple[str, ...]  # layer-group names that train in this phase


@dataclass(frozen=True)
class Candidate:
    """A strategy with its key hyperparameter: what the plan ranks and the race tries."""

    strategy: str
    backbone_lr_mult: float | None = None

    @property
    def label(self) -> str:
        return self.strategy + (f"@{self.backbone_lr_mult:g}x" if self.backbone_lr_mult is not None else "")


@dataclass
class StepOutput:
    loss: torch.Tensor
    logits: torch.Tensor  # class logits of the labeled images, for the train accuracy
    labels: torch.Tensor
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)  # other accuracies: (correct, seen)


def apply_phase(model: TransferModel, phase: Phase) -> list[nn.Module]:
    """Set requires_grad per group; return the frozen modules (to be kept in eval mode)."""
    frozen = []
    for name, modules in model.layer_groups():
        trainable = name in phase.trainable
        for module in modules:
            for param in module.parameters():
                param.requires_grad_(trainable)
            if not trainable:
                frozen.append(module)
    return frozen


def _named(groups: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    for group in groups:
        group["name"] = f"{name}{'' if group['weight_decay'] else '/no_decay'}"
    return groups


def data_facts(data: TrainData) -> DataFacts:
    """What the loaded data offers a strategy: the facts the plan read from validate's counts."""
    labels = torch.cat([data.train.labels, data.val.labels])
    counts = torch.bincount(labels[labels >= 0], minlength=len(data.classes))
    source = data.source_classes
    return DataFacts(
        labeled_min_per_class=int(counts.min()) if len(data.classes) else 0,
        labeled_target=int(counts.sum()),
        unlabeled_target=len(data.unlabeled),
        labeled_source=source is not None,
        target_classes_in_source=source is not None and set(data.classes) <= set(source),
    )


def single_phase(epochs: int, trainable: tuple[str, ...]) -> list[Phase]:
    return [Phase(0, 0, epochs, trainable)]


class Strategy:
    """Fine-tune every layer group with discriminative learning rates (the base behaviour).

    Lifecycle, driven by the loop: ``setup`` (model, data, extra modules), then per phase
    ``configure`` (param groups, optimizer, schedule), per epoch ``train_mode``, per batch
    ``step``; ``val_features``, ``epoch_record`` and ``extra_state`` for validation, the
    history and checkpoints.
    """

    name: ClassVar[str] = ""
    needs: ClassVar[Needs] = Needs(target_labels=True)  # its catalog row's, set by ``register``; train checks it
    cross_domain: ClassVar[bool] = False  # carries a source-trained model across domains (colour aug "auto")
    selects_by_val: ClassVar[bool] = True  # keep the best labeled-val epoch (else the last)
    reads_images: ClassVar[bool] = True  # a step reads ``pool_images[index]`` (the loop has them read ahead)
    closed_form: ClassVar[bool] = False  # True: ``solve`` fits the model directly, no optimizer steps

    def __init__(self, params: Params, candidate: Candidate) -> None:
        cfg = params.train
        if candidate.backbone_lr_mult is not None:
            cfg = cfg.model_copy(update={"backbone_lr_mult": candidate.backbone_lr_mult})
        self.params, self.cfg, self.candidate = params, cfg, candidate
        self.label = candidate.label
        # How the loop runs it: batch size, seed, early-stopping patience (0: off), device, and
        # whether the data order and the global RNG are re-seeded from (seed, epoch) every
        # epoch (what makes a resumed run continue exactly) or drawn from one generator.
        self.batch_size, self.seed, self.patience, self.device = cfg.batch_size, cfg.seed, cfg.patience, cfg.device
        self.reseed_each_epoch = True
        self.frozen: list[nn.Module] = []
        self.trains = True  # False: the model is used as built (zero-shot)

    def keeps_best_val(self) -> bool:
        """Keep the best labeled-val epoch (else the last, and early stopping never fires)."""
        return self.selects_by_val and self.cfg.select == "best_val"

    # ----------------------------------------------------------- model and data

    def build(self, data: TrainData) -> tuple[TransferModel, Normalization, tuple[str, ...]]:
        """The model to train, how to feed it, and the class names its head predicts."""
        torch.manual_seed(self.cfg.seed)
        backbone = load_backbone(self.params, num_classes=len(data.classes))
        backbone.model.replace_head(len(data.classes))
        return backbone.model, backbone.normalization, data.classes

    @classmethod
    def pool_size(cls, data: TrainData) -> int:
        """Labeled images per epoch, what the step budget scales with (``labeled_pool``'s length)."""
        return len(data.train)

    def labeled_pool(self, data: TrainData) -> tuple[ImageStore, torch.Tensor]:
        """The labeled images the strategy learns from, with labels indexing ``head_classes``."""
        return data.train.images, data.train.labels

    def setup(self, data: TrainData, progress: bool | None, shared: SharedGuard = contextlib.nullcontext) -> None:
        """Build the model and everything a step needs. ``shared()`` guards work on shared files
        (an on-disk cache): under DDP the engine makes rank 0 do it first, the others then read it."""
        unmet = self.needs.unmet(data_facts(data))
        if unmet is not None:
            raise TrainingError(f"{self.name} cannot run on this data: {unmet}; no model written")
        self.data = data
        self.model, self.normalization, self.head_classes = self.build(data)
        self.augment = self.augmentation(data.has_colour)
        self.extra_modules: list[nn.Module] = self.make_extra_modules()
        self.pool_images, self.pool_labels = self.labeled_pool(data)
        if self.trains and len(self.pool_images) == 0:
            raise TrainingError(f"{self.name}: no labeled images to train on")

    def make_extra_modules(self) -> list[nn.Module]:
        return []

    def augmentation(self, has_colour: bool) -> Augmentation:
        """Colour "auto" is on only where colour data meets a cross-domain strategy: a strategy that
        learns from the target's own labels is better off seeing its colours as they are."""
        aug = self.cfg.augment_per_strategy.get(self.name, self.cfg.augment)
        colour = has_colour and self.cross_domain if aug.color == "auto" else bool(aug.color)
        return Augmentation(aug.geometric, colour, aug.crop, aug.flip)

    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(len(self.pool_images) / self.batch_size)) if self.trains else 0

    def val_set(self) -> ImageSet:
        return self.data.val

    def val_features(self) -> torch.Tensor | None:
        return None

    # ----------------------------------------------------------- phases and optimisation

    def head_lr(self) -> float:
        return self.cfg.lr

    def phases(self, epochs: int) -> list[Phase]:
        return single_phase(epochs, tuple(name for name, _ in self.model.layer_groups()))

    def body_lr(self, depth: int) -> float:
        """LR of the body group ``depth`` below the top: head_lr × backbone_lr_mult × layer_decay^depth."""
        return self.head_lr() * self.cfg.backbone_lr_mult * self.cfg.layer_decay**depth

    def param_groups(self, phase: Phase) -> list[dict[str, Any]]:
        """One named group per trainable layer group (weights, then no-decay biases/norms); extra modules at head_lr."""
        groups = [(name, modules) for name, modules in self.model.layer_groups() if name in phase.trainable]
        body = [g for g in groups if g[0] != "head"]
        out: list[dict[str, Any]] = []
        exempt, decay = decay_exempt(self.model), self.cfg.weight_decay
        for depth, (name, modules) in enumerate(reversed(body)):  # depth 0: the top body group
            out += _named(weight_decay_groups(modules, decay, exempt, lr=self.body_lr(depth)), name)
        head = [m for name, modules in groups if name == "head" for m in modules] + self.extra_modules
        out += _named(weight_decay_groups(head, decay, exempt, lr=self.head_lr()), "head")
        return out

    def configure(self, phase: Phase, steps: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
        """Optimizer and schedule for ``phase`` (``steps`` optimizer steps long): fresh at every phase."""
        optimizer = make_optimizer(self.param_groups(phase), self.cfg)
        return optimizer, self.schedule(optimizer, steps)

    def schedule(self, optimizer: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LRScheduler:
        return warmup_cosine(optimizer, steps, self.cfg)

    def train_mode(self, phase: Phase) -> None:
        self.frozen = apply_phase(self.model, phase)
        set_train_mode(self.model, self.frozen)

    def forward_module(self) -> nn.Module:
        """What each step calls (and DDP wraps)."""
        return self.model

    # ----------------------------------------------------------- one batch

    def step(
        self, net: nn.Module, index: torch.Tensor, draws: torch.Generator, progress: float, device: torch.device
    ) -> StepOutput:
        y = self.pool_labels[index].to(device)
        x = augment(to_device(self.pool_images[index], device), draws, self.augment)
        with autocast(device):
            logits = net(self.normalization(x))
        return StepOutput(F.cross_entropy(logits.float(), y), logits, y)

    def solve(self) -> tuple[dict[str, Any], str]:
        """A closed-form strategy's fit (``closed_form``): set the weights; its history row and how it was fitted."""
        raise NotImplementedError(f"{self.name} trains with optimizer steps, not in closed form")

    def epoch_record(self, epochs_done: int, epochs: int) -> dict[str, float]:
        return {}

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass


STRATEGIES: dict[str, type[Strategy]] = {}


def register(cls: type[Strategy]) -> type[Strategy]:
    """Make ``cls`` the implementation of its catalog row ``cls.name`` (whose ``needs`` it takes)."""
    if not cls.name or cls.name in STRATEGIES:
        raise ValueError(f"strategy name {cls.name!r} is empty or taken")
    if (why := unknown_strategy(cls.name)) is not None:
        raise ValueError(f"{why}: add its row to catalog.KINDS first")
    cls.needs = KINDS[cls.name].needs
    STRATEGIES[cls.name] = cls
    return cls


def strategy_class(name: str) -> type[Strategy]:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise TrainingError(f"unknown strategy {name!r} (known: {', '.join(STRATEGIES)})") from None


def make_strategy(params: Params, candidate: Candidate) -> Strategy:
    return strategy_class(candidate.strategy)(params, candidate)


@register
class FinetuneAll(Strategy):
    name = "finetune_all"


@register
class FinetuneTop(Strategy):
    """Only the last ``train.top_groups`` body groups and the head train."""

    name = "finetune_top"

    def phases(self, epochs: int) -> list[Phase]:
        body = [name for name, _ in self.model.layer_groups()[:-1]]
        return single_phase(epochs, (*body[-self.cfg.top_groups :], "head"))


@register
class Progressive(Strategy):
    """Head first, then one more group from the top down every ``train.phase_epochs`` (ULMFiT)."""

    name = "progressive"

    def phases(self, epochs: int) -> list[Phase]:
        body = [name for name, _ in self.model.layer_groups()[:-1]]
        # Fixed-length phases, even on a step budget of one-step epochs (every group trains within
        # 16 steps at 3 labels per class): spreading the phases over the budget was measured and lost
        # 11.6 points on the held-out sets (BENCHMARKS.md §11, "progressive's phases"), most where the
        # target is far from ImageNet and the whole body needs its steps.
        out, start, k = [], 0, 0
        while start < epochs:
            last = k >= len(body)
            end = epochs if last else min(epochs, start + self.cfg.phase_epochs)
            out.append(Phase(k, start, end, (*body[len(body) - k :], "head")))
            start, k = end, k + 1
        return out

    def body_lr(self, depth: int) -> float:
        """The k-th unfrozen group (counted from the top) at head_lr / lr_ratio^k (ULMFiT's 2.6)."""
        return self.head_lr() / self.cfg.lr_ratio ** (depth + 1)


@register
class Scratch(Strategy):
    """The architecture from random weights, every group at the head's LR."""

    name = "scratch"

    def build(self, data: TrainData) -> tuple[TransferModel, Normalization, tuple[str, ...]]:
        torch.manual_seed(self.cfg.seed)
        model = TransferModel(self.params.backbone.arch, len(data.classes), int(data.train.images.shape[-1]))
        return model, DEFAULT_NORMALIZATION, data.classes

    def body_lr(self, depth: int) -> float:
        return self.head_lr()


class SourcePretraining(Strategy):
    """The pretrain stage's job: the configured architecture from scratch on the labeled source.

    Not a transfer strategy (not registered): SGD at ``pretrain.lr`` over one param group
    pair, a plain cosine without warm-up, geometric augmentation only, the last epoch kept.
    """

    name = "pretrain"
    selects_by_val = False

    def __init__(self, params: Params) -> None:
        super().__init__(params, Candidate("pretrain"))
        cfg = params.pretrain
        self.label = f"pretrain {params.backbone.arch}"
        self.batch_size, self.seed, self.patience, self.reseed_each_epoch = cfg.batch_size, cfg.seed, 0, False

    def build(self, data: TrainData) -> tuple[TransferModel, Normalization, tuple[str, ...]]:
        torch.manual_seed(self.params.pretrain.seed)
        model = TransferModel(self.params.backbone.arch, len(data.classes), int(data.train.images.shape[-1]))
        return model, DEFAULT_NORMALIZATION, data.classes

    def augmentation(self, has_colour: bool) -> Augmentation:
        return Augmentation(self.params.pretrain.augment, False)

    def configure(self, phase: Phase, steps: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
        cfg = self.params.pretrain
        optimizer = torch.optim.SGD(
            weight_decay_groups([self.model], cfg.weight_decay, decay_exempt(self.model)),
            lr=cfg.lr,
            momentum=0.9,
            nesterov=True,
        )
        return optimizer, plain_cosine(optimizer, steps)
