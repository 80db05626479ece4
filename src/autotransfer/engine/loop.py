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
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from autotransfer.artifacts import CHECKPOINT_FILE
from autotransfer.config import Params
from autotransfer.engine.checkpoint import (
    changing_state_keys,
    load_checkpoint,
    run_key,
    save_atomic,
)
from autotransfer.engine.ddp import World, all_finite, current_world, main_first, sync_buffers, wrap
from autotransfer.engine.listeners import epoch_ended
from autotransfer.engine.state import EpochMeter, FitResult, RunState, validate
from autotransfer.errors import TrainingError
from autotransfer.io.data import TrainData
from autotransfer.io.progress import Progress
from autotransfer.io.workers import PrefetchStore, prefetching
from autotransfer.models.features import state_hash
from autotransfer.transfer.strategies import Candidate, Phase, Strategy, make_strategy

log = logging.getLogger(__name__)


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
