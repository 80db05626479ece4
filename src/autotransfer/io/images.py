"""Reading images defensively: every failure becomes a message, never a crash or a hang."""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Images above this many pixels are refused before decoding (decompression bombs): the
# default of validation.max_pixels, and what a served model accepts from anybody.
MAX_PIXELS = 4096 * 4096

Interpolation = Literal["bilinear", "bicubic", "nearest"]
RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}

# What transparent pixels are laid on (data.alpha_background); models trained before it was a
# param had theirs dropped on black (artifacts.TargetModelMeta.background).
Background = tuple[int, int, int]
WHITE: Background = (255, 255, 255)
EXIF_ORIENTATION = 0x0112

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})


@dataclass(frozen=True)
class ImageInfo:
    width: int | None
    height: int | None
    mode: str | None
    format: str | None
    error: str | None

    @property
    def readable(self) -> bool:
        return self.error is None


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class PixelLimitExceeded(Exception):
    """The header announces more pixels than allowed; nothing was decoded."""

    def __init__(self, image: Image.Image, max_pixels: int) -> None:
        self.width, self.height = image.size
        self.mode, self.format, self.max_pixels = image.mode, image.format, max_pixels
        super().__init__(f"{self.width}x{self.height} = {self.width * self.height} pixels > {max_pixels}")


# The raster formats an image is read in (training data, served requests). Pillow also opens
# EPS and PostScript (decoded by running Ghostscript where it is installed), PDF, fonts and
# others: none is an image a model should take, and Ghostscript is code run on the input.
ACCEPTED_FORMATS = ("PNG", "JPEG", "BMP", "DIB", "GIF", "TIFF", "WEBP", "PPM", "TGA", "ICO")  # JPEG opens MPO too


@contextmanager
def open_limited(source: Path | IO[bytes], max_pixels: int) -> Iterator[Image.Image]:
    """``Image.open`` that refuses a decompression bomb from its header, before decoding anything,
    and any format but ``ACCEPTED_FORMATS``."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            opened = Image.open(source, formats=ACCEPTED_FORMATS)
        except UnidentifiedImageError:
            raise UnidentifiedImageError(
                f"not an image in an accepted format ({', '.join(ACCEPTED_FORMATS)})"
            ) from None
        with opened as image:
            if image.size[0] * image.size[1] > max_pixels:
                raise PixelLimitExceeded(image, max_pixels)
            yield image


def inspect_image(path: Path, max_pixels: int) -> ImageInfo:
    """Open and fully decode ``path``; the header is checked against ``max_pixels`` first.

    Decoding everything (not just the header) is what catches truncated files; the pixel
    check before decoding is what keeps a decompression bomb from eating the memory.
    """
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        return ImageInfo(None, None, None, None, f"not an image file (extension {path.suffix or 'none'!r})")
    if path.stat().st_size == 0:
        return ImageInfo(None, None, None, None, "empty file (0 bytes)")
    width = height = None
    mode = fmt = None
    try:
        with open_limited(path, max_pixels) as image:
            width, height = image.size
            mode, fmt = image.mode, image.format
            image.load()
    except PixelLimitExceeded as exc:
        return ImageInfo(
            exc.width,
            exc.height,
            exc.mode,
            exc.format,
            f"decompression bomb refused: {exc.width}x{exc.height} = {exc.width * exc.height} pixels "
            f"> validation.max_pixels = {max_pixels}",
        )
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return ImageInfo(width, height, mode, fmt, f"decompression bomb refused: {exc}")
    except Exception as exc:  # any decoder failure is a property of the file, not a bug here
        return ImageInfo(width, height, mode, fmt, f"unreadable image: {type(exc).__name__}: {exc}")
    return ImageInfo(width, height, mode, fmt, None)


def upright(image: Image.Image) -> Image.Image:
    """The image as it is meant to be seen: a phone photo's EXIF orientation applied (no tag: unchanged)."""
    if image.getexif().get(EXIF_ORIENTATION, 1) in (None, 1):
        return image
    return ImageOps.exif_transpose(image)


def to_rgb(image: Image.Image, background: Background = WHITE) -> Image.Image:
    """Any Pillow image to upright 8-bit RGB: EXIF orientation applied, 16-bit and float images
    rescaled, transparency composited on ``background``."""
    image = upright(image)
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max(initial=0) > 255 else 255.0
        scaled = np.clip(np.rint(array / top * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(scaled, mode="L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        under = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(under, rgba).convert("RGB")
    return image.convert("RGB")


def load_rgb(path: Path, background: Background = WHITE) -> Image.Image:
    with Image.open(path, formats=ACCEPTED_FORMATS) as image:
        image.load()
        return to_rgb(image, background)


def resize_square(image: Image.Image, size: int, interpolation: Interpolation = "bilinear") -> Image.Image:
    """``size`` x ``size``: the shorter side resized to ``size`` (aspect kept), then the centre cropped.

    Training, evaluation and serving share it; a square image is simply resized.
    """
    width, height = image.size
    if (width, height) == (size, size):
        return image
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    left, top = (new_w - size) // 2, (new_h - size) // 2
    # One resample of just the crop's source box: the same as resizing all and cropping.
    box = (left / scale, top / scale, (left + size) / scale, (top + size) / scale)
    return image.resize((size, size), resample=RESAMPLE[interpolation], box=box)
