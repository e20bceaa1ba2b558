"""The tests' forked `python -m hpo` (tests/cli_zygote.py) answers as a real interpreter does:
the same exit code, standard output and standard error, in the caller's folder and environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import cli_zygote
from cli_helpers import TINY, write_study


@pytest.mark.parametrize("args", [
    ["--version"],
    ["check", "tiny.yaml"],                                   # reads the file in the caller's folder
    ["studies", "--storage", "sqlite:///absent.db"],          # one line on stderr, exit 2
    ["run", "--study", "tiny.yaml", "--trials", "0"],         # argparse's own exit
    ["studies"],                                              # the storage named by the environment
], ids=["version", "check", "error", "usage", "environment"])
def test_a_forked_call_answers_as_a_fresh_interpreter(tmp_path, monkeypatch, args):
    write_study(tmp_path, "tiny", **{k: v for k, v in TINY.items() if k != "name"})
    env = {**os.environ, "HPO_OFFLINE": "1", "COLUMNS": "100", "HPO_STORAGE": f"sqlite:///{tmp_path}/absent.db"}
    forked = cli_zygote.run(args, cwd=tmp_path, env=env, changed={}, timeout=120)
    monkeypatch.setenv("HPO_TEST_SUBPROCESS", "1")
    real = cli_zygote.run(args, cwd=tmp_path, env=env, changed={}, timeout=120)
    assert (forked.returncode, forked.stdout, forked.stderr) == (real.returncode, real.stdout, real.stderr)
    assert forked.returncode in (0, 2) and (forked.stdout or forked.stderr)
    if args == ["studies"]:
        assert "absent.db" in forked.stderr and "HPO_STORAGE" in forked.stderr
    assert not Path(tmp_path, "absent.db").exists()
