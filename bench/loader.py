"""Our training step on the decoded cache vs a bare loop over torchvision ImageFolder + DataLoader, at 224 px.

Same timm model (tf_efficientnet_lite0, the default backbone; random weights: throughput
does not depend on them), same generated 256x320 JPEGs, same batch, optimizer (SGD, momentum 0.9),
number of steps and preprocessing (shorter side to 224, centre crop, normalisation; no
augmentation on either side). Ours: the finetune_all strategy's own ``step`` reading
batches from the decoded cache (decoded once, before timing: what every later epoch and
stage reads). Bare: ``ImageFolder`` with the same transforms in ``DataLoader`` workers
(decoding every image every epoch, as such loops do), ``--workers`` of them, persistent.
Repeats alternate ours and bare after a warm-up; img/s over the timed steps, median and
range, and the ratio ours / bare per repeat.

    python bench/loader.py [--steps 20] [--repeats 3] [--batch 16] [--workers 2]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from common import WORK, median, save
from gpu import make_photos

ARCH = "tf_efficientnet_lite0"


def ours(data_root, work, batch: int, steps: int, warmup: int) -> float:
    from autotransfer.config import load_params
    from autotransfer.io.data import load_train_data
    from autotransfer.models.weights import backbone_input
    from autotransfer.stages.pipeline import VALIDATE
    from autotransfer.transfer.strategies import Candidate, make_strategy

    params = load_params(None, [
        f"data.root={data_root}", "data.source=src", "data.target=tgt", f"backbone.arch={ARCH}",
        f"backbone.weights={work / 'init.safetensors'}", "backbone.input_size=224", "backbone.interpolation=bilinear",
        f"reports.dir={work}/reports", f"data.decoded_cache={work}/decoded", f"validation.state_dir={work}/state",
        f"train.batch_size={batch}", "train.augment.geometric=false", "train.augment.color=false",
        "train.optimizer=sgd", "train.weight_decay=0", "train.device=cpu",
    ])
    VALIDATE.run(params, progress=False)
    data = load_train_data(params, False, backbone_input(params), progress=False)
    strategy = make_strategy(params, Candidate("finetune_all"))
    strategy.setup(data, progress=False)
    phase = strategy.phases(1)[0]
    strategy.train_mode(phase)
    optimizer = torch.optim.SGD(strategy.model.parameters(), lr=0.01, momentum=0.9)
    draws = torch.Generator().manual_seed(0)
    order = torch.randperm(len(strategy.pool_images), generator=draws)
    per_epoch = len(order) // batch
    started = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            started = time.perf_counter()
        index = order[(i % per_epoch) * batch :][:batch]
        out = strategy.step(strategy.model, index, draws, 0.5, torch.device("cpu"))
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
    return steps * batch / (time.perf_counter() - started)


def bare(data_root, work, batch: int, steps: int, warmup: int, workers: int, loader_cache: dict) -> float:
    import timm
    from torchvision import datasets, transforms

    from autotransfer.models.backbones import TransferModel

    if "loader" not in loader_cache:
        transform = transforms.Compose([
            transforms.Resize(224, interpolation=transforms.InterpolationMode.BILINEAR),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        ])
        dataset = datasets.ImageFolder(str(data_root / "tgt" / "train"), transform=transform)
        loader_cache["loader"] = torch.utils.data.DataLoader(
            dataset, batch_size=batch, shuffle=True, num_workers=workers, persistent_workers=workers > 0,
            drop_last=True, generator=torch.Generator().manual_seed(0),
        )
    loader = loader_cache["loader"]
    torch.manual_seed(0)
    model = TransferModel(ARCH, 4, 224).train()
    assert isinstance(model.body, timm.models.efficientnet.EfficientNet)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    batches = iter(loader)
    started = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            started = time.perf_counter()
        try:
            x, y = next(batches)
        except StopIteration:
            batches = iter(loader)
            x, y = next(batches)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return steps * batch / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--images", type=int, default=256)
    args = parser.parse_args()
    from safetensors.torch import save_file

    from autotransfer.models.backbones import TransferModel

    work = WORK / "loader"
    work.mkdir(parents=True, exist_ok=True)
    data_root = make_photos(work / "data", args.images)
    torch.manual_seed(0)
    save_file(TransferModel(ARCH, 4, 224).state_dict(), str(work / "init.safetensors"))
    runs: dict[str, list[float]] = {"ours": [], "bare": []}
    loader_cache: dict = {}
    for repeat in range(args.repeats):
        runs["ours"].append(ours(data_root, work, args.batch, args.steps, args.warmup))
        runs["bare"].append(bare(data_root, work, args.batch, args.steps, args.warmup, args.workers, loader_cache))
        print(f"repeat {repeat}: ours {runs['ours'][-1]:.2f} img/s, bare {runs['bare'][-1]:.2f} img/s", flush=True)
    ratios = [o / b for o, b in zip(runs["ours"], runs["bare"])]
    print(f"ratio ours / bare: median {median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f})")
    save("loader", {"setup": {"arch": ARCH, "input_size": 224, "batch": args.batch, "steps": args.steps,
                              "warmup": args.warmup, "workers": args.workers, "images": args.images},
                    "runs": runs, "ratios": ratios, "ratio_median": median(ratios)})


if __name__ == "__main__":
    main()
