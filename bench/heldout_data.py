"""Held-out image sets outside the digits family, for measuring recipes and the automatic choice.

Nothing in the product depends on them and no threshold was set on them before they
existed; they are built offline and deterministically from files that ship inside the
installed packages (matplotlib's fonts, scikit-image's and scikit-learn's sample images).
scikit-image's ``lfw_subset`` is never read: it is kept for acceptance, as is Debian's
``dataset-fashion-mnist``.

| domain      | classes | what                                                                  | size, mode   |
|-------------|---------|-----------------------------------------------------------------------|--------------|
| letters     | 10      | capital letters A-J in 20 fonts, rotated, sheared, thickened, shifted | 40 px, grey  |
| letters-m   | 10      | the same letters blended on colour photo crops, |crop - glyph|       | 40 px, colour|
| scenes      | 8       | which photograph a crop comes from (8 colour photographs)             | 96 px, colour|
| textures    | 7       | which grey texture a crop comes from (brick, grass, gravel, ...)      | 64 px, grey  |

``letters -> letters-m`` is the adaptation pair (a labeled clean source, a shifted target).
In ``scenes`` and ``textures`` test crops come from the right 40 % of each picture: a test crop
never overlaps a training crop. Up to data seed 2, train and val crops both come from the left
60 %, so a val crop overlaps training crops and val measures memory, not what test measures (at
100 labels per class and more, where val chooses, every model scored 1.000 there: BENCHMARKS.md
§11). From data seed 3 on (``VAL_REGION_FROM_SEED``) val has a region of its own: train the left
45 %, val 45-60 %, test the right 40 %; no crop overlaps a crop of another split.

    python bench/heldout_data.py [--out bench/results/tmp/heldout] [--seed 0]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

DOMAINS = ("letters", "letters-m", "scenes", "textures")
LETTERS = tuple("ABCDEFGHIJ")
# per class: train, val, test (the label sweeps cap train+val: 3, 10, 30, 100, all)
COUNTS = {"letters": (150, 30, 60), "letters-m": (150, 30, 60), "scenes": (120, 25, 50), "textures": (120, 25, 50)}
SCENES = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "motorcycle_left", "china", "flower")
TEXTURES = ("brick", "grass", "gravel", "moon", "text", "page", "coins")
# Data seeds from this one on give scenes' and textures' val crops a region of their own (the docstring).
VAL_REGION_FROM_SEED = 3
# Each split's horizontal share of a picture: (from, to), as fractions of its width.
REGIONS = {"train": (0.0, 0.6), "val": (0.0, 0.6), "test": (0.6, 1.0)}
REGIONS_OWN_VAL = {"train": (0.0, 0.45), "val": (0.45, 0.6), "test": (0.6, 1.0)}
CROPPED = ("scenes", "textures")  # the domains cut from pictures by region (the others are drawn whole)


def val_overlaps_training(domain: str, seed: int) -> bool:
    """Whether ``domain`` built with data ``seed`` cuts its val crops from its training crops' region."""
    return domain in CROPPED and seed < VAL_REGION_FROM_SEED


def fonts() -> list[Path]:
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    names = [
        "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
        "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf", "DejaVuSansMono-BoldOblique.ttf",
        "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
        "STIXGeneral.ttf", "STIXGeneralBol.ttf",
        "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf", "cmr10.ttf", "cmss10.ttf", "cmtt10.ttf", "cmb10.ttf",
    ]
    found = [folder / name for name in names if (folder / name).exists()]
    return [font for font in found if draws_every_letter(font)]


def draws_every_letter(font: Path) -> bool:
    """Whether ``font`` has a glyph for each letter (a missing one renders blank or as the missing-glyph box).

    matplotlib's DejaVu*Display fonts hold no Latin letters: their images were blank, identical across
    splits, and validation's leakage check refused them (BENCHMARKS.md §11 was measured after this).
    """
    face = ImageFont.truetype(str(font), 48)
    missing = np.asarray(face.getmask("\U0010FFFD"))
    for letter in LETTERS:
        mask = np.asarray(face.getmask(letter))
        if mask.sum() == 0 or (mask.shape == missing.shape and (mask == missing).all()):
            return False
    return True


def glyph(letter: str, font: Path, rng: np.random.Generator, size: int = 40) -> np.ndarray:
    """White-on-black letter, float in [0, 1], randomly sized, rotated, sheared, thickened and shifted."""
    canvas = 96
    image = Image.new("L", (canvas, canvas), 0)
    face = ImageFont.truetype(str(font), int(rng.integers(40, 54)))
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = draw.textbbox((0, 0), letter, font=face)
    draw.text(((canvas - right - left) / 2, (canvas - bottom - top) / 2), letter, fill=255, font=face)
    thickness = int(rng.integers(0, 3))
    if thickness:
        image = image.filter(ImageFilter.MaxFilter(2 * thickness + 1))
    shear = float(rng.uniform(-0.25, 0.25))
    image = image.transform((canvas, canvas), Image.Transform.AFFINE, (1, shear, -shear * canvas / 2, 0, 1, 0),
                            resample=Image.Resampling.BILINEAR)
    image = image.rotate(float(rng.uniform(-15, 15)), resample=Image.Resampling.BILINEAR)
    shift = rng.integers(-5, 6, size=2)
    image = image.transform((canvas, canvas), Image.Transform.AFFINE, (1, 0, int(shift[0]), 0, 1, int(shift[1])))
    box = 14
    image = image.crop((box, box, canvas - box, canvas - box)).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float64) / 255.0


def photos(names: tuple[str, ...], grey: bool) -> dict[str, np.ndarray]:
    """Bundled sample pictures as float arrays in [0, 1] (H, W, 3) or (H, W); never lfw_subset."""
    import skimage.data
    from sklearn.datasets import load_sample_image

    out = {}
    for name in names:
        if name in ("china", "flower"):
            picture = load_sample_image(f"{name}.jpg")
        elif name == "motorcycle_left":
            picture = skimage.data.stereo_motorcycle()[0]
        else:
            picture = getattr(skimage.data, name)()
        picture = np.asarray(picture, dtype=np.float64)
        picture = picture / (255.0 if picture.max() > 1.5 else 1.0)
        if grey and picture.ndim == 3:
            picture = picture[..., :3].mean(2)
        if not grey and picture.ndim == 2:
            picture = np.stack([picture] * 3, axis=2)
        out[name] = picture[..., :3] if picture.ndim == 3 else picture
    return out


def crop(picture: np.ndarray, rng: np.random.Generator, side: int, region: tuple[float, float] = REGIONS["train"],
         scale=(0.15, 0.35)) -> np.ndarray:
    """A random square crop of ``picture`` from ``region`` (a share of its width: from, to), resized."""
    h, w = picture.shape[:2]
    x0, x1 = int(round(region[0] * w)), int(round(region[1] * w))
    s = int(min(h, x1 - x0, max(8, rng.uniform(*scale) * min(h, w))))
    top = int(rng.integers(0, h - s + 1))
    left = int(rng.integers(x0, x1 - s + 1))
    patch = picture[top : top + s, left : left + s]
    patch = np.rot90(patch, int(rng.integers(0, 4)))
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    gain, offset = rng.uniform(0.8, 1.2), rng.uniform(-0.08, 0.08)
    patch = np.clip(patch * gain + offset, 0, 1)
    mode = "RGB" if patch.ndim == 3 else "L"
    image = Image.fromarray(np.rint(patch * 255).astype(np.uint8), mode)
    return np.asarray(image.resize((side, side), Image.Resampling.BILINEAR))


def save(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, optimize=False)


def splits(domain: str) -> list[tuple[str, int]]:
    train, val, test = COUNTS[domain]
    return [("train", train), ("val", val), ("test", test)]


def build(out: Path, seed: int = 0) -> Path:
    """Write every held-out domain under ``out`` (replaced if present); deterministic for a seed."""
    if out.exists():
        shutil.rmtree(out)
    faces = fonts()
    backgrounds = list(photos(SCENES, grey=False).values())
    for domain in ("letters", "letters-m"):
        rng = np.random.default_rng([seed, DOMAINS.index(domain)])
        for split, n in splits(domain):
            for label in LETTERS:
                for i in range(n):
                    ink = glyph(label, faces[int(rng.integers(len(faces)))], rng)
                    if domain == "letters":
                        pixels = np.rint(255 * (1 - ink)).astype(np.uint8)  # black on white
                    else:
                        background = backgrounds[int(rng.integers(len(backgrounds)))]
                        patch = crop(background, rng, 40, scale=(0.1, 0.3)) / 255.0
                        pixels = np.rint(255 * np.abs(patch - ink[..., None])).astype(np.uint8)
                    save(pixels, out / domain / split / label / f"{i:04d}.png")
    for domain, names, side, grey in zip(CROPPED, (SCENES, TEXTURES), (96, 64), (False, True), strict=True):
        regions = REGIONS if val_overlaps_training(domain, seed) else REGIONS_OWN_VAL
        rng = np.random.default_rng([seed, DOMAINS.index(domain)])
        pictures = photos(names, grey)
        for split, n in splits(domain):
            for label, picture in pictures.items():
                for i in range(n):
                    save(crop(picture, rng, side, regions[split]), out / domain / split / label / f"{i:04d}.png")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "tmp" / "heldout")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(build(args.out, args.seed))


if __name__ == "__main__":
    main()
