"""The CUDA path: runs where a GPU is visible, skips cleanly everywhere else (CI has none)."""

from __future__ import annotations

import pytest
import torch

from hpo import data
from hpo.config import parse_config
from hpo.trainer import bf16_autocast, train

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible")]


def test_trains_on_the_gpu_with_data_resident_there(mnist_dir):
    mnist = data.load("mnist", "cuda", mnist_dir.parent)
    assert mnist.train_x.is_cuda and mnist.test_y.is_cuda
    assert bf16_autocast("cuda")
    cfg = parse_config({"model": {"preset": "mnistnet2"}, "optimizer": {"name": "sgd", "lr": 0.05},
                        "augment": {"rotate": 7, "affine_degrees": 15}, "epochs": 2,
                        "data": {"train_subset": 6000, "test_subset": 2000}})
    history = train(cfg, mnist)
    assert history[-1].test_accuracy > 0.8
    assert history[-1].train_loss < history[0].train_loss
