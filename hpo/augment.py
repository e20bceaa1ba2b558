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


def random_affine(x: torch.Tensor, aug: Augment, generator: torch.Generator, background: float,
                  half_widths: torch.Tensor | None = None) -> torch.Tensor:
    """Transform each image of `x` [B, C, H, W] with its own random affine map.

    Pixels that come from outside the image take the value `background`. `half_widths`:
    `widths(aug)` made once on x's device (a training step's, so that no step copies it there).
    """
    if not aug.enabled:
        return x
    return warp(x, uniforms(x.shape[0], generator, x.device), widths(aug) if half_widths is None else half_widths,
                background)


def widths(aug: Augment) -> torch.Tensor:
    """`aug`'s half-widths in the units `warp` works in, [6, 1]: the rotation, the second
    rotation and the shear in radians, the zoom's spread, and the shift on x and on y in
    normalized coordinates (twice the fraction of the side: they span [-1, 1])."""
    radians = torch.pi / 180
    return torch.tensor([aug.rotate * radians, aug.affine_degrees * radians, aug.shear * radians, aug.scale,
                         2 * aug.translate, 2 * aug.translate]).view(6, 1)


def uniforms(n: int, generator: torch.Generator | None, device) -> torch.Tensor:
    """[6, n] draws, uniform in [0, 1), for `warp`, from `generator` (None: the default one). On a
    CPU the same numbers as six `torch.rand(n)` in a row."""
    return torch.rand(6, n, generator=generator, device=device, dtype=torch.float32)


def warp(x: torch.Tensor, u: torch.Tensor, half_widths: torch.Tensor, background) -> torch.Tensor:
    """`x` [B, C, H, W], each image moved by its own affine map: rotation @ shear, zoomed and
    shifted, each of the six uniform in [-half width, half width) from `u` [6, B] (`uniforms`)
    and `half_widths` ([6, 1] from `widths`, or [6, B]: each image its own, as hpo.packed's
    members have). Few, whole-batch operations (about 18), since on a GPU each is a kernel
    launch, and a small net's step is made of those (bench/step_ops.py)."""
    n = x.shape[0]
    w = half_widths.to(u.device)
    rotate, degrees, shear, scale, tx, ty = torch.addcmul(-w, u, 2 * w)  # uniform in [-w, w)
    angle = rotate + degrees
    shear = torch.tan(shear)
    shrink = (scale + 1).reciprocal()
    cos, sin = torch.cos(angle) * shrink, torch.sin(angle) * shrink
    # theta maps output coordinates to input ones: (rotation @ shear) / zoom, then the shift
    theta = torch.stack([cos, cos * shear - sin, tx, sin, torch.addcmul(cos, sin, shear), ty], dim=1).view(n, 2, 3)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    shifted = x - background  # grid_sample pads with zeros: shift so the padding is the background
    return F.grid_sample(shifted, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + background
