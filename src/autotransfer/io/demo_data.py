"""The built-in demo domains, made only from data that ships inside installed packages.

- ``synth-digits`` (source): digits 0-9 rendered with the TrueType fonts bundled with
  matplotlib (DejaVu, STIX, Computer Modern), randomly rotated, sheared, thickened and
  shifted, then reduced exactly like the UCI handwritten digits: a 32x32 binary bitmap
  summed over 4x4 blocks into an 8x8 grid of counts 0..16.
- ``digits`` (target, real): scikit-learn's bundled UCI handwritten digits (1,797).
- ``digits-m`` (target, shifted): the same digits blended MNIST-M style,
  pixel = |photo patch - digit| per channel, over random crops of the photographs that
  ship inside scikit-learn and scikit-image.

Everything is drawn from seeded generators and written as PNG with pinned libraries, so a
rebuild is byte-identical and matches the hash recorded in ``data.dvc``.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from tqdm.auto import tqdm

from autotransfer.config import DemoConfig

DOMAINS = ("synth-digits", "digits", "digits-m")
CLASSES = tuple(str(d) for d in range(10))
# Fractions of each class: the real digits' test split is 30% (539 images, docs/data.md).
TEST_FRACTION = 0.30
VAL_FRACTION = 0.10
SYNTH_VAL_FRACTION = 0.15
SYNTH_TEST_FRACTION = 0.15
_GRID_MAX = 16  # UCI digits: 4x4 block counts


@dataclass(frozen=True)
class Sample:
    split: str
    label: str
    name: str
    image: Image.Image


def grid_to_image(grid: np.ndarray, size: int) -> Image.Image:
    """An 8x8 count grid (0..16) to a white-on-black grayscale image of ``size`` pixels."""
    pixels = np.rint(np.asarray(grid, dtype=np.float64) * (255.0 / _GRID_MAX)).astype(np.uint8)
    return Image.fromarray(pixels, mode="L").resize((size, size), Image.Resampling.BILINEAR)


def bitmap_to_grid(bitmap: np.ndarray) -> np.ndarray:
    """A 32x32 binary bitmap to the UCI 8x8 grid of ink counts per 4x4 block."""
    return bitmap.reshape(8, 4, 8, 4).sum(axis=(1, 3)).astype(np.uint8)


def stratified_splits(
    labels: np.ndarray, groups: np.ndarray, rng: np.random.Generator, val_fraction: float, test_fraction: float
) -> np.ndarray:
    """Split names per item; items sharing a group (identical content) share a split."""
    splits = np.empty(len(labels), dtype=object)
    for label in np.unique(labels):
        unique_groups = np.unique(groups[labels == label])
        order = unique_groups[rng.permutation(len(unique_groups))]
        n_test = round(len(order) * test_fraction)
        n_val = round(len(order) * val_fraction)
        for position, group in enumerate(order):
            split = "test" if position < n_test else "val" if position < n_test + n_val else "train"
            splits[(groups == group) & (labels == label)] = split
    return splits


def _grid_key(grid: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(grid, dtype=np.uint8).tobytes()).hexdigest()


def real_digits(size: int, seed: int) -> Iterator[Sample]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    grids = digits.images.astype(np.uint8)
    labels = digits.target.astype(str)
    keys = np.array([_grid_key(g) for g in grids])
    splits = stratified_splits(labels, keys, np.random.default_rng([seed, 1]), VAL_FRACTION, TEST_FRACTION)
    for index, (grid, label, split) in enumerate(zip(grids, labels, splits)):
        yield Sample(split, label, f"{index:05d}.png", grid_to_image(grid, size))


def _photos() -> list[np.ndarray]:
    """The color photographs bundled with scikit-learn and scikit-image (no download)."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    photos = list(load_sample_images().images)
    for name in ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "retina"):
        photos.append(getattr(skimage.data, name)())
    return [np.ascontiguousarray(p[..., :3], dtype=np.uint8) for p in photos]


def blend_mnist_m(digit: Image.Image, photo: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """MNIST-M: |patch - digit| per channel, the patch a random crop of ``photo``."""
    size = digit.size[0]
    crop = int(rng.integers(size, 4 * size + 1))
    top = int(rng.integers(0, photo.shape[0] - crop + 1))
    left = int(rng.integers(0, photo.shape[1] - crop + 1))
    patch = Image.fromarray(photo[top : top + crop, left : left + crop]).resize((size, size), Image.Resampling.BILINEAR)
    blended = np.abs(np.asarray(patch, dtype=np.int16) - np.asarray(digit, dtype=np.int16)[..., None])
    return Image.fromarray(blended.astype(np.uint8), mode="RGB")


def shifted_digits(size: int, seed: int) -> Iterator[Sample]:
    photos = _photos()
    rng = np.random.default_rng([seed, 2])
    for sample in real_digits(size, seed):
        photo = photos[int(rng.integers(len(photos)))]
        yield Sample(sample.split, sample.label, sample.name, blend_mnist_m(sample.image, photo, rng))


def font_files() -> list[Path]:
    """TrueType fonts that ship with matplotlib, so the set (and the pixels) do not depend on the OS."""
    try:
        import matplotlib

        folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    except ImportError:
        folder = Path("/usr/share/fonts/truetype/dejavu")
    wanted = ("DejaVuSans", "DejaVuSerif", "DejaVuSansMono", "STIXGeneral", "cmr10", "cmss10", "cmtt10")
    return sorted(p for p in folder.glob("*.ttf") if p.stem.startswith(wanted) and "Display" not in p.stem)


def render_digit(digit: str, font_path: Path | None, rng: np.random.Generator) -> np.ndarray:
    """One synthetic digit as the UCI 8x8 count grid."""
    canvas = 96
    image = Image.new("L", (canvas, canvas), 0)
    font_size = int(rng.integers(44, 64))
    font = ImageFont.truetype(str(font_path), font_size) if font_path else ImageFont.load_default(font_size)
    ImageDraw.Draw(image).text(
        (canvas / 2, canvas / 2),
        digit,
        fill=255,
        font=font,
        anchor="mm",
        stroke_width=int(rng.integers(0, 4)),
        stroke_fill=255,
    )
    angle = np.deg2rad(rng.uniform(-15, 15))
    shear = rng.uniform(-0.3, 0.3)
    # Inverse affine map (output -> input) about the centre: rotation then horizontal shear.
    cos, sin = np.cos(angle), np.sin(angle)
    a, b, d, e = cos, sin + shear * cos, -sin, cos - shear * sin
    c = canvas / 2 - a * canvas / 2 - b * canvas / 2
    f = canvas / 2 - d * canvas / 2 - e * canvas / 2
    image = image.transform((canvas, canvas), Image.Transform.AFFINE, (a, b, c, d, e, f), Image.Resampling.BILINEAR)
    binary = image.point(lambda v: 255 if v > 127 else 0)
    box = binary.getbbox() or (0, 0, canvas, canvas)
    glyph = binary.crop(box)
    # Size-normalise into the 32x32 box like the NIST preprocessing, then shift a little.
    longest = int(rng.integers(24, 33))
    scale = longest / max(glyph.size)
    width, height = max(1, round(glyph.size[0] * scale)), max(1, round(glyph.size[1] * scale))
    glyph = glyph.resize((width, height), Image.Resampling.BILINEAR)
    bitmap = Image.new("L", (32, 32), 0)
    left = (32 - width) // 2 + int(rng.integers(-2, 3))
    top = (32 - height) // 2 + int(rng.integers(-2, 3))
    bitmap.paste(glyph, (min(max(left, 0), 32 - width), min(max(top, 0), 32 - height)))
    return bitmap_to_grid(np.asarray(bitmap) > 127)


def synth_digits(size: int, per_class: int, seed: int, exclude: set[str]) -> Iterator[Sample]:
    """Rendered digits; grids equal to a real digit or to an earlier rendering are redrawn."""
    fonts: list[Path | None] = list(font_files()) or [None]
    rng = np.random.default_rng([seed, 3])
    seen = set(exclude)
    labels, grids = [], []
    for label in CLASSES:
        made = 0
        while made < per_class:
            grid = render_digit(label, fonts[int(rng.integers(len(fonts)))], rng)
            key = _grid_key(grid)
            if key in seen:
                continue
            seen.add(key)
            labels.append(label)
            grids.append(grid)
            made += 1
    labels_array = np.array(labels)
    splits = stratified_splits(
        labels_array, np.arange(len(labels)), np.random.default_rng([seed, 4]), SYNTH_VAL_FRACTION, SYNTH_TEST_FRACTION
    )
    for index, (grid, label, split) in enumerate(zip(grids, labels, splits)):
        yield Sample(split, label, f"{index:05d}.png", grid_to_image(grid, size))


def build_demo_data(cfg: DemoConfig, out: Path | None = None, progress: bool | None = None) -> dict[str, dict]:
    """Write the three demo domains under ``out`` (default ``cfg.out``); return counts per domain/split.

    Each domain is written to a temporary folder and swapped in whole, so an interrupted
    build never leaves a half-written domain, and a rebuild removes stale files.
    """
    out = Path(out or cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    from sklearn.datasets import load_digits

    real_keys = {_grid_key(g) for g in load_digits().images.astype(np.uint8)}
    plan = {
        "synth-digits": (
            synth_digits(cfg.image_size, cfg.synth_per_class, cfg.seed, real_keys),
            cfg.synth_per_class * len(CLASSES),
        ),
        "digits": (real_digits(cfg.image_size, cfg.seed), 1797),
        "digits-m": (shifted_digits(cfg.image_size, cfg.seed), 1797),
    }
    counts: dict[str, dict] = {}
    for domain, (samples, total) in plan.items():
        counts[domain] = _write_domain(out / domain, samples, total, progress)
    return counts


def _write_domain(folder: Path, samples: Iterator[Sample], total: int, progress: bool | None) -> dict[str, int]:
    staging = folder.with_name(f".{folder.name}.building")
    if staging.exists():
        shutil.rmtree(staging)
    counts: dict[str, int] = {}
    bar = tqdm(
        samples,
        total=total,
        desc=f"demo-data {folder.name}",
        unit="img",
        disable=None if progress is None else not progress,
    )
    for sample in bar:
        path = staging / sample.split / sample.label / sample.name
        path.parent.mkdir(parents=True, exist_ok=True)
        sample.image.save(path, format="PNG")
        counts[sample.split] = counts.get(sample.split, 0) + 1
    if folder.exists():
        shutil.rmtree(folder)
    staging.rename(folder)
    return dict(sorted(counts.items()))
