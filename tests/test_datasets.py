"""Datasets as data: a synthetic IDX set written here, registered in a few lines, then fetched
and verified by `hpo data`, loaded, named in configs and trained on; and each way it can be wrong.

`pytest -s` shows what a user sees: the tables of `hpo data` and each one-line error.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
from pathlib import Path

import pytest
import torch

import hpo.datasets
import hpo.trainer
from hpo import cli, data, models
from hpo.augment import Augment, random_affine
from hpo.config import parse_config
from hpo.datasets import Dataset, FileSpec, register
from hpo.errors import ConfigError, UserError
from hpo.idx import encode_idx

SIDE, CLASSES = 20, 4
TRAIN, TEST = 200, 60  # 50 and 15 images per class
SHIPPED = ("mnist", "fashion-mnist", "kmnist")


def patterns(n: int, channels: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N x H x W, or N x H x W x C) and labels: class k is a bright square in
    quadrant k over dim noise, so even a linear model tells the classes apart."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % CLASSES
    images = torch.randint(0, 60, (n, SIDE, SIDE, channels), generator=gen, dtype=torch.uint8)
    half = SIDE // 2
    for k in range(CLASSES):
        row, col = divmod(k, 2)
        images[labels == k, row * half + 2 : row * half + 8, col * half + 2 : col * half + 8] = 230
    return (images[..., 0] if channels == 1 else images), labels.to(torch.uint8)


def write_toy(root: Path, name: str, *, gz: bool = False, channels: int = 1, **described) -> Dataset:
    """Write a toy dataset's four IDX files into ROOT/NAME and describe them (gz: gzipped, md5-pinned,
    as Fashion-MNIST and KMNIST ship); `described` overrides the description, to make it wrong."""
    folder = root / name
    folder.mkdir(parents=True)
    algorithm = "md5" if gz else "sha256"
    files, train_images = {}, None
    for split, n, seed in (("train", TRAIN, 0), ("test", TEST, 1)):
        images, labels = patterns(n, channels, seed)
        train_images = images if split == "train" else train_images
        for kind, array in (("images", images), ("labels", labels)):
            body = encode_idx(array)
            body = gzip.compress(body, mtime=0) if gz else body
            file = f"{split}-{kind}.idx" + (".gz" if gz else "")
            (folder / file).write_bytes(body)
            files[f"{split}_{kind}"] = FileSpec(file, hashlib.new(algorithm, body).hexdigest(), algorithm)
    pixels = train_images.float().div(255).reshape(TRAIN, -1, channels)
    return Dataset(**{
        "name": name, "title": name.capitalize(), **files, "mirrors": (),
        "shape": (channels, SIDE, SIDE), "classes": CLASSES,
        "mean": tuple(pixels.mean((0, 1)).tolist()), "std": tuple(pixels.std((0, 1)).tolist()),
        "class_names": ("top-left", "top-right", "bottom-left", "bottom-right"), **described,
    })


@pytest.fixture(autouse=True)
def registry(monkeypatch):
    """Each test registers into its own copy of the registry, gone afterwards."""
    monkeypatch.setattr(hpo.datasets, "DATASETS", dict(hpo.datasets.DATASETS))


# (name, files written) for the toy variants: plain sha256-pinned IDX, gzipped md5-pinned IDX, colour
VARIANTS = {"toy": {}, "toy-gz": {"gz": True}, "toy-rgb": {"channels": 3}}


@pytest.fixture(params=list(VARIANTS))
def toy(request, tmp_path) -> tuple[Dataset, Path]:
    name = request.param
    return register(write_toy(tmp_path, name, **VARIANTS[name])), tmp_path


# ----------------------------------------------------------------- the registry


def test_shipped_datasets():
    assert tuple(hpo.datasets.DATASETS)[:3] == SHIPPED
    for name, algorithm, suffix, digits in (("mnist", "sha256", "", 64), ("fashion-mnist", "md5", ".gz", 32),
                                            ("kmnist", "md5", ".gz", 32)):
        ds = hpo.datasets.get(name)
        assert (ds.shape, ds.classes, len(ds.mean), len(ds.std)) == ((1, 28, 28), 10, 1, 1)
        assert all(f.algorithm == algorithm and f.name.endswith(suffix) and len(f.digest) == digits for f in ds.files)
        assert len({f.digest for f in ds.files}) == 4 and ds.mirrors
        assert all(m.startswith(("https://", "http://")) and m.endswith("/") for m in ds.mirrors)
    assert hpo.datasets.get("fashion-mnist").class_name(9) == "Ankle boot"
    assert hpo.datasets.get("kmnist").class_name(0) == "o"
    assert hpo.datasets.get("mnist").class_name(3) == "3"


def test_unknown_name_is_one_line_listing_the_known():
    with pytest.raises(UserError) as caught:
        hpo.datasets.get("cifar10")
    assert str(caught.value) == "unknown dataset 'cifar10'; choose from mnist, fashion-mnist, kmnist"


def test_register_refuses_a_second_dataset_by_the_same_name(tmp_path):
    toy = register(write_toy(tmp_path, "toy"))
    with pytest.raises(ValueError, match="'toy' is already registered"):
        register(toy)
    bigger = register(dataclasses.replace(toy, title="Toy 2"), replace=True)
    assert hpo.datasets.get("toy") is bigger


SPEC = FileSpec("f", "ab")
# (what is wrong with a description, a fragment of the ValueError)
BAD_DESCRIPTIONS = [
    ({"name": "My Set"}, "lowercase letters"),
    ({"shape": (1, 0, 28)}, "(channels, height, width)"),
    ({"classes": 1}, "at least 2 classes"),
    ({"mean": (0.1, 0.2)}, "one value per channel (1)"),
    ({"std": (0.0,)}, "std > 0"),
    ({"class_names": ("a", "b")}, "2 class names for 10 classes"),
]


@pytest.mark.parametrize(("changes", "reason"), BAD_DESCRIPTIONS, ids=[r for _, r in BAD_DESCRIPTIONS])
def test_bad_descriptions_fail_when_written(changes, reason):
    fields = dict(name="x", title="X", train_images=SPEC, train_labels=SPEC, test_images=SPEC, test_labels=SPEC,
                  mirrors=(), shape=(1, 28, 28), classes=10, mean=(0.1,), std=(0.3,))
    with pytest.raises(ValueError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        Dataset(**{**fields, **changes})
    with pytest.raises(ValueError, match="'crc32' is not one of"):
        FileSpec("f", "ab", "crc32")


# ----------------------------------------------------------------- hpo data


def test_hpo_data_verifies_and_prints_the_classes(toy, capsys):
    dataset, root = toy
    assert cli.main(["data", "--dataset", dataset.name, "--data-dir", str(root)]) == 0
    out = capsys.readouterr().out
    print(out)
    assert out.startswith(f"{dataset.title} ({dataset.name}) in {root / dataset.name}\n")
    assert f"{dataset.title} images per class" in out
    for k, name in enumerate(dataset.class_names):
        assert f"{k} {name}" in out and f"│ {TRAIN // CLASSES:>5} │ {TEST // CLASSES:>4} │" in out
    assert f"│ {TRAIN:>5} │ {TEST:>4} │" in out.replace("[bold]", "")
    for spec in dataset.files:
        assert f"{spec.name}" in out and f"{spec.algorithm}" in out and spec.digest in out


def corrupt(path: Path) -> None:
    body = bytearray(path.read_bytes())
    body[len(body) // 2] ^= 1
    path.write_bytes(bytes(body))


# (case, toy files written (None: none), description overrides, what to do to the folder, dataset asked for,
#  fragments of the one line; {folder} is ROOT/NAME)
BAD_DATA = [
    ("corrupted file", {}, {}, lambda f: corrupt(f / "train-labels.idx"), "toy",
     ("{folder}/train-labels.idx: sha256 does not match the pinned Toy digest (corrupted or not Toy); "
      "replace it with the published Toy file",)),
    ("corrupted gz file, md5", {"gz": True}, {}, lambda f: corrupt(f / "test-images.idx.gz"), "toy",
     ("{folder}/test-images.idx.gz: md5 does not match the pinned Toy digest",)),
    ("missing file", {}, {}, lambda f: (f / "test-images.idx").unlink(), "toy",
     ("Toy is not available: no source to fetch from. To fix: put the four Toy IDX files (train-images.idx, ...) "
      "in {folder}",)),
    ("wrong shape", {}, {"shape": (1, 16, 16)}, None, "toy",
     ("{folder}/train-images.idx: holds 1x20x20 images (channels x height x width) but dataset 'toy' is "
      "described as 1x16x16",)),
    ("labels beyond the classes", {}, {"classes": 3, "class_names": None}, None, "toy",
     ("{folder}/train-labels.idx: label 3 is out of range for the 3 classes of 'toy'",)),
    ("unknown dataset", None, {}, None, "cifar10",
     ("unknown dataset 'cifar10'; choose from mnist, fashion-mnist, kmnist",)),
    ("offline, nothing in the folder", None, {}, None, "fashion-mnist",
     ("Fashion-MNIST is not available: no source to fetch from (HPO_OFFLINE=1 skips the mirrors). To fix: put the "
      "four Fashion-MNIST IDX files (train-images-idx3-ubyte.gz, ...) in {folder}, or allow network access to its "
      "mirrors",)),
]


@pytest.mark.parametrize(("files", "described", "damage", "name", "expect"), [c[1:] for c in BAD_DATA],
                         ids=[c[0] for c in BAD_DATA])
def test_bad_data_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, files, described, damage, name, expect):
    monkeypatch.setenv("HPO_OFFLINE", "1")
    if files is not None:
        register(write_toy(tmp_path, name, **files, **described))
    if damage:
        damage(tmp_path / name)
    assert cli.main(["data", "--dataset", name, "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    print(err)
    assert err.count("\n") == 1 and err.startswith("hpo data: error: ")
    for fragment in expect:
        assert fragment.format(folder=tmp_path / name) in err


# ----------------------------------------------------------------- fetching from mirrors (file:// URLs stand in)


def mirror(folder: Path, dataset: Dataset, source: Path, damage: bool = False) -> str:
    """A mirror serving the dataset as IDX mirrors do: every file gzipped; `damage` flips a byte in each."""
    folder.mkdir()
    for spec in dataset.files:
        body = (source / spec.name).read_bytes()
        body = body if spec.name.endswith(".gz") else gzip.compress(body, mtime=0)
        if damage:
            body = gzip.compress(bytes([gzip.decompress(body)[0] ^ 1]) + gzip.decompress(body)[1:], mtime=0)
        (folder / (spec.name if spec.name.endswith(".gz") else spec.name + ".gz")).write_bytes(body)
    return folder.as_uri() + "/"


@pytest.mark.parametrize("variant", ["toy", "toy-gz"])
def test_fetches_each_file_from_the_first_mirror_that_serves_it_intact(tmp_path, monkeypatch, variant):
    monkeypatch.delenv("HPO_OFFLINE", raising=False)
    source = tmp_path / "source"
    described = write_toy(source, variant, **VARIANTS[variant])
    absent = (tmp_path / "absent").as_uri() + "/"
    damaged = mirror(tmp_path / "damaged", described, source / variant, damage=True)
    good = mirror(tmp_path / "good", described, source / variant)
    register(dataclasses.replace(described, mirrors=(absent, damaged)))
    root = tmp_path / "root"
    with pytest.raises(UserError) as caught:
        data.ensure(variant, root)
    message = str(caught.value)
    print(message)
    assert message.startswith(f"{described.title} is not available: download from the {described.title} mirrors: ")
    assert f"{absent}{described.train_images.name}" in message and "No such file" in message
    assert f"{damaged}{described.train_images.name}" in message and "does not match the pinned digest" in message
    assert message.endswith(f"in {root / variant}, or allow network access to its mirrors") and "\n" not in message
    assert not (root / variant).exists() or not any((root / variant).iterdir())  # nothing unverified is kept

    register(dataclasses.replace(described, mirrors=(absent, damaged, good)), replace=True)
    messages = []
    assert data.ensure(variant, root, log=messages.append) == root / variant
    assert messages[0] == f"fetching {described.title}: download from the {described.title} mirrors ..."
    for spec in described.files:  # stored as the dataset names them: gzipped or not
        assert (root / variant / spec.name).read_bytes() == (source / variant / spec.name).read_bytes()
    assert sorted(p.name for p in (root / variant).iterdir()) == sorted(f.name for f in described.files)


# ----------------------------------------------------------------- loading


def test_load_normalizes_each_channel_and_keeps_the_data_once(toy):
    dataset, root = toy
    splits = data.load(dataset.name, "cpu", root)
    c = dataset.shape[0]
    assert splits.dataset is dataset
    assert splits.train_x.shape == (TRAIN, c, SIDE, SIDE) and splits.train_x.dtype == torch.float32
    assert splits.test_x.shape == (TEST, c, SIDE, SIDE) and splits.train_x.is_contiguous()
    assert splits.train_y.dtype == torch.int64 and torch.bincount(splits.test_y).tolist() == [TEST // CLASSES] * 4
    # the description's mean and std are the training pixels' own: normalized, each channel is ~N(0, 1)
    per_channel = splits.train_x.transpose(0, 1).reshape(c, -1)
    torch.testing.assert_close(per_channel.mean(1), torch.zeros(c), atol=1e-4, rtol=0)
    torch.testing.assert_close(per_channel.std(1), torch.ones(c), atol=1e-3, rtol=0)
    assert data.load(dataset.name, "cpu", root) is splits


def test_subsets_stratify_over_the_datasets_classes(toy):
    dataset, root = toy
    small = data.load(dataset, "cpu", root).subset(40, 20)
    assert torch.bincount(small.train_y).tolist() == [10] * 4
    assert torch.bincount(small.test_y).tolist() == [5] * 4
    assert small.dataset is dataset


def test_augmentation_fills_with_each_channels_black(tmp_path):
    dataset = register(write_toy(tmp_path, "toy-rgb", channels=3))
    x = data.load(dataset, "cpu", tmp_path).train_x[:8]
    fill = hpo.trainer.background(dataset)
    # translations of up to 100 image sides move every image out of view: all of it is the fill
    out = random_affine(x, Augment(translate=100.0), torch.Generator().manual_seed(0), fill)
    torch.testing.assert_close(out, fill.expand_as(out), atol=1e-5, rtol=0)
    assert len(set(fill.flatten().tolist())) == 3


# ----------------------------------------------------------------- configs and training


def test_a_config_names_the_dataset_and_the_model_must_fit_its_images(tmp_path):
    register(write_toy(tmp_path, "toy"))
    deep = {"preset": "lenet5", "kernel": 7}  # 28 -> 11 -> 2 pixels, but 20 -> 7 -> 0
    assert parse_config({"model": deep}).data.dataset == "mnist"
    cfg = parse_config({"model": {"preset": "mnistnet2"}, "data": {"dataset": "toy"}})
    assert cfg.data.dataset == "toy" and cfg.to_dict()["data"] == {"dataset": "toy"}
    with pytest.raises(ConfigError) as caught:
        parse_config({"model": deep, "data": {"dataset": "toy"}}, source="toy.yaml")
    assert str(caught.value) == "toy.yaml: key 'model.convs': 2 conv+pool blocks of kernel 7 shrink 20x20 to nothing"


MODELS = {
    "linear": {"preset": "linear"},
    "tiny convnet": {"family": "convnet", "layers": [8, "M", 8, "GAP", "H"]},
}


@pytest.mark.parametrize("model", list(MODELS))
def test_training_on_the_toy_set_beats_chance(toy, model, logit_shapes):
    dataset, root = toy
    splits = data.load(dataset, "cpu", root)
    cfg = parse_config({"model": MODELS[model], "data": {"dataset": dataset.name}, "epochs": 2, "batch_size": 20,
                        "optimizer": {"name": "adam", "lr": 0.01}, "augment": {"translate": 0.05}})
    history = hpo.trainer.train(cfg, splits)
    assert logit_shapes == [torch.Size([3, CLASSES])] * 2
    assert history[-1].test_accuracy > 0.5  # chance is 0.25
    assert models.spec_params(cfg.model, shape=dataset.shape, classes=CLASSES) > 0
