"""Security defaults, each with a test that fails when the default goes.

- the dashboard listens on 127.0.0.1 unless told otherwise (checked in the kernel's socket table);
- database passwords come only from the URL or HPO_STORAGE and are masked in everything printed;
- YAML is read with yaml.SafeLoader only (schema's stricter subclass of it), checkpoints with
  torch.load(weights_only=True) only, and a checkpoint carrying code is refused without running it;
- pickle is only unpickled in hpo/data.py after its sha256 is checked: the behaviour is proved by
  tests/test_data.py::test_hub_pickle_with_wrong_hash_is_not_unpickled; here, that it is the only place;
- docker-compose.yml publishes PostgreSQL (and the dashboard) on loopback only by default.
"""

from __future__ import annotations

import ast
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml
from sqlalchemy.engine import make_url

from cli_helpers import HPO, env_with, hpo, run_args, write_study
from hpo import schema
from hpo.cli import build_parser
from hpo.storage import mask

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted((REPO / "hpo").glob("*.py"))
SECRET = "s3cret-Pw9"


def calls(path: Path):
    """(dotted name of the callee, the Call node) for every call in a source file."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call):
            parts, f = [], node.func
            while isinstance(f, ast.Attribute):
                parts.append(f.attr)
                f = f.value
            if isinstance(f, ast.Name):
                parts.append(f.id)
            yield ".".join(reversed(parts)), node


# ----------------------------------------------------------------- the dashboard


def listening_addresses(port: int) -> set[str]:
    """Local addresses of the sockets listening on `port`, from the kernel's tables (IPv4 and IPv6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if int(hex_port, 16) == port and state == "0A":  # 0A: LISTEN
                found.add(address)
    return found


def test_dashboard_default_is_loopback_in_the_parser():
    assert build_parser().parse_args(["dashboard"]).host == "127.0.0.1"


def test_dashboard_listens_on_loopback_only_by_default(tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    import optuna  # noqa: PLC0415

    optuna.create_study(study_name="s", storage=url)
    proc = subprocess.Popen([*HPO, "dashboard", "--storage", url, "--port", "0"], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env_with(), start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        address = ""
        while not address and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "the dashboard exited before printing its address"
            address = line.split()[1] if line.startswith("open ") else ""
        port = int(re.search(r":(\d+)/", address).group(1))
        assert address.startswith("http://127.0.0.1:"), address
        assert listening_addresses(port) == {"0100007F"}, "listening beyond 127.0.0.1"  # 127.0.0.1, little-endian
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


# ----------------------------------------------------------------- passwords


@pytest.mark.parametrize("url", [
    f"postgresql+psycopg://hpo:{SECRET}@db.example:5432/hpo",
    f"postgresql+psycopg://hpo:{SECRET}@db.example/hpo?sslmode=require",
    "postgresql+psycopg://hpo:with%40encoded%2Fchars@db/hpo",
    "postgresql+psycopg://hpo:raw@and/slash@db/hpo",      # not valid, still never shown
    f"postgres ql://hpo:{SECRET}@db/hpo",                   # not even a URL
    f"postgresql+psycopg:/hpo:{SECRET}@db/hpo",              # a slash missing
    f"postgresql+psycopg:hpo:{SECRET}@db/hpo",               # both missing
])
def test_mask_hides_every_password(url):
    shown = mask(url)
    password = re.search(r"^[^:]*:/*[^:]*:(.*)@", url).group(1)
    assert password not in shown and "***" in shown, shown


def test_no_command_takes_a_password_option():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, command in sub.choices.items():
        for action in command._actions:
            for option in action.option_strings:
                assert "pass" not in option.lower(), f"hpo {name} {option}: passwords come from the URL or HPO_STORAGE"


@pytest.mark.postgres
def test_password_in_url_or_environment_is_never_printed(tmp_path, postgres_url):
    # the test server trusts local connections, so any password is accepted and the commands succeed
    url = make_url(postgres_url).set(password=SECRET).render_as_string(hide_password=False)
    path = write_study(tmp_path, "masked")
    debug = {"HPO_DEBUG": "1"}  # Optuna's own log on too
    outputs = {
        "run --storage": hpo(*run_args(path, url, 1), cwd=tmp_path, env=debug),
        "run with HPO_STORAGE": hpo(*[a for a in run_args(path, url, 2) if a not in ("--storage", url)], cwd=tmp_path,
                                    env={**debug, "HPO_STORAGE": url}),
        "studies": hpo("studies", "--storage", url, cwd=tmp_path, env=debug),
        "export of an unknown study": hpo("export", "--study", "nosuch", "--storage", url, cwd=tmp_path, env=debug),
        "run of a changed study file": hpo(*run_args(write_study(tmp_path, "masked", sampler={"name": "tpe"}), url, 3),
                                           cwd=tmp_path, env=debug),
    }
    codes = {name: done.returncode for name, done in outputs.items()}
    assert codes == {"run --storage": 0, "run with HPO_STORAGE": 0, "studies": 0, "export of an unknown study": 2,
                     "run of a changed study file": 2}, {n: d.stderr[-2000:] for n, d in outputs.items()}
    for name, done in outputs.items():
        assert SECRET not in done.stdout + done.stderr, f"the password was printed by: hpo {name}"
    assert "postgres:***@" in outputs["run --storage"].stdout
    assert "postgres:***@" in outputs["run of a changed study file"].stderr


# ----------------------------------------------------------------- what is loaded, and how


def test_yaml_is_only_ever_safe_loaded():
    unsafe = []
    for path in SOURCES:
        for name, node in calls(path):
            if name.startswith("yaml.") and name.split(".")[-1] in ("load", "load_all", "full_load", "full_load_all",
                                                                    "unsafe_load", "unsafe_load_all"):
                unsafe.append(f"{path.name}:{node.lineno} {name}")
        if re.search(r"\b(yaml\.)?(Unsafe|Full)?Loader\b", path.read_text()):
            unsafe.append(f"{path.name}: names a yaml Loader")
    assert not unsafe, unsafe
    # hpo reads every YAML file through schema.load_yaml, whose reader builds plain data only
    assert issubclass(schema.StrictSafeLoader, yaml.SafeLoader)
    assert schema.StrictSafeLoader.yaml_constructors == yaml.SafeLoader.yaml_constructors
    assert "StrictSafeLoader(" in (REPO / "hpo" / "schema.py").read_text()


def test_torch_load_always_has_weights_only_true():
    loads = [(path, node) for path in SOURCES for name, node in calls(path) if name == "torch.load"]
    assert loads, "no torch.load found: has checkpoint loading moved?"
    for path, node in loads:
        flags = {k.arg: k.value for k in node.keywords}
        assert isinstance(flags.get("weights_only"), ast.Constant) and flags["weights_only"].value is True, \
            f"{path.name}:{node.lineno}: torch.load without weights_only=True"


def test_pickle_is_only_unpickled_after_its_hash_check():
    places = [f"{path.name}:{node.lineno}" for path in SOURCES for name, node in calls(path)
              if name.split(".")[0] in ("pickle", "cPickle", "dill", "joblib") and "load" in name.split(".")[-1]]
    assert len(places) == 1 and places[0].startswith("data.py:"), places
    source = (REPO / "hpo" / "data.py").read_text()
    function = source[source.index("def idx_from_hub_pickle"):]
    assert function.index("HUB_SHA256") < function.index("pickle.loads"), "the hash is not checked first"


class Payload:
    """Unpickling this runs a shell command: what a tampered checkpoint would carry."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_checkpoint_carrying_code_is_refused_without_running_it(tmp_path):
    # refused as a damaged checkpoint is: the retry starts afresh, the file is gone
    from hpo import models  # noqa: PLC0415
    from hpo.config import parse_config  # noqa: PLC0415
    from hpo.optim import make_optimizer, make_schedule  # noqa: PLC0415
    from hpo.trainer import restore  # noqa: PLC0415

    from cli_helpers import TINY  # noqa: PLC0415

    marker = tmp_path / "code-ran"
    checkpoint = tmp_path / "trial-0.pt"
    torch.save({"config": Payload(marker), "model": {}}, checkpoint)
    cfg = parse_config(TINY["base"])
    model = models.build(cfg.model)
    optimizer = make_optimizer(cfg.optimizer, model.parameters())
    schedule = make_schedule(cfg.schedule, optimizer, epochs=cfg.epochs, steps_per_epoch=5)
    assert restore(checkpoint, cfg, model, optimizer, schedule, torch.Generator()) == []
    assert not marker.exists(), "unpickling the checkpoint ran its code"
    assert not checkpoint.exists()


# ----------------------------------------------------------------- docker compose


COMPOSE = REPO / "docker-compose.yml"


def interpolate(text: str, env: dict) -> str:
    """Compose's ${NAME:-default} / ${NAME-default} / ${NAME} substitution, enough for port lines."""
    def one(match):
        name, op, default = match.group(1), match.group(2), match.group(3) or ""
        value = env.get(name)
        if op == ":-":
            return value if value else default
        if op == "-":
            return default if value is None else value
        return value or ""
    return re.sub(r"\$\{(\w+)(?:(:?-)([^}]*))?\}", one, text)


def published(service: dict) -> list[tuple[str, str]]:
    """(host address, host port) of each published port; '' when bound to every address."""
    out = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            out.append((port.get("host_ip", ""), str(port.get("published", ""))))
            continue
        parts = str(port).rsplit(":", 2)
        out.append((parts[0], parts[1]) if len(parts) == 3 else ("", parts[0] if len(parts) == 2 else ""))
    return out


def dotenv(path: Path) -> dict:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


@pytest.mark.skipif(not COMPOSE.exists(), reason="no docker-compose.yml in the repository yet")
@pytest.mark.parametrize("env_name", ["no .env", ".env.example"])
def test_compose_publishes_the_database_and_dashboard_on_loopback_only(env_name):
    env = {} if env_name == "no .env" else dotenv(REPO / ".env.example")
    services = yaml.safe_load(interpolate(COMPOSE.read_text(), env))["services"]
    databases = [name for name, s in services.items() if "postgres" in str(s.get("image", ""))]
    assert databases, "no PostgreSQL service in docker-compose.yml"
    for name in databases + [n for n in services if n == "dashboard"]:
        for host, port in published(services[name]):
            assert host in ("127.0.0.1", "::1", "localhost"), f"{name} is published on {host or 'every address'}:{port}"
