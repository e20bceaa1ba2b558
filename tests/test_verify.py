"""`hpo verify` and `hpo.verify`: one config re-trained over seeds, final epoch as mean ± std."""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import hpo

CONFIG = {"model": {"preset": "linear"}, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
          "batch_size": 64, "epochs": 2, "data": {"train_subset": 600, "test_subset": 300}}


def verify_cli(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    done = subprocess.run([sys.executable, "-m", "hpo", "verify", "--config", str(path), "--device", "cpu", *extra],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "HPO_OFFLINE": "1"})
    print(done.stdout, done.stderr)
    assert done.returncode == 0, done.stderr
    return done


def test_one_line_per_seed_then_mean_and_std_of_the_final_epochs(tmp_path):
    out = verify_cli(tmp_path, "--seeds", "3").stdout
    finals = [float(f) for f in re.findall(r"^seed +\d+  final ([\d.]+)%  best [\d.]+% \(epoch \d\)  7,850 params",
                                            out, re.M)]
    assert len(finals) == 3, out
    mean, std = (float(x) for x in re.search(r"over 3 seeds: ([\d.]+)% ± ([\d.]+)%", out).groups())
    assert mean == pytest.approx(statistics.fmean(finals), abs=0.01)
    assert std == pytest.approx(statistics.stdev(finals), abs=0.01)


def test_json_is_the_whole_result_and_nothing_else(tmp_path):
    result = json.loads(verify_cli(tmp_path, "--seeds", "2", "--json").stdout)
    finals = [r["final"] for r in result["runs"]]
    assert [r["seed"] for r in result["runs"]] == [0, 1] and result["n_params"] == 7850 and result["epochs"] == 2
    assert result["mean"] == pytest.approx(statistics.fmean(finals))
    assert result["std"] == pytest.approx(statistics.stdev(finals))
    assert all(r["best"] >= r["final"] for r in result["runs"])


def test_each_seed_is_what_hpo_train_gives_with_that_seed(mnist_dir):
    verified = hpo.verify(CONFIG, seeds=2, device="cpu")
    assert [r.seed for r in verified.runs] == [0, 1]
    for run in verified.runs:
        assert run.final == hpo.train(CONFIG, seed=run.seed, device="cpu")[-1].test_accuracy
