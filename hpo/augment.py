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
    return warp(x, uniforms(x.shape[0], generator, x.device), widths(aug), background)


def widths(aug: Augment) -> torch.Tensor:
    """The half-widths of `uniforms`' six draws, [6, 1]: degrees of rotation, of a second rotation
    and of shear, the zoom's spread, and the shift on x and on y (fractions of the side)."""
    return torch.tensor([aug.rotate, aug.affine_degrees, aug.shear, aug.scale, aug.translate, aug.translate]).view(6, 1)


def uniforms(n: int, generator: torch.Generator | None, device) -> torch.Tensor:
    """[6, n] draws, uniform in [-1, 1), for `warp`: six `torch.rand(n)` from `generator` (None:
    the default one), in the order of `widths`."""
    return torch.stack([torch.rand(n, generator=generator, device=device, dtype=torch.float32) * 2 - 1
                        for _ in range(6)])


def warp(x: torch.Tensor, u: torch.Tensor, half_widths: torch.Tensor, background) -> torch.Tensor:
    """`x` [B, C, H, W], each image moved by its own affine map: rotation @ shear, zoomed and
    shifted by `u` [6, B] (uniforms' draws) times `half_widths` ([6, 1], or [6, B]: each image
    its own, as hpo.packed's members have)."""
    n = x.shape[0]
    rotate, degrees, shear, scale, tx, ty = u * half_widths.to(u.device)
    angle = torch.deg2rad(rotate + degrees)
    shear = torch.tan(torch.deg2rad(shear))
    zoom = 1 + scale
    cos, sin = torch.cos(angle), torch.sin(angle)
    # theta maps output coordinates to input ones: rotation @ shear, divided by the zoom
    theta = torch.stack(
        [
            torch.stack([cos, cos * shear - sin, tx * 2], dim=1),
            torch.stack([sin, sin * shear + cos, ty * 2], dim=1),
        ],
        dim=1,
    )
    theta[:, :, :2] /= zoom.view(n, 1, 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    shifted = x - background  # grid_sample pads with zeros: shift so the padding is the background
    return F.grid_sample(shifted, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + background
