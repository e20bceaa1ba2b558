#!/usr/bin/env python
"""Trials per second through the storage: PostgreSQL directly, or Optuna's gRPC proxy in front of it.

N client processes run light trials as hpo's objective writes them (ask, three user attributes,
three epochs of `report` with an attribute update each, tell), with no training, for a fixed
time; the modes take turns so a busy machine slows them alike. `claim` adds what `hpo run`
does before every trial: take the study's advisory lock and count its trials. Also sampled:
the most PostgreSQL connections the clients held at once (the proxy's included).

    pip install grpcio protobuf     # the proxy's dependencies; not hpo's
    python bench/storage_proxy.py --clients 4 16 --seconds 10 --repeats 3

Mind the server's max_connections (100 by default): `direct` holds about two connections per
client and `claim` about three, so 32 clients in `claim` mode exhaust a default server.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
import uuid
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import optuna
import sqlalchemy

from hpo.storage import Storage

SERVER = os.environ.get("HPO_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432")
PORT = 13013


def client(mode: str, url: str, seconds: float, start, counter) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    if mode == "proxy":
        storage = optuna.storages.GrpcStorageProxy(host="127.0.0.1", port=PORT)
    else:
        storage = Storage.resolve(url).open(heartbeat=None)
    study = optuna.load_study(study_name="bench", storage=storage)
    lock = Storage.resolve(url).lock("bench")
    start.wait()
    done, deadline = 0, time.time() + seconds
    while time.time() < deadline:
        if mode == "claim":
            with lock.hold():
                len(study.get_trials(deepcopy=False))
                trial = study.ask()
        else:
            trial = study.ask()
        trial.set_user_attr("n_params", 6544)
        trial.set_user_attr("config", {"model": {"preset": "mnistnet3"}, "batch_size": 128, "epochs": 3})
        trial.set_user_attr("versions", {"optuna": optuna.__version__})
        for epoch in (1, 2, 3):
            trial.report(0.9 + 0.01 * epoch, epoch)
            trial.set_user_attr("epoch_seconds", [0.5] * epoch)
        study.tell(trial, 0.93)
        done += 1
    with counter.get_lock():
        counter.value += done


def proxy_server(url: str) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    optuna.storages.run_grpc_proxy_server(Storage.resolve(url).open(heartbeat=None), host="127.0.0.1", port=PORT)


def connections(admin, name: str) -> int:
    with admin.connect() as conn:
        return conn.execute(sqlalchemy.text("SELECT count(*) FROM pg_stat_activity WHERE datname = :n"),
                            {"n": name}).scalar()


def one_run(mode: str, clients: int, seconds: float, admin) -> tuple[float, int]:
    name = f"hpo_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    url = f"{SERVER}/{name}"
    optuna.create_study(study_name="bench", storage=Storage.resolve(url).open(heartbeat=None),
                        direction="maximize")
    ctx = mp.get_context("spawn")
    server = None
    if mode == "proxy":
        server = ctx.Process(target=proxy_server, args=(url,), daemon=True)
        server.start()
        time.sleep(3)  # the server binds its port
    start, counter = ctx.Event(), ctx.Value("i", 0)
    procs = [ctx.Process(target=client, args=(mode, url, seconds, start, counter)) for _ in range(clients)]
    for p in procs:
        p.start()
    time.sleep(2 + 0.3 * clients)  # every client has imported optuna and opened its storage
    start.set()
    peak, began = 0, time.time()
    while any(p.is_alive() for p in procs):
        peak = max(peak, connections(admin, name))
        time.sleep(0.5)
    elapsed = time.time() - began
    for p in procs:
        p.join()
    if server:
        server.terminate()
        server.join()
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    return counter.value / min(elapsed, seconds), peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--modes", nargs="+", default=["direct", "proxy", "claim"])
    args = parser.parse_args()
    admin = sqlalchemy.create_engine(f"{SERVER}/postgres", isolation_level="AUTOCOMMIT")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    print(f"{platform.node()}: {os.cpu_count()} cores, optuna {optuna.__version__}, "
          f"{args.seconds:g} s per run, {args.repeats} runs per cell (modes interleaved)")
    print(f"{'clients':>7}  {'mode':<7}  {'trials/s mean':>13}  {'min..max':>13}  {'peak PG connections':>19}")
    for clients in args.clients:
        results = {mode: [] for mode in args.modes}
        for _ in range(args.repeats):
            for mode in args.modes:
                results[mode].append(one_run(mode, clients, args.seconds, admin))
        for mode, runs in results.items():
            rates = [r for r, _ in runs]
            print(f"{clients:>7}  {mode:<7}  {statistics.mean(rates):>13.1f}  "
                  f"{min(rates):>6.1f}..{max(rates):<6.1f}  {max(c for _, c in runs):>19}", flush=True)
    admin.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
