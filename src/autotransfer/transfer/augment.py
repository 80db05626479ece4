"""Batched augmentation on uint8 image tensors, one random draw per image.

Augmentation aimed at the shift is the biggest lever measured here (docs/strategies.md).
- geometric: rotation, scale and shift;
- color: channel shuffle, per-channel inversion, brightness/contrast, some grayscale.
Everything runs as a few tensor operations on the whole batch (no per-image Python loop),
from an explicit generator so that a resumed run draws exactly what it would have drawn.
"""

from __future__ import annotations

import math

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
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
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
    permutation = torch.argsort(torch.rand(n, 3, generator=generator), dim=1)  # channel shuffle
    x = torch.gather(x, 1, permutation[:, :, None, None].expand_as(x))
    invert = (torch.rand(n, 3, 1, 1, generator=generator) < p_invert).float()
    x = invert * (255.0 - x) + (1 - invert) * x
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    c = 1 + (torch.rand(n, 1, 1, 1, generator=generator) * 2 - 1) * contrast
    b = (torch.rand(n, 1, 1, 1, generator=generator) * 2 - 1) * brightness * 255
    x = (x - mean) * c + mean + b
    gray = (torch.rand(n, 1, 1, 1, generator=generator) < p_gray).float()
    x = gray * x.mean(dim=1, keepdim=True).expand_as(x) + (1 - gray) * x
    return x.round().clamp(0, 255).to(torch.uint8)


def augment(images: torch.Tensor, generator: torch.Generator, use_geometric: bool, use_color: bool) -> torch.Tensor:
    if use_geometric:
        images = geometric(images, generator)
    if use_color:
        images = color(images, generator)
    return images
