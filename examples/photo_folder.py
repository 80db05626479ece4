"""A folder of photos laid out as a user's own would be: ``<out>/<class>/*.jpg``, nothing else.

No split folders, no source domain; some photos stored turned with an EXIF orientation tag
(as phones write them) and some as PNGs with a transparent border. The classes are the
photographs that ship inside scikit-image (a cat, a coffee cup, a rocket, an astronaut, a
colour wheel): each image is a random crop of one of them. Nothing is downloaded.

    python examples/photo_folder.py photos
    autotransfer run -S data.source=null -S data.target=$PWD/photos
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

PICTURES = {"cat": "chelsea", "coffee": "coffee", "rocket": "rocket", "astronaut": "astronaut", "wheel": "colorwheel"}
EXIF_ORIENTATION = 0x0112


def build(out: Path, per_class: int = 40, side: int = 160, seed: int = 0) -> dict[str, int]:
    import skimage.data

    rng = np.random.default_rng(seed)
    counts = {}
    for label, name in PICTURES.items():
        picture = Image.fromarray(np.asarray(getattr(skimage.data, name)())[..., :3])
        folder = out / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            width, height = picture.size
            crop = int(min(width, height) * rng.uniform(0.35, 0.8))
            left, top = int(rng.integers(0, width - crop + 1)), int(rng.integers(0, height - crop + 1))
            image = picture.crop((left, top, left + crop, top + crop)).resize((side, side), Image.Resampling.BILINEAR)
            if rng.random() < 0.5:
                image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            if i % 5 == 0:  # stored turned 90° counter-clockwise, tagged "rotate 90° clockwise to show"
                exif = Image.Exif()
                exif[EXIF_ORIENTATION] = 6
                image.rotate(90, expand=True).save(folder / f"IMG_{i:04d}.jpg", exif=exif, quality=92)
            elif i % 7 == 0:  # a cut-out: transparent border
                rgba = image.convert("RGBA")
                alpha = np.zeros((side, side), dtype=np.uint8)
                alpha[side // 8 : -side // 8, side // 8 : -side // 8] = 255
                rgba.putalpha(Image.fromarray(alpha))
                rgba.save(folder / f"IMG_{i:04d}.png")
            else:
                image.save(folder / f"IMG_{i:04d}.jpg", quality=92)
        counts[label] = per_class
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to create (one sub-folder per class)")
    parser.add_argument("--per-class", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    counts = build(args.out, args.per_class, seed=args.seed)
    print(f"{args.out}: {sum(counts.values())} photos in {len(counts)} classes ({', '.join(counts)})")


if __name__ == "__main__":
    main()
