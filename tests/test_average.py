"""`ema` in a config: the trainer evaluates and keeps a moving average of the weights, leaves the
training itself untouched, and resumes the average from a checkpoint."""

from __future__ import annotations

import pytest
import torch

import hpo.trainer
from hpo.average import WeightAverage
from hpo.config import parse_config
from hpo.packed import pack_key
from hpo.trainer import evaluate

NET = {"family": "convnet", "layers": [4, "M", 8, "GAP", "H"], "batchnorm": True, "dropout": 0.1}


def config(**overrides):
    return parse_config({"model": NET, "epochs": 2, "batch_size": 64, "augment": {"rotate": 5.0},
                         "optimizer": {"name": "sgd", "lr": 0.2}, **overrides})


def test_the_average_weighs_each_step_by_the_decay_and_the_start_not_at_all():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    average = WeightAverage(model, decay=0.9)
    steps = []
    for shift in (1.0, 2.0, 5.0):  # three steps: the weights move, the average follows
        with torch.no_grad():
            for t in hpo.average.floating(model):
                t.add_(shift)
            model[1].num_batches_tracked.add_(1)
        steps.append([t.clone() for t in hpo.average.floating(model)])
        average.update()
    weights = [0.9 ** 2, 0.9, 1.0]  # step i weighted decay^(t - i); the starting weights not at all
    for k, got in enumerate(hpo.average.floating(average.model)):
        expected = sum(w * s[k] for w, s in zip(weights, steps)) / sum(weights)
        torch.testing.assert_close(got, expected)
    assert average.model[1].num_batches_tracked.item() == 0  # counters are not averaged
    assert all(p.requires_grad for p in model.parameters())
    assert not any(p.requires_grad for p in average.model.parameters())


def test_ema_changes_what_is_kept_not_how_it_trains(small):
    kept = {}
    plain = hpo.trainer.train(config(), small, on_done=lambda m: kept.setdefault("plain", m))
    averaged = hpo.trainer.train(config(ema=0.9), small, on_done=lambda m: kept.setdefault("ema", m))
    # the same steps, dropout masks and augmentations: the averaging draws no random numbers
    assert [r.train_loss for r in averaged] == [r.train_loss for r in plain]
    differ = [not torch.equal(a, b) for a, b in zip(kept["plain"].state_dict().values(),
                                                    kept["ema"].state_dict().values()) if a.is_floating_point()]
    assert all(differ)
    a, b = kept["plain"].state_dict(), kept["ema"].state_dict()
    gaps = [float((b[k] - a[k]).norm() / a[k].norm()) for k in a if a[k].is_floating_point()]
    assert sum(gaps) / len(gaps) < 0.5  # near the trained weights (0.14 here), not the untrained start (1.4)
    # each epoch reports the average, and on_done gets that same net
    assert averaged[-1].test_accuracy == evaluate(kept["ema"], small.test_x, small.test_y)
    assert plain[-1].test_accuracy == evaluate(kept["plain"], small.test_x, small.test_y)


def test_a_resumed_run_resumes_the_average(small, tmp_path):
    cfg = config(ema=0.99)
    kept = {}
    straight = hpo.trainer.train(cfg, small, on_done=lambda m: kept.setdefault("straight", m))

    class Stop(Exception):
        pass

    def stop_after_one(epoch, accuracy):
        if epoch == 1:
            raise Stop

    checkpoint = tmp_path / "trial.pt"
    with pytest.raises(Stop):
        hpo.trainer.train(cfg, small, report=stop_after_one, checkpoint=checkpoint)
    resumed = hpo.trainer.train(cfg, small, checkpoint=checkpoint, on_done=lambda m: kept.setdefault("resumed", m))
    assert [r.restored for r in resumed] == [True, False]
    assert [r.test_accuracy for r in resumed] == [r.test_accuracy for r in straight]
    for a, b in zip(kept["straight"].state_dict().values(), kept["resumed"].state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_an_averaging_config_trains_alone_and_round_trips():
    assert pack_key(config(ema=0.999)) is None and pack_key(config()) is not None
    assert config(ema=0.999).to_dict()["ema"] == 0.999 and "ema" not in config().to_dict()
    assert parse_config(config(ema=0.999).to_dict()) == config(ema=0.999)
