"""The strategies whose head predicts the labeled source's classes: source_only, dann, dann_mcc_pl."""

from __future__ import annotations

import contextlib
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from autotransfer.config import Params
from autotransfer.errors import TrainingError
from autotransfer.io.data import Normalization, TrainData
from autotransfer.io.store import ImageStore, concat
from autotransfer.models.backbones import TransferModel
from autotransfer.models.weights import has_source_head, load_backbone
from autotransfer.transfer.augment import augment, to_device
from autotransfer.transfer.dann import DannForward, DomainClassifier, class_confusion, consistency, dann_lambda, entropy
from autotransfer.transfer.modes import autocast
from autotransfer.transfer.optim import (
    dann_annealing,
)
from autotransfer.transfer.strategies import Candidate, Phase, SharedGuard, StepOutput, Strategy, register, single_phase


class SourceHead(Strategy):
    """Strategies whose head predicts the labeled source's classes (the target's among them).

    From the pretrain stage's source model (``backbone.weights: null``) the head is the one
    it was trained with; from any other backbone (ImageNet, a file) a new head over the
    source's classes learns them here, from the labeled source images, as TLlib's and
    skada's DANN recipes do from an ImageNet ResNet. Optimisation is dann's recipe
    (``train.dann``: its LR, layer decay and annealing) for every strategy of the family.
    """

    cross_domain = True

    def build(self, data: TrainData) -> tuple[TransferModel, Normalization, tuple[str, ...]]:
        torch.manual_seed(self.cfg.seed)
        backbone = load_backbone(self.params, num_classes=len(data.classes))
        if backbone.source_classes is not None:
            head_classes = backbone.source_classes
        else:
            assert data.source_classes is not None  # needs.labeled_source: train loaded the source
            head_classes = data.source_classes
            backbone.model.replace_head(len(head_classes))
        if not set(data.classes) <= set(head_classes):
            raise TrainingError(
                f"{self.name} needs a head over the target's classes "
                f"(target classes {list(data.classes)}, source head {list(head_classes)})"
            )
        return backbone.model, backbone.normalization, head_classes

    @classmethod
    def pool_size(cls, data: TrainData) -> int:
        return len(data.train) + (len(data.source_train) if data.source_train is not None else 0)

    def labeled_pool(self, data: TrainData) -> tuple[ImageStore, torch.Tensor]:
        """Labeled source, plus the labeled target images when there are any, in the source head's classes."""
        assert data.source_train is not None
        mapping = torch.tensor([self.head_classes.index(c) for c in data.classes], dtype=torch.long)
        target_labels = mapping[data.train.labels] if len(data.train) else data.train.labels
        return (
            concat([data.source_train.images, data.train.images]),
            torch.cat([data.source_train.labels, target_labels]),
        )

    def head_lr(self) -> float:
        return self.cfg.dann.lr

    def body_lr(self, depth: int) -> float:
        return self.head_lr() * self.cfg.backbone_lr_mult * self.cfg.dann.layer_decay**depth

    def schedule(self, optimizer: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LRScheduler:
        return dann_annealing(optimizer, steps)


@register
class SourceOnly(SourceHead):
    """The source classifier, not adapted: the baseline every adaptation is measured against.

    From the pretrain stage's source model (``backbone.weights: null``) it is that model as
    it is, scored on the target zero-shot: nothing trains. From any other backbone it learns
    the labeled source (and any labeled target images) with dann's recipe and every target
    term off: the same bottleneck, optimizer, schedule, augmentation and steps, no domain
    classifier and no unlabeled target batch.
    """

    name = "source_only"

    def __init__(self, params: Params, candidate: Candidate) -> None:
        super().__init__(params, candidate)
        self.zero_shot = has_source_head(params)
        self.trains = not self.zero_shot

    def build(self, data: TrainData) -> tuple[TransferModel, Normalization, tuple[str, ...]]:
        model, normalization, head_classes = super().build(data)
        if not self.zero_shot:
            model.add_bottleneck(self.cfg.dann.bottleneck)  # as dann's: the baseline differs by its target terms
        return model, normalization, head_classes

    def phases(self, epochs: int) -> list[Phase]:
        return single_phase(epochs, ("head",)) if self.zero_shot else super().phases(epochs)


@register
class Dann(SourceHead):
    """DANN (Ganin & Lempitsky 2015) on labeled source (+ any labeled target) and unlabeled target images.

    A bottleneck and a new head over the source classes, a domain classifier behind a
    gradient reversal layer (λ ramps up with progress), the LR annealed as
    lr·(1+10p)^−0.75: the classification loss and the adversarial one, nothing else.
    Without labeled target val the last epoch is kept.
    """

    name = "dann"
    # The target-side terms beyond the adversarial loss (subclasses add them).
    target_terms: ClassVar[tuple[str, ...]] = ()

    def build(self, data: TrainData) -> tuple[TransferModel, Normalization, tuple[str, ...]]:
        model, normalization, head_classes = super().build(data)
        model.add_bottleneck(self.cfg.dann.bottleneck)  # a new head over the source classes
        return model, normalization, head_classes

    def setup(self, data: TrainData, progress: bool | None, shared: SharedGuard = contextlib.nullcontext) -> None:
        super().setup(data, progress, shared)
        self.target_pool = concat([data.unlabeled.images, data.train.images])
        # The labeled pool's own domain per row (source 0, labeled target 1): the target's
        # labeled images train the class head beside the source but are target to the domain
        # classifier.
        assert data.source_train is not None
        self.pool_domains = torch.cat([torch.zeros(len(data.source_train)), torch.ones(len(data.train))])

    def make_extra_modules(self) -> list[nn.Module]:
        self.domain = DomainClassifier(self.model.bottleneck, self.cfg.dann.domain_hidden)
        return [self.domain]

    def domain_labels(self, index: torch.Tensor) -> torch.Tensor:
        """The domain classifier's labels for rows ``index`` of the labeled pool (0 source, 1 target)."""
        return self.pool_domains[index]

    def forward_module(self) -> nn.Module:
        return DannForward(self.model, self.domain)

    def step(
        self, net: nn.Module, index: torch.Tensor, draws: torch.Generator, progress: float, device: torch.device
    ) -> StepOutput:
        cfg = self.cfg.dann
        n = len(index)
        y = self.pool_labels[index].to(device)
        x = augment(to_device(self.pool_images[index], device), draws, self.augment)
        t_index = torch.randint(len(self.target_pool), (n,), generator=draws)
        plain_target = to_device(self.target_pool[t_index], device)
        xt = augment(plain_target, draws, self.augment)
        both = self.normalization(torch.cat([x, xt]))
        with autocast(device):
            logits_all, d_logits = net(both, dann_lambda(progress))
            logits = logits_all[:n]
        d_target = torch.cat([self.domain_labels(index), torch.ones(n)]).to(device)

        def target_logits() -> torch.Tensor:
            # Each term takes its own slice: autograd then sums their gradients in the order
            # the recorded runs (BENCHMARKS.md) did; one shared slice sums them otherwise, and
            # the last-bit differences grow over hundreds of adversarial steps.
            return logits_all[n:].float()

        loss = F.cross_entropy(logits.float(), y) + cfg.domain_weight * F.binary_cross_entropy_with_logits(
            d_logits.float(), d_target
        )
        terms = self.target_terms
        if "entropy" in terms:
            loss = loss + cfg.entropy_weight * entropy(target_logits())
        if "mcc" in terms and cfg.mcc_weight > 0:
            loss = loss + cfg.mcc_weight * class_confusion(target_logits())
        if "pseudo_labels" in terms and cfg.pseudo_label_weight > 0 and progress >= cfg.pseudo_label_from:
            plain = self.normalization(plain_target)
            loss = loss + cfg.pseudo_label_weight * consistency(
                self.model, plain, target_logits(), cfg.pseudo_label_threshold, self.frozen
            )
        correct = int(((d_logits > 0).float() == d_target).sum())
        return StepOutput(loss, logits, y, {"domain_accuracy": (correct, len(d_target))})

    def epoch_record(self, epochs_done: int, epochs: int) -> dict[str, float]:
        return {"lambda": dann_lambda(epochs_done / epochs)}

    def extra_state(self) -> dict[str, Any]:
        return {"domain": self.domain.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.domain.load_state_dict(state["domain"])


@register
class DannMccPl(Dann):
    """DANN plus three self-training terms on the target batch, the default adaptation recipe.

    Entropy minimisation, Minimum Class Confusion (Jin et al. 2020) and FixMatch-style
    pseudo-labels computed under the target batch's own BatchNorm statistics, on top of
    ``dann``'s adversarial loss; the weights are train.dann's. With train.dann.domain_weight
    0 it is the self-training alone (the ablation BENCHMARKS.md reports).
    """

    name = "dann_mcc_pl"
    target_terms = ("entropy", "mcc", "pseudo_labels")
