"""examples/ end to end, as a user runs them: make the data, search with the CLI, export, re-train,
and the Python script; the model and the data are the user's own, not the seeds'."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from hpo import records

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(*argv: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HPO_OFFLINE": "1"}
    done = subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    print(f"$ {' '.join(argv)}\n{done.stdout}{done.stderr}")
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A copy of examples/ with a small shapes.npz in it (a few hundred images keep it quick)."""
    for name in ("shapes_net.py", "make_npz.py", "shapes.yaml", "notebook.py"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    run(sys.executable, "make_npz.py", "--train", "600", "--test", "300", cwd=tmp_path)
    return tmp_path


def test_the_example_study_runs_exports_and_retrains_from_the_command_line(folder):
    # the `hpo` command, as README.md has it: a console script, whose import path does not start at
    # the working folder as `python -m hpo`'s does, and the example's model module is there
    command = shutil.which("hpo", path=str(Path(sys.executable).parent))
    if command is None:
        pytest.skip("the hpo command is not installed beside this Python (pip install -e .)")
    hpo = [command]
    run(*hpo, "run", "--study", "shapes.yaml", "--trials", "5", "--device", "cpu", "--quiet", cwd=folder)
    study = optuna.load_study(study_name="shapes", storage=f"sqlite:///{folder / 'hpo.db'}")
    trials = study.get_trials(deepcopy=False)
    c = records.count(trials)
    assert c.finished == 5 and c.failed == 0
    assert all(t.user_attrs[records.N_PARAMS] <= 3000 for t in trials if records.kind(t) != "rejected")
    assert {t.user_attrs[records.CONFIG]["model"]["module"] for t in trials} == {"shapes_net:make"}
    assert (folder / "hpo-artifacts").is_dir()

    run(*hpo, "export", "--study", "shapes", "-o", "best.yaml", cwd=folder)
    exported = yaml.safe_load((folder / "best.yaml").read_text())["trials"][0]
    assert exported["config"]["model"]["module"] == "shapes_net:make" and "width" in exported["config"]["model"]
    trained = run(*hpo, "train", "--config", "best.yaml", "--device", "cpu", cwd=folder)
    final = float(re.search(r"final test accuracy ([\d.]+)%", trained.stdout).group(1)) / 100
    assert final > 0.5, "the re-trained model is no better than chance on three classes"
    assert "module shapes_net:make" in trained.stdout


def test_the_python_example_prints_the_best_trial_and_retrains_it(folder):
    done = run(sys.executable, "notebook.py", cwd=folder)
    assert re.search(r"^best: trial \d+, [\d.]+% test accuracy", done.stdout, re.M), done.stdout
    assert re.search(r"^re-trained: epoch 1 [\d.]+%, epoch 2 [\d.]+%, epoch 3 [\d.]+%$", done.stdout, re.M)
    assert len(re.findall(r"^  trial \d+: ", done.stdout, re.M)) >= 6


def test_the_readmes_python_block_runs_as_a_script(folder):
    """README.md's "From Python" block, saved as a script and run as one (a user's first try):
    hpo.run's workers import a script again, so the block must work as written. Its counts are
    cut (3 trials, 2 seeds) to keep the test short; nothing else changes."""
    readme = (EXAMPLES.parent / "README.md").read_text()
    block = re.search(r"## From Python\n+```python\n(.*?)```", readme, re.S).group(1)
    assert "trials=6" in block and "seeds=5" in block
    (folder / "readme_block.py").write_text(block.replace("trials=6", "trials=3").replace("seeds=5", "seeds=2"))
    done = run(sys.executable, "readme_block.py", cwd=folder)
    lines = done.stdout.strip().splitlines()
    assert len([line for line in lines if re.match(r"^\d+ (COMPLETE|PRUNED|FAIL) ", line)]) >= 3, done.stdout
    assert re.match(r"^0\.\d+ ± 0\.\d+$", lines[-1]), done.stdout


def test_a_script_read_from_standard_input_runs_a_study(folder):
    """`python - <<EOF`: the workers could not import the calling script again (its file is
    `<stdin>`) and every one failed; they start as from a notebook now."""
    script = ("import hpo\n"
              "study = hpo.run('shapes.yaml', trials=2, storage='sqlite:///stdin.db', device='cpu')\n"
              "print('finished', sum(t.state.is_finished() for t in study.trials))\n")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HPO_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-"], input=script, cwd=folder, capture_output=True, text=True,
                          timeout=600, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "finished 2" in done.stdout and "Traceback" not in done.stderr, done.stdout + done.stderr
