"""DANN's pieces (Ganin & Lempitsky 2015) and the target-side terms that ride along with it.

The gradient reversal layer and its λ schedule, the domain classifier, entropy
minimisation, Minimum Class Confusion (Jin et al. 2020) and FixMatch-style pseudo-labels
computed under the target batch's own BatchNorm statistics.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from autotransfer.models.backbones import TransferModel
from autotransfer.transfer.modes import autocast, set_train_mode


class GradientReversal(torch.autograd.Function):
    """Identity forward; the gradient is multiplied by −λ on the way back."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, lam: float) -> torch.Tensor:
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.lam * grad, None


def grl(x: torch.Tensor, lam: float) -> torch.Tensor:
    out: torch.Tensor = GradientReversal.apply(x, lam)
    return out


def dann_lambda(progress: float) -> float:
    """λ = 2/(1+exp(−10p)) − 1, p the share of all training steps done."""
    return 2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0


class DomainClassifier(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(width, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            nn.Linear(hidden, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x).squeeze(1)
        return out


class DannForward(nn.Module):
    """One forward of DANN (features → class logits, and → GRL → domain logits), so DDP can wrap it."""

    def __init__(self, model: TransferModel, domain: DomainClassifier) -> None:
        super().__init__()
        self.model, self.domain = model, domain

    def forward(self, x: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.model.features(x)
        return self.model.head(features), self.domain(grl(features, lam))


def consistency(
    model: TransferModel, plain: torch.Tensor, augmented_logits: torch.Tensor, threshold: float, frozen: list[nn.Module]
) -> torch.Tensor:
    """Cross-entropy of the augmented view against the confident predictions on the plain images.

    The pseudo-labels come from the current model under the target batch's own BatchNorm
    statistics (AdaBN-style: the running statistics mix both domains, and eval-mode labels
    from them were wrong often enough to matter, see docs/strategies.md), with no
    gradient, dropout off and the running statistics left untouched.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    if len(plain) < 2:  # one image has no batch statistics: fall back to the running ones
        for module in norms:
            module.eval()
        norms = []
    saved = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in norms]
    for dropout in model.modules():
        if isinstance(dropout, nn.modules.dropout._DropoutNd):
            dropout.eval()
    for module in norms:
        module.momentum = 0.0  # batch statistics for the forward, running ones unchanged
    try:
        with torch.no_grad(), autocast(plain.device):
            probabilities = model(plain).float().softmax(1)
    finally:
        for module, (momentum, tracked) in zip(norms, saved):
            module.momentum = momentum
            if tracked is not None and module.num_batches_tracked is not None:
                module.num_batches_tracked.copy_(tracked)
        set_train_mode(model, frozen)
    confidence, pseudo = probabilities.max(1)
    mask = (confidence >= threshold).float()
    return (F.cross_entropy(augmented_logits, pseudo, reduction="none") * mask).mean()


def class_confusion(logits: torch.Tensor, temperature: float = 2.5) -> torch.Tensor:
    """Minimum Class Confusion on a batch of target predictions.

    The between-class share of the batch's class-correlation matrix, rows normalised, with
    confident (low-entropy) images weighted up; 0 when no image is shared between classes.
    The temperature is the paper's default.
    """
    if logits.shape[0] == 0:
        return logits.sum()
    p = (logits / temperature).softmax(1)
    entropies = -(p * p.clamp_min(1e-12).log()).sum(1)
    certainty = 1 + torch.exp(-entropies)
    weights = (len(p) * certainty / certainty.sum()).detach().unsqueeze(1)
    correlation = (p * weights).T @ p
    correlation = correlation / correlation.sum(1, keepdim=True).clamp_min(1e-12)
    return (correlation.sum() - correlation.trace()) / p.shape[1]


def entropy(logits: torch.Tensor) -> torch.Tensor:
    if logits.numel() == 0:
        return logits.sum()
    p = logits.softmax(1)
    return -(p * logits.log_softmax(1)).sum(1).mean()
