"""`hpo verify` and `hpo.verify`: one config re-trained over seeds, final epoch as mean ± std."""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
from pathlib import Path

import pytest
import yaml

import cli_zygote
import hpo

CONFIG = {"model": {"preset": "linear"}, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
          "batch_size": 64, "epochs": 2, "data": {"train_subset": 600, "test_subset": 300}}


def verify_cli(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    done = cli_zygote.run(["verify", "--config", str(path), "--device", "cpu", *extra], cwd=Path.cwd(),
                          env={**os.environ, "HPO_OFFLINE": "1"}, changed=None, timeout=300)
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


def test_one_seed_gives_its_accuracy_without_a_spread(tmp_path):
    out = verify_cli(tmp_path, "--seeds", "1").stdout
    final = re.search(r"^seed +0  final ([\d.]+)%", out, re.M).group(1)
    assert re.search(rf"final test accuracy with seed 0: {final}% \(one seed, no spread: --seeds 2 or more", out), out
    assert "% ±" not in out and "seeds 0..0" not in out


def test_one_seed_has_no_spread_in_the_result_either():
    """--json and hpo.verify with one seed: std is null, not 0.0 (which would claim no spread)."""
    from hpo.verification import SeedRun, Verification  # noqa: PLC0415

    one = Verification(n_params=10, epochs=2, runs=(SeedRun(seed=0, final=0.9, best=0.91, best_epoch=1, seconds=1.0),))
    assert one.std is None and json.loads(json.dumps(one.as_dict()))["std"] is None and one.mean == 0.9
    two = Verification(n_params=10, epochs=2, runs=one.runs + (SeedRun(1, 0.8, 0.8, 2, 1.0),))
    assert two.std == pytest.approx(statistics.stdev([0.9, 0.8]))


def test_hpo_verify_stays_the_function_when_its_module_is_imported():
    """A notebook's second hpo.verify(...) found a module there: importing a submodule named
    `verify` set hpo.verify to it. The module is hpo.verification."""
    import hpo.verification  # noqa: F401, PLC0415 - as the api's own call to verify does

    assert callable(hpo.verify) and hpo.verify.__module__ == "hpo.api"
    assert hpo.verification.compare is not None


def test_json_is_the_whole_result_and_nothing_else(tmp_path):
    result = json.loads(verify_cli(tmp_path, "--seeds", "2", "--json").stdout)
    finals = [r["final"] for r in result["runs"]]
    assert [r["seed"] for r in result["runs"]] == [0, 1] and result["n_params"] == 7850 and result["epochs"] == 2
    assert result["mean"] == pytest.approx(statistics.fmean(finals))
    assert result["std"] == pytest.approx(statistics.stdev(finals))
    assert all(r["best"] >= r["final"] for r in result["runs"])


@pytest.mark.parametrize("workers", ["1", "2"])
def test_json_stays_whole_when_a_model_prints(tmp_path, workers):
    """A factory's print went to standard output before the JSON, which `--against` then refused
    as "not a JSON file". It goes to standard error, from this process and from the seeds'."""
    (tmp_path / "chatty.py").write_text("from torch import nn\n\n\ndef make(input_shape, num_classes):\n"
                                        "    print('building my net')\n"
                                        "    return nn.Sequential(nn.Flatten(), nn.Linear(784, num_classes))\n")
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump({**CONFIG, "model": {"module": "chatty:make"}, "epochs": 1}))
    done = cli_zygote.run(["verify", "--config", "cfg.yaml", "--device", "cpu", "--seeds", "2", "--workers", workers,
                           "--json"], cwd=tmp_path, env={**os.environ, "HPO_OFFLINE": "1"}, changed=None, timeout=300)
    assert done.returncode == 0, done.stderr
    assert [r["seed"] for r in json.loads(done.stdout)["runs"]] == [0, 1]
    assert "building my net" in done.stderr


@pytest.mark.timeout(300)  # it waited forever
def test_a_config_error_in_a_seeds_process_is_one_line_not_a_hang(tmp_path):
    """A ConfigError raised in a seed's process could not be unpickled in hpo verify's (it was
    rebuilt from its message alone): the pool's result thread died, and the command waited forever."""
    import pickle  # noqa: PLC0415

    from hpo.errors import ConfigError  # noqa: PLC0415

    error = ConfigError("model", "refused", source="cfg.yaml")
    assert str(pickle.loads(pickle.dumps(error))) == str(error) == "cfg.yaml: key 'model': refused"
    (tmp_path / "picky.py").write_text(
        "import multiprocessing\nfrom torch import nn\n\n\ndef make(input_shape, num_classes):\n"
        "    if multiprocessing.current_process().name != 'MainProcess':\n"
        "        raise ValueError('not in a seed process')\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(784, num_classes))\n")
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump({**CONFIG, "model": {"module": "picky:make"}, "epochs": 1}))
    done = cli_zygote.run(["verify", "--config", "cfg.yaml", "--device", "cpu", "--seeds", "2", "--workers", "2"],
                          cwd=tmp_path, env={**os.environ, "HPO_OFFLINE": "1"}, changed=None, timeout=240)
    assert done.returncode == 2 and "raised ValueError: not in a seed process" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_each_seed_is_what_hpo_train_gives_with_that_seed(mnist_dir):
    verified = hpo.verify(CONFIG, seeds=2, device="cpu")
    assert [r.seed for r in verified.runs] == [0, 1]
    for run in verified.runs:
        assert run.final == hpo.train(CONFIG, seed=run.seed, device="cpu")[-1].test_accuracy


def test_seeds_trained_at_once_in_processes_give_what_one_after_another_gives(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # one torch thread in both ways: the same sums in the same order
    apart = json.loads(verify_cli(tmp_path, "--seeds", "3", "--json").stdout)
    together = json.loads(verify_cli(tmp_path, "--seeds", "3", "--workers", "2", "--json").stdout)
    shown = verify_cli(tmp_path, "--seeds", "3", "--workers", "2").stdout
    assert [r["seed"] for r in together["runs"]] == [0, 1, 2]  # in seed order, whichever ended first
    assert [(r["final"], r["best"]) for r in together["runs"]] == [(r["final"], r["best"]) for r in apart["runs"]]
    assert together["mean"] == apart["mean"]
    assert "seeds 0..2 on cpu, 2 at a time" in shown and len(re.findall(r"^seed +\d  final", shown, re.M)) == 3


@pytest.mark.parametrize(("cores", "processes", "omp", "threads"), [
    (2, 2, None, 1), (16, 3, None, 5), (2, 4, None, 1), (8, 1, None, None), (8, 2, "3", None)])
def test_processes_training_at_once_split_the_cores(monkeypatch, cores, processes, omp, threads):
    from hpo import trainer

    told = []
    monkeypatch.setattr(trainer.os, "sched_getaffinity", lambda _: set(range(cores)), raising=False)
    monkeypatch.setattr(trainer.torch, "set_num_threads", told.append)
    if omp:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    else:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    trainer.share_cpu(processes)
    assert told == ([threads] if threads else [])  # one process, or OMP_NUM_THREADS set: torch's own choice


def test_auto_workers_is_one_per_core_as_memory_allows_and_eight_or_sixteen_per_gpu(monkeypatch, tmp_path):
    import torch  # noqa: PLC0415

    from hpo import trainer  # noqa: PLC0415

    monkeypatch.setattr(trainer.os, "sched_getaffinity", lambda _: set(range(8)), raising=False)
    monkeypatch.setattr(trainer, "free_memory", lambda: 64 << 30)
    assert trainer.auto_workers(torch.device("cpu")) == 8
    monkeypatch.setattr(trainer, "free_memory", lambda: (3 << 30) + 5)
    assert trainer.auto_workers(torch.device("cpu")) == 3  # a worker per GiB free
    monkeypatch.setattr(trainer, "free_memory", lambda: 100)
    assert trainer.auto_workers(torch.device("cpu")) == 1
    monkeypatch.setattr(trainer, "free_memory", lambda: 512 << 30)
    monkeypatch.setattr(trainer.os, "sched_getaffinity", lambda _: set(range(64)), raising=False)
    monkeypatch.setattr(trainer.torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", str(tmp_path))
    assert trainer.auto_workers(torch.device("cuda")) == 16  # 8 a GPU: they take turns without MPS
    assert "nvidia-cuda-mps-control -d" in trainer.mps_hint(torch.device("cuda"))  # and the run says how to do better
    (tmp_path / "control").touch()  # an MPS control daemon's socket
    assert trainer.auto_workers(torch.device("cuda")) == 32  # 16 a GPU under MPS
    assert trainer.mps_hint(torch.device("cuda")) is None
    assert trainer.mps_hint(torch.device("cpu")) is None
    monkeypatch.setattr(trainer.os, "sched_getaffinity", lambda _: set(range(12)), raising=False)
    assert trainer.auto_workers(torch.device("cuda")) == 12  # a core each, to launch its kernels


def test_seeds_that_diverge_are_each_named_and_counted_exit_1(tmp_path):
    path = tmp_path / "wild.yaml"
    path.write_text(yaml.safe_dump({**CONFIG, "model": {"family": "mlp", "hidden": [16]},
                                    "optimizer": {"name": "sgd", "lr": 1e6, "momentum": 0.9}}))
    for extra in ((), ("--json",)):
        done = cli_zygote.run(["verify", "--config", str(path), "--device", "cpu", "--seeds", "3", "--workers", "2",
                               *extra], cwd=Path.cwd(), env={**os.environ, "HPO_OFFLINE": "1"}, changed=None,
                              timeout=300)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.strip().splitlines() == [
            "hpo verify: 3 of 3 seeds diverged (0, 1, 2): the config is unstable under some seeds; no seed trained "
            "to the end (try a lower optimizer.lr)"]
        if extra:
            result = json.loads(done.stdout)
            assert result["runs"] == [] and result["mean"] is None
            assert [d["seed"] for d in result["diverged"]] == [0, 1, 2]
            assert all(d["reason"].startswith("training loss is") for d in result["diverged"])
        else:
            assert sorted(line.split("diverged:")[0].split() for line in done.stdout.splitlines()[1:]) == \
                [["seed", "0"], ["seed", "1"], ["seed", "2"]], done.stdout  # as they end, 2 at a time


def test_a_seed_that_diverges_leaves_the_others_counted(monkeypatch):
    """One seed's loss blowing up no longer throws the finished seeds away: the mean is over those
    that trained, and the diverged one is listed beside them."""
    from hpo import verification  # noqa: PLC0415
    from hpo.config import parse_config  # noqa: PLC0415
    from hpo.trainer import Diverged  # noqa: PLC0415

    def train_seed(cfg, seed, data):
        if seed == 11:
            raise Diverged("training loss is inf in epoch 1")
        return verification.SeedRun(seed, 0.5 + seed / 100, 0.6, 1, 1.0)

    monkeypatch.setattr(verification, "train_seed", train_seed)
    monkeypatch.setattr(verification.data_mod, "load", lambda *a: None)
    seen = []
    result = verification.verify(parse_config({**CONFIG, "seed": 10}), seeds=3, n_params=7, device="cpu",
                                 on_seed=seen.append)
    assert [r.seed for r in result.runs] == [10, 12] and result.mean == pytest.approx(0.61)
    assert result.diverged == (verification.DivergedSeed(11, "training loss is inf in epoch 1"),)
    assert [type(r).__name__ for r in seen] == ["SeedRun", "DivergedSeed", "SeedRun"]
    assert result.as_dict()["diverged"] == [{"seed": 11, "reason": "training loss is inf in epoch 1"}]


def test_sigterm_ends_verify_and_its_processes(tmp_path):
    """SIGTERM (kill, a scheduler's time limit) stops `hpo verify --workers K` as Ctrl-C does:
    the processes training its seeds end with it, none is left training on."""
    from cli_helpers import children, start_hpo, wait_until_gone  # noqa: PLC0415
    import signal  # noqa: PLC0415
    import time  # noqa: PLC0415

    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({**CONFIG, "epochs": 200}))
    proc = start_hpo("verify", "--config", str(path), "--device", "cpu", "--seeds", "2", "--workers", "2",
                     cwd=tmp_path, log=tmp_path / "verify.log")
    deadline = time.monotonic() + 120
    try:
        while len(children(proc.pid)) < 2:  # its two seed processes (and multiprocessing's tracker)
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "verify.log").read_text()
            time.sleep(0.2)
        pool = children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 130, (tmp_path / "verify.log").read_text()
        wait_until_gone(pool, deadline, f"a seed's process outlived hpo verify: {pool}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert "interrupted" in (tmp_path / "verify.log").read_text()


def test_ctrl_c_while_the_seed_processes_start_prints_one_line(tmp_path):
    """Ctrl-C at a terminal reaches the whole process group: the seed processes, a second or more
    into importing torch, must leave it to `hpo verify`, whose one line is all that is printed."""
    from cli_helpers import children, start_hpo, wait_until_gone  # noqa: PLC0415
    import signal  # noqa: PLC0415
    import time  # noqa: PLC0415

    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({**CONFIG, "epochs": 200}))
    log = tmp_path / "verify.log"
    proc = start_hpo("verify", "--config", str(path), "--device", "cpu", "--seeds", "2", "--workers", "2",
                     cwd=tmp_path, log=log)
    deadline = time.monotonic() + 120
    try:
        while len(children(proc.pid)) < 2:  # started, and (whenever this looks) still importing or training
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        pool = children(proc.pid)
        os.killpg(proc.pid, signal.SIGINT)  # as the terminal sends it: to every process of the group
        assert proc.wait(timeout=60) == 130, log.read_text()
        wait_until_gone(pool, deadline, f"a seed's process outlived hpo verify: {pool}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    lines = log.read_text().strip().splitlines()
    assert lines[-1] == "hpo verify: interrupted" and len(lines) == 2, "\n".join(lines)  # its headline, then that


# ------------------------------------------------------------ --against: is the difference real?


def test_welch_interval_by_hand():
    from hpo.verification import compare, t975  # noqa: PLC0415

    # ours [0, 2]: variance 2, over 2 runs 1; theirs have no spread: df = 1, t = 12.706
    c = compare([0.0, 2.0], [0.0, 0.0])
    assert (c.difference, c.low, c.high) == pytest.approx((1.0, 1 - 12.706, 1 + 12.706), abs=5e-4)
    assert c.verdict == "within the seeds' noise"
    assert compare([0.995, 0.996, 0.995], [0.990, 0.991, 0.990]).verdict == "higher, beyond the seeds' noise"
    assert compare([0.990, 0.991, 0.990], [0.995, 0.996, 0.995]).verdict == "lower, beyond the seeds' noise"
    # no spread on either side: the noise is unknown, not zero (it said "higher, beyond the seeds'
    # noise" for two seeds a side and one test image apart)
    same = compare([0.99, 0.99], [0.98, 0.98]).as_dict()
    assert same["difference"] == pytest.approx(0.01) and same["interval95"] is None
    assert same["verdict"].startswith("not judged: every seed of each side gave the same accuracy")
    equal = compare([0.99, 0.99], [0.99, 0.99]).as_dict()  # no difference either: still no noise to judge it by
    assert equal["difference"] == 0.0 and equal["interval95"] is None and equal["verdict"].startswith("not judged")
    assert t975(1000) == pytest.approx(1.962, abs=0.001) and t975(1e9) == pytest.approx(1.95996, abs=1e-5)
    with pytest.raises(ValueError):
        compare([0.99], [0.98, 0.97])


# the 97.5% quantile of Student's t for 1..30 degrees of freedom, as printed tables give it (3 decimals)
T975_TABLE = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
              2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
              2.045, 2.042)


def test_t_is_exact_at_whole_and_fractional_degrees_of_freedom():
    """Welch's degrees of freedom are fractional: 1.99 for two seeds against two of about the same
    spread. Rounded down to 1, t was 12.7 where it is 4.32, an interval three times too wide."""
    from hpo.verification import t975  # noqa: PLC0415

    for df, printed in enumerate(T975_TABLE, start=1):
        assert t975(df) == pytest.approx(printed, abs=5e-4), df
    assert t975(1.99) == pytest.approx(4.3234, abs=1e-3)  # between t(1) and t(2), near t(2)
    assert T975_TABLE[3] > t975(4.9) > T975_TABLE[4]
    assert all(t975(df) > t975(df + 0.25) for df in (1, 1.5, 2.5, 7.75, 40))


def test_against_an_earlier_result_prints_the_difference_and_its_interval(tmp_path):
    earlier = {"config": "seed.yaml", "n_params": 7416, "epochs": 2, "runs": [{"final": 0.10}, {"final": 0.12}]}
    (tmp_path / "seed.json").write_text(json.dumps(earlier))
    mine = json.loads(verify_cli(tmp_path, "--seeds", "2", "--against", str(tmp_path / "seed.json"), "--json").stdout)
    against = mine["against"]
    assert against["mean"] == pytest.approx(0.11) and against["seeds"] == 2 and against["config"] == "seed.yaml"
    assert against["difference"] == pytest.approx(mine["mean"] - 0.11)
    low, high = against["interval95"]
    assert low < against["difference"] < high
    shown = verify_cli(tmp_path, "--seeds", "2", "--against", str(tmp_path / "seed.json")).stdout
    assert re.search(r"^against seed\.yaml \(7,416 params, 2 epochs, 2 seeds\): 11\.00% ± 1\.41%\n"
                     r"difference \+\d+\.\d\d points, 95% interval [-+]\d+\.\d\d to \+\d+\.\d\d \(Welch\): "
                     r"higher, beyond the seeds' noise$", shown, re.M), shown


def test_against_a_result_of_another_thread_count_says_so(tmp_path):
    """A seed's digits on a CPU depend on its torch threads, which --workers splits the cores into:
    the JSON recorded neither, and --against compared a 1-worker result with a 2-worker run without
    a word (the README asks for the same --workers)."""
    mine = json.loads(verify_cli(tmp_path, "--seeds", "2", "--json").stdout)
    threads = mine["torch_threads"]
    assert isinstance(threads, int) and threads >= 1
    (tmp_path / "same.json").write_text(json.dumps(mine))
    (tmp_path / "other.json").write_text(json.dumps({**mine, "torch_threads": threads + 5}))
    note = "other.json's seeds trained with"
    assert note not in verify_cli(tmp_path, "--seeds", "2", "--against", str(tmp_path / "same.json")).stderr
    differs = verify_cli(tmp_path, "--seeds", "2", "--against", str(tmp_path / "other.json")).stderr
    assert (f"hpo verify: note: {tmp_path / 'other.json'}'s seeds trained with {threads + 5} torch thread(s) each, "
            f"these with {threads}: a CPU's sums round by the thread count") in differs, differs


def test_against_seeds_that_never_vary_is_not_judged(tmp_path):
    """Three flat images, one per class: every seed scores 100%, as every seed of the earlier run
    scored 99%. Before, no spread on either side gave a zero-width interval and "beyond the seeds'
    noise"."""
    import numpy as np  # noqa: PLC0415

    x = np.repeat(np.array([0, 120, 250], dtype=np.uint8)[:, None, None], 64, 1).reshape(3, 8, 8)
    y = np.arange(3)
    np.savez(tmp_path / "flat.npz", x_train=np.tile(x, (20, 1, 1)), y_train=np.tile(y, 20), x_test=x, y_test=y)
    (tmp_path / "flat.yaml").write_text(yaml.safe_dump({
        "model": {"family": "mlp", "hidden": [8]}, "optimizer": {"name": "sgd", "lr": 0.5, "momentum": 0.9},
        "batch_size": 12, "epochs": 4, "data": {"dataset": "npz", "path": str(tmp_path / "flat.npz")}}))
    (tmp_path / "seed.json").write_text(json.dumps({"config": "seed.yaml", "runs": [{"final": 0.99}] * 2}))
    done = cli_zygote.run(["verify", "--config", str(tmp_path / "flat.yaml"), "--device", "cpu", "--seeds", "2",
                           "--against", str(tmp_path / "seed.json")], cwd=tmp_path,
                          env={**os.environ, "HPO_OFFLINE": "1"}, changed=None, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "over 2 seeds: 100.00% ± 0.00%" in done.stdout, done.stdout
    assert re.search(r"^difference \+1\.00 points: not judged: every seed of each side gave the same accuracy, "
                     r"so the seeds' noise is unknown", done.stdout, re.M), done.stdout
    assert "beyond" not in done.stdout and "Welch" not in done.stdout


@pytest.mark.parametrize(("content", "words"), [
    (None, "no such file"),
    ("{not json", "not a JSON file"),
    (json.dumps({"mean": 0.99}), "not an `hpo verify --json` result"),
    (json.dumps({"runs": [{"final": "high"}, {"final": 0.9}]}), "not an `hpo verify --json` result"),
    (json.dumps({"runs": [{"final": 0.99}]}), "1 seed(s); a comparison needs the spread of 2 or more"),
    (json.dumps({"runs": [{"final": 99.4}, {"final": 99.5}]}), "a final accuracy outside 0..1"),
    (" " * (1 << 20) + "{}", "not a JSON file (over 1 MB)"),  # read bounded: a log given by mistake
    (os.mkfifo, "not a regular file"),  # read, it would wait for a writer forever
])
def test_a_bad_against_file_is_one_line_before_any_training(tmp_path, content, words):
    path = tmp_path / "earlier.json"
    if callable(content):
        content(path)
    elif content is not None:
        path.write_text(content)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(CONFIG))
    done = cli_zygote.run(["verify", "--config", str(tmp_path / "cfg.yaml"), "--device", "cpu", "--against", str(path)],
                          cwd=Path.cwd(), env={**os.environ, "HPO_OFFLINE": "1"}, changed=None, timeout=300)
    assert done.returncode == 2 and words in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "seed " not in done.stdout  # nothing trained
    if "write one with" in done.stderr:  # into the file given only where there is none: `> FILE` replaces a file
        assert done.stderr.strip().endswith(f"--json > {path}" if content is None else "--json > RESULT.json")


API_MISTAKES = [
    (lambda tmp: hpo.run("quickstart", trials=0, storage=f"sqlite:///{tmp / 'api.db'}"), "trials=0: expected"),
    (lambda tmp: hpo.run("quickstart", trials=1.5, storage=f"sqlite:///{tmp / 'api.db'}"), "trials=1.5"),
    (lambda tmp: hpo.run("quickstart", trials=2, workers=0, storage=f"sqlite:///{tmp / 'api.db'}"), "workers=0"),
    (lambda tmp: hpo.run("quickstart", trials=2, timeout=-1, storage=f"sqlite:///{tmp / 'api.db'}"), "timeout=-1"),
    (lambda tmp: hpo.run("quickstart", trials=2, device="gpu", storage=f"sqlite:///{tmp / 'api.db'}"), "device='gpu'"),
    (lambda tmp: hpo.run("quickstart", trials=2, on_trial=1, storage=f"sqlite:///{tmp / 'api.db'}"), "on_trial=1"),
    (lambda tmp: hpo.load_spec(None), "got NoneType"),
    (lambda tmp: hpo.train(CONFIG, epochs="1"), "epochs='1'"),
    (lambda tmp: hpo.train(CONFIG, seed=-1), "seed=-1"),
    (lambda tmp: hpo.verify(CONFIG, seeds=0), "seeds=0"),
    (lambda tmp: hpo.verify(CONFIG, seeds=2, workers="auto"), "workers='auto': expected a whole number from 1 to"),
    (lambda tmp: hpo.run("quickstart", trials=2, storage=5), "storage=5: expected None or a storage URL"),
    (lambda tmp: hpo.run("quickstart", trials=2, storage=f"sqlite:///{tmp / 'api.db'}", checkpoint_dir=5),
     "checkpoint_dir=5"),
    (lambda tmp: hpo.run("quickstart", trials=2, storage=f"sqlite:///{tmp / 'api.db'}", artifacts=5), "artifacts=5"),
    (lambda tmp: hpo.train(CONFIG, on_epoch=5), "on_epoch=5"),
    (lambda tmp: hpo.train({"modle": {"preset": "linear"}}), "key 'modle': unknown key; did you mean 'model'?"),
    # empty strings: the working folder for a path, the default database for a storage, given by nobody
    (lambda tmp: hpo.run("quickstart", trials=1, storage=""), "storage='': expected None or a storage URL, not empty"),
    (lambda tmp: hpo.run("", trials=1), "study='': expected a study name"),
    (lambda tmp: hpo.run("quickstart", trials=1, storage=f"sqlite:///{tmp / 'api.db'}", artifacts=""), "artifacts=''"),
    (lambda tmp: hpo.train(""), "config='': expected a config file's path"),
    (lambda tmp: hpo.train(CONFIG, data_dir=" "), "data_dir=' '"),
]


@pytest.mark.parametrize("call, words", API_MISTAKES, ids=[w for _, w in API_MISTAKES])
def test_the_python_api_refuses_what_the_flags_refuse_before_any_work(call, words, tmp_path):
    """Each mistake is one UserError naming the argument, and nothing is created: hpo.run(trials=0)
    had made the study and its database, workers=0 returned with no trial run, trials=1.5 crashed
    a worker."""
    from hpo.errors import UserError  # noqa: PLC0415

    with pytest.raises(UserError, match=re.escape(words)):
        call(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_load_spec_takes_a_path_object():
    from hpo.study import find_study_file  # noqa: PLC0415

    assert hpo.load_spec(Path(find_study_file("quickstart"))).name == "quickstart"


def test_ctrl_c_in_verify_says_what_the_seeds_that_ended_gave(tmp_path, monkeypatch, capsys):
    """An interrupted verification of five seeds does not throw away the three that trained: it
    gives their mean and spread, marked as partial, and exits 130."""
    from hpo import cli, verification  # noqa: PLC0415

    def train_seed(cfg, seed, data):
        if seed == 3:
            raise KeyboardInterrupt
        return verification.SeedRun(seed, (0.97, 0.98, 0.99)[seed], 0.99, 2, 1.0)

    monkeypatch.setattr(verification, "train_seed", train_seed)
    monkeypatch.setattr(verification.data_mod, "load", lambda *a: None)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    assert cli.main(["verify", "--config", str(path), "--seeds", "5", "--device", "cpu"]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "hpo verify: interrupted after 3 of 5 seeds; the 3 that trained: 98.00% ± 1.00%", err


def test_numpy_whole_numbers_are_whole_numbers_to_the_api(mnist_dir):
    import numpy as np  # noqa: PLC0415

    history = hpo.train({**CONFIG, "data": {"train_subset": 200, "test_subset": 100}}, epochs=np.int64(1),
                        seed=np.int32(3), device="cpu")
    assert len(history) == 1


def test_ctrl_c_in_verify_json_writes_the_seeds_that_ended_marked_partial(tmp_path, monkeypatch, capsys):
    """`--json` wrote nothing on Ctrl-C: a script lost the seeds that had trained. It gets them,
    marked partial, and --against refuses such a file."""
    from hpo import cli, verification  # noqa: PLC0415

    def train_seed(cfg, seed, data):
        if seed == 2:
            raise KeyboardInterrupt
        return verification.SeedRun(seed, (0.97, 0.99)[seed], 0.99, 2, 1.0)

    monkeypatch.setattr(verification, "train_seed", train_seed)
    monkeypatch.setattr(verification.data_mod, "load", lambda *a: None)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    assert cli.main(["verify", "--config", str(path), "--seeds", "4", "--device", "cpu", "--json"]) == 130
    out = capsys.readouterr().out
    result = json.loads(out)
    assert result["partial"] is True and result["seeds_asked"] == 4 and result["config"] == str(path)
    assert [r["seed"] for r in result["runs"]] == [0, 1] and result["mean"] == pytest.approx(0.98)
    (tmp_path / "partial.json").write_text(out)
    assert cli.main(["verify", "--config", str(path), "--seeds", "2", "--device", "cpu",
                     "--against", str(tmp_path / "partial.json")]) == 2
    assert "an interrupted verification (2 of 4 seeds); run it to the end" in capsys.readouterr().err


def test_verify_of_an_export_names_the_trial_in_its_lines_and_its_json(tmp_path, monkeypatch, capsys):
    """Two trials of one export compared: neither the JSON nor the lines said which trial each was."""
    from hpo import cli, verification  # noqa: PLC0415

    monkeypatch.setattr(verification, "train_seed",
                        lambda cfg, seed, data: verification.SeedRun(seed, 0.9 + seed / 100, 0.99, 2, 1.0))
    monkeypatch.setattr(verification.data_mod, "load", lambda *a: None)
    path = tmp_path / "best.yaml"
    path.write_text(yaml.safe_dump({"trials": [{"trial": 4, "value": 0.98, "config": CONFIG},
                                               {"trial": 7, "value": 0.97, "config": CONFIG}]}))
    assert cli.main(["verify", "--config", str(path), "--seeds", "2", "--device", "cpu", "--json"]) == 0
    first = capsys.readouterr().out
    assert json.loads(first)["trial"] == 4
    (tmp_path / "four.json").write_text(first)
    assert cli.main(["verify", "--config", str(path), "--trial", "7", "--seeds", "2", "--device", "cpu",
                     "--against", str(tmp_path / "four.json")]) == 0
    out = capsys.readouterr().out
    assert f"{path} (trial 7): 2 epochs" in out and f"against {path} (trial 4) (" in out, out
