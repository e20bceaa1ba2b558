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


def test_hpo_run_on_cuda_with_two_workers_prunes_and_counts_exactly(tmp_path):
    from cli_helpers import TINY, hpo, run_args, trials_of, write_study  # noqa: PLC0415
    from hpo import records  # noqa: PLC0415

    # 10,000 images, 5 epochs: a trial lasts long enough on a GPU for the second worker to start
    path = write_study(tmp_path, "gpu", base={**TINY["base"], "epochs": 5,
                                              "data": {"train_subset": 10000, "test_subset": 1000}},
                       budget={"max_params": 3000, "epochs": 5})
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    done = hpo(*run_args(path, url, 10, "--device", "cuda", "--workers", "2"), cwd=tmp_path, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    trials = trials_of(url, "gpu")
    c = records.count(trials)
    assert c.finished == 10 and c.running == 0 and c.failed == 0, c
    assert c.pruned >= 1, "the median pruner stopped no trial"
    assert {t.user_attrs[records.DEVICE] for t in trials} == {torch.cuda.get_device_name(0)}
    assert len({t.user_attrs[records.WORKER] for t in trials}) == 2, "one worker trained every trial"
    for t in trials:
        if t.state.name == "COMPLETE":
            assert sorted(t.intermediate_values) == [1, 2, 3, 4, 5] and len(t.user_attrs[records.EPOCH_SECONDS]) == 5


def test_sigterm_on_cuda_then_the_next_run_resumes_from_the_checkpoint(tmp_path):
    """A trial interrupted on the GPU resumes there from its last epoch's checkpoint (model,
    optimizer, schedule and CUDA generator state saved from and restored to the device)."""
    import test_signals  # noqa: PLC0415

    # 30 epochs of 10,000 images: seconds on a GPU, so the signal lands mid-trial
    test_signals.test_sigterm_stops_every_worker_and_the_next_run_resumes(tmp_path, device="cuda", epochs=30)
