"""Every user mistake, through the real CLI in a subprocess: one line on stderr that names the
file, key or value and how to fix it; exit code 2; no traceback; no study or trial created.

Run with `pytest -s` to see each line exactly as a user does.
"""

from __future__ import annotations

import copy
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import optuna
import pytest
from conftest import hpo_study
import sqlalchemy
import yaml

from cli_helpers import TINY, hpo
from hpo import data as hpo_data, datasets
from hpo.runner import ensure_study
from hpo.storage import Storage
from hpo.study import load_spec

SECRET = "s3cret-pw"
REPO = Path(__file__).resolve().parents[1]


def study_with(change: Callable[[dict], None]) -> Callable[[Path], None]:
    """A setup that writes TINY, changed, as tiny.yaml."""
    def setup(folder: Path) -> None:
        spec = copy.deepcopy(TINY)
        change(spec)
        (folder / "tiny.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return setup


def text_file(name: str, text: str) -> Callable[[Path], None]:
    return lambda folder: (folder / name).write_text(text)


def existing_study(folder: Path) -> None:
    """tiny.yaml and its study in db.sqlite (trial 0 enqueued, none run), then tiny.yaml edited."""
    study_with(lambda s: None)(folder)
    storage = Storage.resolve(f"sqlite:///{folder / 'db.sqlite'}")
    ensure_study(storage.open(heartbeat=None), load_spec(str(folder / "tiny.yaml")), storage)
    study_with(lambda s: s["search"]["optimizer.lr"].update(float=[0.001, 0.4]))(folder)


def study_from_another_copy(folder: Path) -> None:
    """The study made from machineA/tiny.yaml; tiny.yaml here (another machine's copy) edited."""
    (folder / "machineA").mkdir()
    study_with(lambda s: None)(folder / "machineA")
    storage = Storage.resolve(f"sqlite:///{folder / 'db.sqlite'}")
    ensure_study(storage.open(heartbeat=None), load_spec(str(folder / "machineA" / "tiny.yaml")), storage)
    study_with(lambda s: s["search"]["optimizer.lr"].update(float=[0.001, 0.4]))(folder)


def single_objective_study(folder: Path) -> None:
    """tiny.yaml and its one-objective study in db.sqlite, then tiny.yaml given two objectives."""
    study_with(lambda s: None)(folder)
    storage = Storage.resolve(f"sqlite:///{folder / 'db.sqlite'}")
    ensure_study(storage.open(heartbeat=None), load_spec(str(folder / "tiny.yaml")), storage)
    study_with(lambda s: s.update(objectives=["accuracy", "params"], pruner="none"))(folder)


def study_without_finished_trials(folder: Path) -> None:
    study_with(lambda s: None)(folder)
    storage = Storage.resolve(f"sqlite:///{folder / 'db.sqlite'}")
    ensure_study(storage.open(heartbeat=None), load_spec(str(folder / "tiny.yaml")), storage)


def study_with_a_complete_trial(folder: Path) -> None:
    study = hpo_study(study_name="tiny", storage=f"sqlite:///{folder / 'db.sqlite'}", direction="maximize")
    study.add_trial(optuna.create_trial(value=0.9, user_attrs={"config": TINY["base"]}))


def damaged_database(folder: Path) -> None:
    """A study database with garbage written over its first pages."""
    path = folder / "damaged.sqlite"
    hpo_study(study_name="tiny", storage=f"sqlite:///{path}")
    with open(path, "r+b") as handle:
        handle.seek(100)
        handle.write(bytes(range(256)) * 16)


def foreign_database(folder: Path) -> None:
    """An SQLite database another program wrote: one table, none of Optuna's."""
    with sqlite3.connect(folder / "other.sqlite") as conn:
        conn.execute("CREATE TABLE customers (id INTEGER)")


MODELS = """from torch import nn
def wrong_input(**kw): return nn.Sequential(nn.Linear(5, 3))
def five_logits(**kw): return nn.Sequential(nn.Flatten(), nn.Linear(784, 5))
def raises(**kw): raise ValueError("no such width")
"""


def user_model(model: str) -> Callable[[Path], None]:
    """mods.py (a user's model module, in the working folder) and a study and a training config
    that train mods:`model`."""
    def setup(folder: Path) -> None:
        (folder / "mods.py").write_text(MODELS)
        base = {"model": {"module": f"mods:{model}"}, "optimizer": {"name": "sgd", "lr": 0.05}, "epochs": 1}
        (folder / "cfg.yaml").write_text(yaml.safe_dump(base))
        (folder / "tiny.yaml").write_text(yaml.safe_dump({"name": "tiny", "base": base,
                                                          "search": {"optimizer.lr": {"float": [0.01, 0.1]}}}))
    return setup


def corrupted_data(folder: Path) -> None:
    """A data folder with three good MNIST files and a truncated fourth."""
    good = hpo_data.ensure("mnist")
    data = folder / "mnist"  # --data-dir {dir} names the root; MNIST is in ROOT/mnist
    data.mkdir()
    for spec in datasets.MNIST.files:
        (data / spec.name).symlink_to(good / spec.name)
    (data / "t10k-labels-idx1-ubyte").unlink()
    (data / "t10k-labels-idx1-ubyte").write_bytes((good / "t10k-labels-idx1-ubyte").read_bytes()[:5000])


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]                # {dir} is the case's folder, {pg} the PostgreSQL server
    expect: tuple[str, ...]              # each must appear in the one line
    setup: Callable[[Path], None] = field(default=lambda folder: None)
    postgres: bool = False
    env: dict | None = None              # the environment's changes (HPO_STORAGE)


def run_cmd(*extra: str, study="{dir}/tiny.yaml", trials="3", storage="sqlite:///{dir}/db.sqlite", device="cpu"):
    return ("run", "--study", study, "--trials", trials, "--storage", storage, "--device", device, *extra)


RUN = run_cmd()
TINY_FILE = study_with(lambda s: None)
TRAIN_CONFIG = str(REPO / "configs" / "seed000-linear.yaml")

CASES = [
    # --- study files
    Case("malformed YAML", RUN, ("tiny.yaml", "malformed YAML at line 2"),
         text_file("tiny.yaml", "base: {model: {preset: lenet5}\nsearch: [\n")),
    Case("a control character in a study file", RUN, ("tiny.yaml", "line 2, column 9", "control character #x0007"),
         text_file("tiny.yaml", "name: tiny\nbase: {x\x07y: 1}\n")),
    Case("unknown key", RUN, ("tiny.yaml", "'sampler_opts'", "unknown key", "expected one of"),
         study_with(lambda s: s.update(sampler_opts={"seed": 1}))),
    Case("unknown nested key", RUN, ("tiny.yaml", "'base.optimzer'", "unknown key"),
         study_with(lambda s: s["base"].update(optimzer={"name": "sgd"}))),
    Case("wrong type", RUN, ("tiny.yaml", "'base.batch_size'", "'big'", "expected an integer"),
         study_with(lambda s: s["base"].update(batch_size="big"))),
    Case("low > high", RUN, ("tiny.yaml", "'search.optimizer.lr.float'", "low 0.5 is greater than high 0.001"),
         study_with(lambda s: s["search"].update({"optimizer.lr": {"float": [0.5, 0.001]}}))),
    Case("empty choices", RUN, ("tiny.yaml", "'search.optimizer.name.choices'", "non-empty"),
         study_with(lambda s: s["search"].update({"optimizer.name": {"choices": []}}))),
    Case("unknown model", RUN, ("tiny.yaml", "'base.model.preset'", "'resnet50'", "choose from"),
         study_with(lambda s: s["base"].update(model={"preset": "resnet50"}))),
    Case("unknown optimizer", RUN, ("tiny.yaml", "'base.optimizer.name'", "'lion'", "choose from"),
         study_with(lambda s: s["base"]["optimizer"].update(name="lion"))),
    Case("unknown pruner", RUN, ("tiny.yaml", "'pruner.name'", "'asha'", "choose from"),
         study_with(lambda s: s.update(pruner={"name": "asha"}))),
    Case("unknown sampler", RUN, ("tiny.yaml", "'sampler.name'", "'bayes'", "choose from"),
         study_with(lambda s: s.update(sampler={"name": "bayes"}))),
    Case("budget below the smallest model", RUN, ("tiny.yaml", "'budget.max_params'", "50 is below the smallest model"),
         study_with(lambda s: s.update(budget={"max_params": 50, "epochs": 3}))),
    Case("searched epochs over the budget", RUN,
         ("tiny.yaml", "'search.epochs'", "5 epochs is more than budget.epochs 3"),
         study_with(lambda s: s["search"].update(epochs={"choices": [3, 5]}))),
    Case("multi-objective study with a pruner", RUN,
         ("tiny.yaml", "'pruner'", "Optuna does not prune multi-objective studies", "pruner: {name: none}",
          "one objective"), study_with(lambda s: s.update(objectives=["accuracy", "params"]))),
    Case("unknown objective", RUN, ("tiny.yaml", "'objectives.1'", "unknown objective 'size'", "accuracy, params"),
         study_with(lambda s: s.update(objectives=["accuracy", "size"], pruner="none"))),
    Case("objective listed twice", RUN, ("tiny.yaml", "'objectives.1'", "listed twice"),
         study_with(lambda s: s.update(objectives=["accuracy", "accuracy"]))),
    Case("objectives not a list", RUN, ("tiny.yaml", "'objectives'", "expected a list", "[accuracy, params]"),
         study_with(lambda s: s.update(objectives="accuracy params"))),
    Case("multi-objective study with cmaes", RUN, ("tiny.yaml", "'sampler.name'", "cmaes handles one objective only"),
         study_with(lambda s: s.update(objectives=["accuracy", "params"], pruner="none", sampler="cmaes"))),
    Case("study's objectives changed under its name", RUN,
         ("'tiny'", "has one objective", "asks for 2 objectives", "objectives cannot change", "another name"),
         single_objective_study),
    Case("unknown study name", ("run", "--study", "nosuch", "--trials", "3", "--storage", "sqlite:///{dir}/db.sqlite"),
         ("--study nosuch", "no such study file", "quickstart")),
    Case("a study name misspelt", ("run", "--study", "lenet-tunning", "--trials", "1", "--storage", "sqlite:///{dir}/db.sqlite"),
         ("--study lenet-tunning", "no such study file (did you mean 'lenet-tuning'?); give a path")),
    Case("a study file's name misspelt", run_cmd(study="{dir}/tinny.yml"),
         ("--study {dir}/tinny.yml", "(did you mean '{dir}/tiny.yaml'?)"), TINY_FILE),
    Case("a study's bare name, its file here", run_cmd(study="tiny"),
         ("--study tiny: no such study under studies/; for the file here, give its name with .yaml: --study tiny.yaml",),
         TINY_FILE),
    Case("another machine's copy of the study file, changed: the keys that differ are named (they were not)", RUN,
         ("created from a different study file ({dir}/machineA/tiny.yaml: search.optimizer.lr differ)",),
         study_from_another_copy),
    Case("study file changed under its name", RUN, ("'tiny'", "created from a different study file", "another name"),
         existing_study),
    # --- command-line values
    Case("--trials 0", run_cmd(trials="0"), ("--trials", "must be 1 or more, got 0", "--help"), TINY_FILE),
    Case("--trials negative", run_cmd(trials="-2"), ("--trials", "got -2", "--help"), TINY_FILE),
    Case("--workers 0", run_cmd("--workers", "0"), ("--workers", "got 0"), TINY_FILE),
    Case("--workers neither a count nor auto", run_cmd("--workers", "many"),
         ("--workers", "expected a whole number, got 'many' (or auto)"), TINY_FILE),
    Case("--grace not above --heartbeat", run_cmd("--heartbeat", "5", "--grace", "5"), ("--grace 5", "--heartbeat 5"),
         TINY_FILE),
    Case("--device cuda without one", run_cmd(device="cuda"), ("device cuda: no CUDA device is visible here; use cpu or auto",), TINY_FILE),
    # --- storages
    Case("storage URL that is no URL", run_cmd(storage="nonsense"), ("'nonsense'", "not a database URL", "sqlite:///"),
         TINY_FILE),
    Case("unreachable storage", run_cmd(storage=f"postgresql+psycopg://postgres:{SECRET}@127.0.0.1:1/hpo_unreached"),
         ("postgres:***@127.0.0.1:1", "Connection refused"), TINY_FILE),
    Case("a PostgreSQL database that does not exist, for a read",
         ("studies", "--storage", "postgresql+psycopg://postgres@{pg}/hpo_no_such_database"),
         ("hpo_no_such_database: the server has no database 'hpo_no_such_database'", "run one first (hpo run --study NAME --trials N",
          "which creates it"), postgres=True),
    Case("wrong credentials", run_cmd(storage=f"postgresql+psycopg://nobody:{SECRET}@{{pg}}/hpo_nobody"),
         ("nobody:***@", 'role "nobody" does not exist', "credentials"), TINY_FILE, postgres=True),
    Case("storage driver not installed", ("studies", "--storage", f"mysql://root:{SECRET}@127.0.0.1/hpo"),
         ("mysql://root:***@", "driver is not installed")),
    Case("SQLite file in a folder that cannot exist", ("studies", "--storage", "sqlite:////proc/no/such/db.sqlite"),
         ("no database at /proc/no/such/db.sqlite", "run a study first")),
    Case("SQLite file that does not exist, for a command that only reads",
         ("export", "--study", "tiny", "--storage", "sqlite:///{dir}/typo.db"),
         ("no database at {dir}/typo.db: run a study first (hpo run --study NAME --trials N --storage "
          "sqlite:///{dir}/typo.db)",)),
    Case("SQLite URL with two slashes", ("studies", "--storage", "sqlite://typo.db"),
         ("three slashes", "sqlite:///typo.db")),
    Case("in-memory SQLite (no file)", run_cmd(storage="sqlite://"), ("in-memory", "name a file"), TINY_FILE),
    Case("in-memory SQLite (:memory:)", ("studies", "--storage", "sqlite:///:memory:"), ("in-memory",)),
    Case("SQLite URL with a query", ("studies", "--storage", "sqlite:///{dir}/db.sqlite?x.db"), ("takes no '?'",)),
    Case("unknown storage driver", ("studies", "--storage", f"postgresql+nodriver://hpo:{SECRET}@db/hpo"),
         ("unknown driver 'postgresql+nodriver'", "hpo:***@")),
    Case("PostgreSQL URL missing a slash", run_cmd(storage=f"postgresql+psycopg:/hpo:{SECRET}@db/hpo"),
         ("not a database URL", "hpo:***@"), TINY_FILE),
    Case("damaged SQLite file", ("studies", "--storage", "sqlite:///{dir}/damaged.sqlite"),
         ("damaged.sqlite", "not a readable SQLite database", "restore it"), damaged_database),
    Case("a misspelt flag of a command: its parser says it, and which flag was meant",
         run_cmd("--stroage", "sqlite:///x.db"),
         ("hpo run: error: unrecognized arguments: --stroage sqlite:///x.db (did you mean --storage?) "
          "(see hpo run --help)",), TINY_FILE),
    Case("a misspelt required flag is named, not only the one it hid",
         ("run", "--study", "{dir}/tiny.yaml", "--trails", "2"),
         ("the following arguments are required: --trials; unknown: --trails (did you mean --trials?)",), TINY_FILE),
    Case("an SQLite path through a file (it blamed the artifact store beside it)",
         run_cmd(storage="sqlite:///{dir}/tiny.yaml/x.db"),
         ("storage sqlite:///{dir}/tiny.yaml/x.db: {dir}/tiny.yaml is a file, not a folder",), TINY_FILE),
    Case("a misspelt command", ("studis",), ("invalid choice: 'studis'", "(did you mean studies?)")),
    Case("a flag no flag is close to gets no guess (--dry was 'close' to --study by their shared '--')",
         run_cmd("--dry"), ("hpo run: error: unrecognized arguments: --dry (see hpo run --help)",), TINY_FILE),
    Case("a command's option before the command", ("--storage", "sqlite:///x.db", "studies"),
         ("hpo: error: --storage before the command: a command's options go after it (hpo COMMAND --storage ...)",)),
    Case("a trial number that is not one", ("train", "--config", TRAIN_CONFIG, "--trial", "abc"),
         ("argument --trial: expected a whole number, got 'abc'",)),
    Case("a file that is no database as the storage, for hpo run (it said 'damaged', exit 1)",
         run_cmd(storage="sqlite:///{dir}/tiny.yaml"),
         ("tiny.yaml is not a readable SQLite database (file is not a database)", "point --storage at the database"),
         TINY_FILE),
    Case("another program's SQLite database, for a command that only reads",
         ("studies", "--storage", "sqlite:///{dir}/other.sqlite"),
         ("other.sqlite", "not a database hpo wrote", "none of them Optuna's"), foreign_database),
    Case("another program's SQLite database, for hpo run", run_cmd(storage="sqlite:///{dir}/other.sqlite"),
         ("other.sqlite holds another program's tables (customers) and none of Optuna's", "a database of its own"),
         lambda folder: (TINY_FILE(folder), foreign_database(folder))),
    Case("an empty study file", RUN, ("tiny.yaml: holds nothing (empty, or only comments)",),
         text_file("tiny.yaml", "# the search, to be written\n")),
    Case("an empty training config", ("train", "--config", "{dir}/c.yaml"), ("c.yaml: holds nothing",),
         text_file("c.yaml", "")),
    Case("a folder as the SQLite storage (hpo run)", run_cmd(storage="sqlite:///{dir}/runs.db"),
         ("storage sqlite:///{dir}/runs.db is a folder, not a database file; give a file in it, e.g. "
          "sqlite:///{dir}/runs.db/hpo.db",), lambda folder: (TINY_FILE(folder), (folder / "runs.db").mkdir())),
    Case("a folder as the SQLite storage (hpo studies)", ("studies", "--storage", "sqlite:///{dir}/runs.db"),
         ("runs.db is a folder, not a database file",), lambda folder: (folder / "runs.db").mkdir()),
    Case("an empty file as the storage", ("export", "--study", "tiny", "--storage", "sqlite:///{dir}/empty.db"),
         ("empty.db", "is an empty file"), text_file("empty.db", "")),
    Case("a driver that is not installed, for hpo run", run_cmd(storage=f"postgresql+psycopg2://u:{SECRET}@{{pg}}/x"),
         ("u:***@", "driver is not installed (postgresql+psycopg2)", "postgresql+psycopg://"), TINY_FILE,
         postgres=True),
    Case("HPO_STORAGE that is no URL", ("studies",), ("'nonsense'", "(from $HPO_STORAGE)", "not a database URL"),
         env={"HPO_STORAGE": "nonsense"}),
    # --- export and report
    Case("export of an unknown study", ("export", "--study", "nosuch", "--storage", "sqlite:///{dir}/db.sqlite"),
         ("'nosuch'", "studies here: tiny"), study_without_finished_trials),
    Case("export of a study name one letter off", ("export", "--study", "tinny", "--storage", "sqlite:///{dir}/db.sqlite"),
         ("'tinny'", "(did you mean 'tiny'?)"), study_without_finished_trials),
    Case("export of a study name in capitals", ("export", "--study", "TINY", "--storage", "sqlite:///{dir}/db.sqlite"),
         ("'TINY'", "(did you mean 'tiny'?)"), study_without_finished_trials),
    Case("export of a study with no finished trial",
         ("export", "--study", "tiny", "--storage", "sqlite:///{dir}/db.sqlite"),
         ("'tiny'", "no complete trial", "hpo run --study {dir}/tiny.yaml --trials N"), study_without_finished_trials),
    Case("export into a folder", ("export", "--study", "tiny", "--storage", "sqlite:///{dir}/db.sqlite", "-o", "{dir}"),
         ("is a folder", "best.yaml"), study_with_a_complete_trial),
    Case("export under a file where a folder should be",
         ("export", "--study", "tiny", "--storage", "sqlite:///{dir}/db.sqlite", "-o", "{dir}/db.sqlite/best.yaml"),
         ("db.sqlite/best.yaml:", "db.sqlite is a file, not a folder"), study_with_a_complete_trial),
    Case("report to an empty -o", ("report", "--study", "tiny", "--storage", "sqlite:///{dir}/db.sqlite", "-o", ""),
         ("argument -o/--output: is empty; give a file name",), study_with_a_complete_trial),
    Case("export to -o . (a folder, not an empty name)",
         ("export", "--study", "tiny", "--storage", "sqlite:///{dir}/db.sqlite", "-o", "."),
         ("-o . is a folder; give a file name, e.g. -o best.yaml",), study_with_a_complete_trial),
    Case("export to a path that cannot be written",
         ("export", "--study", "tiny", "--storage", "sqlite:///{dir}/db.sqlite", "-o", "/proc/no/best.yaml"),
         ("cannot write /proc/no/best.yaml",), study_with_a_complete_trial),
    Case("report into a folder", ("report", "--study", "tiny", "--storage", "sqlite:///{dir}/db.sqlite", "-o", "{dir}"),
         ("is a folder", "report.html"), study_with_a_complete_trial),
    Case("report to a path that cannot be written",
         ("report", "--study", "tiny", "--storage", "sqlite:///{dir}/db.sqlite", "-o", "/proc/no/report.html"),
         ("cannot write /proc/no/report.html",), study_with_a_complete_trial),
    Case("export over the study's own database",
         ("export", "--study", "tiny", "--storage", "sqlite:///{dir}/db.sqlite", "-o", "{dir}/db.sqlite"),
         ("-o {dir}/db.sqlite is the study's database (--storage sqlite:///{dir}/db.sqlite); writing there would "
          "destroy it: give another file, e.g. -o best.yaml",), study_with_a_complete_trial),
    Case("report over the database's lock file",
         ("report", "--study", "tiny", "--storage", "sqlite:///{dir}/db.sqlite", "-o", "{dir}/db.sqlite.lock"),
         ("belongs to the study's database",), study_with_a_complete_trial),
    Case("export over another SQLite database",
         ("export", "--study", "tiny", "--storage", "sqlite:///{dir}/db.sqlite", "-o", "{dir}/other.sqlite"),
         ("-o {dir}/other.sqlite is an SQLite database; writing there would destroy it",),
         lambda folder: (study_with_a_complete_trial(folder), foreign_database(folder))),
    Case("sampler seed past the largest", RUN, ("tiny.yaml", "'sampler.seed'", "from 0 to 4,294,967,295"),
         study_with(lambda s: s.update(sampler={"name": "tpe", "seed": 2**63}))),
    Case("config seed past the largest", ("train", "--config", "{dir}/s.yaml"),
         ("s.yaml", "key 'seed'", "from 0 to 4,294,967,295, got 9223372036854775808"),
         text_file("s.yaml", f"model: {{preset: linear}}\nseed: {2**63}\n")),
    Case("--seed past the largest", ("train", "--config", TRAIN_CONFIG, "--seed", str(2**64)),
         ("--seed", "from 0 to 4,294,967,295")),
    Case("verify seeds running past the largest", ("verify", "--config", "{dir}/s.yaml", "--seeds", "3"),
         ("seeds 4294967294..4294967296 go past the largest seed", "a seed up to 4,294,967,293"),
         text_file("s.yaml", f"model: {{preset: linear}}\nseed: {2**32 - 2}\n")),
    # --- more command-line values
    Case("--epochs that leave no room for the config's warm-up", ("train", "--config", "{dir}/w.yaml", "--epochs", "1"),
         ("w.yaml with --epochs 1: key 'schedule.warmup_epochs': 1.5 epochs of warm-up leave none of the 1 epoch(s)",),
         text_file("w.yaml", "model: {preset: linear}\nschedule: {name: cosine, warmup_epochs: 1.5}\nepochs: 3\n")),
    Case("hpo verify --seeds 0", ("verify", "--config", TRAIN_CONFIG, "--seeds", "0"), ("--seeds", "got 0")),
    Case("--workers beyond reason", run_cmd("--workers", "10000"), ("--workers", "between 1 and 256"), TINY_FILE),
    Case("--checkpoint-dir that is a file", run_cmd("--checkpoint-dir", "{dir}/tiny.yaml"),
         ("checkpoint folder (--checkpoint-dir) {dir}/tiny.yaml is a file, not a folder",), TINY_FILE),
    Case("--checkpoint-dir under a file", run_cmd("--checkpoint-dir", "{dir}/tiny.yaml/ck"),
         ("checkpoint folder (--checkpoint-dir) {dir}/tiny.yaml/ck is under {dir}/tiny.yaml, a file",), TINY_FILE),
    Case("--artifacts under a file", run_cmd("--artifacts", "{dir}/tiny.yaml/art"),
         ("artifact store (--artifacts) {dir}/tiny.yaml/art is under {dir}/tiny.yaml, a file",), TINY_FILE),
    Case("--checkpoint-dir where nothing can be made", run_cmd("--checkpoint-dir", "/sys/hpo-checkpoints"),
         ("checkpoint folder (--checkpoint-dir) /sys/hpo-checkpoints (/sys, where it would be made) cannot be "
          "written",), TINY_FILE),
    # --- training configs and data
    Case("export file whose trials are a mapping", ("train", "--config", "{dir}/best.yaml"),
         ("best.yaml", "'trials'", "expected the list"), text_file("best.yaml", "trials: {best: {model: 1}}\n")),
    Case("a model whose forward cannot take the images", RUN,
         ("tiny.yaml", "'base.model'", "mods:wrong_input's forward fails on a batch of 2 1x28x28 images",
          "mat1 and mat2 shapes cannot be multiplied"), user_model("wrong_input")),
    Case("a model with the wrong number of logits", ("train", "--config", "{dir}/cfg.yaml"),
         ("cfg.yaml", "'model'", "to (2, 5)", "expected (2, 10) logits for 10 classes"), user_model("five_logits")),
    Case("a model factory that raises", ("train", "--config", "{dir}/cfg.yaml"),
         ("cfg.yaml", "'model'", "mods:raises() raised ValueError: no such width"), user_model("raises")),
    Case("a subset larger than the dataset (hpo run)", RUN,
         ("tiny.yaml", "'base.data.train_subset'", "100,000 is more than the 60,000 train images of mnist"),
         study_with(lambda s: s["base"].update(data={"train_subset": 100_000}))),
    Case("a validation subset larger than what eval: val holds out", RUN,
         ("tiny.yaml", "'base.data.test_subset'", "20,000 is more than the 10,000", "training images held out for eval: val of mnist"),
         study_with(lambda s: (s.update(eval="val"), s["base"].update(data={"test_subset": 20_000})))),
    Case("a subset larger than the dataset (hpo train)", ("train", "--config", "{dir}/cfg.yaml", "--device", "cpu"),
         ("cfg.yaml", "'data.test_subset'", "100,000 is more than the 10,000 test images"),
         text_file("cfg.yaml", "model: {preset: linear}\nepochs: 1\ndata: {test_subset: 100000}\n")),
    Case("a subset larger than the dataset (hpo verify)", ("verify", "--config", "{dir}/cfg.yaml", "--device", "cpu"),
         ("cfg.yaml", "'data.train_subset'", "70,000 is more than the 60,000 train images"),
         text_file("cfg.yaml", "model: {preset: linear}\nepochs: 1\ndata: {train_subset: 70000}\n")),
    Case("hpo train --seed negative", ("train", "--config", TRAIN_CONFIG, "--seed", "-1"), ("--seed", "from 0 to 4,294,967,295, got -1")),
    Case("hpo verify --epochs beyond a config's", ("verify", "--config", TRAIN_CONFIG, "--epochs", "5000"),
         ("--epochs", "between 1 and 1000, got 5000")),
    Case("an infinite learning rate", ("train", "--config", "{dir}/cfg.yaml"),
         ("cfg.yaml", "'optimizer.lr'", "must be a finite number, got inf"),
         text_file("cfg.yaml", "model: {preset: linear}\noptimizer: {lr: .inf}\n")),
    Case("export file whose trials are bare configs", ("train", "--config", "{dir}/best.yaml"),
         ("best.yaml", "'trials.0'", "missing 'config'", "this one has model, epochs"),
         text_file("best.yaml", "trials:\n  - model: {preset: linear}\n    epochs: 1\n")),
    Case("export file with a trial twice", ("train", "--config", "{dir}/best.yaml", "--trial", "3"),
         ("best.yaml", "trial 3 is there 2 times"),
         text_file("best.yaml", "trials:\n  - {trial: 3, config: {model: {preset: linear}}}\n"
                                "  - {trial: 3, config: {model: {preset: lenet5}}}\n")),
    Case("export file with a trial twice, trained without --trial", ("train", "--config", "{dir}/best.yaml"),
         ("best.yaml", "trial 3 is there 2 times"),
         text_file("best.yaml", "trials:\n  - {trial: 3, config: {model: {preset: linear}}}\n"
                                "  - {trial: 3, config: {model: {preset: lenet5}}}\n")),
    Case("a tab where YAML wants indentation", ("train", "--config", "{dir}/cfg.yaml"),
         ("cfg.yaml", "malformed YAML at line 3, column 1", "indent with spaces, not tabs"),
         text_file("cfg.yaml", "model: {preset: linear}\nepochs: 1\n\tseed: 0\n")),
    Case("an empty --artifacts (an unset variable)", run_cmd("--artifacts", ""),
         ("argument --artifacts: is empty; give a path",), TINY_FILE),
    Case("an empty --storage (an unset variable)", ("studies", "--storage", ""),
         ("argument --storage: is empty; give a database URL",)),
    Case("training config missing its model", ("train", "--config", "{dir}/cfg.yaml"),
         ("cfg.yaml", "'model'", "missing", "preset"),
         text_file("cfg.yaml", "optimizer: {name: sgd, lr: 0.1}\nepochs: 1\n")),
    Case("training config with a wrong type", ("train", "--config", "{dir}/cfg.yaml"),
         ("cfg.yaml", "'epochs'", "'ten'"), text_file("cfg.yaml", "model: {preset: linear}\nepochs: ten\n")),
    Case("training config with a weight average's decay of 1", ("train", "--config", "{dir}/cfg.yaml"),
         ("cfg.yaml", "'ema'", "(0, 1)", "leave it out"), text_file("cfg.yaml", "model: {preset: linear}\nema: 1\n")),
    Case("training config that does not exist", ("train", "--config", "{dir}/nope.yaml"),
         ("nope.yaml", "file not found")),
    Case("a study file given as the training config", ("train", "--config", "{dir}/tiny.yaml"),
         ("tiny.yaml", "a study file, not a training config", "hpo run --study"), TINY_FILE),
    Case("a training config given as the study", run_cmd(study=TRAIN_CONFIG),
         ("seed000-linear.yaml", "not a study file", "hpo train --config")),
    Case("--trial that the export does not hold", ("train", "--config", "{dir}/best.yaml", "--trial", "7"),
         ("--trial 7", "best.yaml holds trial(s) 3, 5", "hpo export --top N"),
         text_file("best.yaml", yaml.safe_dump({"trials": [{"trial": 3, "config": {"model": {"preset": "linear"}}},
                                                          {"trial": 5, "config": {"model": {"preset": "lenet5"}}}]}))),
    Case("--trial with a plain training config", ("verify", "--config", TRAIN_CONFIG, "--trial", "2"),
         ("--trial 2", "not an export", "leave --trial out")),
    Case("a database given as the config", ("verify", "--config", "{dir}/runs.db"),
         ("runs.db", "not a text file", "give a YAML file"),
         lambda folder: (folder / "runs.db").write_bytes(b"SQLite format 3\x00\xff\xfe\x80" * 64)),
    Case("a study file in Latin-1", RUN, ("tiny.yaml", "not UTF-8: byte 0xe9 at line 2, column 6", "save the file as UTF-8"),
         lambda folder: (folder / "tiny.yaml").write_bytes("name: tiny\n# caf\u00e9\n".encode("latin-1"))),
    Case("a study file in UTF-16", RUN, ("tiny.yaml", "UTF-16 text; save it as UTF-8"),
         lambda folder: (folder / "tiny.yaml").write_bytes("name: tiny\n".encode("utf-16"))),
    Case("a device given as the study", run_cmd(study="/dev/null"), ("/dev/null", "not a regular file")),
    Case("a folder given as the study", run_cmd(study="{dir}/studies"), ("studies", "a folder, not a file"),
         lambda folder: (folder / "studies").mkdir()),
    Case("corrupted data file (hpo data)", ("data", "--data-dir", "{dir}"),
         ("t10k-labels-idx1-ubyte", "sha256 does not match", "hpo data"), corrupted_data),
    Case("corrupted data file (hpo train)",
         ("train", "--config", TRAIN_CONFIG, "--data-dir", "{dir}", "--device", "cpu"),
         ("t10k-labels-idx1-ubyte", "sha256 does not match"), corrupted_data),
    Case("corrupted data file (hpo run)", run_cmd("--data-dir", "{dir}"), ("t10k-labels-idx1-ubyte", "sha256"),
         lambda folder: (TINY_FILE(folder), corrupted_data(folder))),
    Case("data folder that is a file", ("data", "--data-dir", "{dir}/cfg.yaml"), ("cfg.yaml", "is a file"),
         text_file("cfg.yaml", "")),
]


def snapshot(folder: Path) -> dict | None:
    """Each study in the case's SQLite file with its trials' states; None when there is no file."""
    path = folder / "db.sqlite"
    if not path.exists():
        return None
    storage = optuna.storages.RDBStorage(f"sqlite:///{path}")
    return {s.study_name: sorted(t.state.name for t in storage.get_all_trials(s._study_id))
            for s in storage.get_all_studies()}


def pg_databases(server: str) -> set[str]:
    engine = sqlalchemy.create_engine(f"{server}/postgres")
    with engine.connect() as conn:
        names = set(conn.execute(sqlalchemy.text("SELECT datname FROM pg_database")).scalars())
    engine.dispose()
    return names


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_one_line_exit_2_and_changes_nothing(case: Case, tmp_path, request):
    if case.id == "--device cuda without one":
        import torch  # noqa: PLC0415

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    pg = ""
    if case.postgres:
        server = request.getfixturevalue("postgres_server")
        pg = sqlalchemy.engine.make_url(server).render_as_string(hide_password=False).split("@", 1)[-1]
        databases = pg_databases(server)
    case.setup(tmp_path)
    before = snapshot(tmp_path)
    files = set(tmp_path.rglob("*"))
    argv = [a.replace("{dir}", str(tmp_path)).replace("{pg}", pg) for a in case.argv]

    done = hpo(*argv, cwd=tmp_path, timeout=120, env=case.env)
    lines = done.stderr.strip().splitlines()
    print(f"\n[{case.id}] hpo {' '.join(argv[:2])} ... -> exit {done.returncode}\n  {done.stderr.strip()}")

    assert done.returncode == 2, done.stdout + done.stderr
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert SECRET not in done.stdout + done.stderr
    for text in case.expect:
        assert text.replace("{dir}", str(tmp_path)) in lines[0], f"{text!r} not in: {lines[0]}"
    assert snapshot(tmp_path) == before, "a study or trial was created"
    # an existing database may gain its own side files (write-ahead log, lock); nothing else may appear
    created = {p for p in set(tmp_path.rglob("*")) - files
               if not (p.name.startswith("db.sqlite") and tmp_path / "db.sqlite" in files)}
    assert not created, f"created {sorted(map(str, created))} (a database, a lock, checkpoints?)"
    if case.postgres:
        assert pg_databases(request.getfixturevalue("postgres_server")) == databases, "a database was created"


READ_ONLY = (("studies",), ("export", "--study", "tiny"), ("report", "--study", "tiny", "-o", "r.html"))


@pytest.mark.parametrize("command", READ_ONLY, ids=[c[0] for c in READ_ONLY])
def test_commands_that_only_read_write_nothing_into_a_database_that_is_not_hpos(command, tmp_path, postgres_url):
    """Optuna makes its tables in whatever database it opens: `hpo studies` on another program's
    SQLite file, or on a new PostgreSQL database, must leave both as they were (bytes, tables)."""
    foreign_database(tmp_path)
    before = (tmp_path / "other.sqlite").read_bytes()
    for url in ("sqlite:///other.sqlite", postgres_url):
        done = hpo(*command, "--storage", url, cwd=tmp_path, timeout=120)
        assert done.returncode == 2, done.stdout + done.stderr
        assert "not a database hpo wrote" in done.stderr or "is an empty database" in done.stderr, done.stderr
    assert (tmp_path / "other.sqlite").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.sqlite"], "a lock, a journal or a report appeared"
    engine = sqlalchemy.create_engine(postgres_url)
    with engine.connect() as conn:
        assert sqlalchemy.inspect(conn).get_table_names() == []
    engine.dispose()


def test_commands_that_only_read_make_no_lock_file_beside_an_hpo_database(tmp_path):
    study_with_a_complete_trial(tmp_path)
    for lock in tmp_path.glob("*.lock"):
        lock.unlink()
    files = sorted(p.name for p in tmp_path.iterdir())
    for command in READ_ONLY:
        done = hpo(*command, "--storage", "sqlite:///db.sqlite", cwd=tmp_path, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "r.html") == files


def test_every_case_of_the_issue_is_in_the_table():
    ids = {c.id for c in CASES}
    for needed in ("malformed YAML", "unknown key", "wrong type", "low > high", "empty choices", "unknown model",
                   "unknown optimizer", "unknown pruner", "unknown sampler", "budget below the smallest model",
                   "--trials 0", "--trials negative", "unknown study name", "unreachable storage", "wrong credentials",
                   "study file changed under its name", "export of a study with no finished trial",
                   "training config missing its model", "corrupted data file (hpo data)",
                   "corrupted data file (hpo train)"):
        assert needed in ids


def test_a_tilde_the_shell_left_alone_is_the_home_folder(tmp_path, monkeypatch):
    """`-o '~/best.yaml'` or `--data-dir=~/data` reach hpo unexpanded: a folder named `~` in the
    working directory is never what was meant."""
    from hpo.cli import build_parser  # noqa: PLC0415

    monkeypatch.setenv("HOME", str(tmp_path))
    parse = build_parser().parse_args
    assert parse(["export", "--study", "s", "-o", "~/best.yaml"]).output == tmp_path / "best.yaml"
    assert parse(["train", "--config", "~/best.yaml", "--data-dir=~/data"]).data_dir == tmp_path / "data"
    assert parse(["report", "--study", "s", "-o", "-"]).output == Path("-")
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(TINY, sort_keys=False))
    assert load_spec("~/mine.yaml").source == str(tmp_path / "mine.yaml")
