"""From the manifest to batches: decoded once at the training size (in memory, or in an on-disk
cache read per batch: io/store.py), uint8 until a batch is normalised.

The stages after ``validate`` read ``reports/manifest.csv`` (written by validate, with a
``usage`` column that already applies the label cap), so that every stage sees the same
files, and only readable ones.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from autotransfer.artifacts import MANIFEST_CSV
from autotransfer.config import Params
from autotransfer.errors import StageInputError
from autotransfer.io.images import WHITE, Background, Interpolation, load_rgb, resize_square
from autotransfer.io.progress import Progress
from autotransfer.io.store import DecodedCache, ImageStore, TensorStore, concat
from autotransfer.io.workers import decode_blocks


@dataclass(frozen=True)
class ImageSet:
    images: ImageStore  # uint8 (N, 3, S, S) by index; a tensor given here is wrapped in a TensorStore
    labels: torch.Tensor  # int64, (N,); -1 where there is no label
    classes: tuple[str, ...]
    hashes: tuple[str, ...]  # sha256 of each file: what caches are keyed on
    paths: tuple[str, ...]
    interpolation: str = "bilinear"  # the resize filter that made ``images`` (part of cache keys)
    background: Background = WHITE  # what transparent pixels were laid on (part of cache keys)

    def __post_init__(self) -> None:
        given: Any = self.images
        if isinstance(given, torch.Tensor):
            object.__setattr__(self, "images", TensorStore(given))

    def __len__(self) -> int:
        return len(self.paths)

    def content_hash(self) -> str:
        return hashlib.sha256("\n".join(self.hashes).encode()).hexdigest()

    @classmethod
    def empty(cls, size: int, classes: tuple[str, ...] = ()) -> ImageSet:
        images = TensorStore(torch.zeros((0, 3, size, size), dtype=torch.uint8))
        return cls(images, torch.zeros(0, dtype=torch.long), classes, (), ())


@dataclass(frozen=True)
class Normalization:
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 (N,3,H,W) to normalised float32."""
        mean = torch.tensor(self.mean, device=batch.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=batch.device).view(1, 3, 1, 1)
        return (batch.float() / 255.0 - mean) / std

    def describe(self) -> str:
        return f"mean={list(self.mean)},std={list(self.std)}"

    def to_spec(self) -> dict[str, list[float]]:
        return {"mean": list(self.mean), "std": list(self.std)}


@dataclass(frozen=True)
class InputSpec:
    """How a model is fed: square side, resize filter, normalisation (models.backbones.input_spec), and
    what transparent pixels are laid on (data.alpha_background)."""

    size: int
    interpolation: Interpolation
    normalization: Normalization
    background: Background = WHITE


@dataclass
class TrainData:
    """What one training run reads: the labeled and unlabeled target, and the labeled source if asked for."""

    classes: tuple[str, ...]  # target classes
    train: ImageSet  # labeled target train (after the label cap)
    val: ImageSet  # labeled target val
    unlabeled: ImageSet  # target images without labels (unlabeled/ and capped-away train)
    source_train: ImageSet | None = None
    source_classes: tuple[str, ...] | None = None

    def with_val_in_train(self) -> TrainData:
        """The same data with the labeled val images moved into train (nothing is chosen on val)."""
        train, val = self.train, self.val
        merged = ImageSet(
            concat([train.images, val.images]),
            torch.cat([train.labels, val.labels]),
            train.classes,
            train.hashes + val.hashes,
            train.paths + val.paths,
            train.interpolation,
            train.background,
        )
        empty = ImageSet.empty(int(val.images.shape[-1]), val.classes)
        return TrainData(self.classes, merged, empty, self.unlabeled, self.source_train, self.source_classes)

    def smallest_val_class(self) -> int:
        """Labeled val images in the target class that has fewest (0 without val)."""
        counts = torch.bincount(self.val.labels[self.val.labels >= 0], minlength=len(self.classes))
        return int(counts.min()) if len(self.classes) else 0

    @property
    def has_colour(self) -> bool:
        """Whether any image (not just its file mode) has channels that differ."""
        sets = [self.train, self.val, self.unlabeled, self.source_train]
        return any(s is not None and len(s) and s.images.has_colour() for s in sets)


def load_train_data(params: Params, with_source: bool, spec: InputSpec, progress: bool | None = None) -> TrainData:
    """The target's train/val/unlabeled images (and the source's labeled train when ``with_source``)."""
    manifest = read_manifest(params.reports.dir)
    target, source = params.data.target, params.data.source

    cache = decoded_cache(params)

    def load(domain: str, usage: str, classes: tuple[str, ...]) -> ImageSet:
        rows = domain_rows(manifest, domain, (usage,))
        return load_images(
            rows, classes, spec.size, progress, f"{domain} {usage}", spec.interpolation, cache, spec.background
        )

    classes = class_names(manifest, target)
    data = TrainData(
        classes=classes,
        train=load(target, "train", classes),
        val=load(target, "val", classes),
        unlabeled=load(target, "unlabeled", classes),
    )
    if with_source:
        if source is None:
            raise StageInputError(
                "this strategy trains on a labeled source domain, and data.source is null: set data.source, "
                "or choose a strategy without one (strategy.force)"
            )
        data.source_classes = class_names(manifest, source)
        data.source_train = load(source, "train", data.source_classes)
    return data


def read_manifest(reports_dir: str | Path) -> pd.DataFrame:
    path = Path(reports_dir) / MANIFEST_CSV
    if not path.exists():
        raise StageInputError(f"{path}: not found; run `autotransfer validate` first")
    manifest = pd.read_csv(
        path,
        dtype={"label": "string", "sha256": "string", "path": "string"},
        keep_default_na=False,
        na_values={"label": [""]},
    )
    if "usage" not in manifest.columns:
        raise StageInputError(f"{path}: has no 'usage' column; rerun `autotransfer validate`")
    return manifest


def decoded_cache(params: Params) -> DecodedCache | None:
    cfg = params.data
    return DecodedCache(cfg.decoded_cache, cfg.workers) if cfg.decoded_cache else None


@dataclass(frozen=True)
class FileDecoder:
    """Image file ``i`` as ``(size, size, 3)`` uint8; an object, not a closure, so worker processes can take it."""

    paths: tuple[str, ...]
    size: int
    interpolation: Interpolation
    background: Background = WHITE

    def __call__(self, i: int) -> np.ndarray:
        path = Path(self.paths[i])
        try:
            image = load_rgb(path, self.background)
        except OSError as exc:  # gone, unreadable or changed since validate scanned it
            raise StageInputError(
                f"{path}: could not be read ({exc}); it changed after `autotransfer validate` scanned it; rerun it"
            ) from exc
        return np.asarray(resize_square(image, self.size, self.interpolation))


def load_images(
    rows: pd.DataFrame,
    classes: tuple[str, ...],
    size: int,
    progress: bool | None = None,
    desc: str = "loading images",
    interpolation: Interpolation = "bilinear",
    cache: DecodedCache | None = None,
    background: Background = WHITE,
) -> ImageSet:
    """Decode ``rows`` (manifest rows) at ``size``x``size``; labels index ``classes``.

    With a ``cache`` the images stay on disk (decoded once per content, read per batch);
    without, they are decoded into memory.
    """
    index = {name: i for i, name in enumerate(classes)}
    paths = rows["path"].tolist()
    labels = np.array(
        [index[label] if isinstance(label, str) and label in index else -1 for label in rows["label"]], dtype=np.int64
    )
    hashes = tuple(rows["sha256"].tolist())

    decode = FileDecoder(tuple(paths), size, interpolation, background)

    with Progress(f"decoding {desc}", len(paths), "img", progress) as bar:
        store: ImageStore
        if cache is not None and len(paths):
            store = cache.store(
                hashes,
                size,
                interpolation,
                background,
                lambda block: decode_blocks(decode, len(paths), block, cache.workers),
                bar.update,
            )
        else:
            images = np.empty((len(paths), size, size, 3), dtype=np.uint8)
            for i in range(len(paths)):
                images[i] = decode(i)
                bar.update(1)
            store = TensorStore(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous())
    return ImageSet(store, torch.from_numpy(labels), tuple(classes), hashes, tuple(paths), interpolation, background)


def data_hash(manifest: pd.DataFrame) -> str:
    """Hash of what a run trains and scores on: every used file's content, domain, split, label and usage.

    Unlike data.dvc it cannot be stale (validate hashes the files it scans), and it ignores
    files the run does not use.
    """
    used = manifest[manifest["usage"] != "unused"]
    rows = used[["domain", "split", "label", "usage", "sha256"]].astype("string").fillna("")
    lines = sorted("\t".join(row) for row in rows.itertuples(index=False, name=None))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def sample_rows(rows: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """At most ``n`` rows, drawn without replacement, in a seeded and order-independent way."""
    rows = rows.sort_values("path")
    if len(rows) <= n:
        return rows
    return rows.iloc[np.sort(np.random.default_rng(seed).permutation(len(rows))[:n])]


def domain_rows(manifest: pd.DataFrame, domain: str | None, usages: tuple[str, ...]) -> pd.DataFrame:
    """The rows of ``domain`` with these usages (none for ``None``: a source-free run's source)."""
    return manifest[(manifest["domain"] == domain) & manifest["usage"].isin(usages)]


def class_names(manifest: pd.DataFrame, domain: str | None) -> tuple[str, ...]:
    labels = manifest.loc[(manifest["domain"] == domain) & (manifest["split"] == "train"), "label"].dropna()
    return tuple(sorted(labels.unique(), key=_natural))


def _natural(name: str) -> tuple[int, int, str]:
    return (0, int(name), name) if name.isdigit() else (1, 0, name)
