"""Reviewing a study: `hpo dashboard` and `hpo report`, checked through the real CLI and in headless Chromium.

The study is written straight into an SQLite file with the attributes and per-epoch values the
objective records (no training), so these tests take seconds. Point them at a real study with
HPO_REVIEW_STORAGE=URL HPO_REVIEW_STUDY=NAME. Screenshots go to artifacts/ at the repository root.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import optuna
import pytest
from conftest import hpo_study
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

import cli_zygote

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("HPO_ARTIFACTS", ROOT / "artifacts"))
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
PAGE_SECONDS = 30  # the longest a page may take to show what a test waits for

DISTRIBUTIONS = {
    "optimizer.name": CategoricalDistribution(["sgd", "adamw", "nadam"]),
    "optimizer.lr": FloatDistribution(0.001, 0.2, log=True),
    "optimizer.momentum": FloatDistribution(0.5, 0.95),
    "batch_size": CategoricalDistribution([32, 64, 128, 256]),
    "model.dropout": FloatDistribution(0.0, 0.1),
    "model.layers.4": IntDistribution(8, 32, step=4),
    "model.layers.5": IntDistribution(8, 32, step=4),
}


def fake_trial(number: int, rng: random.Random, started: dt.datetime) -> optuna.trial.FrozenTrial:
    """A trial as the objective leaves it: complete, pruned, rejected over budget, or failed."""
    params = {"optimizer.name": rng.choice(["sgd", "adamw", "nadam"]), "optimizer.lr": 10 ** rng.uniform(-3, -0.7),
              "batch_size": rng.choice([32, 64, 128, 256]), "model.dropout": rng.uniform(0, 0.1),
              "model.layers.4": rng.randrange(8, 33, 4), "model.layers.5": rng.randrange(8, 33, 4)}
    if number == 0:
        params = {"optimizer.name": "sgd", "optimizer.lr": 0.05, "optimizer.momentum": 0.9, "batch_size": 128,
                  "model.dropout": 0.01, "model.layers.4": 12, "model.layers.5": 16}
    elif params["optimizer.name"] == "sgd":
        params["optimizer.momentum"] = rng.uniform(0.5, 0.95)
    n_params = 3424 + 100 * params["model.layers.4"] + 120 * params["model.layers.5"]  # the base: 6,544
    config = {"model": {"preset": "mnistnet3", "layers": [8, 16, "t8", "M", params["model.layers.4"],
                                                          params["model.layers.5"], 16, "GAP", "H"]},
              "optimizer": {"name": params["optimizer.name"], "lr": params["optimizer.lr"]},
              "batch_size": params["batch_size"], "epochs": 3, "data": {"train_subset": 3000, "test_subset": 1000}}
    attrs = {"n_params": n_params, "config": config}
    if number == 0:
        attrs["base"] = True
    state, value, curve = TrialState.COMPLETE, None, {}
    if n_params > 8000:
        state, attrs["rejected"] = TrialState.PRUNED, "over_budget"
    else:
        skill = 0.985 - 0.06 * abs(math.log10(params["optimizer.lr"] / 0.03)) - rng.uniform(0, 0.03)
        curve = {epoch: round(max(0.1, skill - 0.25 / epoch ** 1.5), 4) for epoch in (1, 2, 3)}
        if number == 7:
            state, curve = TrialState.FAIL, {1: curve[1]}
            attrs["fail_reason"] = "diverged: loss is nan at epoch 2"
        elif number > 4 and curve[2] < 0.86:
            state, curve = TrialState.PRUNED, {1: curve[1], 2: curve[2]}
        else:
            value = curve[3]
        seconds = [round(0.002 * n_params / params["batch_size"] * 32 + rng.uniform(0, 0.5), 3) for _ in curve]
        attrs.update(epoch_seconds=seconds, train_loss=[1.0 / e for e in curve], device="cpu",
                     versions={"hpo": "0.1.0", "optuna": optuna.__version__})
        if value is not None:
            best = max(curve, key=curve.get)
            attrs.update(best_epoch=best, best_accuracy=curve[best])
    took = sum(attrs.get("epoch_seconds", [0.05])) + 0.5
    return optuna.trial.FrozenTrial(
        number=number, state=state, value=value, datetime_start=started,
        datetime_complete=started + dt.timedelta(seconds=took), params=params,
        distributions={k: DISTRIBUTIONS[k] for k in params}, user_attrs=attrs, system_attrs={},
        intermediate_values=curve, trial_id=number)


def make_fake_study(url: str, name: str = "quickstart", trials: int = 24) -> None:
    study = hpo_study(study_name=name, storage=url, direction="maximize")
    study.set_user_attr("hpo_spec", yaml.safe_load((ROOT / "studies" / "quickstart.yaml").read_text()))
    study.set_user_attr("hpo_study_file", "studies/quickstart.yaml (fake trials written by tests/test_review.py)")
    rng, started = random.Random(0), dt.datetime(2026, 1, 1, 12, 0)
    for number in range(trials):
        trial = fake_trial(number, rng, started)
        study.add_trial(trial)
        started = trial.datetime_complete


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def review(request, tmp_path_factory) -> tuple[str, str]:
    """(storage URL, study name): a fake study on each storage, or the real one HPO_REVIEW_STORAGE names."""
    if os.environ.get("HPO_REVIEW_STORAGE"):
        if request.param != "sqlite":
            pytest.skip("HPO_REVIEW_STORAGE names the one storage to review")
        yield os.environ["HPO_REVIEW_STORAGE"], os.environ.get("HPO_REVIEW_STUDY", "quickstart")
        return
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('review') / 'review.db'}"
        make_fake_study(url)
        yield url, "quickstart"
        return
    import sqlalchemy  # noqa: PLC0415

    server, name = request.getfixturevalue("postgres_server"), f"hpo_review_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    make_fake_study(f"{server}/{name}")
    yield f"{server}/{name}", "quickstart"
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def shot_name(review_url: str, name: str) -> str:
    """artifacts/NAME.png for SQLite (the README's), NAME-postgresql.png for PostgreSQL."""
    return name if review_url.startswith("sqlite") else name.replace(".png", "-postgresql.png")


def hpo(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return cli_zygote.run(list(args), cwd=cwd, env={**os.environ, "PYTHONUNBUFFERED": "1"}, changed=None,
                          timeout=timeout)


# ----------------------------------------------------------------- the browser


@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium driven by Selenium through Debian's chromedriver: nothing is downloaded."""
    reason = None
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as error:
        reason = f"selenium is not installed ({error}); pip install -e '.[test]'"
    if not reason and not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
        reason = (f"no {CHROMIUM} and {CHROMEDRIVER}; apt-get install chromium chromium-driver "
                  "(scripts/install-browser.sh does)")
    driver = None
    if not reason:
        os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not look for a driver online
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        profile = tempfile.mkdtemp(prefix="hpo-chromium-")
        # the flags that keep Chromium from calling home on a machine without a network
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                     "--no-first-run", "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}", "--window-size=1400,1000"):
            options.add_argument(flag)
        try:
            driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        except Exception as error:  # noqa: BLE001 - whatever stops the browser is the skip reason
            reason = f"headless Chromium did not start: {str(error).splitlines()[0]}"
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser tests: {reason}")
        pytest.skip(reason)
    driver.set_page_load_timeout(PAGE_SECONDS)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver, predicate, what: str, seconds: float = PAGE_SECONDS):
    deadline = time.monotonic() + seconds
    while True:
        result = predicate(driver)
        if result:
            return result
        if time.monotonic() > deadline:
            body = driver.find_element("tag name", "body").text[:500]
            raise AssertionError(f"{what}: not seen in {seconds}s at {driver.current_url}; page text: {body!r}")
        time.sleep(0.25)


def text_of(driver) -> str:
    return driver.find_element("tag name", "body").text


def rendered_plots(driver) -> list:
    """Plotly charts that drew something: an SVG with at least one trace group in it."""
    return [p for p in driver.find_elements("css selector", ".js-plotly-plot")
            if p.find_elements("css selector", ".main-svg .trace, .main-svg .cartesianlayer .point")]


def screenshot(driver, name: str, *, full_page: bool = False) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    if full_page:
        size = driver.get_window_size()
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(size["width"], min(int(height) + 40, 12000))
        driver.save_screenshot(str(path))
        driver.set_window_size(size["width"], size["height"])
    else:
        driver.save_screenshot(str(path))
    return path


# ----------------------------------------------------------------- hpo dashboard


def start_dashboard(url: str, cwd: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "hpo", "dashboard", "--storage", url, "--port", "0", *extra],
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 60
    lines = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        found = re.search(r"open (http://\S+)", line)
        if found:
            return proc, found.group(1)
    proc.kill()
    raise AssertionError(f"hpo dashboard printed no URL: {''.join(lines)}{proc.stderr.read()}")


def stop(proc: subprocess.Popen, sig=signal.SIGINT) -> tuple[int, str, str]:
    proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("hpo dashboard did not stop within 15 s of the signal") from None
    return proc.returncode, out, err


def test_dashboard_in_chromium_shows_the_study_its_trials_and_charts(review, browser, tmp_path):
    url, name = review
    trials = optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
    proc, address = start_dashboard(url, tmp_path)
    try:
        assert address.startswith("http://127.0.0.1:") and address.endswith("/dashboard"), address
        browser.get(address)
        wait_for(browser, lambda d: name in text_of(d), f"study name {name!r} on the study list")
        link = [a for a in browser.find_elements("css selector", "a[href*='/dashboard/studies/']")
                if re.search(rf"\b{re.escape(name)}\b", a.text)]
        assert len(link) == 1, [a.text for a in browser.find_elements("css selector", "a")]
        link[0].click()
        plots = wait_for(browser, rendered_plots, "a rendered chart on the study page")
        wait_for(browser, lambda d: "History" in text_of(d) and "Hyperparameter Importance" in text_of(d),
                 "the History and Hyperparameter Importance cards")
        study_page = browser.current_url
        shot = screenshot(browser, shot_name(url, "dashboard.png"))
        browser.get(study_page.rstrip("/") + "/trials")
        wait_for(browser, lambda d: f"{len(trials)} Trials" in text_of(d), f"'{len(trials)} Trials' on the trial list")
        screenshot(browser, shot_name(url, "dashboard-trials.png"))
    finally:
        code, out, err = stop(proc)
    print(f"dashboard at {address}: study {name!r}, {len(trials)} trials listed, {len(plots)} charts rendered; "
          f"screenshot {shot}")
    assert code == 0 and "dashboard stopped" in out, (code, out, err)
    assert "Traceback" not in err, err


def test_dashboard_warns_when_exposed_and_stops_on_sigterm(review, tmp_path):
    url, _ = review
    proc, address = start_dashboard(url, tmp_path, "--host", "0.0.0.0", "--artifacts", "typo-artifacts")
    elsewhere = proc.stdout.readline()  # the line after the URL, before communicate() takes the pipe
    code, out, err = stop(proc, signal.SIGTERM)
    assert code == 0 and "dashboard stopped" in out, (code, out, err)
    assert "warning: the dashboard listens on 0.0.0.0" in err and "no login" in err, err
    assert "note: typo-artifacts (--artifacts) is no artifact store" in err, err
    assert address.startswith("http://127.0.0.1:") and elsewhere.startswith("from other machines: http://"), elsewhere


def test_dashboard_refuses_a_missing_database_and_a_busy_port(review, tmp_path):
    done = hpo("dashboard", "--storage", f"sqlite:///{tmp_path / 'nothing.db'}", cwd=tmp_path)
    assert done.returncode == 2 and "no database at" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "nothing.db").exists(), "the dashboard created an empty database"
    url, _ = review
    proc, address = start_dashboard(url, tmp_path)
    try:
        port = address.split(":")[2].split("/")[0]
        busy = hpo("dashboard", "--storage", url, "--port", port, cwd=tmp_path)
    finally:
        stop(proc)
    assert busy.returncode == 2 and len(busy.stderr.strip().splitlines()) == 1, busy.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in busy.stderr


# ----------------------------------------------------------------- hpo report

SECTIONS = ("Optimization history", "Learning curves", "Accuracy against size", "Parameter importances",
            "Parallel coordinates", "Time", "Top ")


@pytest.fixture(scope="module")
def report_file(review, tmp_path_factory) -> Path:
    url, name = review
    folder = tmp_path_factory.mktemp("report")
    done = hpo("report", "--study", name, "--storage", url, "-o", "report.html", cwd=folder)
    assert done.returncode == 0, done.stderr
    assert "wrote the report of" in done.stderr and "opens offline" in done.stderr
    return folder / "report.html"


def test_report_to_standard_output_is_the_same_page(report_file, review, tmp_path):
    """-o - writes the page to standard output (as hpo export -o - does), no file named '-'."""
    url, name = review
    done = hpo("report", "--study", name, "--storage", url, "-o", "-", cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == "" and list(tmp_path.iterdir()) == [], done.stderr
    page = done.stdout
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert page.count('class="plotly-graph-div"') == report_file.read_text().count('class="plotly-graph-div"') == 6


def test_report_is_one_self_contained_file(report_file, review):
    html = report_file.read_text()
    assert "<script src=" not in html, "the report loads a script from elsewhere"
    assert html.count("plotly.js v") >= 1 and html.count('class="plotly-graph-div"') == 6
    for section in SECTIONS:
        assert f"<h2>{section}" in html, section
    url, name = review
    trials = optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
    best = max((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert f"Best: trial {best.number}, {100 * best.value:.2f}%" in html
    assert "MnistNet_2 (002)" in html and "NetV3 (004)" in html, "the seeds' reference points are missing"


def test_report_in_chromium_draws_every_chart_offline(report_file, review, browser):
    url, name = review
    trials = optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
    finished = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) and not t.user_attrs.get("rejected")
                   for t in trials)
    complete = sum(t.state == TrialState.COMPLETE for t in trials)
    browser.set_network_conditions(offline=True, latency=0, download_throughput=0, upload_throughput=0)
    try:
        browser.get(report_file.as_uri())
        wait_for(browser, lambda d: len(rendered_plots(d)) == 6, "all six charts rendered")
        plots = rendered_plots(browser)
    finally:
        browser.delete_network_conditions()
    text = text_of(browser)
    assert f"Study {name}" in text and f"{finished} finished trials: {complete} complete" in text
    titles = " ".join(t.text for t in browser.find_elements("css selector", ".gtitle"))
    for title in ("Optimization history", "Learning curves", "Accuracy against size", "Which settings mattered",
                  "Parallel coordinates", "Time: seconds per training epoch"):
        assert title in titles, (title, titles)
    curves = [t for t in trials if t.intermediate_values and not t.user_attrs.get("rejected")]
    learning = plots[1].find_elements("css selector", ".scatterlayer .trace")
    assert len(learning) == len(curves), (len(learning), len(curves))
    rows = browser.find_elements("css selector", "table tbody tr")
    assert len(rows) == min(10, complete)
    shot = screenshot(browser, shot_name(url, "report.png"), full_page=True)
    print(f"report {report_file}: {len(plots)} charts rendered offline, {len(learning)} learning curves, "
          f"{len(rows)} top trials; screenshot {shot}")


def test_report_errors_are_one_line(review, tmp_path):
    url, _ = review
    unknown = hpo("report", "--study", "no-such-study", "--storage", url, cwd=tmp_path)
    assert unknown.returncode == 2 and len(unknown.stderr.strip().splitlines()) == 1
    assert "no study named 'no-such-study'" in unknown.stderr and "quickstart" in unknown.stderr
    empty_url = f"sqlite:///{tmp_path / 'empty.db'}"
    hpo_study(study_name="empty", storage=empty_url)
    empty = hpo("report", "--study", "empty", "--storage", empty_url, cwd=tmp_path)
    assert empty.returncode == 2 and "no complete trial" in empty.stderr and "Traceback" not in empty.stderr
    assert not (tmp_path / "report.html").exists()


# ----------------------------------------------------------------- what a user looks for on the dashboard

REAL_STUDY = """\
name: looked-at
base:
  model: {preset: linear}
  optimizer: {name: sgd, lr: 0.05, momentum: 0.9}
  batch_size: 64
  epochs: 2
  data: {train_subset: 300, test_subset: 200}
search:
  optimizer.lr: {float: [0.005, 0.2], log: true}
budget: {epochs: 2}
pruner: none
"""


def test_dashboard_names_the_metric_shows_the_note_and_offers_each_config(browser, tmp_path):
    (tmp_path / "looked-at.yaml").write_text(REAL_STUDY)
    url = f"sqlite:///{tmp_path / 'looked.db'}"
    done = hpo("run", "--study", "looked-at.yaml", "--trials", "2", "--storage", url, "--device", "cpu", "--quiet",
               cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    trials = optuna.load_study(study_name="looked-at", storage=url).get_trials(deepcopy=False)
    proc, address = start_dashboard(url, tmp_path)
    try:
        browser.get(address.rstrip("/") + "/studies/1")
        wait_for(browser, lambda d: "test accuracy" in text_of(d), "the objective's name, test accuracy")
        browser.get(address.rstrip("/") + "/studies/1/note")
        wait_for(browser, lambda d: "To beat:" in text_of(d), "the study's note")
        note = next(line for line in text_of(browser).splitlines() if line.startswith("To beat:"))
        screenshot(browser, "dashboard-note.png")
        browser.get(address.rstrip("/") + "/studies/1/trials")
        wait_for(browser, lambda d: "trial-0-config.yaml" in text_of(d), "trial 0's config among its artifacts")
        screenshot(browser, "dashboard-artifact.png")
        links = [a.get_attribute("href") for a in browser.find_elements("css selector", "a[href*='/artifacts/']")]
        assert links, "no download link for the artifact"
        with urllib.request.urlopen(links[0], timeout=30) as response:
            downloaded = yaml.safe_load(response.read())
    finally:
        code, out, err = stop(proc)
    print(f"metric name on the study page: test accuracy\nnote: {note}\n"
          f"artifact: trial-0-config.yaml downloaded from {links[0]}: model {downloaded['model']['family']}, "
          f"lr {downloaded['optimizer']['lr']}")
    assert code == 0 and "Traceback" not in err, err
    assert "linear 784-10" in note_of(url) and "91.68%" in note
    assert downloaded == trials[0].user_attrs["config"], "the artifact is not trial 0's config"


def note_of(url: str) -> str:
    import optuna_dashboard  # noqa: PLC0415

    return optuna_dashboard.get_note(optuna.load_study(study_name="looked-at", storage=url))


@pytest.mark.parametrize("command", [["studies"], ["export", "--study", "quickstart", "-o", "best.yaml"],
                                     ["report", "--study", "quickstart", "-o", "report.html"]],
                         ids=["studies", "export", "report"])
def test_reading_a_study_does_not_import_torch(tmp_path, command):
    """The commands that only read a study answer without torch's import (about a second of the
    2.3 s `hpo studies` took when hpo.display imported the model presets at the top)."""
    url = f"sqlite:///{tmp_path / 'read.db'}"
    make_fake_study(url)
    probe = ("import contextlib, io, sys\nfrom hpo.cli import main\n"
             "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
             f"    rc = main({[*command, '--storage', url]!r})\n"
             "print(rc, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "False"], out.stdout + out.stderr


def test_a_report_draws_a_study_with_a_queued_retry(tmp_path):
    """A Ctrl-C queues the trial it stops again, and the retry carries the epochs its first attempt
    reported (Optuna's retry callback copies them). The report ended in a KeyError traceback on it:
    the learning curves had no style for a queued trial. Its curve is the failed attempt's, drawn once."""
    from hpo.report import build_report  # noqa: PLC0415

    url = f"sqlite:///{tmp_path / 'queued.db'}"
    make_fake_study(url, trials=8)
    study = optuna.load_study(study_name="quickstart", storage=url)
    stopped = next(t for t in study.trials if t.state == TrialState.FAIL)
    study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, params=stopped.params,
                                              distributions=stopped.distributions,
                                              user_attrs=stopped.user_attrs,
                                              intermediate_values=stopped.intermediate_values))
    page = build_report(storage=optuna.storages.RDBStorage(url), study_name="quickstart")
    assert "1 queued" in page and "Learning curves" in page


def test_a_reports_full_config_is_the_one_export_writes(tmp_path):
    """The report showed each trial's config with the keys its choices ignore (`schedule: {name:
    none, step_size: 1, gamma: 0.1, ...}`) under "re-trains as is", where the export leaves them out."""
    import html  # noqa: PLC0415

    from hpo.export import export  # noqa: PLC0415
    from hpo.report import top_table  # noqa: PLC0415

    url = f"sqlite:///{tmp_path / 'cfg.db'}"
    make_fake_study(url, trials=4)
    study = optuna.load_study(study_name="quickstart", storage=url)
    best = max((t for t in study.trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    config = {**best.user_attrs["config"], "schedule": {"name": "none", "step_size": 1, "gamma": 0.1}}
    study.add_trial(optuna.trial.create_trial(value=0.999, params=best.params, distributions=best.distributions,
                                              user_attrs={**best.user_attrs, "config": config},
                                              intermediate_values=best.intermediate_values))
    shown = html.unescape(top_table(study.get_trials(), 1))
    exported = yaml.safe_load(export(study._storage, "quickstart").text)["trials"][0]["config"]
    assert exported["schedule"] == {"name": "none"}
    assert "schedule: {name: none}" in shown and "gamma" not in shown, shown


def test_a_report_of_an_eval_val_study_names_validation_accuracy_and_gives_the_test_set_once(tmp_path):
    """With `eval: val` the trials' values are accuracies on held-out training images: the report
    says so wherever it named a test accuracy, and its table and facts carry the test accuracy each
    top trial measured once at the end."""
    from hpo import records  # noqa: PLC0415
    from hpo.report import build_report  # noqa: PLC0415

    url = f"sqlite:///{tmp_path / 'val.db'}"
    study = hpo_study(study_name="held", storage=url, direction="maximize")
    study.set_user_attr(records.SPEC, {"name": "held", "eval": "val"})
    distribution = optuna.distributions.FloatDistribution(0.001, 0.1, log=True)
    for lr, val, test in ((0.01, 0.9717, 0.9828), (0.05, 0.9655, 0.9701)):
        study.add_trial(optuna.trial.create_trial(
            value=val, params={"optimizer.lr": lr}, distributions={"optimizer.lr": distribution},
            intermediate_values={1: val - 0.01, 2: val},
            user_attrs={records.N_PARAMS: 5000, records.TEST_ACCURACY: test, records.EPOCH_SECONDS: [1.0, 1.0],
                        records.CONFIG: {"model": {"preset": "mnistnet2"}}, records.BEST_EPOCH: 2,
                        records.BEST_ACCURACY: val}))
    page = build_report(storage=optuna.storages.RDBStorage(url), study_name="held")
    assert "Best: trial 0, 97.17% validation accuracy with 5,000 parameters, 98.28% test accuracy" in page
    assert "<th>final val. acc.</th><th>test acc. (once, at the end)</th>" in page
    assert "<td>97.17%</td><td>98.28%</td>" in page and "<td>96.55%</td><td>97.01%</td>" in page
    assert "each trial's validation accuracy and the best so far" in page
    assert "test accuracy after every epoch" not in page and "final-epoch test accuracy" not in page


@pytest.mark.parametrize("base, stars, diamond", [
    ({"model": {"preset": "mnistnet2"}}, True, "trial 0: the seed's recipe as this study trains it"),
    ({"model": {"family": "mlp", "hidden": [8]}}, True, "trial 0: the study's base recipe"),
    ({"model": {"preset": "mlp", "hidden": [16]}}, True, "trial 0: the study's base recipe"),  # not seed 000's net
    ({"model": {"module": "nets:make"}, "data": {"dataset": "npz", "path": "shapes.npz"}}, False,
     "trial 0: the study's base recipe"),
])
def test_the_seeds_stars_are_drawn_only_beside_mnist_studies(tmp_path, base, stars, diamond):
    """The seeds' MNIST results are the numbers to beat on MNIST; beside a study of your own data
    they compare nothing, and its trial 0 is its own base, not a seed's recipe."""
    from hpo import records  # noqa: PLC0415
    from hpo.report import build_report  # noqa: PLC0415

    url = f"sqlite:///{tmp_path / 'own.db'}"
    study = hpo_study(study_name="own", storage=url, direction="maximize")
    study.set_user_attr(records.SPEC, {"name": "own", "base": base})
    study.add_trial(optuna.trial.create_trial(value=0.7, user_attrs={records.N_PARAMS: 900, records.BASE: True,
                                                                     records.EPOCH_SECONDS: [1.0]}))
    page = build_report(storage=optuna.storages.RDBStorage(url), study_name="own")
    assert ("seeds' hand-tuned results" in page) == stars and ("full MNIST test set" in page) == stars
    assert diamond in page


@pytest.mark.parametrize("varies, note", [
    ("nothing in the accuracy", "Every complete trial scored the same final test accuracy: there is no variation"),
    ("nothing in the settings", "Every complete trial has the same searched settings: there is nothing to tell"),
    ("both", None),
])
def test_the_importances_chart_is_left_out_where_there_is_nothing_to_explain(tmp_path, varies, note):
    """Optuna's importances share the whole out equally where no setting or no accuracy varies
    (100 test images score in 1% steps: equal accuracies happen), and the chart showed it as a
    finding: each setting 0.50."""
    from hpo import records  # noqa: PLC0415
    from hpo.report import build_report  # noqa: PLC0415

    url = f"sqlite:///{tmp_path / 'flat.db'}"
    study = hpo_study(study_name="flat", storage=url, direction="maximize")
    lr, width = FloatDistribution(0.001, 0.1, log=True), IntDistribution(8, 32)
    for i in range(4):
        same_settings = varies == "nothing in the settings"
        study.add_trial(optuna.trial.create_trial(
            value=0.5 + (i / 100 if varies != "nothing in the accuracy" else 0) + (i * i / 1000 if varies == "both"
                                                                                   else 0),
            params={"optimizer.lr": 0.01 if same_settings else 0.001 * (i + 1), "model.width": 16 if same_settings
                    else 8 + i}, distributions={"optimizer.lr": lr, "model.width": width},
            user_attrs={records.N_PARAMS: 1000, records.CONFIG: {}, records.EPOCH_SECONDS: [0.1]}))
    page = build_report(storage=optuna.storages.RDBStorage(url), study_name="flat")
    if note is None:  # settings and accuracies both vary: the chart, as before
        assert "Which settings mattered" in page
    else:
        assert note in page and "Which settings mattered" not in page
