"""Peers side by side: fastai's `vision_learner` + `fine_tune` and Lightning's `BackboneFinetuning`
against autotransfer's automatic pick, on the same scenarios, source weights and epoch budget.

Peers are bench-only: they run from `.venv-peers` (made by `make bench-peers-env`), a venv that
sees the project's .venv and adds fastai 2.8.12 and lightning 2.6.6; nothing at runtime needs them.

Per scenario and seed, each contender gets the same labeled target images (the scenario's label
cap, val included), the same resnet18 pretrained on the source domain, the same batch size
(train.batch_size, or the number of labeled train images when fewer: no contender may drop its
only batch) and as many optimizer steps as autotransfer took (its `train.epochs` epochs; an
adaptation recipe's steps also cover the source, so a peer with few labels makes many passes
over them), and is scored on the target test split; each row prints the steps each took:
- autotransfer: `rules` mode with params.yaml's defaults (similarity + plan + train timed);
- fastai: `vision_learner(dls, arch, pretrained=True)` + `fine_tune(epochs - 1)` (one frozen
  epoch + the rest unfrozen), epochs enough to cover the steps and the fit cancelled at the
  last one (less than one epoch of its one-cycle tail is cut), `aug_transforms(do_flip=False)`
  (digits are not mirror-symmetric; every other default kept) + Normalize with the source
  model's stats, its own head and LR (2e-3);
- lightning: a LightningModule `backbone` + linear head, Adam 1e-3 on what requires grad,
  `max_steps` = the steps, `BackboneFinetuning()` with its defaults (unfreezes at epoch 10),
  our geometric augmentation.

    .venv-peers/bin/python bench/peers.py [--seeds 0 1 2] [--scenarios quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from autotransfer.transfer.augment import Augmentation, augment
from autotransfer.config import load_params
from autotransfer.engine.listeners import listening
from autotransfer.io.data import class_names, domain_rows, load_images, read_manifest
from autotransfer.stages.pipeline import PLAN, PRETRAIN, SIMILARITY, TRAIN, VALIDATE
from autotransfer.models.weights import load_backbone
from common import WORK, demo_root, merged, save
from strategy_selection import QUICK, SCENARIOS, test_accuracy

warnings.filterwarnings("ignore")


def scenario_params(name: str, seed: int, work: Path, extra: list[str] = ()) -> tuple:
    source, target, labels = SCENARIOS[name]
    folder = work / f"{name.split(',')[0]}-{labels}-{seed}".replace(" ", "_")
    base = [f"data.root={demo_root()}", f"data.source={source}", f"data.target={target}",
            f"data.labeled_per_class={'null' if labels is None else labels}", f"data.seed={seed}",
            "backbone.arch=resnet18", "backbone.weights=null", "backbone.input_size=32", "train.floor=false", f"pretrain.out={WORK}/strategy_selection/source-{source}-resnet18-{seed}",
            f"pretrain.seed={seed}", f"train.seed={seed}", f"reports.dir={folder}/reports",
            f"similarity.cache_dir={work}/cache", f"train.out={folder}/ours", "train.device=cpu", *extra]
    return load_params(None, base), folder


def run_ours(params) -> dict:
    started = time.perf_counter()
    SIMILARITY.run(params, progress=False)
    plan = PLAN.run(params)
    train_started = time.perf_counter()
    steps: dict[str, int] = {}
    with listening(lambda label, record, step: steps.__setitem__(label, step)):
        report = TRAIN.run(params, progress=False)
    return {"accuracy": test_accuracy(params), "seconds": time.perf_counter() - started,
            "train_seconds": time.perf_counter() - train_started, "pick": report.candidate,
            "plan": plan.chosen, "steps": max(steps.values(), default=0)}


def batch_size(params, n_train: int) -> int:
    """train.batch_size, or every labeled train image when there are fewer (one full batch per epoch)."""
    return max(1, min(params.train.batch_size, n_train))


def source_resnet(params) -> nn.Module:
    """torchvision resnet18 carrying the source model's body weights (the peers' `pretrained` arch)."""
    import torchvision

    backbone = load_backbone(params, num_classes=10)
    model = torchvision.models.resnet18(weights=None)
    body = {k.removeprefix("body."): v for k, v in backbone.model.state_dict().items() if k.startswith("body.")}
    missing, unexpected = model.load_state_dict(body, strict=False)
    assert not unexpected and set(missing) == {"fc.weight", "fc.bias"}, (missing, unexpected)
    return model


def rows(params, usages: tuple[str, ...]):
    manifest = read_manifest(params.reports.dir)
    return manifest, domain_rows(manifest, params.data.target, usages)


def run_fastai(params, steps_budget: int) -> dict:
    import pandas as pd
    from fastai.vision.all import (Callback, CancelFitException, ImageDataLoaders, Normalize, Resize, accuracy,
                                   aug_transforms, set_seed, vision_learner)

    class CountSteps(Callback):
        """Optimizer steps fastai actually took (its training DataLoader drops the last partial batch);
        the fit stops at the budget."""

        count = 0

        def after_step(self) -> None:
            self.count += 1
            if self.count >= steps_budget:
                raise CancelFitException

    set_seed(params.train.seed, reproducible=True)
    manifest, labeled = rows(params, ("train", "val"))
    df = pd.DataFrame({"fn": [str(Path(p).resolve()) for p in labeled["path"]],
                       "label": labeled["label"].astype(str), "is_valid": labeled["usage"] == "val"})
    if not df["is_valid"].any():  # fastai needs a validation set; one labeled image per class
        df.loc[df.groupby("label").head(1).index, "is_valid"] = True
    size = params.backbone.input_size
    bs = batch_size(params, int((~df["is_valid"]).sum()))
    # A custom arch has no stats in fastai's model_meta; a careful user adds the weights' own.
    norm = load_backbone(params, num_classes=10).normalization
    stats = Normalize.from_stats(list(norm.mean), list(norm.std))
    started = time.perf_counter()
    dls = ImageDataLoaders.from_df(df, path="/", fn_col="fn", label_col="label", valid_col="is_valid",
                                   item_tfms=Resize(size), batch_tfms=[*aug_transforms(do_flip=False), stats],
                                   bs=bs, num_workers=0)
    steps = CountSteps()
    learner = vision_learner(dls, lambda pretrained=True: source_resnet(params), metrics=accuracy, cbs=[steps])
    epochs = max(2, -(-steps_budget // len(dls.train)))  # len(dls.train): steps per epoch
    with learner.no_bar(), learner.no_logging():
        learner.fine_tune(epochs - 1)  # 1 frozen epoch + epochs - 1 unfrozen
    seconds = time.perf_counter() - started
    _, test = rows(params, ("test",))
    with learner.no_bar():
        preds, _ = learner.get_preds(dl=dls.test_dl([str(Path(p).resolve()) for p in test["path"]]))
    predicted = np.array(dls.vocab)[preds.argmax(1).numpy()]
    return {"accuracy": float((predicted == test["label"].astype(str).to_numpy()).mean()), "seconds": seconds,
            "steps": steps.count, "batch_size": bs}


def run_lightning(params, steps_budget: int) -> dict:
    import lightning as L
    from lightning.pytorch.callbacks import BackboneFinetuning

    L.seed_everything(params.train.seed, verbose=False)
    manifest, train = rows(params, ("train",))
    classes = class_names(manifest, params.data.target)
    size = params.backbone.input_size
    images = load_images(train, classes, size)
    normalization = load_backbone(params, num_classes=len(classes)).normalization

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            resnet = source_resnet(params)
            resnet.fc = nn.Identity()
            self.backbone = resnet
            self.head = nn.Linear(512, len(classes))

        def forward(self, x):
            return self.head(self.backbone(x))

        def training_step(self, batch, _):
            x, y = batch
            return nn.functional.cross_entropy(self(x), y)

        def configure_optimizers(self):
            return torch.optim.Adam(filter(lambda p: p.requires_grad, self.parameters()), lr=1e-3)

    generator = torch.Generator().manual_seed(params.train.seed)

    def collate(batch):
        x = torch.stack([b[0] for b in batch])
        y = torch.stack([b[1] for b in batch])
        return normalization(augment(x, generator, Augmentation(geometric=True, colour=False))), y

    bs = batch_size(params, len(images))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images.images[:], images.labels),
                                         batch_size=bs, shuffle=True, collate_fn=collate)
    module = Module()
    started = time.perf_counter()
    trainer = L.Trainer(max_steps=steps_budget, max_epochs=-1, callbacks=[BackboneFinetuning()], accelerator="cpu",
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(module, loader)
    seconds = time.perf_counter() - started
    _, test_rows = rows(params, ("test",))
    test = load_images(test_rows, classes, size)
    module.eval()
    with torch.no_grad():
        predicted = torch.cat([module(normalization(test.images[i:i + 256])).argmax(1)
                               for i in range(0, len(test), 256)])
    return {"accuracy": float((predicted == test.labels).float().mean()), "seconds": seconds,
            "steps": trainer.global_step, "batch_size": bs}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--scenarios", nargs="+", default=["quick"], help=f"names, 'quick' ({QUICK}) or 'all'")
    parser.add_argument("--merge", action="store_true", help="keep the saved file's other scenarios")
    args = parser.parse_args()
    names = QUICK if args.scenarios == ["quick"] else list(SCENARIOS) if args.scenarios == ["all"] else args.scenarios
    names = [n for n in names if SCENARIOS[n][2] != 0]  # peers need target labels
    work = WORK / "peers"
    results: dict = {}
    for name in names:
        runs = []
        for seed in args.seeds:
            params, _ = scenario_params(name, seed, work)
            VALIDATE.run(params, progress=False)
            if not (Path(params.pretrain.out) / "model.safetensors").exists():
                PRETRAIN.run(params, progress=False)
            ours = run_ours(params)
            run = {"autotransfer": ours, "fastai": run_fastai(params, ours["steps"]),
                   "lightning": run_lightning(params, ours["steps"])}
            print(f"{name} seed {seed}: " + ", ".join(f"{k} {v['accuracy']:.3f} ({v['seconds']:.0f} s, "
                                                       f"{v['steps']} steps)"
                                                       for k, v in run.items()), flush=True)
            runs.append(run)
        summary = {}
        for who in ("autotransfer", "fastai", "lightning"):
            acc = [r[who]["accuracy"] for r in runs]
            sec = [r[who]["seconds"] for r in runs]
            summary[who] = {"accuracy_mean": statistics.mean(acc), "accuracy_std": statistics.pstdev(acc),
                            "seconds_mean": statistics.mean(sec)}
        results[name] = {"runs": runs, "summary": summary}
    provenance = None
    if args.merge:
        results, provenance = merged("peers", results)
    met = all(v["summary"]["autotransfer"]["accuracy_mean"] >= max(v["summary"][p]["accuracy_mean"]
                                                                  for p in ("fastai", "lightning"))
              for v in results.values())
    save("peers", {"setup": {"seeds": args.seeds, "scenarios": list(results), "epochs": 10, "steps": "autotransfer's",
                             "arch": "resnet18",
                             "fastai": _version("fastai"), "lightning": _version("lightning")},
                   "provenance": provenance,
                   "scenarios": results, "accuracy_target_met": met})


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


if __name__ == "__main__":
    sys.exit(main())
