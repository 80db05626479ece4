"""The pretrain stage: a source model when no pretrained weights are given.

ImageNet weights cannot be downloaded here, so the demo's "pretrained backbone" is the
configured architecture trained on the source domain. Writes ``models/source/``:
``model.safetensors`` (body and source head) and ``meta.json`` (arch, classes, input size,
normalisation, the hash of the source data it saw, its source val accuracy).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from autotransfer.augment import geometric
from autotransfer.backbones import IMAGENET_MEAN, IMAGENET_STD, TransferModel, WeightsError, load_weights
from autotransfer.config import Params
from autotransfer.data import Normalization, class_names, domain_rows, load_images, read_manifest
from autotransfer.files import write_json, write_safetensors
from autotransfer.optim import weight_decay_groups
from autotransfer.scoring import evaluate_head

MODEL_FILE = "model.safetensors"
META_FILE = "meta.json"
DEFAULT_NORMALIZATION = Normalization(IMAGENET_MEAN, IMAGENET_STD)


@dataclass
class Backbone:
    """A backbone ready for the target: the model, how to feed it, and where it came from."""

    model: TransferModel
    normalization: Normalization
    weights_id: str  # what the weights are, for cache keys and reports
    source_classes: tuple[str, ...] | None  # classes of a loaded source head, if any


def pretrain(params: Params, progress: bool | None = None) -> dict[str, Any]:
    out = Path(params.pretrain.out)
    out.mkdir(parents=True, exist_ok=True)
    if params.backbone.weights is not None:
        meta = {"skipped": True, "reason": f"backbone.weights is set ({params.backbone.weights})"}
        write_json(out / META_FILE, meta)
        return meta

    cfg, arch, size = params.pretrain, params.backbone.arch, params.backbone.input_size
    manifest = read_manifest(params.reports.dir)
    source = params.data.source
    classes = class_names(manifest, source)
    train = load_images(domain_rows(manifest, source, ("train",)), classes, size, progress, "source train")
    val = load_images(domain_rows(manifest, source, ("val",)), classes, size, progress, "source val")
    normalization = DEFAULT_NORMALIZATION

    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    model = TransferModel(arch, len(classes), size)
    optimizer = torch.optim.SGD(weight_decay_groups([model], cfg.weight_decay), lr=cfg.lr, momentum=0.9,
                                nesterov=True)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total)))
    started = time.perf_counter()
    history = []
    bar = tqdm(total=total, desc=f"pretrain {arch}", unit="step", disable=None if progress is None else not progress)
    for epoch in range(cfg.epochs):
        model.train()
        order = torch.randperm(len(train), generator=generator)
        losses = []
        for start in range(0, len(train), cfg.batch_size):
            index = order[start: start + cfg.batch_size]
            batch = train.images[index]
            if cfg.augment:
                batch = geometric(batch, generator)
            loss = nn.functional.cross_entropy(model(normalization(batch)), train.labels[index])
            if not torch.isfinite(loss):
                raise FloatingPointError(f"pretrain: non-finite loss at epoch {epoch + 1}, step {bar.n + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            bar.update(1)
        history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)),
                        "val_accuracy": evaluate_head(model, val, normalization, classes, classes,
                                                      torch.device("cpu"))})
        bar.set_postfix(loss=f"{history[-1]['loss']:.3f}", val=f"{history[-1]['val_accuracy']:.3f}")
    bar.close()

    write_safetensors(out / MODEL_FILE, model.state_dict())
    meta = {
        "skipped": False,
        "arch": arch,
        "classes": list(classes),
        "input_size": size,
        "normalization": {"mean": list(normalization.mean), "std": list(normalization.std)},
        "source_domain": source,
        "data_hash": train.content_hash(),
        "epochs": cfg.epochs,
        "train_images": len(train),
        "val_accuracy": history[-1]["val_accuracy"],
        "history": history,
    }
    # No timings in the file: the same data and params must give the same bytes (DVC).
    write_json(out / META_FILE, meta)
    return {**meta, "seconds": round(time.perf_counter() - started, 1)}


def load_backbone(params: Params, num_classes: int) -> Backbone:
    """The configured backbone.

    ``backbone.weights`` null means the pretrain stage's source model, returned with its
    source head (``source_classes`` says which classes it predicts: it can be scored
    zero-shot on the target). Other weights come with a fresh head for ``num_classes``.
    """
    arch, size = params.backbone.arch, params.backbone.input_size
    spec = params.backbone.weights
    if spec is None:
        folder = Path(params.pretrain.out)
        meta_path = folder / META_FILE
        if not (folder / MODEL_FILE).exists() or not meta_path.exists():
            raise WeightsError(f"{folder / MODEL_FILE}: no source model; run `autotransfer pretrain` first "
                               "(or set backbone.weights)")
        meta = json.loads(meta_path.read_text())
        if meta.get("arch") != arch or meta.get("input_size") != size:
            raise WeightsError(f"{folder}: holds a {meta.get('arch')} at {meta.get('input_size')} px but "
                               f"backbone is {arch} at {size} px; rerun `autotransfer pretrain`")
        model = TransferModel(arch, len(meta["classes"]), size)
        load_weights(model, folder / MODEL_FILE)
        normalization = Normalization(tuple(meta["normalization"]["mean"]), tuple(meta["normalization"]["std"]))
        return Backbone(model, normalization, f"source:{meta['data_hash'][:16]}", tuple(meta["classes"]))
    model = TransferModel(arch, num_classes, size)
    load_weights(model, spec)
    return Backbone(model, DEFAULT_NORMALIZATION, str(spec), None)
