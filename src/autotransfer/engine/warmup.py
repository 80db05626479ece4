"""How long one epoch of a strategy takes at a given resolution, measured on this machine.

What ``train.time_budget`` is fitted with (transfer/budget.py ``fit_time_budget``): the
strategy itself is built at that resolution (its model, param groups, optimizer and step:
nothing here knows a strategy's name) and a few optimizer steps of one full batch of
random images are timed after one untimed step (allocation, autotuning). A strategy with
phases (progressive) is timed in its first and last phase and the phases between are
taken as the line between them. The per-epoch validation pass is timed too. Nothing is
written: a closed-form strategy (the probe) is timed as the forward passes its features
take, without the feature cache.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from autotransfer.config import Params
from autotransfer.engine.loop import resolve_device
from autotransfer.io.data import ImageSet, TrainData
from autotransfer.io.store import TensorStore
from autotransfer.models.weights import load_backbone
from autotransfer.transfer.strategies import Candidate, Phase, Strategy, make_strategy, strategy_class

TIMED_STEPS = 2


@dataclass(frozen=True)
class Workload:
    """What one epoch of the train stage reads (validate's counts, the step rule's pool)."""

    classes: int
    pool: int  # labeled images per epoch (source images too for a strategy that trains on them)
    val: int  # labeled val images scored after each epoch
    source_classes: int = 0


def _random_set(n: int, size: int, classes: int, labeled: bool, seed: int) -> ImageSet:
    draws = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=draws)
    labels = torch.arange(n) % max(1, classes) if labeled else torch.full((n,), -1)
    names = tuple(f"warmup-{seed}-{i}" for i in range(n))
    return ImageSet(TensorStore(images), labels, tuple(str(c) for c in range(classes)), names, names)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _forward_seconds(model: torch.nn.Module, batch: torch.Tensor, device: torch.device) -> float:
    """Seconds of one no-grad forward pass of ``batch`` (eval mode), after an untimed one."""
    was_training = model.training
    model.eval()
    times = []
    with torch.no_grad():
        for _ in range(1 + TIMED_STEPS):
            started = time.perf_counter()
            model(batch)
            _sync(device)
            times.append(time.perf_counter() - started)
    model.train(was_training)
    return min(times[1:])


def epoch_seconds(params: Params, strategy: str, work: Workload, size: int, epochs: int) -> float:
    """Mean seconds per epoch of ``strategy`` over ``epochs`` at ``size`` px (see the module docstring)."""
    params = params.model_copy(update={"backbone": params.backbone.model_copy(update={"input_size": size})}, deep=True)
    cfg, kind = params.train, strategy_class(strategy)
    device = resolve_device(cfg.device)
    batch = max(1, min(cfg.batch_size, work.pool))
    if kind.closed_form:  # features of every labeled image, once
        backbone = load_backbone(params, num_classes=max(2, work.classes))
        body = backbone.model.body.to(device)
        images = _random_set(min(batch, 256), size, work.classes, True, 0).images.rows(
            torch.arange(min(batch, 256)).numpy()
        )
        per_image = _forward_seconds(body, backbone.normalization(images.float().to(device) / 255), device)
        return per_image / len(images) * (work.pool + work.val)
    data = TrainData(
        classes=tuple(str(c) for c in range(work.classes)),
        train=_random_set(batch, size, work.classes, True, 0),
        val=ImageSet.empty(size, tuple(str(c) for c in range(work.classes))),
        unlabeled=_random_set(batch, size, work.classes, False, 1),
    )
    if kind.needs.labeled_source:
        data.source_classes = tuple(str(c) for c in range(max(2, work.source_classes)))
        data.source_train = _random_set(batch, size, len(data.source_classes), True, 2)
    runner = make_strategy(params, Candidate(strategy))
    runner.setup(data, progress=False)
    runner.model.to(device)
    for module in runner.extra_modules:
        module.to(device)
    steps_per_epoch = math.ceil(work.pool / cfg.batch_size)
    phases = runner.phases(epochs)
    first, last = _step_seconds(runner, phases[0], batch, device), None
    if len(phases) > 1:
        last = _step_seconds(runner, phases[-1], batch, device)
    total = 0.0
    for i, phase in enumerate(phases):
        share = i / (len(phases) - 1) if last is not None else 0.0
        step = first + share * ((last or first) - first)
        total += (phase.end_epoch - phase.start_epoch) * steps_per_epoch * step
    if work.val:
        images = data.train.images.rows(torch.arange(batch).numpy()).float().to(device) / 255
        val_batches = math.ceil(work.val / cfg.batch_size)
        total += epochs * val_batches * _forward_seconds(runner.model, runner.normalization(images), device)
    runner.model.cpu()
    return total / max(1, epochs)


def _step_seconds(runner: Strategy, phase: Phase, batch: int, device: torch.device) -> float:
    """Seconds of one optimizer step of ``runner`` in ``phase`` on a full batch (the fastest timed one)."""
    runner.train_mode(phase)
    optimizer, scheduler = runner.configure(phase, 10 * (1 + TIMED_STEPS))
    net = runner.forward_module()
    index = torch.arange(batch)
    draws = torch.Generator().manual_seed(0)
    times = []
    for _ in range(1 + TIMED_STEPS):
        started = time.perf_counter()
        out = runner.step(net, index, draws, 0.5, device)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        scheduler.step()
        _sync(device)
        times.append(time.perf_counter() - started)
    return min(times[1:])
