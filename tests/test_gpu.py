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


STEP = {"name": "step", "step_size": 1, "gamma": 0.5}


@pytest.mark.parametrize("layers,schedule", [([8, "M", 16, "GAP", "H"], STEP),
                                             ([8, "s16", "M", "s16p1", "GAP", "H"], STEP),
                                             ([8, "M", 16, "GAP", "H"], {"name": "onecycle", "pct_start": 0.3}),
                                             ([8, "M", 16, "GAP", "H"], {"name": "onecycle", "pct_start": 0.3,
                                                                         "adamw": True})],
                         ids=["conv", "separable", "onecycle", "onecycle-adamw"])
def test_the_captured_step_replays_what_the_uncaptured_one_computes(mnist_dir, monkeypatch, layers, schedule):
    """The CUDA graph holds the whole step: after 2 epochs (graph replays from the 4th step on,
    a padded last batch each epoch, the learning rate moved by the schedule) the weights are
    those of the same static step run uncaptured, for plain convs and for depthwise-separable
    blocks (grouped convs), and under one-cycle, which moves SGD's momentum or AdamW's beta1 too
    (hpo.optim's GraphSGD and GraphAdamW read them from tensors). No augmentation, dropout or BatchNorm: their random streams or batch
    statistics are not what this compares."""
    import hpo.trainer  # noqa: PLC0415
    from hpo import steps  # noqa: PLC0415

    monkeypatch.setenv("HPO_BF16", "0")
    hpo.trainer.bf16_autocast.cache_clear()
    mnist = data.load("mnist", "cuda", mnist_dir.parent)
    schedule = dict(schedule)
    optimizer = ({"name": "adamw", "lr": 0.01, "weight_decay": 0.01} if schedule.pop("adamw", False)
                 else {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True})
    cfg = parse_config({"model": {"family": "convnet", "layers": layers, "batchnorm": False},
                        "optimizer": optimizer, "schedule": schedule, "batch_size": 64, "epochs": 2,
                        "data": {"train_subset": 3000, "test_subset": 1000}})
    assert steps.static_reason(cfg, mnist.device) is None
    runs = {}
    for capture in (True, False):
        made = []

        def stepper(*a, _capture=capture, **k):  # the trainer passes capture=True on CUDA: replaced
            made.append(steps.StaticStep(*a, **{**k, "capture": _capture}))
            return made[-1]

        monkeypatch.setattr(hpo.trainer, "StaticStep", stepper)
        weights = {}
        history = train(cfg, mnist, on_done=lambda m: weights.update({k: v.clone() for k, v in m.state_dict().items()}))
        assert (made[0].graph is not None) is capture
        runs[capture] = history, weights
    hpo.trainer.bf16_autocast.cache_clear()
    (graphed, gw), (plain, pw) = runs[True], runs[False]
    assert [r.lr for r in graphed] == pytest.approx([r.lr for r in plain])
    assert [r.train_loss for r in graphed] == pytest.approx([r.train_loss for r in plain], rel=1e-3)
    for name, w in pw.items():
        torch.testing.assert_close(gw[name], w, rtol=1e-3, atol=1e-3, msg=name)


def test_the_graph_path_is_as_accurate_as_the_eager_path(mnist_dir, monkeypatch):
    """budget-8k's base net (BatchNorm, dropout, augmentation), 2 epochs on all of MNIST: the
    graphed and the eager step end within noise of each other (their random streams differ)."""
    from hpo import steps  # noqa: PLC0415

    mnist = data.load("mnist", "cuda", mnist_dir.parent)
    cfg = parse_config({"model": {"preset": "mnistnet2"}, "optimizer": {"name": "sgd", "lr": 0.075, "momentum": 0.9},
                        "augment": {"rotate": 7, "affine_degrees": 15}, "epochs": 2})
    assert steps.static_reason(cfg, mnist.device) is None
    graphed = train(cfg, mnist)
    monkeypatch.setenv("HPO_CUDA_GRAPH", "0")
    eager = train(cfg, mnist)
    print(f"graph: {[r.test_accuracy for r in graphed]} {[round(r.seconds, 3) for r in graphed]} s; "
          f"eager: {[r.test_accuracy for r in eager]} {[round(r.seconds, 3) for r in eager]} s")
    assert graphed[-1].test_accuracy > 0.97 and eager[-1].test_accuracy > 0.97
    assert abs(graphed[-1].test_accuracy - eager[-1].test_accuracy) < 0.006


def test_the_weight_average_follows_the_captured_step(mnist_dir):
    """`ema` on the graph path: the average is updated after each replay from the weights the
    graph wrote in place, leaves the training alone, and is the net each epoch scores."""
    from hpo.trainer import evaluate  # noqa: PLC0415

    mnist = data.load("mnist", "cuda", mnist_dir.parent)
    base = {"model": {"family": "convnet", "layers": [8, "M", 16, "GAP", "H"], "batchnorm": True},
            "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9}, "schedule": {"name": "cosine"},
            "batch_size": 64, "epochs": 2, "data": {"train_subset": 3000, "test_subset": 1000}}
    kept = {}
    plain = train(parse_config(base), mnist, on_done=lambda m: kept.setdefault("plain", m))
    averaged = train(parse_config({**base, "ema": 0.95}), mnist, on_done=lambda m: kept.setdefault("ema", m))
    assert [r.train_loss for r in averaged] == pytest.approx([r.train_loss for r in plain], rel=1e-3)
    scored = mnist.subset(3000, 1000)  # the trainer's own subset of the test images
    assert averaged[-1].test_accuracy == evaluate(kept["ema"], scored.test_x, scored.test_y)
    a, b = kept["plain"].state_dict(), kept["ema"].state_dict()
    assert all(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())
    # near the trained weights (a 20-step horizon), not the untrained start: it read the weights the graph wrote
    gaps = [float((b[k] - a[k]).norm() / a[k].norm()) for k in a if a[k].is_floating_point()]
    assert sum(gaps) / len(gaps) < 0.3  # about 0.04 on the CPU, 0.8 for the untrained start
    assert all(t.is_cuda for t in b.values())


def test_a_packed_group_is_one_captured_step_that_replays_the_uncaptured_one(mnist_dir, monkeypatch):
    """hpo.packed on CUDA: two members (SGD with Nesterov, AdamW with label smoothing) trained as
    one stacked model whose whole step, both optimizers included, is one CUDA graph; after 2
    epochs (a padded last batch each, a moving schedule) every member's weights are those of the
    same packed step run uncaptured (HPO_CUDA_GRAPH=0)."""
    import hpo.trainer  # noqa: PLC0415
    from hpo import packed  # noqa: PLC0415
    from hpo.backend import TrainJob  # noqa: PLC0415

    monkeypatch.setenv("HPO_BF16", "0")
    hpo.trainer.bf16_autocast.cache_clear()
    mnist = data.load("mnist", "cuda", mnist_dir.parent)
    base = {"model": {"family": "convnet", "layers": [8, "M", 16, "GAP", "H"], "batchnorm": False},
            "schedule": {"name": "step", "step_size": 1, "gamma": 0.5}, "batch_size": 64, "epochs": 2,
            "data": {"train_subset": 3000, "test_subset": 1000}}
    cfgs = [parse_config({**base, "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True}}),
            parse_config({**base, "optimizer": {"name": "adamw", "lr": 0.003, "weight_decay": 0.01}, "seed": 1,
                          "label_smoothing": 0.1})]
    real = packed.PackedStep
    runs = {}
    for graph in (True, False):
        monkeypatch.setenv("HPO_CUDA_GRAPH", "1" if graph else "0")
        made, weights = [], {}
        monkeypatch.setattr(packed, "PackedStep", lambda *a, **k: made.append(real(*a, **k)) or made[-1])
        outcomes = packed.train_group([TrainJob(c, None, None, on_done=lambda m, k=k: weights.__setitem__(
            k, {n: v.detach().clone() for n, v in m.state_dict().items()})) for k, c in enumerate(cfgs)], mnist)
        assert [o.error for o in outcomes] == [None, None]
        assert (made[0].graph is not None) is graph
        runs[graph] = outcomes, weights
    hpo.trainer.bf16_autocast.cache_clear()
    (graphed, gw), (plain, pw) = runs[True], runs[False]
    for k in range(2):
        assert [r.lr for r in graphed[k].history] == pytest.approx([r.lr for r in plain[k].history])
        assert [r.train_loss for r in graphed[k].history] == pytest.approx(
            [r.train_loss for r in plain[k].history], rel=1e-3)
        for name, w in pw[k].items():
            torch.testing.assert_close(gw[k][name], w, rtol=1e-3, atol=1e-3, msg=f"member {k}: {name}")
