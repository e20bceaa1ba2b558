"""The shipped seed configs (configs/*.yaml) parse, and build the seeds' networks (docs/FIDELITY.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpo import models, schema
from hpo.config import load_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("seed*.yaml"))
RAW_PIXELS = {"seed000-linear.yaml", "seed000-mlp.yaml", "seed000-cnn.yaml", "seed001-lenet5.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_builds_its_seeds_network(path):
    cfg = load_config(path)
    preset = schema.load_yaml(path)["model"]["preset"]
    assert models.spec_params(cfg.model) == models.PRESETS[preset][1]
    # seeds 000 and 001 trained on [0, 1] pixels; the others standardized them
    assert (cfg.data.normalize is False) == (path.name in RAW_PIXELS)


def test_seed003_is_its_own_net_not_the_pytorch_example():
    cfg = load_config(next(p for p in CONFIGS if p.name.startswith("seed003")))
    assert cfg.model == models.parse_model({"preset": "classic003"})
    assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.optimizer.momentum, cfg.batch_size) == ("sgd", 0.05, 0.5, 64)


def test_every_best_config_retrains_and_keeps_its_study_budget():
    """studies/best/STUDY.yaml is what `hpo verify` and `hpo train --config` re-train: an export of
    STUDY's best trial, within STUDY's parameter and epoch budget."""
    from hpo.space import model_size  # noqa: PLC0415
    from hpo.study import STUDIES_DIR, load_spec  # noqa: PLC0415

    best = sorted((STUDIES_DIR / "best").glob("*.yaml"))
    assert best, "no best config committed"
    for path in best:
        spec, cfg = load_spec(path.stem), load_config(path)
        assert cfg.epochs <= spec.budget.epochs, path
        assert not spec.budget.max_params or model_size(cfg) <= spec.budget.max_params, path


def test_an_unquoted_off_says_yaml_read_it_as_false(tmp_path):
    """`schedule: {name: off}`: the line said 'got False (bool)', nothing of why or what to write."""
    from hpo.config import load_config  # noqa: PLC0415
    from hpo.errors import ConfigError  # noqa: PLC0415

    path = tmp_path / "cfg.yaml"
    path.write_text("model: {preset: linear}\nschedule: {name: off}\n")
    with pytest.raises(ConfigError, match=r"key 'schedule.name': expected a string, got False \(bool: YAML reads no, "
                                          r"off and false unquoted as false; quote a word meant as text: 'off'\)"):
        load_config(path)
