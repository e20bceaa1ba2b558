"""The static training step (hpo.steps.StaticStep: what a CUDA graph captures) trains as the eager
step does. On a CPU it runs uncaptured, so its arithmetic, the padded last batch, the device-side
batch counter and the learning rate held in a tensor are checked here; tests/test_gpu.py checks
the capture itself on a GPU."""

from __future__ import annotations

import pytest
import torch

import hpo.trainer
from hpo import steps
from hpo.config import parse_config
from hpo.optim import GraphSGD
from hpo.trainer import train


@pytest.fixture
def fp32(monkeypatch):
    """fp32 on every CPU: bf16 autocast (on a CPU with AMX) would blur an exact comparison."""
    monkeypatch.setenv("HPO_BF16", "0")
    hpo.trainer.bf16_autocast.cache_clear()
    yield
    hpo.trainer.bf16_autocast.cache_clear()


def recipe(optimizer: dict, **extra) -> dict:
    # 1,000 images in batches of 64: the last batch has 40, so the static step pads it with 24
    return {"model": {"family": "convnet", "layers": [6, "M", 12, "GAP", "H"], "batchnorm": False},
            "optimizer": optimizer, "schedule": {"name": "step", "step_size": 1, "gamma": 0.5},
            "batch_size": 64, "epochs": 2, "label_smoothing": 0.1, "seed": 3,
            "data": {"train_subset": 1000, "test_subset": 300}, **extra}


def trained(cfg, data, monkeypatch, *, static: bool, **kwargs):
    """(history, final weights, the stepper class used)."""
    used = []
    with monkeypatch.context() as m:
        if static:
            m.setattr(hpo.trainer, "static_reason", lambda cfg, device: None)
        for name in ("EagerStep", "StaticStep"):
            cls = getattr(steps, name)
            m.setattr(hpo.trainer, name, lambda *a, _cls=cls, **k: used.append(_cls) or _cls(*a, **k))
        weights = {}
        history = train(cfg, data, on_done=lambda model: weights.update(
            {k: v.detach().clone() for k, v in model.state_dict().items()}), **kwargs)
    return history, weights, used[0]


ONECYCLE = {"name": "onecycle", "pct_start": 0.3}


@pytest.mark.parametrize("optimizer,schedule", [
    ({"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}, None),
    ({"name": "adamw", "lr": 0.01, "weight_decay": 0.01}, None),
    # one-cycle moves the momentum every step: GraphSGD reads it from a tensor the schedule fills
    ({"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}, ONECYCLE),
    ({"name": "sgd", "lr": 0.1, "momentum": 0.9}, ONECYCLE),
    # and Adam's beta1: GraphAdam(W) reads it from a tensor
    ({"name": "adamw", "lr": 0.01, "weight_decay": 0.01}, ONECYCLE),
    ({"name": "adam", "lr": 0.01, "weight_decay": 1e-4}, ONECYCLE),
], ids=["sgd", "adamw", "sgd-onecycle-nesterov", "sgd-onecycle", "adamw-onecycle", "adam-onecycle"])
def test_the_static_step_trains_as_the_eager_step_does(mnist, fp32, monkeypatch, optimizer, schedule):
    cfg = parse_config(recipe(optimizer, **({"schedule": schedule} if schedule else {})))
    eager, eager_w, eager_cls = trained(cfg, mnist, monkeypatch, static=False)
    static, static_w, static_cls = trained(cfg, mnist, monkeypatch, static=True)
    assert (eager_cls, static_cls) == (steps.EagerStep, steps.StaticStep)
    for e, s in zip(eager, static, strict=True):
        assert s.train_loss == pytest.approx(e.train_loss, rel=1e-4)
        assert s.lr == pytest.approx(e.lr) and isinstance(s.lr, float)
        assert abs(s.test_accuracy - e.test_accuracy) <= 1 / 300  # one image, at most, on a rounding edge
    if schedule is None:
        assert [r.lr for r in static] == pytest.approx([optimizer["lr"], optimizer["lr"] / 2])
    else:  # past the peak, falling: the rate a step before the end of each epoch of 16 steps
        assert static[0].lr < optimizer["lr"] and static[1].lr < static[0].lr
    for name, w in eager_w.items():
        torch.testing.assert_close(static_w[name], w, rtol=1e-3, atol=1e-4, msg=name)


@pytest.mark.parametrize("name,schedule", [("sgd", None), ("sgd", ONECYCLE), ("adamw", ONECYCLE)],
                         ids=["step", "onecycle", "adamw-onecycle"])
def test_a_checkpoint_resumes_on_either_step(mnist, fp32, monkeypatch, tmp_path, name, schedule):
    """A trial checkpointed on the GPU's step may be retried on a CPU worker, and back: the
    learning rate (and one-cycle's momentum or beta1), a tensor on one side and a float on the
    other, crosses over."""
    cfg = parse_config(recipe({"name": name, "lr": 0.1 if name == "sgd" else 0.01}, epochs=3,
                              **({"schedule": schedule} if schedule else {})))
    whole, whole_w, _ = trained(cfg, mnist, monkeypatch, static=False)
    ckpt = tmp_path / "trial.pt"
    # epochs 1-2 on the static step, stopped there by the reporter; epoch 3 on the eager one
    with pytest.raises(Stopped):
        trained(cfg, mnist, monkeypatch, static=True, checkpoint=ckpt, report=stop_after(2))
    resumed, resumed_w, _ = trained(cfg, mnist, monkeypatch, static=False, checkpoint=ckpt)
    assert [r.restored for r in resumed] == [True, True, False]
    assert resumed[-1].lr == pytest.approx(whole[-1].lr) and isinstance(resumed[-1].lr, float)
    assert resumed[-1].train_loss == pytest.approx(whole[-1].train_loss, rel=1e-3)
    # and back: a checkpoint of the eager step taken up by the static one
    ckpt.unlink()
    with pytest.raises(Stopped):
        trained(cfg, mnist, monkeypatch, static=False, checkpoint=ckpt, report=stop_after(1))
    again, again_w, _ = trained(cfg, mnist, monkeypatch, static=True, checkpoint=ckpt)
    assert [r.restored for r in again] == [True, False, False]
    assert again[-1].train_loss == pytest.approx(whole[-1].train_loss, rel=1e-3)
    # weights against an unbroken run on the step that finished: the two steps' float rounding
    # differs, and Adam's division by sqrt(v) grows that to ~1e-4 in three epochs on some CPUs
    _, static_w, _ = trained(cfg, mnist, monkeypatch, static=True)
    for name, w in static_w.items():
        torch.testing.assert_close(again_w[name], w, rtol=1e-4, atol=1e-5, msg=name)


def test_an_adam_checkpoint_runs_as_the_resuming_step_builds_its_optimizer(mnist, fp32, monkeypatch, tmp_path):
    """A GPU's graphed step checkpoints capturable AdamW; torch's load_state_dict would carry that
    flag to a CPU worker's retry, whose AdamW then refuses to step (capturable on a CPU), and a CPU
    worker's flags to a GPU's retry, keeping it out of the graph: each run keeps its own."""
    cfg = parse_config(recipe({"name": "adamw", "lr": 0.01, "weight_decay": 0.01}, epochs=3))
    whole, _, _ = trained(cfg, mnist, monkeypatch, static=False)
    ckpt = tmp_path / "trial.pt"
    with pytest.raises(Stopped):
        trained(cfg, mnist, monkeypatch, static=True, checkpoint=ckpt, report=stop_after(1))
    state = torch.load(ckpt, weights_only=True)
    for group in state["optimizer"]["param_groups"]:  # as the GPU's graphed step saves it
        group.update(capturable=True, fused=None)
    torch.save(state, ckpt)
    resumed, _, _ = trained(cfg, mnist, monkeypatch, static=False, checkpoint=ckpt)
    assert [r.restored for r in resumed] == [True, False, False]
    assert resumed[-1].train_loss == pytest.approx(whole[-1].train_loss, rel=1e-3)
    # and the other way: the eager step's checkpoint, taken up by the static step, runs it fused
    ckpt.unlink()
    with pytest.raises(Stopped):
        trained(cfg, mnist, monkeypatch, static=False, checkpoint=ckpt, report=stop_after(1))
    seen = []
    with monkeypatch.context() as m:
        m.setattr(hpo.trainer, "static_reason", lambda cfg, device: None)
        real = steps.StaticStep
        m.setattr(hpo.trainer, "StaticStep", lambda opt_model, optimizer, *a, **k: seen.append(optimizer) or real(
            opt_model, optimizer, *a, **k))
        again = train(cfg, mnist, checkpoint=ckpt)
    group = seen[0].param_groups[0]
    assert group["fused"] is True and not group["capturable"]  # as make_optimizer built it for the static step
    assert all(seen[0].state[p]["step"].dtype == torch.float32 for p in group["params"])
    assert again[-1].train_loss == pytest.approx(whole[-1].train_loss, rel=1e-3)


class Stopped(Exception):
    pass


def stop_after(last: int):
    def report(epoch: int, accuracy: float) -> None:
        if epoch == last:
            raise Stopped  # as a pruner's signal would: training ends, the checkpoint stays
    return report


def test_the_static_step_applies_on_cuda_to_what_a_graph_can_hold(monkeypatch):
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    sgd = parse_config(recipe({"name": "sgd", "lr": 0.1}))
    assert steps.static_reason(sgd, cuda) is None
    assert steps.static_reason(parse_config(recipe({"name": "adamw", "lr": 0.01})), cuda) is None
    assert steps.static_reason(sgd, cpu) == "not on CUDA"
    assert "optimizer rmsprop" in steps.static_reason(parse_config(recipe({"name": "rmsprop", "lr": 0.01})), cuda)
    onecycle = parse_config(recipe({"name": "sgd", "lr": 0.1}, schedule={"name": "onecycle"}))
    assert steps.static_reason(onecycle, cuda) is None  # SGD's moving momentum is a tensor (GraphSGD)
    onecycle_adamw = parse_config(recipe({"name": "adamw", "lr": 0.01}, schedule={"name": "onecycle"}))
    assert steps.static_reason(onecycle_adamw, cuda) is None  # and Adam's beta1 (GraphAdamW)
    monkeypatch.setenv("HPO_CUDA_GRAPH", "0")
    assert steps.static_reason(sgd, cuda) == "HPO_CUDA_GRAPH=0"


def test_a_schedule_that_assigns_floats_still_moves_the_graphs_rate_and_momentum():
    """Older torch schedules put a float where the rate's tensor was, and one-cycle does so with
    SGD's momentum every step; the graph reads the tensors."""
    cfg = parse_config(recipe({"name": "sgd", "lr": 0.1}))
    model = torch.nn.Linear(784, 10)
    optimizer = hpo.trainer.make_optimizer(cfg.optimizer, model.parameters(), fused=True, moving_momentum=True)
    assert isinstance(optimizer, GraphSGD)
    steps.lr_on_device(optimizer, torch.device("cpu"))
    kept = steps.held(optimizer)
    assert set(kept[0]) == {"lr", "momentum"}
    lr, momentum = kept[0]["lr"], kept[0]["momentum"]
    optimizer.param_groups[0].update(lr=0.025, momentum=0.87)  # what such a schedule does
    steps.keep_held(optimizer, kept)
    assert optimizer.param_groups[0]["lr"] is lr and lr.item() == pytest.approx(0.025)
    assert optimizer.param_groups[0]["momentum"] is momentum and momentum.item() == pytest.approx(0.87)
    adamw = hpo.trainer.make_optimizer(parse_config(recipe({"name": "adamw", "lr": 0.01})).optimizer,
                                       model.parameters(), fused=True, moving_momentum=True)
    steps.lr_on_device(adamw, torch.device("cpu"))
    kept = steps.held(adamw)
    assert set(kept[0]) == {"lr", "beta1"}
    adamw.param_groups[0]["betas"] = (0.88, 0.999)  # what one-cycle does with Adam's beta1
    steps.keep_held(adamw, kept)
    assert adamw.param_groups[0]["betas"][0] is kept[0]["beta1"] and kept[0]["beta1"].item() == pytest.approx(0.88)
    # torch's fused SGD takes momentum as a number: only the rate is a tensor there
    fused = hpo.trainer.make_optimizer(cfg.optimizer, model.parameters(), fused=True)
    steps.lr_on_device(fused, torch.device("cpu"))
    assert set(steps.held(fused)[0]) == {"lr"} and isinstance(fused.param_groups[0]["momentum"], float)


@pytest.mark.parametrize("optimizer", [
    {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4},
    {"name": "adam", "lr": 0.01, "weight_decay": 1e-4},
    {"name": "adamw", "lr": 0.01, "weight_decay": 0.01},
    {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4, "onecycle": True},
    {"name": "adamw", "lr": 0.01, "weight_decay": 0.01, "onecycle": True},
], ids=["sgd", "adam", "adamw", "sgd-onecycle", "adamw-onecycle"])
def test_the_static_step_reads_nothing_back_to_the_host(mnist, monkeypatch, host_reads, optimizer):
    """What a CUDA graph captures may not read a value back to the host (capture fails on it): an
    epoch of the static step with BatchNorm, dropout, augmentation, label smoothing, the fused
    optimizers, the rate a tensor and a padded last batch reads none, the first step (an
    optimizer's lazily made state) included."""
    optimizer = dict(optimizer)
    schedule = {"schedule": ONECYCLE} if optimizer.pop("onecycle", False) else {}
    cfg = parse_config({**recipe(optimizer, **schedule), "model": {"preset": "mnistnet2"}, "epochs": 1,
                        "augment": {"rotate": 7, "affine_degrees": 15, "translate": 0.1, "scale": 0.1}})
    reads = []

    class Watched(steps.StaticStep):
        def _step(self):
            with host_reads() as r:
                super()._step()
            reads.append(r.seen)

    monkeypatch.setattr(hpo.trainer, "static_reason", lambda cfg, device: None)
    monkeypatch.setattr(hpo.trainer, "StaticStep", Watched)
    train(cfg, mnist)
    assert len(reads) == 16 and reads == [[]] * 16  # 1,000 images in batches of 64


def test_on_cuda_a_run_names_the_searched_recipes_that_train_without_the_graph(monkeypatch):
    from hpo.runner import graph_note  # noqa: PLC0415
    from hpo.study import load_spec  # noqa: PLC0415

    cuda = torch.device("cuda")  # a device object only: nothing runs on it
    assert steps.eager_choices(load_spec("budget-8k").space) == []  # SGD and AdamW, one-cycle included
    assert steps.eager_choices(load_spec("lenet-tuning").space) == ["optimizer adabelief", "optimizer nadam"]
    note = graph_note(load_spec("lenet-tuning"), cuda)
    assert "optimizer adabelief or optimizer nadam train without the CUDA graph" in note
    assert graph_note(load_spec("budget-8k"), cuda) is None  # every recipe it can draw is graphed
    assert graph_note(load_spec("lenet-tuning"), torch.device("cpu")) is None  # no graph on a CPU to miss
    monkeypatch.setenv("HPO_CUDA_GRAPH", "0")
    assert graph_note(load_spec("lenet-tuning"), cuda) is None  # the user turned it off for every trial
    # each agrees with the per-config rule the trainer applies
    monkeypatch.delenv("HPO_CUDA_GRAPH")
    for optimizer, schedule in [("sgd", "onecycle"), ("adamw", "onecycle"), ("nadam", "step"), ("adamw", "cosine")]:
        cfg = parse_config({"model": {"preset": "linear"}, "optimizer": {"name": optimizer, "lr": 0.01},
                            "schedule": {"name": schedule}})
        assert (steps.static_reason(cfg, cuda) is None) == (steps.recipe_reason(optimizer) is None)


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_with_one_cycle_each_static_step_reads_the_momentum_the_schedule_set_from_its_tensor(mnist, monkeypatch, name):
    """What a graph replays reads the held tensors, not the group's floats: before each static step
    the momentum (Adam's beta1) one-cycle has just set must be in the tensor GraphSGD (GraphAdamW)
    reads, as the rate is."""
    cfg = parse_config(recipe({"name": name, "lr": 0.1}, schedule=ONECYCLE))
    seen = []

    def momentum(group):
        return group["momentum"] if name == "sgd" else group["betas"][0]

    class Watched(steps.StaticStep):
        def _step(self):
            group, kept = self.optimizer.param_groups[0], self.kept[0]
            held_momentum = kept["momentum" if name == "sgd" else "beta1"]
            seen.append((momentum(group) is held_momentum, group["lr"] is kept["lr"],
                         float(held_momentum), float(kept["lr"])))
            super()._step()

    monkeypatch.setattr(hpo.trainer, "static_reason", lambda cfg, device: None)
    monkeypatch.setattr(hpo.trainer, "StaticStep", Watched)
    train(cfg, mnist)
    assert len(seen) == 32 and all(m and r for m, r, _, _ in seen)
    # one-cycle's own sequence, step by step: momentum down from 0.95 while the rate climbs, then back
    model = torch.nn.Linear(2, 2)
    reference = hpo.trainer.make_optimizer(cfg.optimizer, model.parameters())  # torch's own, floats
    schedule = hpo.trainer.make_schedule(cfg.schedule, reference, epochs=2, steps_per_epoch=16)
    expected = []
    for _ in range(32):
        expected.append((momentum(reference.param_groups[0]), reference.param_groups[0]["lr"]))
        reference.step()
        schedule.step()
    assert [m for _, _, m, _ in seen] == pytest.approx([m for m, _ in expected])
    assert [r for _, _, _, r in seen] == pytest.approx([r for _, r in expected])
    assert min(m for _, _, m, _ in seen) < 0.86 < 0.94 < max(m for _, _, m, _ in seen)


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_graph_adam_is_torchs_adam_with_a_moving_beta1_read_from_a_tensor(name):
    """GraphAdam(W)'s step against torch's own, step by step, with beta1 and the rate moving every
    step as one-cycle moves them (theirs as floats, ours as the tensors a graph reads)."""
    from hpo.optim import GraphAdam, GraphAdamW  # noqa: PLC0415

    torch.manual_seed(0)
    ours_p = torch.nn.Parameter(torch.randn(64))
    theirs_p = torch.nn.Parameter(ours_p.detach().clone())
    cls, graph_cls = (torch.optim.AdamW, GraphAdamW) if name == "adamw" else (torch.optim.Adam, GraphAdam)
    theirs = cls([theirs_p], lr=0.01, weight_decay=0.01)
    ours = graph_cls([ours_p], lr=0.01, weight_decay=0.01, capturable=True)
    beta1, lr = torch.tensor(0.95), torch.tensor(0.01)
    ours.param_groups[0].update(betas=(beta1, 0.999), lr=lr)
    for t in range(40):
        b1, rate = 0.95 - 0.1 * (t % 10) / 10, 0.001 + 0.009 * (t % 7) / 7
        theirs.param_groups[0].update(betas=(b1, 0.999), lr=rate)
        beta1.fill_(b1)
        lr.fill_(rate)
        grad = torch.randn(64)
        ours_p.grad, theirs_p.grad = grad.clone(), grad.clone()
        theirs.step()
        ours.step()
        torch.testing.assert_close(ours_p, theirs_p, rtol=0, atol=1e-6, msg=f"step {t + 1}")
    assert set(ours.state[ours_p]) == set(theirs.state[theirs_p]) == {"step", "exp_avg", "exp_avg_sq"}
    assert float(ours.state[ours_p]["step"]) == float(theirs.state[theirs_p]["step"]) == 40
