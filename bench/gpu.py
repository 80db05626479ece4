"""Training throughput per strategy at 224 px, and the share of each step spent waiting for data.

Prepared for a GPU node (run it where CUDA is; it also runs on the CPU, slowly): timm's
resnet50 and the default tf_efficientnet_lite0 at 224 px, batch 64 (CUDA) or 8 (CPU),
bf16 autocast and channels_last on CUDA as the trainer uses them. Data: generated
256-px JPEGs decoded once into the decoded cache (the pipeline's path). For each
(architecture, strategy): ``--warmup`` steps, then ``--steps`` timed steps of the
strategy's own ``step`` + backward + optimizer step (CUDA synchronised), and, separately,
the time to fetch and augment the same batches from the cache: the data share is
fetch / (fetch + step). Weights are random (throughput does not depend on them).

    python bench/gpu.py [--archs tf_efficientnet_lite0 timm/resnet50] [--steps 20] [--warmup 5]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from common import WORK, median, save

STRATEGIES = ("linear_probe", "finetune_top", "progressive", "finetune_all", "scratch")


def make_photos(root: Path, n: int) -> Path:
    if (root / ".complete").exists():
        return root
    rng = np.random.default_rng(0)
    for domain in ("src", "tgt"):
        for split, count in (("train", n), ("val", n // 8), ("test", n // 8)):
            for i in range(count):
                label = i % 4
                path = root / domain / split / f"c{label}" / f"{i:05d}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                pixels = (rng.integers(0, 160, size=(256, 320, 3)) + 30 * label).astype(np.uint8)
                Image.fromarray(pixels).save(path, quality=90)
    (root / ".complete").touch()
    return root


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(arch: str, strategy_name: str, data_root: Path, work: Path, batch: int, steps: int, warmup: int) -> dict:
    from safetensors.torch import save_file

    from autotransfer.config import load_params
    from autotransfer.io.data import load_train_data
    from autotransfer.models.backbones import TransferModel
    from autotransfer.models.weights import backbone_input
    from autotransfer.stages.pipeline import VALIDATE
    from autotransfer.transfer.augment import augment
    from autotransfer.transfer.modes import autocast
    from autotransfer.transfer.strategies import Candidate, make_strategy

    init = work / f"{arch.replace('/', '_')}.safetensors"
    if not init.exists():
        save_file(TransferModel(arch, 4, 224).state_dict(), str(init))
    params = load_params(None, [
        f"data.root={data_root}", "data.source=src", "data.target=tgt", f"backbone.arch={arch}",
        f"backbone.weights={init}", "backbone.input_size=224", f"reports.dir={work}/reports",
        f"data.decoded_cache={work}/decoded", f"validation.state_dir={work}/state",
        f"similarity.cache_dir={work}/features", f"train.batch_size={batch}", "train.augment.geometric=true",
    ])
    VALIDATE.run(params, progress=False)
    data = load_train_data(params, False, backbone_input(params), progress=False)
    strategy = make_strategy(params, Candidate(strategy_name))
    started = time.perf_counter()
    strategy.setup(data, progress=False)  # linear_probe: the features of every image, once
    setup_seconds = time.perf_counter() - started
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = strategy.model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    phase = strategy.phases(10)[-1]  # the widest phase: what trains at the end
    strategy.train_mode(phase)
    optimizer, _ = strategy.configure(phase, steps + warmup)
    net = strategy.forward_module()
    draws = torch.Generator().manual_seed(0)
    order = torch.randperm(len(strategy.pool_images), generator=draws)
    per_epoch = max(1, len(order) // batch)
    batches = [order[(i % per_epoch) * batch :][:batch] for i in range(steps + warmup)]
    step_times, fetch_times = [], []
    for i, index in enumerate(batches):
        sync(device)
        started = time.perf_counter()
        with autocast(device):
            out = strategy.step(net, index, draws, 0.5, device)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        sync(device)
        elapsed = time.perf_counter() - started
        started = time.perf_counter()
        if strategy_name == "linear_probe":  # its batches are cached features, not images
            strategy.features["train"][index].to(device, non_blocking=True)
        else:
            augment(strategy.pool_images[index], draws, strategy.augment).to(device, non_blocking=True)
        sync(device)
        if i >= warmup:
            step_times.append(elapsed)
            fetch_times.append(time.perf_counter() - started)
    step_s, fetch_s = median(step_times), median(fetch_times)
    row = {"arch": arch, "strategy": strategy_name, "device": str(device), "batch": batch,
           "images_per_second": batch / step_s, "step_seconds": {"median": step_s, "min": min(step_times),
                                                                  "max": max(step_times)},
           "data_share": fetch_s / (fetch_s + step_s), "setup_seconds": setup_seconds}
    print(f"{arch} {strategy_name}: {row['images_per_second']:.1f} img/s, data {100 * row['data_share']:.1f} % "
          f"of a step ({device}, batch {batch})", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--archs", nargs="+", default=["tf_efficientnet_lite0", "timm/resnet50"])
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--images", type=int, default=512)
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    batch = 64 if cuda else 8
    work = WORK / "gpu"
    work.mkdir(parents=True, exist_ok=True)
    data_root = make_photos(work / "data", args.images)
    rows = [measure(arch, name, data_root, work, batch, args.steps, args.warmup)
            for arch in args.archs for name in args.strategies]
    save("gpu", {"setup": {"input_size": 224, "batch": batch, "steps": args.steps, "warmup": args.warmup,
                           "images": args.images, "cuda": cuda}, "rows": rows})


if __name__ == "__main__":
    main()
