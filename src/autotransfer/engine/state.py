"""One run's state: the per-epoch meter and what a checkpoint saves and a resume restores."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from autotransfer.analysis.metrics import evaluate_head
from autotransfer.engine.checkpoint import (
    load_subset,
    state_subset,
)
from autotransfer.engine.ddp import World
from autotransfer.io.data import Normalization, TrainData
from autotransfer.models.backbones import TransferModel
from autotransfer.transfer.strategies import Candidate, Phase, StepOutput, Strategy


@dataclass
class FitResult:
    candidate: Candidate
    model: TransferModel
    normalization: Normalization
    head_classes: tuple[str, ...]
    history: list[dict[str, Any]]
    best_epoch: int
    val_accuracy: float | None
    epochs_run: int
    seconds: float
    resumed_from: int = 0
    fit_note: str | None = None  # how a closed-form strategy was fitted


def validate(strategy: Strategy, data: TrainData, device: torch.device) -> float | None:
    """Accuracy of the strategy's model on its labeled val split (None without one)."""
    return evaluate_head(
        strategy.model,
        strategy.val_set(),
        strategy.normalization,
        strategy.head_classes,
        data.classes,
        device,
        strategy.val_features(),
    )


@dataclass
class EpochMeter:
    losses: list[float] = field(default_factory=list)
    correct: int = 0
    seen: int = 0
    counts: dict[str, list[int]] = field(default_factory=dict)

    def add(self, out: StepOutput) -> None:
        self.losses.append(out.loss.item())
        self.correct += int((out.logits.argmax(1) == out.labels).sum())
        self.seen += len(out.labels)
        for name, (correct, seen) in out.counts.items():
            total = self.counts.setdefault(name, [0, 0])
            total[0] += correct
            total[1] += seen

    def summary(
        self, val: float | None, optimizer: torch.optim.Optimizer, seconds: float, world: World
    ) -> dict[str, Any]:
        return {
            "train_loss": float(np.mean(self.losses)),
            "train_accuracy": self.correct / max(1, self.seen),
            "val_accuracy": val,
            "lr": max(g["lr"] for g in optimizer.param_groups),
            "seconds": round(seconds, 3),
            "images_per_second": round(self.seen * world.size / max(seconds, 1e-9), 1),
            **{name: correct / max(1, seen) for name, (correct, seen) in self.counts.items()},
        }


class RunState:
    """What survives an epoch: history, the best epoch and its weights, patience, the checkpoint it resumed."""

    def __init__(
        self, strategy: Strategy, model: TransferModel, changing: set[str] | None, state: dict[str, Any] | None
    ) -> None:
        self.strategy, self.model, self.changing, self.state = strategy, model, changing, state
        self.stopped = False
        self.seed, self.reseed, self.patience = strategy.seed, strategy.reseed_each_epoch, strategy.patience
        self.history: list[dict[str, Any]] = []
        self.best_score, self.best_epoch, self.best_state = -math.inf, 0, None
        self.patience_left, self.start_epoch = strategy.patience, 0
        self.generator = torch.Generator().manual_seed(self.seed)  # continuous order (reseed False)
        if state is not None:
            load_subset(model, state["model"])
            strategy.load_extra_state(state["extra"])
            self.history, self.start_epoch = list(state["history"]), int(state["epoch"])
            self.best_score, self.best_epoch, self.best_state = (
                state["best_score"],
                state["best_epoch"],
                state["best_state"],
            )
            self.patience_left = state["patience_left"]
            self.generator.set_state(state["generator"])
        self.resumed_from = self.start_epoch

    @classmethod
    def start(
        cls,
        strategy: Strategy,
        model: TransferModel,
        device: torch.device,
        changing: set[str] | None,
        state: dict[str, Any] | None,
    ) -> RunState:
        model.to(device)
        for module in strategy.extra_modules:
            module.to(device)
        if device.type == "cuda":
            model.to(memory_format=torch.channels_last)
        return cls(strategy, model, changing, state)

    def restore_optimizer(
        self, phase: Phase, optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler
    ) -> None:
        if self.state is not None and self.state["phase"] == phase.index:
            optimizer.load_state_dict(self.state["optimizer"])
            scheduler.load_state_dict(self.state["scheduler"])

    def randomness(self, epoch: int, world: World) -> tuple[torch.Tensor, torch.Generator]:
        """This epoch's data order and this rank's augmentation draws."""
        if not self.reseed:
            return torch.randperm(len(self.strategy.pool_images), generator=self.generator), self.generator
        torch.manual_seed(self.seed * 1_000_003 + epoch)  # dropout and anything else global
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        # Every rank draws the same order and takes its share of each global batch; its own
        # augmentation draws (one process: the same generator).
        draws = (
            generator
            if not world.distributed
            else torch.Generator().manual_seed(self.seed * 1_000_003 + epoch + 7919 * (world.rank + 1))
        )
        return torch.randperm(len(self.strategy.pool_images), generator=generator), draws

    def end_epoch(self, record: dict[str, Any], score: float) -> bool:
        """Record the epoch, keep its weights when it is the best so far; True: stop early."""
        self.history.append(record)
        if score > self.best_score:
            self.best_score, self.best_epoch = score, record["epoch"]
            self.best_state = state_subset(self.model, self.changing)
            self.patience_left = self.patience
        else:
            self.patience_left -= 1
        self.stopped = self.patience > 0 and self.patience_left <= 0
        return self.stopped

    def checkpoint(
        self,
        key: str,
        epochs: int,
        phase: Phase,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
    ) -> dict[str, Any]:
        return {
            "run_key": key,
            "epoch": epochs if self.stopped else self.history[-1]["epoch"],
            "phase": phase.index,
            "model": state_subset(self.model, self.changing),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "extra": self.strategy.extra_state(),
            "history": self.history,
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "patience_left": self.patience_left,
            "best_state": self.best_state,
            "generator": self.generator.get_state(),
        }

    def finish(self, strategy: Strategy, data: TrainData, started: float) -> FitResult:
        if self.best_state is not None:
            load_subset(self.model, self.best_state)
        self.model.cpu()
        val = validate(strategy, data, torch.device("cpu"))
        return FitResult(
            strategy.candidate,
            self.model,
            strategy.normalization,
            strategy.head_classes,
            self.history,
            self.best_epoch,
            val,
            len(self.history),
            time.perf_counter() - started,
            self.resumed_from,
        )
