"""Batched random affine augmentation: identity, per-sample randomness, background fill, determinism."""

from __future__ import annotations

import pytest
import torch

from hpo.augment import Augment, random_affine
from hpo.config import parse_config
from hpo.datasets import MNIST
from hpo.trainer import background, train

BACKGROUND = background(MNIST)  # a black MNIST pixel after normalization

SEED_002 = Augment(rotate=7, affine_degrees=15, translate=0.1, scale=0.1, shear=5)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def digits(mnist):
    return mnist.train_x[:16].clone()


def test_all_zero_is_the_identity(digits):
    assert not Augment().enabled
    out = random_affine(digits, Augment(), gen(), BACKGROUND)
    assert torch.equal(out, digits)


def test_identity_map_reproduces_the_image(digits):
    # enabled, but a zoom range too small to change float32 1.0: the sampling grid must hit pixel centres
    aug = Augment(scale=1e-12)
    assert aug.enabled
    out = random_affine(digits, aug, gen(), BACKGROUND)
    torch.testing.assert_close(out, digits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("field", ["rotate", "affine_degrees", "translate", "scale", "shear"])
def test_each_parameter_changes_the_image(digits, field):
    aug = Augment(**{field: 0.2 if field in ("translate", "scale") else 20.0})
    out = random_affine(digits, aug, gen(), BACKGROUND)
    change = (out - digits).abs().amax(dim=(1, 2, 3))
    assert change.min() > 0.01  # every image moved (by a random amount, so some only a little)
    assert change.median() > 0.5


def test_translate_is_a_fraction_of_the_side_on_both_axes():
    # one bright pixel in the middle, on a black background; translate by up to a quarter side (7 pixels)
    x = torch.zeros(64, 1, 28, 28)
    x[:, :, 14, 14] = 1.0
    out = random_affine(x, Augment(translate=0.25), gen(), 0.0)
    rows = torch.arange(28.0).view(1, 28, 1)
    cols = torch.arange(28.0).view(1, 1, 28)
    mass = out[:, 0].sum(dim=(1, 2))
    torch.testing.assert_close(mass, torch.ones(64))  # a pure shift keeps the pixel's mass
    shift_r = (out[:, 0] * rows).sum(dim=(1, 2)) / mass - 14
    shift_c = (out[:, 0] * cols).sum(dim=(1, 2)) / mass - 14
    for shift in (shift_r, shift_c):
        assert shift.abs().max() <= 7 + 1e-4
        assert shift.abs().max() > 5  # 64 draws reach well out towards 7
        assert shift.std() > 2


def test_each_sample_gets_its_own_transform(digits):
    same = digits[:1].expand(8, -1, -1, -1).contiguous()
    out = random_affine(same, SEED_002, gen(), BACKGROUND)
    flat = out.flatten(1)
    distance = torch.cdist(flat, flat)
    off_diagonal = distance[~torch.eye(8, dtype=torch.bool)]
    assert off_diagonal.min() > 0.1


def test_shape_kept_and_input_untouched(digits):
    before = digits.clone()
    out = random_affine(digits, SEED_002, gen(), BACKGROUND)
    assert out.shape == digits.shape and out.dtype == digits.dtype
    assert out.data_ptr() != digits.data_ptr()
    assert torch.equal(digits, before)


@pytest.mark.parametrize("background", [BACKGROUND, 0.0, 2.5])
def test_background_fills_what_comes_from_outside(background):
    x = torch.full((6, 1, 28, 28), 3.0)
    # translations of up to 100 image sides move every image entirely out of view
    out = random_affine(x, Augment(translate=100.0), gen(), background)
    for corner in (out[:, :, 0, 0], out[:, :, 0, -1], out[:, :, -1, 0], out[:, :, -1, -1]):
        torch.testing.assert_close(corner, torch.full_like(corner, background), atol=1e-6, rtol=0)
    torch.testing.assert_close(out, torch.full_like(out, background), atol=1e-6, rtol=0)


def test_rotation_keeps_black_corners_black(digits):
    # MNIST corners are black; rotating brings in outside pixels there, which must be black too (not 0.0)
    out = random_affine(digits, Augment(rotate=45), gen(), BACKGROUND)
    corners = out[:, 0, [0, 0, -1, -1], [0, -1, 0, -1]]
    torch.testing.assert_close(corners, torch.full_like(corners, BACKGROUND), atol=1e-5, rtol=0)


def test_same_seed_same_output(digits):
    a = random_affine(digits, SEED_002, gen(7), BACKGROUND)
    b = random_affine(digits, SEED_002, gen(7), BACKGROUND)
    c = random_affine(digits, SEED_002, gen(8), BACKGROUND)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_training_with_augmentation_leaves_the_data_alone(mnist):
    data = mnist.subset(256, 100)
    before = [t.clone() for t in (data.train_x, data.train_y, data.test_x, data.test_y)]
    cfg = parse_config({"model": {"preset": "linear"}, "epochs": 1, "batch_size": 64,
                        "augment": {"rotate": 10, "translate": 0.1, "scale": 0.1}})
    train(cfg, data)
    for old, new in zip(before, (data.train_x, data.train_y, data.test_x, data.test_y)):
        assert torch.equal(old, new)
