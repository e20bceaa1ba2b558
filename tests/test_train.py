"""The trainer on the CPU: it learns, it is deterministic, it reports, it stops, it detects divergence."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import pytest
import yaml

import hpo.data
import hpo.trainer
from hpo import schema
from hpo.config import OPTIMIZERS, SCHEDULES, TrainConfig, parse_config
from hpo.errors import ConfigError, UserError
from hpo.trainer import Diverged, train


def config(**overrides) -> TrainConfig:
    data = {"model": {"preset": "linear"}, "epochs": 1, "batch_size": 64, **overrides}
    return parse_config(data)


@pytest.fixture(scope="module")
def tiny(mnist):
    """256 training and 100 test images: one epoch is a handful of steps."""
    return mnist.subset(256, 100)


def test_a_short_run_learns(small):
    cfg = config(model={"preset": "lenet5"}, epochs=2, optimizer={"name": "adam", "lr": 0.003})
    history = train(cfg, small)
    assert [r.epoch for r in history] == [1, 2]
    assert history[-1].test_accuracy > 0.5  # chance is 0.1
    assert history[1].train_loss < history[0].train_loss < math.log(10) + 0.1
    assert all(r.seconds > 0 and r.lr == 0.003 for r in history)


def test_same_seed_same_history(mnist):
    # dropout, augmentation, shuffling and the subset all draw random numbers
    cfg = config(model={"preset": "classic"}, epochs=2, data={"train_subset": 512, "test_subset": 200},
                 augment={"rotate": 10, "translate": 0.1}, seed=3)
    a, b = train(cfg, mnist), train(cfg, mnist)
    assert [(r.train_loss, r.test_accuracy) for r in a] == [(r.train_loss, r.test_accuracy) for r in b]
    c = train(cfg.with_overrides(seed=4), mnist)
    assert [r.train_loss for r in c] != [r.train_loss for r in a]


def test_normalize_false_feeds_the_model_raw_pixels(tiny):
    # seeds 000 and 001 trained on [0, 1] pixels; the splits stay standardized, the model maps them back
    assert "normalize" not in config().to_dict()["data"]
    cfg = config(data={"normalize": False})
    assert cfg.to_dict()["data"] == {"dataset": "mnist", "normalize": False}
    assert parse_config(cfg.to_dict()) == cfg
    seen, trained = [], []
    train(cfg, tiny, on_done=trained.append)
    model = trained[0]
    assert isinstance(model, hpo.trainer.RawPixels)
    model.model.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    model(tiny.test_x[:8])
    assert tiny.test_x.min() < -0.4  # standardized: black is -0.1307 / 0.3081
    assert seen[0].min().item() == pytest.approx(0, abs=1e-6) and seen[0].max().item() == pytest.approx(1, abs=1e-6)
    train(config(), tiny, on_done=trained.append)
    assert not isinstance(trained[1], hpo.trainer.RawPixels)


def test_a_last_batch_of_one_image_joins_the_one_before(mnist, monkeypatch):
    """97 training images at batch size 32 left one image alone in the last batch: a BatchNorm1d
    (in a model of your own) refuses to train on one ("Expected more than 1 value per channel"), a
    traceback in hpo train, and every trial of such a study failed. The last test batch likewise
    (a model's .squeeze()). The steps show it here: 32, 32 and 33 images."""
    monkeypatch.setitem(hpo.trainer.EVAL_BATCH, "cpu", 64)  # 129 test images: 64, 65
    seen = []
    cfg = config(model={"preset": "mnistnet2"}, batch_size=32, data={"train_subset": 97, "test_subset": 129})
    history = train(cfg, mnist, on_step=lambda step, steps: seen.append((step, steps)))
    assert seen == [(1, 3), (2, 3), (3, 3)] and len(history) == 1  # 32, 32, 33: every image, one step fewer
    assert hpo.data.batch_sizes(97, 32) == [32, 32, 33] and hpo.data.batch_sizes(1, 32) == [1]
    assert hpo.data.batch_sizes(129, 64) == [64, 65] and hpo.data.batch_sizes(96, 32) == [32] * 3


def test_report_once_per_epoch(tiny):
    calls = []
    history = train(config(epochs=3), tiny, report=lambda epoch, acc: calls.append((epoch, acc)))
    assert calls == [(r.epoch, r.test_accuracy) for r in history]
    assert [epoch for epoch, _ in calls] == [1, 2, 3]
    assert all(isinstance(acc, float) and 0 <= acc <= 1 for _, acc in calls)


class Pruned(Exception):
    pass


def test_exception_in_report_stops_training(tiny, monkeypatch):
    evaluated = []
    real_evaluate = hpo.trainer.evaluate
    monkeypatch.setattr(hpo.trainer, "evaluate", lambda *a: evaluated.append(1) or real_evaluate(*a))
    calls = []

    def report(epoch, accuracy):
        calls.append(epoch)
        if epoch == 2:
            raise Pruned(f"pruned at {epoch}")

    with pytest.raises(Pruned, match="pruned at 2"):
        train(config(epochs=5), tiny, report=report)
    assert calls == [1, 2]
    assert len(evaluated) == 2  # no third epoch was trained


@pytest.mark.parametrize("preset", ["mlp", "lenet5"])
def test_huge_learning_rate_diverges(tiny, preset):
    reports = []
    cfg = config(model={"preset": preset}, epochs=3, optimizer={"name": "sgd", "lr": 1e6})
    with pytest.raises(Diverged, match="training loss is (nan|inf|-inf) in epoch"):
        train(cfg, tiny, report=lambda *a: reports.append(a))
    assert len(reports) < 3  # it stopped at the epoch whose loss was not finite
    # the same run at a sane learning rate is fine
    history = train(cfg.with_overrides(optimizer=parse_config({"model": {"preset": "linear"}}).optimizer), tiny)
    assert all(math.isfinite(r.train_loss) for r in history)


OPTIMIZER_SETTINGS = {
    "sgd": {"lr": 0.05},
    "adam": {"lr": 0.003},
    "adamw": {"lr": 0.003, "weight_decay": 0.01},
    "nadam": {"lr": 0.003},
    "rmsprop": {"lr": 0.001},
    "adabelief": {"lr": 0.003},
}


def test_optimizer_table_covers_all():
    assert set(OPTIMIZER_SETTINGS) == set(OPTIMIZERS)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_each_optimizer_trains(tiny, name):
    cfg = config(epochs=2, batch_size=32, optimizer={"name": name, **OPTIMIZER_SETTINGS[name]})
    history = train(cfg, tiny)
    assert all(math.isfinite(r.train_loss) for r in history)
    assert history[1].train_loss < history[0].train_loss


LR = 0.01
ONECYCLE_MIN = LR / 25 / 1e4  # OneCycleLR's defaults: start at max/25, end at start/1e4
# schedule settings and the learning rate of the last step of each of two epochs (4 steps each)
SCHEDULE_CASES = {
    "none": ({}, [LR, LR]),
    "step": ({"step_size": 1, "gamma": 0.5}, [LR, LR * 0.5]),
    # warm-up over steps 0-1, then cosine down over steps 1-7: step 3 is a third of the way down
    "onecycle": ({"pct_start": 0.25}, [ONECYCLE_MIN + (LR - ONECYCLE_MIN) * 0.75, ONECYCLE_MIN]),
    # linear warm-up over epoch 1 (steps 0-3), then cosine over steps 4-7: step 7 is 3/4 down
    "cosine": ({"warmup_epochs": 1}, [LR, LR * 0.5 * (1 + math.cos(math.pi * 3 / 4))]),
}


def test_schedule_table_covers_all():
    assert set(SCHEDULE_CASES) == set(SCHEDULES)


@pytest.mark.parametrize("name", SCHEDULES)
def test_each_schedule_runs(tiny, name):
    settings, expected_lr = SCHEDULE_CASES[name]
    cfg = config(epochs=2, optimizer={"name": "sgd", "lr": LR}, schedule={"name": name, **settings})
    history = train(cfg, tiny)
    assert all(math.isfinite(r.train_loss) for r in history)
    for result, lr in zip(history, expected_lr):
        if lr is not None:
            assert result.lr == pytest.approx(lr, rel=1e-6, abs=1e-12)


# (config besides the model, dotted key, a fragment of the reason)
BAD_CONFIGS = [
    ({"bogus": 1}, "bogus", "unknown key"),
    ({"epoch": 3}, "epoch", "unknown key"),
    ({"batch_size": "128"}, "batch_size", "expected an integer"),
    ({"batch_size": 0}, "batch_size", "[1, 60000]"),
    ({"batch_size": 60_001}, "batch_size", "[1, 60000]"),
    ({"batch_size": 12.5}, "batch_size", "expected an integer"),
    ({"epochs": 0}, "epochs", "[1, 1000]"),
    ({"epochs": True}, "epochs", "expected an integer"),
    ({"seed": -1}, "seed", "from 0 to 4,294,967,295"),
    ({"label_smoothing": 1.0}, "label_smoothing", "[0, 1)"),
    ({"ema": 1.0}, "ema", "decay per optimizer step in (0, 1)"),
    ({"ema": 0}, "ema", "leave it out"),
    ({"optimizer": "adam"}, "optimizer", "expected a mapping"),
    ({"optimizer": {"name": "lion"}}, "optimizer.name", "unknown optimizer"),
    ({"optimizer": {"name": "adam", "momentum": 0.9}}, "optimizer.momentum", "sgd/rmsprop only, not adam"),
    ({"optimizer": {"name": "rmsprop", "nesterov": True}}, "optimizer.nesterov", "sgd only"),
    ({"optimizer": {"name": "sgd", "beta1": 0.9}}, "optimizer.beta1", "only, not sgd"),
    ({"optimizer": {"name": "rmsprop", "beta2": 0.99}}, "optimizer.beta2", "only, not rmsprop"),
    ({"optimizer": {"name": "sgd", "momentum": 0.0, "nesterov": True}}, "optimizer.nesterov", "momentum > 0"),
    ({"optimizer": {"name": "sgd", "momentum": 1.0}}, "optimizer.momentum", "[0, 1)"),
    ({"optimizer": {"name": "adam", "betas": [0.9, 0.99]}}, "optimizer.betas", "unknown key"),
    ({"optimizer": {"name": "adam", "beta2": 1.0}}, "optimizer.beta2", "[0, 1)"),
    ({"optimizer": {"name": "adamw", "beta1": -0.1}}, "optimizer.beta1", "[0, 1)"),
    ({"optimizer": {"name": "adam", "beta1": "x"}}, "optimizer.beta1", "expected a number"),
    ({"optimizer": {"lr": 0}}, "optimizer.lr", "> 0"),
    ({"optimizer": {"lr": "fast"}}, "optimizer.lr", "expected a number"),
    ({"optimizer": {"weight_decay": -1}}, "optimizer.weight_decay", ">= 0"),
    ({"schedule": {"name": "poly"}}, "schedule.name", "unknown schedule"),
    ({"schedule": {"name": "step", "gamma": 0}}, "schedule.gamma", "(0, 1]"),
    ({"schedule": {"name": "step", "step_size": 0}}, "schedule.step_size", ">= 1"),
    ({"schedule": {"name": "onecycle", "pct_start": 1.0}}, "schedule.pct_start", "(0, 1)"),
    ({"schedule": {"name": "cosine", "warmup_epochs": -1}}, "schedule.warmup_epochs", ">= 0"),
    ({"schedule": {"name": "cosine", "warmup_epochs": 10}, "epochs": 10}, "schedule.warmup_epochs",
     "10 epochs of warm-up leave none of the 10 epoch(s) for the cosine decay"),
    ({"augment": {"flip": True}}, "augment.flip", "unknown key"),
    ({"augment": {"rotate": 200}}, "augment.rotate", "[0, 180]"),
    ({"augment": {"translate": 1.0}}, "augment.translate", "[0, 1)"),
    ({"augment": {"scale": -0.1}}, "augment.scale", "[0, 1)"),
    ({"data": {"train_subset": 5}}, "data.train_subset", "10 or more"),
    ({"data": {"test_subset": 9}}, "data.test_subset", "10 or more"),
    ({"data": {"dataset": "cifar10"}}, "data.dataset", "unknown dataset 'cifar10'; choose from mnist, fashion-mnist, kmnist"),
    ({"data": {"dataset": "mnist", "size": 1}}, "data.size", "unknown key"),
    ({"model": {"preset": "nope"}}, "model.preset", "unknown preset"),
    ({"model": {"preset": "lenet5", "fc": [0]}}, "model.fc", ">= 1"),
    ({"model": {"preset": "lenet5", "convs": [6, 16, 32]}}, "model.convs", "shrink 28x28 to nothing"),
]


@pytest.mark.parametrize(("data", "key", "reason"), BAD_CONFIGS, ids=[c[1] + f"-{i}" for i, c in enumerate(BAD_CONFIGS)])
def test_bad_train_config(data, key, reason):
    with pytest.raises(ConfigError) as caught:
        parse_config({"model": {"preset": "linear"}, **data})
    assert caught.value.key == key
    assert reason in caught.value.reason


@pytest.mark.parametrize(("split", "size"), [("train", 257), ("test", 101)])
def test_a_subset_larger_than_its_split_is_refused_by_the_trainer(tiny, split, size):
    cfg = config(data={f"{split}_subset": size})  # no upper bound at parse time: only the files know the size
    with pytest.raises(ConfigError) as caught:
        train(cfg, tiny)
    assert caught.value.key == f"data.{split}_subset"
    assert f"{size} is more than the {256 if split == 'train' else 100} {split} images of mnist" in caught.value.reason


def test_the_config_must_name_the_loaded_dataset(tiny):
    with pytest.raises(UserError, match="the config trains on dataset 'kmnist' but 'mnist' is loaded"):
        train(config(data={"dataset": "kmnist"}), tiny)


@dataclass(frozen=True)
class Pair:
    pair: Optional[tuple[int, int]] = None


def test_optional_container_errors_keep_the_inner_key():
    with pytest.raises(ConfigError) as caught:
        schema.parse(Pair, {"pair": [1, "x"]}, "section")
    assert caught.value.key == "section.pair.1"
    assert schema.parse(Pair, {"pair": [1, 2]}).pair == (1, 2)
    assert schema.parse(Pair, {"pair": None}).pair is None


def test_config_errors_name_the_file():
    with pytest.raises(ConfigError) as caught:
        parse_config({"model": {"preset": "linear"}, "batch_size": 0}, source="run.yaml")
    assert str(caught.value).startswith("run.yaml: key 'batch_size': ")


@pytest.mark.parametrize(("data", "key"), [(None, ""), ([1, 2], ""), ({"epochs": 3}, "model")])
def test_config_needs_a_mapping_with_a_model(data, key):
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert caught.value.key == key


def test_good_config_parses():
    cfg = parse_config({"model": {"preset": "mnistnet2", "dropout": 0.1}, "epochs": 3, "batch_size": 32,
                        "optimizer": {"name": "adam", "lr": 1, "beta1": 0.8, "beta2": 0.99},
                        "schedule": {"name": "onecycle"}, "augment": {"rotate": 7}, "seed": 5})
    assert cfg.model.dropout == 0.1 and cfg.model.layers[-1] == "H"
    assert cfg.optimizer.lr == 1.0 and isinstance(cfg.optimizer.lr, float)
    assert (cfg.optimizer.beta1, cfg.optimizer.beta2) == (0.8, 0.99)
    assert cfg.schedule.name == "onecycle" and cfg.augment.rotate == 7.0 and cfg.augment.enabled
    assert parse_config(cfg.to_dict()) == cfg


@pytest.mark.parametrize("damage", [b"", b"not a checkpoint at all", None], ids=["empty", "garbage", "truncated"])
def test_a_damaged_checkpoint_starts_the_trial_afresh(small, tmp_path, damage):
    cfg = parse_config({"model": {"preset": "linear"}, "epochs": 2, "batch_size": 256})
    checkpoint = tmp_path / "trial-0.pt"
    hpo.trainer.train(cfg, small, checkpoint=checkpoint)  # a good checkpoint after epoch 2...
    body = checkpoint.read_bytes()
    checkpoint.write_bytes(body[: len(body) // 2] if damage is None else damage)  # ...torn, emptied or replaced
    history = hpo.trainer.train(cfg, small, checkpoint=checkpoint)
    assert [r.epoch for r in history] == [1, 2] and not any(r.restored for r in history)
    again = hpo.trainer.train(cfg, small, checkpoint=checkpoint)  # and it wrote a good one again
    assert [r.epoch for r in again] == [1, 2] and all(r.restored for r in again)


def test_a_checkpoint_of_the_same_config_on_other_data_starts_afresh(small, tmp_path):
    """Your own data given a class more since a Ctrl-C: the retry's config is the same, its net is
    not; the trial failed with load_state_dict's size mismatch, where it now starts afresh."""
    import torch  # noqa: PLC0415

    cfg = parse_config({"model": {"preset": "linear"}, "epochs": 2, "batch_size": 256})
    checkpoint = tmp_path / "trial-0.pt"
    hpo.trainer.train(cfg, small, checkpoint=checkpoint)
    state = torch.load(checkpoint, weights_only=True)
    for key, tensor in state["model"].items():  # as saved by a net with one output more
        state["model"][key] = torch.cat([tensor, tensor[:1]])
    torch.save(state, checkpoint)
    history = hpo.trainer.train(cfg, small, checkpoint=checkpoint)
    assert [r.epoch for r in history] == [1, 2] and not any(r.restored for r in history)
    assert all(math.isfinite(r.train_loss) for r in history)


@pytest.mark.parametrize("native, expected", [(True, True), (False, False)])
def test_bf16_on_cuda_only_where_the_gpu_does_it_natively(monkeypatch, native, expected):
    """An Ampere or newer GPU trains under bf16 autocast; a T4 or V100 (bf16 only emulated) in fp32."""
    import torch  # noqa: PLC0415

    asked = []

    def supported(including_emulation: bool = True) -> bool:
        asked.append(including_emulation)
        return native or including_emulation  # what torch says of a pre-Ampere card: emulated only

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", supported)
    monkeypatch.delenv("HPO_BF16", raising=False)
    hpo.trainer.bf16_autocast.cache_clear()
    try:
        assert hpo.trainer.bf16_autocast("cuda") is expected
        assert asked == [False]
        monkeypatch.setenv("HPO_BF16", "0")
        hpo.trainer.bf16_autocast.cache_clear()
        assert hpo.trainer.bf16_autocast("cuda") is False
    finally:
        hpo.trainer.bf16_autocast.cache_clear()


def test_training_an_exported_trial_says_what_differs_from_how_it_trained(tmp_path):
    """An export records how each trial trained; `hpo train --trial N` names each difference that
    changes its digits (a CPU's thread count, a packed group, eval: val's held-out images)."""
    import torch  # noqa: PLC0415

    from hpo.cli import rerun_notes  # noqa: PLC0415
    from hpo.config import load_export  # noqa: PLC0415

    def exported_trial(path, trial=None):
        return load_export(path, trial)[1]

    path = tmp_path / "best.yaml"
    path.write_text(yaml.safe_dump({"trials": [
        {"trial": 4, "value": 0.98, "torch_threads": 1, "config": {"model": {"preset": "linear"}}},
        {"trial": 7, "value": 0.97, "test_accuracy": 0.9812, "packed": 4, "torch_threads": 2,
         "config": {"model": {"preset": "linear"}}}]}))
    cpu = torch.device("cpu")
    first = rerun_notes(exported_trial(path), cpu, threads=2)
    assert len(first) == 1 and "trial 4 trained with 1 torch thread(s), this run with 2" in first[0]
    assert "OMP_NUM_THREADS=1" in first[0]
    assert rerun_notes(exported_trial(path), cpu, threads=1) == []
    assert rerun_notes(exported_trial(path), torch.device("cuda"), threads=2) == []  # threads: a CPU's matter
    seventh = rerun_notes(exported_trial(path, 7), cpu, threads=2)
    assert len(seventh) == 2 and "packed with 3 other trial(s)" in seventh[0]
    assert "validation accuracy" in seventh[1] and "test_accuracy, 98.12%" in seventh[1]
    assert "the held-out training images" in seventh[1]
    held = rerun_notes(exported_trial(path, 7), cpu, threads=2, held_out=33)[1]  # 201 images of one's own: not 10,000
    assert "trained without 33 held-out training images" in held
    subset = rerun_notes(exported_trial(path, 7), cpu, threads=2, test_images=(200, 10_000))[1]
    assert "test_accuracy, 98.12%, scored on all 10,000 test images, where this run tests on 200 of them " \
           "(data.test_subset)" in subset, subset  # it said "this run trains on all of them", with a train_subset
    resized = rerun_notes({"trial": 3, "n_params": 387}, cpu, threads=2, n_params=396)
    assert resized == ["trial 3 had 387 parameters, this net has 396: the data's classes or image size are not those "
                       "it was searched on; its accuracy says nothing of this run"]
    assert rerun_notes({"trial": 3, "n_params": 387}, cpu, threads=2, n_params=387) == []
    own = rerun_notes({"trial": 3, "n_params": 387, "config": {"model": {"module": "net:make"}}}, cpu, threads=2,
                      n_params=396)  # your own model: its code may have changed since, with the data as it was
    assert "the data's classes or image size, or its factory's code, are not those it was searched on" in own[0]
    changed = rerun_notes({"trial": 3, "n_params": 387, "config": {"model": {"module": "net:make"}},
                           "model_digest": "a" * 16}, cpu, threads=2, n_params=396, model_digest="b" * 16)
    assert changed == [  # the size note blamed the data, which had not changed
        "trial 3 was searched with other model code: the code of net:make this run imported differs (changed since, "
        "or another module of that name); its accuracy says nothing of this run",
        "trial 3 had 387 parameters, this net has 396: its factory's code has changed (above); its accuracy says "
        "nothing of this run"]
    unscored = rerun_notes({"trial": 2, "test_accuracy": None, "validation_accuracy_per_epoch": [0.9]}, cpu, threads=2)
    assert unscored == ["trial 2's value is its validation accuracy (eval: val: trained without the held-out training "
                        "images); this run trains on what the config says and scores the test set: the trial recorded "
                        "no test accuracy to compare with"]
    moved = {"trial": 3, "data_digest": "a" * 16}  # an export of a study on your own data, re-trained elsewhere
    assert rerun_notes(moved, cpu, threads=2, data_digest="a" * 16) == []
    assert rerun_notes(moved, cpu, threads=2, data_digest="b" * 16) == [
        "trial 3 was searched on other data: the images, labels or classes this run found at data.path differ "
        "(changed since, or another file of that name); its accuracy says nothing of this run"]
    gpu = {"trial": 9, "device": "NVIDIA H100 80GB HBM3", "packed": "x", "test_accuracy": None}
    assert [n[:41] for n in rerun_notes(gpu, cpu, threads=2)] == ["trial 9 trained on NVIDIA H100 80GB HBM3,"]
    plain = tmp_path / "cfg.yaml"
    plain.write_text("model: {preset: linear}\n")
    assert rerun_notes(exported_trial(plain), cpu, threads=2) == []


def test_a_checkpoint_folder_removed_by_a_neighbouring_run_is_made_again(tmp_path, monkeypatch):
    """A run that ends removes the study's emptied checkpoint folder; a trial of another run on
    the same study may be about to write there: its save makes the folder again."""
    import builtins  # noqa: PLC0415
    import shutil  # noqa: PLC0415

    import torch  # noqa: PLC0415

    folder = tmp_path / "checkpoints" / "study"
    removed = []
    real_open = builtins.open

    def open_after_removal(file, *args, **kwargs):
        if str(file).endswith(".tmp") and not removed:
            shutil.rmtree(tmp_path / "checkpoints")  # between the save's mkdir and its write
            removed.append(file)
        return real_open(file, *args, **kwargs)

    cfg = parse_config({"model": {"preset": "linear"}})
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, 1)
    monkeypatch.setattr(builtins, "open", open_after_removal)
    hpo.trainer.save(folder / "trial-0.pt", cfg, model, optimizer, schedule, torch.Generator(), [])
    monkeypatch.undo()
    assert removed and sorted(p.name for p in folder.iterdir()) == ["trial-0.pt"]
    assert torch.load(folder / "trial-0.pt", weights_only=True)["model"]["weight"].shape == (2, 2)


def test_a_checkpoint_that_cannot_be_written_leaves_no_part_of_itself(tmp_path, tiny, monkeypatch):
    """torch's writer on a full disk says "unexpected pos 381568 vs 381464" and left its half-written
    temporary file behind, which kept the disk full. The file goes; the error says what it was."""
    import shutil  # noqa: PLC0415

    import torch  # noqa: PLC0415

    from hpo.errors import CannotWrite  # noqa: PLC0415

    def full(state, handle):
        handle.write(b"half a checkpoint")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 381568 vs 381464")

    monkeypatch.setattr(torch, "save", full)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 0))
    path = tmp_path / "ck" / "trial-0-abc.pt"
    with pytest.raises(CannotWrite, match=rf"^cannot write the checkpoint {path}: No space left on device$") as caught:
        train(config(), tiny, checkpoint=path)
    assert list(path.parent.iterdir()) == []
    import pickle  # noqa: PLC0415 - a packed group's outcome may cross processes: the error stays whole

    assert str(pickle.loads(pickle.dumps(caught.value))) == str(caught.value)


@pytest.mark.parametrize("pct_start", [0.05, 0.25, 0.95])
def test_a_one_cycle_schedule_of_a_few_steps_trains(tiny, pct_start):
    """256 images at batch 128 for 2 epochs: 4 steps, a warm-up of one step at pct_start 0.25,
    and torch's one-cycle divided by zero as it was made (a traceback from hpo train)."""
    cfg = config(epochs=2, batch_size=128, schedule={"name": "onecycle", "pct_start": pct_start})
    history = train(cfg, tiny)
    assert [r.epoch for r in history] == [1, 2] and all(math.isfinite(r.train_loss) for r in history)
