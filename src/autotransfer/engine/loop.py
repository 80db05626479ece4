"""The training loop: one for every strategy (and for pretraining), with checkpoints, resume and early stopping.

``train`` reads top to bottom: per epoch, (re)configure the optimizer when a phase starts,
run the strategy's steps, validate, keep the best epoch, checkpoint, maybe stop. What the
model is, which layers train, at which LRs and what loss a batch gives are the strategy's
(``transfer.strategies``); this module names none of them.

Determinism: the data order, the augmentation draws and dropout are seeded from
(seed, epoch), so a run killed after epoch k and started again continues exactly where an
uninterrupted run would be.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autotransfer.analysis.metrics import evaluate_head
from autotransfer.artifacts import CHECKPOINT_FILE
from autotransfer.config import Params
from autotransfer.engine.checkpoint import (
    changing_state_keys,
    load_checkpoint,
    load_subset,
    run_key,
    save_atomic,
    state_subset,
)
from autotransfer.engine.ddp import World, all_finite, current_world, main_first, sync_buffers, wrap
from autotransfer.engine.listeners import epoch_ended
from autotransfer.errors import TrainingError
from autotransfer.io.data import Normalization, TrainData
from autotransfer.io.progress import Progress
from autotransfer.io.workers import PrefetchStore, prefetching
from autotransfer.models.backbones import TransferModel
from autotransfer.models.features import state_hash
from autotransfer.transfer.strategies import Candidate, Phase, StepOutput, Strategy, make_strategy

log = logging.getLogger(__name__)


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


def train(
    strategy: Strategy,
    data: TrainData,
    epochs: int,
    checkpoint: Path | None,
    key: str,
    progress: bool | None = None,
    stop_after: int | None = None,
) -> FitResult:
    """Train a set-up ``strategy`` for ``epochs``, resuming ``checkpoint`` when it holds run ``key``.

    ``stop_after`` ends early but keeps the schedule of the full ``epochs``, so a partial
    run (a race round) is an exact prefix of the full one and the full run resumes it.
    """
    world = current_world()
    device = resolve_device(strategy.device, world)
    if strategy.closed_form:
        return solve(strategy, data, device)
    model, plan, steps = strategy.model, strategy.phases(epochs), strategy.steps_per_epoch()
    run = RunState.start(strategy, model, device, changing_state_keys(model, plan), load_checkpoint(checkpoint, key))
    started = time.perf_counter()
    bar = progress_bar(strategy, steps * epochs, run.start_epoch * steps, world, progress)
    current: Phase | None = None
    with read_ahead(strategy, device) as announce:
        for epoch in range(run.start_epoch, min(epochs, stop_after or epochs) if strategy.trains else 0):
            phase = next(p for p in plan if p.start_epoch <= epoch < p.end_epoch)
            strategy.train_mode(phase)
            if phase != current:  # a new phase: new param groups, a fresh (re-warmed) schedule, DDP re-wrapped
                optimizer, scheduler = strategy.configure(phase, steps * (phase.end_epoch - phase.start_epoch))
                net = wrap(strategy.forward_module(), world, device)
                run.restore_optimizer(phase, optimizer, scheduler)
                current = phase
            order, draws = run.randomness(epoch, world)
            meter, epoch_started = EpochMeter(), time.perf_counter()
            batches = [shard(order, step * strategy.batch_size, strategy.batch_size, world) for step in range(steps)]
            announce(batches)
            for step, index in enumerate(batches):
                out = strategy.step(net, index, draws, (epoch * steps + step) / max(1, steps * epochs), device)
                if not all_finite(out.loss.detach(), world):
                    raise TrainingError(
                        f"{strategy.label}: non-finite loss ({out.loss.item()}) at epoch {epoch + 1}, "
                        f"step {step + 1}; stopped, no model written"
                    )
                optimizer.zero_grad(set_to_none=True)
                out.loss.backward()
                optimizer.step()
                scheduler.step()
                meter.add(out)
                bar.update(1)
            seconds = time.perf_counter() - epoch_started
            sync_buffers(model, world)
            val = validate(strategy, data, device)
            record = {
                "epoch": epoch + 1,
                "phase": phase.index,
                **meter.summary(val, optimizer, seconds, world),
                **strategy.epoch_record(epoch + 1, epochs),
            }
            bar.set_postfix(loss=f"{record['train_loss']:.3f}", val="n/a" if val is None else f"{val:.3f}")
            stop = run.end_epoch(record, val if val is not None and strategy.keeps_best_val() else epoch)
            if world.is_main and checkpoint is not None:  # the ranks' weights are equal; one writer
                save_atomic(run.checkpoint(key, epochs, phase, optimizer, scheduler), checkpoint)
            if world.is_main:
                epoch_ended(strategy.label, record, (epoch + 1) * steps)
            if stop:
                log.info("early stopping after epoch %d (best %d)", epoch + 1, run.best_epoch)
                break
    bar.close()
    return run.finish(strategy, data, started)


def solve(strategy: Strategy, data: TrainData, device: torch.device) -> FitResult:
    """A closed-form strategy (the converged linear probe): one fit, recorded as one "epoch" of history.

    Nothing to checkpoint or resume: the fit is deterministic and takes seconds.
    """
    started = time.perf_counter()
    record, description = strategy.solve()
    seconds = time.perf_counter() - started
    val = validate(strategy, data, device)
    record = {
        "epoch": 1,
        "phase": 0,
        **record,
        "val_accuracy": val,
        "seconds": round(seconds, 3),
        "images_per_second": round(len(strategy.pool_labels) / max(seconds, 1e-9), 1),
    }
    if current_world().is_main:
        epoch_ended(strategy.label, record, 1)
    strategy.model.cpu()
    return FitResult(
        strategy.candidate,
        strategy.model,
        strategy.normalization,
        strategy.head_classes,
        [record],
        1,
        val,
        1,
        seconds,
        fit_note=description,
    )


@contextlib.contextmanager
def read_ahead(strategy: Strategy, device: torch.device) -> Iterator[Callable[[list[torch.Tensor]], None]]:
    """While training, the strategy's labeled images read ahead by ``data.workers`` processes.

    Yields ``announce(batches)``: the epoch's batches, told to the workers before its first step.
    """
    cfg = strategy.params.data
    pool = strategy.pool_images
    with prefetching(pool, cfg.workers if strategy.reads_images else 0, cfg.prefetch, device.type == "cuda") as ahead:
        strategy.pool_images = ahead
        try:
            yield ahead.announce if isinstance(ahead, PrefetchStore) else (lambda batches: None)
        finally:
            strategy.pool_images = pool


def fit(
    params: Params,
    candidate: Candidate,
    data: TrainData,
    out: Path,
    epochs: int,
    progress: bool | None = None,
    stop_after: int | None = None,
    code_version: str = "",
) -> FitResult:
    """Train ``candidate`` in ``out/`` (resuming ``out/checkpoint.pt`` when it is this run's).

    The run key pins what makes two runs the same: the candidate, the train, backbone and
    pretrain params, the budget, the data, the weights training starts from (a re-pretrained
    source model must not resume a run that started from the old one) and ``code_version``,
    the hash of the code training depends on (the train stage passes its own).
    """
    strategy = make_strategy(params, candidate)
    strategy.setup(data, progress, shared=lambda: main_first(current_world()))
    parts: dict[str, Any] = {
        "code": code_version,
        "candidate": asdict(candidate),
        "train": params.train.model_dump(mode="json"),
        "epochs": epochs,
        "init": state_hash(strategy.model),
        "backbone": params.backbone.model_dump(mode="json"),
        "pretrain": params.pretrain.model_dump(mode="json"),
        "data": [s.content_hash() for s in (data.train, data.val, data.unlabeled)],
    }
    if data.source_train is not None:
        parts["source"] = data.source_train.content_hash()
    return train(strategy, data, epochs, out / CHECKPOINT_FILE, run_key(parts), progress, stop_after)


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


def progress_bar(strategy: Strategy, total: int, done: int, world: World, progress: bool | None) -> Progress:
    """A bar (or, with no bar, a log line every 10 s: step/total, img/s, ETA, loss, val) on the main rank."""
    return Progress(
        f"train {strategy.label}",
        total,
        "step",
        progress,
        initial=done,
        scale=strategy.batch_size,
        announce=True,
        bar_threshold=0,
        silent=not world.is_main,
    )


def shard(order: torch.Tensor, start: int, batch: int, world: World) -> torch.Tensor:
    """This rank's share of the global batch ``order[start:start + batch]``."""
    index = order[start : start + batch]
    # A last batch too small to give every rank two images is topped up from the epoch's first
    # ones: BatchNorm cannot train on a single image (a pool of 65 at batch 64 would crash).
    least = min(2, batch) * world.size
    if len(index) < least:
        index = torch.cat([index, order[: least - len(index)]])
    return index[world.rank :: world.size]


def resolve_device(choice: str, world: World = World()) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise TrainingError("train.device=cuda but no CUDA device is available")
        return (
            torch.device("cuda", world.rank % torch.cuda.device_count()) if world.distributed else torch.device("cuda")
        )
    return torch.device("cpu")


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
