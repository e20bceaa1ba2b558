"""hpo.packed: trials of one shape trained at once as one stacked model, each keeping its own recipe."""

from __future__ import annotations

import dataclasses

import optuna
import pytest
import torch
import yaml
from optuna.trial import TrialState

from hpo import data as data_mod
from hpo import packed, trainer
from hpo.backend import OneAtATime, TrainJob
from hpo.config import parse_config
from hpo.packed import Packed, pack_key, train_group
from hpo.records import count
from hpo.trainer import Diverged, train

BASE = {"model": {"preset": "mnistnet2"}, "batch_size": 100, "epochs": 2, "augment": {"rotate": 7},
        "data": {"train_subset": 300, "test_subset": 200}}


def config(**changes) -> object:
    return parse_config({**BASE, **changes})


RECIPES = [  # one shape, three recipes: optimizer, schedule, seed, dropout, smoothing and augmentation differ
    config(optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True}, seed=0),
    config(optimizer={"name": "adamw", "lr": 0.003, "weight_decay": 0.01}, seed=1, label_smoothing=0.1,
           model={"preset": "mnistnet2", "dropout": 0.2}, augment={"translate": 0.1}),
    config(optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.8, "weight_decay": 1e-4}, seed=2,
           schedule={"name": "onecycle"}),
]


@pytest.fixture
def splits(mnist_dir, monkeypatch):
    # fp32 in both loops: bf16 rounding would hide whether the two compute the same thing
    for module in (trainer, packed):
        monkeypatch.setattr(module, "bf16_autocast", lambda device_type: False)
    return data_mod.load(RECIPES[0].data, "cpu")


def test_each_member_trains_as_the_trial_alone_would(splits):
    # no dropout: the one thing drawn differently in a group (the global RNG under vmap)
    plain = {"preset": "mnistnet2", "dropout": 0.0}
    recipes = [dataclasses.replace(RECIPES[0], model=config(model=plain).model),
               dataclasses.replace(RECIPES[2], model=config(model=plain).model),
               config(optimizer={"name": "adam", "lr": 0.002}, seed=5, label_smoothing=0.05, model=plain)]
    done = {}
    outcomes = train_group([TrainJob(c, None, None, on_done=lambda m, k=k: done.__setitem__(
        k, {n: v.detach().clone() for n, v in m.state_dict().items()})) for k, c in enumerate(recipes)], splits)
    for k, cfg in enumerate(recipes):
        alone = {}
        history = train(cfg, splits, on_done=lambda m: alone.update({n: v.detach().clone() for n, v in m.state_dict().items()}))
        together = outcomes[k].history
        assert outcomes[k].error is None and len(together) == 2
        assert [r.lr for r in together] == [r.lr for r in history]  # its own schedule
        # the same data order, augmentation, initial weights and steps: equal up to float rounding
        assert together[0].train_loss == pytest.approx(history[0].train_loss, rel=1e-4)
        assert_trained_as_alone(done[k], alone, k)


def assert_trained_as_alone(together: dict, alone: dict, k: int) -> None:
    """A member's weights, and BatchNorm's running statistics, as if trained alone: the stacked
    convs sum in another order than the plain ones, and two epochs of steps carry that rounding on
    (under 1% of a weight tensor's norm, 4e-4 on a BatchNorm shift, on an AVX2-only AMD EPYC in
    fp32; up to 1.6% on a MobileNet's first conv, whose max-pool can route a gradient elsewhere on
    a rounding's difference, on an Intel Xeon with AMX), where a wrong data order, initialisation
    or schedule moves a tensor by a large part of its norm (another member's recipe: 200-300%)."""
    for name, value in alone.items():
        if value.is_floating_point():
            gap = float((together[name].float() - value.float()).norm())
            assert gap <= 0.02 * float(value.float().norm()) + 1e-3 * value.numel() ** 0.5, (k, name, gap)
        else:
            assert torch.equal(together[name], value), (k, name)


def test_a_pruned_or_diverged_member_leaves_and_the_others_finish(splits):
    def prune_at_1(epoch, accuracy):
        if epoch == 1:
            raise optuna.TrialPruned()

    reports = []
    jobs = [TrainJob(RECIPES[0], lambda e, a: reports.append((0, e)), None),
            TrainJob(RECIPES[1], prune_at_1, None),
            TrainJob(config(optimizer={"name": "sgd", "lr": 1e12}, seed=3), lambda e, a: reports.append((2, e)), None),
            TrainJob(RECIPES[2], lambda e, a: reports.append((3, e)), None)]
    outcomes = train_group(jobs, splits)
    assert isinstance(outcomes[1].error, optuna.TrialPruned) and outcomes[1].history is None
    assert isinstance(outcomes[2].error, Diverged) and (2, 1) not in reports
    for k in (0, 3):
        assert outcomes[k].error is None and [r.epoch for r in outcomes[k].history] == [1, 2]
        assert [(i, e) for i, e in reports if i == k] == [(k, 1), (k, 2)]
    assert all(0 <= r.test_accuracy <= 1 for k in (0, 3) for r in outcomes[k].history)


def test_a_member_learns_with_its_own_dropout(splits):
    """Dropout rates differ per member: a rate near 1 leaves that member at chance, not the others."""
    jobs = [TrainJob(config(optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9}, seed=0,
                            model={"preset": "mnistnet2", "dropout": p}), None, None) for p in (0.01, 0.95)]
    outcomes = train_group(jobs, splits)
    low, high = (o.history[-1] for o in outcomes)
    assert high.train_loss > low.train_loss + 0.2, (low, high)


def test_the_key_groups_one_shape_whatever_the_recipe():
    shape = pack_key(RECIPES[0])
    assert pack_key(RECIPES[2]) == shape
    assert pack_key(config(model={"preset": "mnistnet2", "dropout": 0.3})) == pack_key(RECIPES[1])
    assert pack_key(config(model={"preset": "mnistnet2", "dropout": 0.0})) != pack_key(RECIPES[1])  # no dropout layer
    assert pack_key(config(model={"preset": "mnistnet1"})) != shape
    assert pack_key(config(batch_size=50)) != shape
    assert pack_key(config(epochs=3)) != shape
    assert pack_key(config(data={"train_subset": 400, "test_subset": 200})) != shape


def test_the_backend_packs_each_shape_and_trains_the_rest_alone(splits, monkeypatch, tmp_path):
    packs, alone = [], []
    monkeypatch.setattr(packed, "train_group", lambda jobs, data: packs.append([j.config.seed for j in jobs]) or
                        [type("O", (), {"history": [], "error": None})() for _ in jobs])
    monkeypatch.setattr(OneAtATime, "run", lambda self, jobs, data: alone.extend(j.config.seed for j in jobs) or
                        [None] * len(jobs))
    resumed = tmp_path / "trial-7.pt"
    resumed.write_bytes(b"x")
    other = config(model={"preset": "mnistnet1"}, seed=9)
    jobs = [TrainJob(RECIPES[0], None, None), TrainJob(other, None, None), TrainJob(RECIPES[2], None, None),
            TrainJob(config(seed=7), None, None, checkpoint=resumed), TrainJob(config(seed=8), None, None)]
    outcomes = Packed(5).run(jobs, splits)
    assert packs == [[0, 2, 8]]
    assert sorted(alone) == [7, 9]  # a shape of its own, and a retry that resumes from its checkpoint
    assert len(outcomes) == 5


def test_hpo_run_with_pack_counts_exactly_and_records_every_member(tmp_path):
    from test_service import hpo  # noqa: PLC0415

    study = {"name": "packed", "base": {**BASE, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}},
             "search": {"optimizer.lr": {"float": [0.001, 0.5], "log": True}, "model.dropout": {"float": [0.01, 0.2]},
                        "model.layers.0": {"int": [4, 12]}, "label_smoothing": {"float": [0.0, 0.1]}},
             "budget": {"epochs": 2}, "pruner": {"name": "median", "n_startup_trials": 2, "n_warmup_steps": 0},
             "sampler": {"name": "random", "seed": 0}}
    path = tmp_path / "packed.yaml"
    path.write_text(yaml.safe_dump(study))
    url = f"sqlite:///{tmp_path}/db.sqlite"
    done = hpo("run", "--study", str(path), "--trials", "7", "--pack", "3", "--storage", url, "--device", "cpu",
               "--quiet", cwd=tmp_path)
    assert "--pack 3 on a CPU" in done.stderr  # said, since it is slower there, and run as asked
    trials = optuna.load_study(study_name="packed", storage=url).get_trials(deepcopy=False)
    c = count(trials)
    assert c.finished == 7 and c.running == 0 and c.failed == 0
    for t in trials:
        if t.state == TrialState.COMPLETE:
            assert sorted(t.intermediate_values) == [1, 2] and t.value == t.intermediate_values[2]
    # claimed three at a time (one worker: trials 0-2, 3-5, 6); a claim's other trials take its first
    # one's widths, the sampler draws the rest; each group trains as one model
    for first in (0, 3):
        group = trials[first : first + 3]
        assert len({t.params["model.layers.0"] for t in group}) == 1, [t.params for t in group]
        assert len({t.params["optimizer.lr"] for t in group}) == 3
        assert all(t.user_attrs["packed"][0] == 3 for t in group)
    assert "packed" not in trials[6].user_attrs  # alone in its claim: the plain loop


def test_the_members_losses_are_cross_entropy_with_their_own_smoothing():
    torch.manual_seed(0)
    logits, labels = torch.randn(3, 50, 10), torch.randint(0, 10, (3, 50))
    smoothing = torch.tensor([0.0, 0.1, 0.3])
    got = packed.smoothed_cross_entropy(logits, labels, smoothing)
    for k in range(3):
        want = torch.nn.functional.cross_entropy(logits[k], labels[k], label_smoothing=float(smoothing[k]))
        assert got[k].item() == pytest.approx(want.item(), rel=1e-5)


@pytest.mark.parametrize("block", ["s", "m"], ids=["xception", "mobilenet"])
def test_a_separable_net_packs_and_trains_as_alone(splits, block):
    # depthwise convs (groups = channels) under vmap: the stacked conv must keep each member's groups
    # apart, and MobileNet's BatchNorm between the two convs keep each member's statistics apart
    plain = {"family": "convnet", "layers": [6, "M", f"{block}12", f"{block}12p1", "GAP", "H"], "dropout": 0.0}
    recipes = [dataclasses.replace(RECIPES[i], model=config(model=plain).model) for i in (0, 2)]
    done = {}
    outcomes = train_group([TrainJob(c, None, None, on_done=lambda m, k=k: done.__setitem__(
        k, {n: v.detach().clone() for n, v in m.state_dict().items()})) for k, c in enumerate(recipes)], splits)
    for k, cfg in enumerate(recipes):
        alone = {}
        history = train(cfg, splits, on_done=lambda m: alone.update({n: v.detach().clone() for n, v in m.state_dict().items()}))
        assert outcomes[k].error is None
        together = outcomes[k].history
        # the first epoch's loss equal up to float rounding (1.6e-6 at most, Intel Xeon with AMX);
        # the second's carries that rounding through three steps (1.1e-4 there): the weights say more
        assert together[0].train_loss == pytest.approx(history[0].train_loss, rel=1e-4)
        assert together[1].train_loss == pytest.approx(history[1].train_loss, rel=1e-3)
        assert [r.test_accuracy for r in together] == pytest.approx([r.test_accuracy for r in history], abs=0.011)
        assert_trained_as_alone(done[k], alone, k)


@pytest.mark.parametrize("images", [250, 30])
def test_a_padded_last_batch_and_a_member_leaving_keep_the_others_as_alone(splits, images):
    """250 images in batches of 100: the static step pads the last batch with images of loss
    weight 0, so its gradient is the mean over its 50 real ones, as alone (30 images: one batch,
    padded with each image repeated); a member pruned after epoch 1 leaves, the other two are
    stacked anew and go on as alone. (No BatchNorm, whose batch statistics would see the
    padding, and no dropout.)"""
    plain = {"family": "convnet", "layers": [6, "M", 12, "GAP", "H"], "batchnorm": False, "dropout": 0.0}
    subset = {"train_subset": images, "test_subset": 200}
    recipes = [dataclasses.replace(RECIPES[i], model=config(model=plain).model, data=config(data=subset).data)
               for i in (0, 1, 2)]

    def prune_at_1(epoch, accuracy):
        if epoch == 1:
            raise optuna.TrialPruned()

    weights = {}
    outcomes = train_group([TrainJob(c, prune_at_1 if k == 1 else None, None, on_done=lambda m, k=k: weights.__setitem__(
        k, {n: v.detach().clone() for n, v in m.state_dict().items()})) for k, c in enumerate(recipes)], splits)
    assert isinstance(outcomes[1].error, optuna.TrialPruned)
    for k in (0, 2):
        alone = {}
        history = train(recipes[k], splits, on_done=lambda m: alone.update(
            {n: v.detach().clone() for n, v in m.state_dict().items()}))
        assert [r.packed for r in outcomes[k].history] == [3, 2]
        assert [r.train_loss for r in outcomes[k].history] == pytest.approx([r.train_loss for r in history], rel=1e-4)
        for name, value in alone.items():
            torch.testing.assert_close(weights[k][name], value, rtol=1e-3, atol=1e-4, msg=f"member {k}: {name}")


def test_a_members_checkpoint_is_its_own_net_and_resumes_alone(splits, tmp_path):
    """Each member's weights are views into the group's stacked tensors; its checkpoint holds its
    own tensors only (not the stack's storage), and the plain loop resumes from it as from its own."""
    paths = [tmp_path / f"trial-{k}.pt" for k in range(2)]
    done = {}
    train_group([TrainJob(c, None, None, checkpoint=p, on_done=lambda m, k=k: done.__setitem__(
        k, {n: v.detach().clone() for n, v in m.state_dict().items()})) for k, (c, p) in enumerate(zip(RECIPES, paths))],
        splits)
    for k, path in enumerate(paths):
        state = torch.load(path, weights_only=True)
        for name, tensor in state["model"].items():
            assert tensor.untyped_storage().nbytes() == tensor.nbytes, name  # no other member's weights
        resumed = {}
        history = train(RECIPES[k], splits, checkpoint=path, on_done=lambda m: resumed.update(m.state_dict()))
        assert [r.restored for r in history] == [True, True]
        for name, value in done[k].items():
            assert torch.equal(resumed[name], value), (k, name)


def test_on_a_cpu_each_member_drops_at_its_own_rate_on_the_byte_grid():
    """MemberDropout under vmap on a CPU: hpo.models.Dropout's byte mask, each member its own
    rate rounded to 1/256 (as alone), the kept activations scaled to keep the expectation."""
    from torch.func import functional_call, vmap  # noqa: PLC0415

    layer = packed.MemberDropout(0.0, channels=False)
    rates = torch.tensor([0.05, 0.3, 0.0, 0.999])  # 0.999: 255/256, as alone
    out = vmap(lambda p, x: functional_call(layer, {"p": p}, (x,)), randomness="different")(rates, torch.ones(4, 400_000))
    for k, p in enumerate(rates.tolist()):
        drop = min(round(256 * p), 255)
        assert (out[k] == 0).float().mean().item() == pytest.approx(drop / 256, abs=0.003)
        kept = out[k][out[k] != 0]
        assert torch.allclose(kept, torch.full_like(kept, 256 / (256 - drop)))


def test_the_packed_step_reads_nothing_back_to_the_host(splits, monkeypatch, host_reads):
    """The group's step is what a CUDA graph captures on a GPU: with the optimizers it gets there
    (fused SGD, Adam, AdamW, GraphSGD and GraphAdamW under one-cycle, rates as tensors), BatchNorm, member dropout,
    augmentation, smoothing and a padded last batch under vmap, it reads no value back to the host."""
    reads = []

    class Watched(packed.PackedStep):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "capture": False})  # no CUDA here: the same step, uncaptured

        def _step(self):
            with host_reads() as r:
                super()._step()
            reads.append(r.seen)

    monkeypatch.setattr(packed, "static_reason", lambda cfg, device: None)  # the graph's optimizers
    monkeypatch.setattr(packed, "PackedStep", Watched)
    subset = config(data={"train_subset": 250, "test_subset": 200}).data
    recipes = [dataclasses.replace(c, data=subset, epochs=1) for c in (
        config(optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True}, seed=0),
        config(optimizer={"name": "adam", "lr": 0.003}, seed=1, label_smoothing=0.1),
        config(optimizer={"name": "adamw", "lr": 0.003, "weight_decay": 0.01}, seed=2,
               model={"preset": "mnistnet2", "dropout": 0.2}, augment={"translate": 0.1}),
        # one-cycle moves SGD's momentum and Adam's beta1 every step: GraphSGD and GraphAdamW read tensors
        config(optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4}, seed=3,
               schedule={"name": "onecycle"}),
        config(optimizer={"name": "adamw", "lr": 0.003, "weight_decay": 0.01}, seed=4, schedule={"name": "onecycle"}))]
    outcomes = train_group([TrainJob(c, None, None) for c in recipes], splits)
    assert [o.error for o in outcomes] == [None] * 5
    assert len(reads) == 3 and reads == [[]] * 3  # 250 images in batches of 100


def test_on_cuda_the_backend_groups_what_a_graph_takes_apart_from_the_rest(splits, monkeypatch):
    """One-cycle (or an optimizer the graph does not take) keeps a group out of the CUDA graph:
    such trials pack among themselves, and the others still train as one captured step."""
    packs = []
    monkeypatch.setattr(packed, "train_group", lambda jobs, data: packs.append(sorted(j.config.seed for j in jobs)) or
                        [type("O", (), {"history": [], "error": None})() for _ in jobs])
    monkeypatch.setattr(packed, "static_reason", lambda cfg, device: "one-cycle" if cfg.schedule.name == "onecycle"
                        else None)  # as on CUDA
    onecycle = dataclasses.replace(RECIPES[2], seed=4)
    jobs = [TrainJob(c, None, None) for c in (RECIPES[0], RECIPES[1], RECIPES[2], onecycle)]
    Packed(4).run(jobs, splits)
    assert sorted(packs) == [[0, 1], [2, 4]]


def packed_study(tmp_path, **changes):
    study = {"name": "packed", "base": {**BASE, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}},
             "search": {"optimizer.lr": {"float": [0.001, 0.5], "log": True}, "model.layers.0": {"int": [4, 12]}},
             "pruner": {"name": "none"}, "sampler": {"name": "random", "seed": 0}, **changes}
    path = tmp_path / "packed.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def test_a_pack_claimed_beside_queued_trials_leaves_none_of_its_own_queued(tmp_path):
    """Trials waiting in the queue (a Ctrl-C's retries) are asked first: a claim's shape queued
    behind them was left there, a WAITING trial nobody trained (3 of them after a resumed run)."""
    from test_service import hpo  # noqa: PLC0415

    path, url = packed_study(tmp_path), f"sqlite:///{tmp_path}/db.sqlite"
    hpo("run", "--study", str(path), "--trials", "1", "--storage", url, "--device", "cpu", "--quiet", cwd=tmp_path)
    study = optuna.load_study(study_name="packed", storage=url)
    for lr in (0.01, 0.02, 0.03, 0.04):  # as a Ctrl-C queues its trials again: more than one claim takes
        study.enqueue_trial({"optimizer.lr": lr, "model.layers.0": 6})
    hpo("run", "--study", str(path), "--trials", "7", "--pack", "3", "--storage", url, "--device", "cpu", "--quiet",
        cwd=tmp_path)
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials].count(TrialState.WAITING) == 0, [(t.number, t.state.name) for t in trials]
    assert count(trials).finished == 7 and len(trials) == 7
    # three queued trials of one shape (no checkpoint: nothing to resume alone) trained as one group; the
    # fourth, with two of its shape queued once the queue was empty, as another
    assert [t.user_attrs.get("packed", [1])[0] for t in trials[1:]] == [3] * 6
    assert {t.params["model.layers.0"] for t in trials[1:]} == {6}


def test_pack_with_your_own_model_says_it_trains_alone_and_ties_no_shapes(tmp_path, monkeypatch):
    from test_service import hpo  # noqa: PLC0415

    (tmp_path / "own_net.py").write_text(
        "from torch import nn\n"
        "def make(width=4, input_shape=(1, 28, 28), num_classes=10):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[1] * input_shape[2], width), nn.ReLU(),\n"
        "                         nn.Linear(width, num_classes))\n")
    base = {**BASE, "model": {"module": "own_net:make", "width": 4}, "optimizer": {"name": "sgd", "lr": 0.05}}
    path = packed_study(tmp_path, base=base, search={"model.width": {"int": [2, 12]},
                                                     "optimizer.lr": {"float": [0.001, 0.5], "log": True}})
    url = f"sqlite:///{tmp_path}/db.sqlite"
    done = hpo("run", "--study", str(path), "--trials", "6", "--pack", "3", "--storage", url, "--device", "cpu",
               "--quiet", cwd=tmp_path)
    assert "hpo run: --pack 3: your own model (own_net:make) is not one of hpo's model families, which packing " \
           "stacks; each trial trains alone (as --pack 1)" in done.stderr, done.stderr
    assert "on a CPU" not in done.stderr  # no pack, so no word about packing on a CPU
    trials = optuna.load_study(study_name="packed", storage=url).get_trials(deepcopy=False)
    widths = [t.params["model.width"] for t in trials[1:]]
    assert len(set(widths)) > 2, widths  # drawn per trial, not three at a time to one width


@pytest.mark.parametrize("base_ema, search, never", [
    (None, {"ema": {"float": [0.9, 0.99]}}, True),       # drawn for every trial: none packs
    (0.99, {}, True),
    (None, {"ema": {"choices": [None, 0.99]}}, False),   # off for some: those pack
    (0.99, {"ema": {"choices": [None, 0.99]}}, False),
    (None, {}, False),
])
def test_pack_knows_when_every_trial_averages_its_weights(base_ema, search, never):
    """A searched ema range said only that packing is slow on a CPU, and no trial packed."""
    from hpo.packed import never_packs  # noqa: PLC0415
    from hpo.study import parse_study  # noqa: PLC0415

    base = {**BASE, **({"ema": base_ema} if base_ema else {})}
    spec = parse_study({"name": "e", "base": base, "search": {"optimizer.lr": {"float": [0.01, 0.1]}, **search},
                        "pruner": "none"}, "e.yaml", "e")
    assert (never_packs(spec) is not None) == never


def test_a_packed_trials_line_gives_its_wall_time_as_the_report_does():
    """`hpo run --pack 2` printed each trial's share of its pack's epochs (16.6 s) where the trial
    ran 34 s, the figure the report's "trial s" gives for it."""
    import datetime as dt  # noqa: PLC0415

    import optuna  # noqa: PLC0415

    from hpo import display, records  # noqa: PLC0415
    from hpo.report import duration  # noqa: PLC0415

    start = dt.datetime(2026, 12, 7, 12, 0, 0)
    t = optuna.trial.create_trial(value=0.5, intermediate_values={1: 0.4, 2: 0.5}, user_attrs={
        records.EPOCH_SECONDS: [9.1, 7.5], records.PACKED: [2, 2], records.N_PARAMS: 6544})
    t.datetime_start, t.datetime_complete, t.number = start, start + dt.timedelta(seconds=34.0), 0
    assert display.trial_line(t).endswith("  2 epochs  34.0s") and duration(t) == 34.0
