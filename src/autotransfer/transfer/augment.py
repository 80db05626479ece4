"""Batched augmentation on uint8 image tensors, one random draw per image.

Augmentation aimed at the shift is the biggest lever measured here (docs/strategies.md).
- geometric: rotation, scale and shift;
- color: channel shuffle, per-channel inversion, brightness/contrast, some grayscale;
- crop and flip, for photos: a random resized crop (a share of the area and an aspect
  ratio drawn per image, as torchvision's RandomResizedCrop) and a horizontal flip.
Everything runs as a few tensor operations on the whole batch (no per-image Python loop),
on the batch's device (the GPU when training runs there), with every random draw made on
the CPU from an explicit generator: a resumed run draws exactly what it would have drawn,
on any device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def geometric(
    images: torch.Tensor,
    generator: torch.Generator,
    degrees: float = 10.0,
    scale: tuple[float, float] = (0.9, 1.1),
    shift: float = 0.1,
) -> torch.Tensor:
    n = images.shape[0]
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(degrees)
    factor = scale[0] + torch.rand(n, generator=generator) * (scale[1] - scale[0])
    offset = (torch.rand(n, 2, generator=generator) * 2 - 1) * shift * 2  # grid units span [-1, 1]
    cos, sin = torch.cos(angle) / factor, torch.sin(angle) / factor
    theta = torch.stack([torch.stack([cos, -sin, offset[:, 0]], 1), torch.stack([sin, cos, offset[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(images.device), list(images.shape), align_corners=False)
    out = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8)


def color(
    images: torch.Tensor,
    generator: torch.Generator,
    p_invert: float = 0.5,
    p_gray: float = 0.2,
    brightness: float = 0.3,
    contrast: float = 0.3,
) -> torch.Tensor:
    n = images.shape[0]
    x = images.float()
    permutation = torch.argsort(torch.rand(n, 3, generator=generator), dim=1).to(x.device)  # channel shuffle
    x = torch.gather(x, 1, permutation[:, :, None, None].expand_as(x))
    invert = (torch.rand(n, 3, 1, 1, generator=generator) < p_invert).float().to(x.device)
    x = invert * (255.0 - x) + (1 - invert) * x
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    c = (1 + (torch.rand(n, 1, 1, 1, generator=generator) * 2 - 1) * contrast).to(x.device)
    b = ((torch.rand(n, 1, 1, 1, generator=generator) * 2 - 1) * brightness * 255).to(x.device)
    x = (x - mean) * c + mean + b
    gray = (torch.rand(n, 1, 1, 1, generator=generator) < p_gray).float().to(x.device)
    x = gray * x.mean(dim=1, keepdim=True).expand_as(x) + (1 - gray) * x
    return x.round().clamp(0, 255).to(torch.uint8)


def crop_flip(
    images: torch.Tensor,
    generator: torch.Generator,
    crop: bool,
    flip: bool,
    area: tuple[float, float] = (0.25, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> torch.Tensor:
    """A random resized crop of each image (its area share and aspect drawn per image) and/or a mirror image."""
    n = images.shape[0]
    ones = torch.ones(n)
    sx, sy, tx, ty = ones, ones, torch.zeros(n), torch.zeros(n)
    if crop:
        share = area[0] + torch.rand(n, generator=generator) * (area[1] - area[0])
        log_ratio = math.log(ratio[0]) + torch.rand(n, generator=generator) * (math.log(ratio[1]) - math.log(ratio[0]))
        aspect = torch.exp(log_ratio)
        sx = torch.sqrt(share * aspect).clamp(max=1.0)  # crop width / image width
        sy = torch.sqrt(share / aspect).clamp(max=1.0)
        tx = (torch.rand(n, generator=generator) * 2 - 1) * (1 - sx)  # centre kept inside the image
        ty = (torch.rand(n, generator=generator) * 2 - 1) * (1 - sy)
    if flip:
        sx = sx * torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    zero = torch.zeros(n)
    theta = torch.stack([torch.stack([sx, zero, tx], 1), torch.stack([zero, sy, ty], 1)], 1)
    grid = F.affine_grid(theta.to(images.device), list(images.shape), align_corners=False)
    out = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8)


@dataclass(frozen=True)
class Augmentation:
    """Which augmentations a strategy's batches get (train.augment, train.augment_per_strategy)."""

    geometric: bool
    colour: bool
    crop: bool = False
    flip: bool = False


def to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch on ``device``: through pinned memory and a non-blocking copy on CUDA."""
    if device.type == "cuda":
        return batch.pin_memory().to(device, non_blocking=True)
    return batch.to(device)


def augment(images: torch.Tensor, generator: torch.Generator, which: Augmentation) -> torch.Tensor:
    if which.crop or which.flip:
        images = crop_flip(images, generator, which.crop, which.flip)
    if which.geometric:
        images = geometric(images, generator)
    if which.colour:
        images = color(images, generator)
    return images
