"""The similarity stage: how far is the target from the source, and how transferable are the features?

Writes ``reports/similarity.json``. Domain distinguishability (PAD, MMD², Fréchet) is
measured on equal, fixed-size samples of both domains; task-aware signals (zero-shot
source-head accuracy, LogME, cross-validated probe accuracy, and their gain over a
randomly initialised backbone of the same architecture) on the labeled target images.
docs/strategies.md explains why both kinds are needed: on the demo, PAD saturates near 2
for every synthetic→real pair. The test split is never read here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autotransfer.analysis.metrics import evaluate_head
from autotransfer.analysis.similarity import (
    batchnorm_shift,
    frechet_distance,
    linear_probe_accuracy,
    logme,
    mmd2_rbf,
    proxy_a_distance,
)
from autotransfer.artifacts import (
    SIMILARITY_JSON,
    BackboneInfo,
    DomainDistances,
    Measure,
    SimilarityCost,
    SimilarityReport,
    SimilaritySamples,
    Transfer,
    ZeroShot,
)
from autotransfer.config import Params
from autotransfer.io.data import (
    ImageSet,
    class_names,
    decoded_cache,
    domain_rows,
    load_images,
    read_manifest,
    sample_rows,
)
from autotransfer.io.files import write_report
from autotransfer.models.backbones import TransferModel
from autotransfer.models.features import FeatureCache, batchnorm_moments, state_hash
from autotransfer.models.weights import Backbone, load_backbone

Features = Callable[[torch.nn.Module, ImageSet, str], np.ndarray]
TARGET_POOL = ("train", "val", "unlabeled")  # everything of the target but its test split


def _timed(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    started = time.perf_counter()
    result = fn()
    return {**result, "seconds": round(time.perf_counter() - started, 3)}


# Said in every report, so nobody reads these scores against a paper's table (docs/strategies.md).
LOGME_METHOD = (
    "exact maximised log-evidence / N (all D eigenvalues of FᵀF, zeros included); thuml/LogME's default "
    "fixed point drops the zero ones and differs when N < D: compare gains within this project, not with "
    "published LogME scores"
)


def measure_similarity(params: Params, progress: bool | None = None) -> SimilarityReport:
    cfg = params.similarity
    manifest = read_manifest(params.reports.dir)
    source, target = params.data.source, params.data.target
    target_classes = class_names(manifest, target)
    backbone = load_backbone(params, num_classes=len(target_classes))
    size, interpolation, background = backbone.input.size, backbone.input.interpolation, backbone.input.background
    body, arch, normalization = backbone.model.body, params.backbone.arch, backbone.normalization
    weights_hash = state_hash(body)
    cache = FeatureCache(cfg.cache_dir)

    def features(model_body: torch.nn.Module, images: ImageSet, hash_: str) -> np.ndarray:
        return cache.features(model_body, arch, images, normalization, cfg.batch_size, hash_, progress)

    target_pool = domain_rows(manifest, target, TARGET_POOL)
    source_pool = domain_rows(manifest, source, ("train",)) if source is not None else target_pool.iloc[:0]
    # Both domains drawn at random to the same n: cutting the larger one afterwards would keep
    # its first paths, i.e. its first classes. Without a source the target sample is full size.
    n = min(len(source_pool) if source is not None else len(target_pool), len(target_pool), cfg.n_per_domain)
    source_rows, target_rows = sample_rows(source_pool, n, cfg.seed), sample_rows(target_pool, n, cfg.seed)
    labeled_rows = sample_rows(domain_rows(manifest, target, ("train", "val")), cfg.max_labeled, cfg.seed)
    started = time.perf_counter()
    decoded = decoded_cache(params)
    source_classes = class_names(manifest, source) if source is not None else ()

    def load(rows: Any, classes: tuple[str, ...], desc: str) -> ImageSet:
        return load_images(rows, classes, size, progress, desc, interpolation, decoded, background)

    source_images = load(source_rows, source_classes, "source sample")
    target_images = load(target_rows, target_classes, "target sample")
    labeled = load(labeled_rows, target_classes, "labeled target")
    source_features = features(body, source_images, weights_hash)
    target_features = features(body, target_images, weights_hash)
    extract_seconds = time.perf_counter() - started

    report = SimilarityReport(
        source=source,
        target=target,
        backbone=BackboneInfo(
            arch=arch,
            weights=backbone.weights_id,
            input_size=size,
            feature_dim=backbone.model.feature_dim,
            source_head_classes=list(backbone.source_classes) if backbone.source_classes else None,
        ),
        samples=SimilaritySamples(
            source=len(source_images),
            target=len(target_images),
            labeled_target=len(labeled),
            target_classes=list(target_classes),
        ),
        domain=DomainDistances.model_validate(
            _domain_measures(source_features, target_features, n, cfg.seed)
            if source is not None
            else dict.fromkeys(("pad", "mmd2_rbf", "frechet"), NO_SOURCE)
        ),
        # Source-free: the target against the statistics the backbone was trained with.
        pretraining_shift=Measure.model_validate(
            _timed(lambda: batchnorm_shift(batchnorm_moments(body, target_images, normalization, cfg.batch_size)))
        ),
        transferability={
            name: Transfer.model_validate(measure)
            for name, measure in _transferability(
                params, labeled, len(target_classes), size, body, features, weights_hash
            ).items()
        },
        zero_shot=ZeroShot.model_validate(_zero_shot(backbone, labeled, target_classes, features, weights_hash)),
        cost=SimilarityCost(
            feature_seconds=round(extract_seconds, 3), cache_hits=cache.hits, cache_misses=cache.misses
        ),
    )
    write_report(Path(params.reports.dir) / SIMILARITY_JSON, report)
    return report


NO_SOURCE = {"value": None, "reason": "no source domain (data.source is null)", "seconds": 0.0}


def _domain_measures(source: np.ndarray, target: np.ndarray, n: int, seed: int) -> dict[str, Any]:
    """How well the two domains' features are told apart (PAD), and their distances, on n images each."""
    return {
        "pad": _timed(lambda: proxy_a_distance(source, target, seed=seed)),
        "mmd2_rbf": _timed(lambda: mmd2_rbf(source, target)),
        "frechet": _timed(lambda: {"value": frechet_distance(source, target), "n_per_domain": n}),
    }


def _transferability(
    params: Params,
    labeled: ImageSet,
    n_classes: int,
    size: int,
    body: torch.nn.Module,
    features: Features,
    weights_hash: str,
) -> dict[str, Any]:
    """LogME and a cross-validated probe on the labeled target: pretrained features against random ones."""
    cfg = params.similarity
    labels = labeled.labels.numpy()
    if not (len(labeled) >= 2 * n_classes and len(np.unique(labels)) >= 2):
        reason = f"{len(labeled)} labeled target images: too few for LogME and a cross-validated probe"
        return {"logme": {"value": None, "reason": reason}, "probe_accuracy": {"value": None, "reason": reason}}
    pretrained = features(body, labeled, weights_hash)
    torch.manual_seed(cfg.seed)
    random_body = TransferModel(params.backbone.arch, n_classes, size).body
    random = features(random_body, labeled, state_hash(random_body))
    return {
        "logme": {**_gain(lambda f: logme(f, labels), pretrained, random, "logme"), "method": LOGME_METHOD},
        "probe_accuracy": _gain(
            lambda f: linear_probe_accuracy(f, labels, cfg.probe_folds, cfg.seed), pretrained, random, "accuracy"
        ),
    }


def _gain(
    measure: Callable[[np.ndarray], dict[str, Any]], pretrained: np.ndarray, random: np.ndarray, key: str
) -> dict[str, Any]:
    started = time.perf_counter()
    ours, baseline = measure(pretrained), measure(random)
    return {
        "pretrained": ours[key],
        "random_init": baseline[key],
        "gain": ours[key] - baseline[key],
        "n": len(pretrained),
        **({"folds": ours["folds"]} if "folds" in ours else {}),
        "seconds": round(time.perf_counter() - started, 3),
    }


def _zero_shot(
    backbone: Backbone, labeled: ImageSet, target_classes: tuple[str, ...], features: Features, weights_hash: str
) -> dict[str, Any]:
    """The source head on the labeled target, when the target's classes are among the source's."""
    if backbone.source_classes is None:
        return {"value": None, "reason": "no source head (backbone.weights is not the pretrain stage's model)"}
    missing = sorted(set(target_classes) - set(backbone.source_classes))
    if missing:
        return {"value": None, "reason": f"target classes not in the source: {missing}"}
    if len(labeled) == 0:
        return {"value": None, "reason": "no labeled target images"}
    started = time.perf_counter()
    feats = torch.from_numpy(features(backbone.model.body, labeled, weights_hash))
    value = evaluate_head(
        backbone.model,
        labeled,
        backbone.normalization,
        backbone.source_classes,
        target_classes,
        torch.device("cpu"),
        features=feats,
    )
    return {"value": value, "n": len(labeled), "seconds": round(time.perf_counter() - started, 3)}
