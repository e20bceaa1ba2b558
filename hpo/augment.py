"""Batched random affine augmentation on the device, one set of parameters per sample.

What seed 002 did with torchvision's RandomRotation(±7°) and RandomAffine(15°) on one PIL
image at a time, done here for a whole batch with one `affine_grid` and one `grid_sample`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augment:
    rotate: float = 0.0          # degrees, uniform in ±rotate (RandomRotation)
    affine_degrees: float = 0.0  # degrees, a second uniform rotation (RandomAffine's degrees)
    translate: float = 0.0       # fraction of the image side, uniform in ±translate on each axis
    scale: float = 0.0           # zoom factor uniform in [1 - scale, 1 + scale]
    shear: float = 0.0           # degrees, uniform in ±shear along x

    @property
    def enabled(self) -> bool:
        return any(v > 0 for v in (self.rotate, self.affine_degrees, self.translate, self.scale, self.shear))


def random_affine(x: torch.Tensor, aug: Augment, generator: torch.Generator, background: float) -> torch.Tensor:
    """Transform each image of `x` [B, C, H, W] with its own random affine map.

    Pixels that come from outside the image take the value `background`.
    """
    if not aug.enabled:
        return x
    n = x.shape[0]

    def uniform(half_width: float) -> torch.Tensor:
        u = torch.rand(n, generator=generator, device=x.device, dtype=torch.float32)
        return (u * 2 - 1) * half_width

    angle = torch.deg2rad(uniform(aug.rotate) + uniform(aug.affine_degrees))
    shear = torch.tan(torch.deg2rad(uniform(aug.shear)))
    zoom = 1 + uniform(aug.scale)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # theta maps output coordinates to input ones: rotation @ shear, divided by the zoom
    theta = torch.stack(
        [
            torch.stack([cos, cos * shear - sin, uniform(aug.translate) * 2], dim=1),
            torch.stack([sin, sin * shear + cos, uniform(aug.translate) * 2], dim=1),
        ],
        dim=1,
    )
    theta[:, :, :2] /= zoom.view(n, 1, 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    shifted = x - background  # grid_sample pads with zeros: shift so the padding is the background
    return F.grid_sample(shifted, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + background

