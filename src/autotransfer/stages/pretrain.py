"""The pretrain stage: a source model when no pretrained weights are given.

With ``backbone.weights`` null the "pretrained backbone" is the configured architecture
trained on the source domain, by the same loop as every strategy
(``transfer.strategies.SourcePretraining``). Writes ``models/source/``: ``model.safetensors``
(body and source head) and ``meta.json`` (arch, classes, input size, normalisation, the
hash of the source data it saw, its source val accuracy).
"""

from __future__ import annotations

from pathlib import Path

from autotransfer.artifacts import (
    META_FILE,
    MODEL_FILE,
    NormalizationSpec,
    PretrainSkipped,
    SourceEpoch,
    SourceModelMeta,
)
from autotransfer.config import Params
from autotransfer.engine.loop import train
from autotransfer.errors import StageInputError
from autotransfer.io.data import (
    ImageSet,
    TrainData,
    class_names,
    decoded_cache,
    domain_rows,
    load_images,
    read_manifest,
)
from autotransfer.io.files import output_lock, write_report, write_safetensors
from autotransfer.models.backbones import input_spec
from autotransfer.transfer.strategies import SourcePretraining


def pretrain(params: Params, progress: bool | None = None) -> PretrainSkipped | SourceModelMeta:
    """Train (or skip) the source model; returns its meta (one writer of pretrain.out)."""
    with output_lock(params.pretrain.out, "pretrain.out"):
        return _pretrain(params, progress)


def _pretrain(params: Params, progress: bool | None) -> PretrainSkipped | SourceModelMeta:
    out = Path(params.pretrain.out)
    out.mkdir(parents=True, exist_ok=True)
    if params.backbone.weights is not None:
        skipped = PretrainSkipped(skipped=True, reason=f"backbone.weights is set ({params.backbone.weights})")
        write_report(out / META_FILE, skipped)
        return skipped

    spec, source = input_spec(params.backbone, params.data.alpha_background), params.data.source
    if source is None:  # params refuse this pair; said again for a Params built by hand
        raise StageInputError("backbone.weights=null trains on data.source, and data.source is null")
    size = spec.size
    manifest = read_manifest(params.reports.dir)
    classes = class_names(manifest, source)

    cache = decoded_cache(params)

    def load(usage: str) -> ImageSet:
        rows = domain_rows(manifest, source, (usage,))
        return load_images(rows, classes, size, progress, f"source {usage}", spec.interpolation, cache, spec.background)

    train_set, val = load("train"), load("val")
    data = TrainData(classes, train_set, val, unlabeled=ImageSet.empty(size, classes))
    strategy = SourcePretraining(params)
    strategy.setup(data, progress)
    # No checkpoint: models/source is a DVC output, and pretraining takes a minute.
    result = train(strategy, data, params.pretrain.epochs, checkpoint=None, key="", progress=progress)

    write_safetensors(out / MODEL_FILE, result.model.state_dict())
    meta = SourceModelMeta(
        skipped=False,
        arch=params.backbone.arch,
        classes=list(classes),
        input_size=size,
        interpolation=spec.interpolation,
        normalization=NormalizationSpec(**result.normalization.to_spec()),
        source_domain=source,
        data_hash=train_set.content_hash(),
        epochs=params.pretrain.epochs,
        train_images=len(train_set),
        val_accuracy=result.history[-1]["val_accuracy"],
        history=[
            SourceEpoch(epoch=h["epoch"], loss=h["train_loss"], val_accuracy=h["val_accuracy"]) for h in result.history
        ],
    )
    write_report(out / META_FILE, meta)
    return meta
