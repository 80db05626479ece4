"""Raw images in, labels out: the preprocessing a trained model carries with it.

The same function serves ``autotransfer predict`` on a local model folder, the MLflow
pyfunc model (``models:/NAME@champion``, ``mlflow models serve``) and the registry's
champion-vs-challenger scoring, so all three see an image exactly as ``evaluate`` did:
decoded to upright RGB (EXIF orientation applied, transparency laid on the background the
model was trained with, 16-bit rescaled), resized with the model's filter to its input size,
normalised with the statistics recorded at training time.
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from autotransfer.config import ServingLimits
from autotransfer.errors import ImageDecodeError
from autotransfer.io.images import (
    MAX_PIXELS,
    WHITE,
    Background,
    Interpolation,
    PixelLimitExceeded,
    open_limited,
    resize_square,
    to_rgb,
)
from autotransfer.models.weights import TrainedModel


@dataclass(frozen=True)
class Prediction:
    """The most probable label, and the ``top_k`` most probable (label, probability), best first."""

    label: str
    probability: float
    top: tuple[tuple[str, float], ...]


class Predictor(Protocol):
    """Image files in, one prediction per file out (``registry.pyfunc.load_predictor`` makes one)."""

    def __call__(self, paths: list[Path], top_k: int = 1) -> list[Prediction]: ...


def decode_image(
    data: bytes | str,
    size: int,
    name: str = "image",
    max_pixels: int = MAX_PIXELS,
    interpolation: Interpolation = "bilinear",
    background: Background = WHITE,
) -> np.ndarray:
    """Bytes (or base64 text) of one image file -> uint8 (size, size, 3)."""
    if isinstance(data, str):
        try:
            data = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ImageDecodeError(f"{name}: not valid base64 ({exc})") from None
    try:
        with open_limited(io.BytesIO(data), max_pixels) as image:
            image.load()
            rgb = to_rgb(image, background)
    except PixelLimitExceeded as exc:
        raise ImageDecodeError(
            f"{name}: {exc.width}x{exc.height} pixels is more than the {max_pixels} accepted"
        ) from None
    except Exception as exc:  # any decoder failure is a property of the input
        raise ImageDecodeError(f"{name}: not a readable image ({type(exc).__name__}: {exc})") from None
    return np.asarray(resize_square(rgb, size, interpolation), dtype=np.uint8)


def classify(
    trained: TrainedModel,
    images: list[bytes | str],
    names: list[str] | None = None,
    batch_size: int = 256,
    top_k: int = 1,
) -> list[Prediction]:
    """Label and softmax probability of each image under ``trained``, with its ``top_k`` labels.

    An image that does not decode raises ``ImageDecodeError`` naming it (``classify_each`` answers
    per image instead)."""
    names = names or [f"image {i}" for i in range(len(images))]
    out: list[Prediction] = []
    for start in range(0, len(images), batch_size):
        arrays = [
            _decoded(trained, data, name)
            for data, name in zip(images[start : start + batch_size], names[start : start + batch_size])
        ]
        out += _predict(trained, arrays, top_k)
    return out


def classify_each(
    trained: TrainedModel, images: list[bytes | str], limits: ServingLimits, top_k: int = 1, batch_size: int = 256
) -> list[Prediction | str]:
    """One answer per image, in order: its prediction, or why it got none (a request past
    ``limits.max_images``, a file over ``limits.max_image_bytes``, an image that does not decode).
    One bad image costs its own answer, never the request's."""
    out: list[Prediction | str] = []
    for start in range(0, len(images), batch_size):
        answers: list[Prediction | str | None] = []
        arrays: list[np.ndarray] = []
        for i, data in enumerate(images[start : start + batch_size], start):
            name = f"image {i}"
            size = len(data) if isinstance(data, bytes) else len(data) * 3 // 4  # base64: 4 characters, 3 bytes
            if i >= limits.max_images:
                answers.append(
                    f"{name}: past the {limits.max_images} images one request may hold "
                    "(registry.serving.max_images when it was registered): send it in another request"
                )
            elif size > limits.max_image_bytes:
                answers.append(
                    f"{name}: {size} bytes, more than the {limits.max_image_bytes} accepted "
                    "(registry.serving.max_image_bytes when it was registered)"
                )
            else:
                try:
                    arrays.append(_decoded(trained, data, name))
                    answers.append(None)
                except ImageDecodeError as exc:
                    answers.append(str(exc))
        predictions = iter(_predict(trained, arrays, top_k) if arrays else [])
        out += [next(predictions) if answer is None else answer for answer in answers]
    return out


def _decoded(trained: TrainedModel, data: bytes | str, name: str) -> np.ndarray:
    return decode_image(
        data, trained.model.input_size, name, interpolation=trained.meta.interpolation, background=trained.background
    )


@torch.no_grad()
def _predict(trained: TrainedModel, arrays: list[np.ndarray], top_k: int) -> list[Prediction]:
    """Decoded images (one batch) -> predictions."""
    trained.model.eval()
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    probs = torch.softmax(trained.model(trained.normalization(batch)).float(), dim=1)
    best, index = probs.topk(min(max(top_k, 1), probs.shape[1]), dim=1)
    out: list[Prediction] = []
    for row_p, row_i in zip(best.tolist(), index.tolist()):
        top = tuple((trained.head_classes[i], float(p)) for p, i in zip(row_p, row_i))
        out.append(Prediction(top[0][0], top[0][1], top))
    return out
