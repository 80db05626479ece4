"""Trainer efficiency: autotransfer's training loop vs a bare PyTorch loop (a measurement, not a test).

Same model (resnet18 at 32 px, fresh init: the `scratch` strategy), same data (the digits
target train split, decoded uint8 tensors), same batch, optimizer (SGD, Nesterov
momentum 0.9, weight decay) and number of steps. Ours runs `autotransfer.engine.loop.fit`
as the pipeline does (progress bar and history on, a checkpoint and a validation pass
per epoch); the bare loop normalises each batch, steps, and does nothing else.
Throughput = training images per second inside the step loop (ours reports it per
epoch); end-to-end also counts ours' validation and checkpoints. Augmentation is off on
both sides (its own cost is reported separately). Each contender runs once untimed first
(warm-up: allocator, first-call kernels, the first checkpoint write); then every repeat runs
the three in a new random order (seeded, recorded), so no contender always goes first.

    python bench/efficiency.py [--repeats 3] [--epochs 2]
"""

from __future__ import annotations

import argparse
import math
import random
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from autotransfer.models.backbones import TransferModel
from autotransfer.config import load_params
from autotransfer.transfer.optim import weight_decay_groups
from autotransfer.models.weights import DEFAULT_NORMALIZATION
from autotransfer.engine.loop import fit
from autotransfer.io.data import load_train_data
from autotransfer.models.weights import backbone_input
from autotransfer.transfer.strategies import Candidate
from autotransfer.stages.pipeline import VALIDATE
from common import WORK, demo_root, median, save


def params_for(work: Path, epochs: int, augment: bool):
    return load_params(None, [
        f"data.root={demo_root()}", "data.source=synth-digits", "data.target=digits", "backbone.arch=resnet18", "backbone.weights=null",
        "backbone.input_size=32",
        f"reports.dir={work}/reports", f"train.out={work}/out", f"train.epochs={epochs}", "train.patience=0",
        f"train.augment.geometric={str(augment).lower()}", f"train.augment.color={str(augment).lower()}",
        "train.device=cpu"])


def bare_loop(data, params, steps: int) -> float:
    """Images per second of the plainest loop over the same tensors."""
    cfg = params.train
    torch.manual_seed(cfg.seed)
    model = TransferModel(params.backbone.arch, len(data.classes), params.backbone.input_size).train()
    optimizer = torch.optim.SGD(weight_decay_groups([model], cfg.weight_decay, lr=cfg.lr), momentum=0.9,
                                nesterov=True)
    images, labels = data.train.images, data.train.labels
    generator = torch.Generator().manual_seed(0)
    seen, batch = 0, cfg.batch_size
    started = time.perf_counter()
    step = 0
    while step < steps:
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(images), batch):
            if step == steps:
                break
            index = order[start: start + batch]
            x = DEFAULT_NORMALIZATION(images[index])  # the same per-batch uint8 -> float as ours
            loss = F.cross_entropy(model(x), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(index)
            step += 1
    return seen / (time.perf_counter() - started)


def ours(params, data, out: Path) -> tuple[float, float, float]:
    """(step-loop images/s, end-to-end images/s, seconds) of fit() as the pipeline calls it."""
    started = time.perf_counter()
    result = fit(params, Candidate("scratch"), data, out, params.train.epochs, progress=True)
    wall = time.perf_counter() - started
    images = sum(len(data.train) for _ in result.history)
    step_seconds = sum(h["seconds"] for h in result.history)
    return images / step_seconds, images / wall, wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    work = WORK / "efficiency"
    params = params_for(work, args.epochs, augment=False)
    VALIDATE.run(params, progress=False)
    data = load_train_data(params, False, backbone_input(params), progress=False)
    steps = math.ceil(len(data.train) / params.train.batch_size) * args.epochs
    contenders = {
        "ours": lambda tmp: ours(params, data, tmp),
        "bare": lambda tmp: (bare_loop(data, params, steps), None, None),
        "ours_augmented": lambda tmp: ours(params_for(work, args.epochs, augment=True), data, tmp),
    }
    for run in contenders.values():  # warm-up, not recorded
        with tempfile.TemporaryDirectory(dir=WORK) as tmp:
            run(Path(tmp))
    rows = []
    for repeat in range(args.repeats):
        order = list(contenders)
        random.Random(repeat).shuffle(order)
        measured = {}
        for name in order:
            with tempfile.TemporaryDirectory(dir=WORK) as tmp:
                measured[name] = contenders[name](Path(tmp))
        (step_ips, wall_ips, _), (bare_ips, _, _) = measured["ours"], measured["bare"]
        aug_ips = measured["ours_augmented"][0]
        rows.append({"repeat": repeat, "order": order, "ours_step_ips": step_ips, "ours_end_to_end_ips": wall_ips,
                     "bare_ips": bare_ips, "ours_with_augmentation_ips": aug_ips,
                     "ratio_step": step_ips / bare_ips, "ratio_end_to_end": wall_ips / bare_ips})
        print(f"repeat {repeat} ({' → '.join(order)}): ours {step_ips:.0f} img/s in the loop ({wall_ips:.0f} end to "
              f"end), bare {bare_ips:.0f} img/s, ratio {step_ips / bare_ips:.3f}; with augmentation {aug_ips:.0f}")
    summary = {key: median([r[key] for r in rows]) for key in rows[0] if key not in ("repeat", "order")}
    save("efficiency", {"setup": {"arch": "resnet18", "input_size": 32, "batch": params.train.batch_size,
                                  "steps": steps, "images": len(data.train), "device": "cpu",
                                  "warmup": "each contender once, untimed", "order": "random per repeat"},
                        "repeats": rows, "median": summary, "target": {"ratio_step": 0.90}})


if __name__ == "__main__":
    main()
