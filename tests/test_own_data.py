"""A user's own data: an .npz file or a folder of PNG/JPEG class folders, written here, described,
loaded, named in configs and trained on; and each way it can be wrong, as one line naming the file.

`pytest -s` shows what a user sees: each one-line error.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
import torch
from PIL import Image

import hpo.trainer
from hpo import cli, data, datasets, owndata
from hpo.config import Data, parse_config
from hpo.errors import ConfigError, UserError

SIDE, CLASSES, TRAIN, TEST = 16, 3, 120, 40
NAMES = ("horizontal", "plain", "vertical")  # sorted, as the folder's classes are
TINT = (1.0, 0.8, 0.6)


def patterns(n: int, channels: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 N x H x W (x C) and labels: class 0 has horizontal stripes, 1 none, 2 vertical ones,
    2 pixels wide over dim noise, so a linear model and a pooled convnet both tell them apart."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % CLASSES
    stripes = (np.arange(SIDE) // 2) % 2 == 0
    masks = np.stack([np.broadcast_to(stripes[:, None], (SIDE, SIDE)), np.zeros((SIDE, SIDE), bool),
                      np.broadcast_to(stripes[None, :], (SIDE, SIDE))])
    images = np.where(masks[labels][..., None], 220, rng.integers(0, 70, (n, SIDE, SIDE, channels)))
    images = (images * np.array(TINT[:channels] if channels == 3 else (1.0,))).astype(np.uint8)
    return (images[..., 0] if channels == 1 else images), labels


def write_npz(path: Path, channels: int = 1, **changes) -> Path:
    """The four arrays, with `changes` replacing some (None drops one)."""
    (x_train, y_train), (x_test, y_test) = patterns(TRAIN, channels, 0), patterns(TEST, channels, 1)
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test, **changes}
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def write_folder(root: Path, channels: int = 1, suffix: str = ".png") -> Path:
    for split, n, seed in (("train", TRAIN, 0), ("test", TEST, 1)):
        images, labels = patterns(n, channels, seed)
        for k, name in enumerate(NAMES):
            (root / split / name).mkdir(parents=True)
            for i in np.flatnonzero(labels == k):
                Image.fromarray(images[i]).save(root / split / name / f"{i:03d}{suffix}", quality=95)
    return root


VARIANTS = {  # name -> (source, writer, channels)
    "grey npz": ("npz", lambda tmp: write_npz(tmp / "grey.npz"), 1),
    "rgb npz": ("npz", lambda tmp: write_npz(tmp / "rgb.npz", channels=3), 3),
    "png folder": ("folder", lambda tmp: write_folder(tmp / "pngs"), 1),
    "jpeg folder": ("folder", lambda tmp: write_folder(tmp / "jpegs", channels=3, suffix=".jpg"), 3),
}


@pytest.fixture(params=list(VARIANTS))
def own(request, tmp_path) -> tuple[Data, int]:
    source, write, channels = VARIANTS[request.param]
    return Data(dataset=source, path=str(write(tmp_path))), channels


# ----------------------------------------------------------------- describe and load


def test_described_from_the_data_and_loaded_normalized(own):
    cfg, channels = own
    dataset = datasets.describe(cfg)
    assert (dataset.name, dataset.source, dataset.path) == (cfg.dataset, cfg.dataset, str(Path(cfg.path).resolve()))
    assert dataset.shape == (channels, SIDE, SIDE) and dataset.classes == CLASSES and not dataset.files
    assert dataset.class_names == (NAMES if cfg.dataset == "folder" else None)
    assert data.ensure(cfg) == Path(cfg.path)
    splits = data.load(cfg, "cpu")
    assert splits.dataset is dataset and data.load(cfg, "cpu") is splits
    assert splits.train_x.shape == (TRAIN, channels, SIDE, SIDE) and splits.test_x.shape == (TEST, channels, SIDE, SIDE)
    assert splits.train_x.dtype == torch.float32 and splits.train_y.dtype == torch.int64
    assert torch.bincount(splits.test_y).tolist() == [14, 13, 13]
    # the description's mean and std are the training pixels' own: normalized, each channel is ~N(0, 1)
    per_channel = splits.train_x.transpose(0, 1).reshape(channels, -1)
    torch.testing.assert_close(per_channel.mean(1), torch.zeros(channels), atol=1e-4, rtol=0)
    torch.testing.assert_close(per_channel.std(1), torch.ones(channels), atol=1e-3, rtol=0)
    summary = data.summary(dataset, Path(dataset.path))
    assert summary["splits"]["train"]["images"] == TRAIN and summary["checksums"] == {}


def test_describing_again_reads_nothing_until_the_data_changes(tmp_path, monkeypatch):
    reads = []
    for name in ("read_npz", "read_folder"):
        real = getattr(owndata, name)
        monkeypatch.setattr(owndata, name, lambda path, real=real: reads.append(path) or real(path))
    npz = Data(dataset="npz", path=str(write_npz(tmp_path / "x.npz")))
    folder = Data(dataset="folder", path=str(write_folder(tmp_path / "dir")))
    first = [datasets.describe(npz), datasets.describe(folder)]
    assert [datasets.describe(npz), datasets.describe(folder)] == first and len(reads) == 2
    assert datasets.describe(first[0]) is first[0]  # a Dataset is described again from its source, cached too
    write_npz(tmp_path / "x.npz", channels=3)
    os.utime(tmp_path / "x.npz", ns=(1, 1))  # a new mtime even on a coarse clock
    assert datasets.describe(npz).shape == (3, SIDE, SIDE) and len(reads) == 3
    (tmp_path / "dir" / "train" / "plain" / "001.png").rename(tmp_path / "dir" / "train" / "plain" / "gone.txt")
    os.utime(tmp_path / "dir" / "train" / "plain", ns=(1, 1))
    assert datasets.describe(folder) != first[1] and len(reads) == 4


def test_transparent_and_palette_images_are_rgb_over_black(tmp_path):
    root = write_folder(tmp_path / "dir", channels=3)
    rgba = np.zeros((SIDE, SIDE, 4), np.uint8)
    rgba[..., :3], rgba[:8, :, 3] = 200, 255  # the bottom half transparent
    Image.fromarray(rgba, "RGBA").save(root / "train" / "plain" / "rgba.png")
    Image.fromarray(np.full((SIDE, SIDE, 3), 90, np.uint8)).quantize().save(root / "train" / "plain" / "p.png")
    x = owndata.read("folder", root.resolve()).train_x
    assert x.shape == (TRAIN + 2, SIDE, SIDE, 3)
    names = sorted(p.name for p in (root / "train" / "plain").iterdir())
    rgba_x = x[40 + names.index("rgba.png")]  # horizontal's 40 images come first
    assert (rgba_x[:8] == 200).all() and (rgba_x[8:] == 0).all()
    assert (x[40 + names.index("p.png")] == 90).all()


# ----------------------------------------------------------------- configs and training


def test_configs_name_their_data_by_path(tmp_path, monkeypatch):
    write_npz(tmp_path / "x.npz")
    monkeypatch.chdir(tmp_path)
    cfg = parse_config({"model": {"preset": "linear"}, "data": {"dataset": "npz", "path": "x.npz"}})
    assert cfg.to_dict()["data"] == {"dataset": "npz", "path": "x.npz"}
    assert datasets.describe(cfg.data).path == str(tmp_path / "x.npz")  # relative: from the working directory
    assert "path" not in parse_config({"model": {"preset": "linear"}}).to_dict()["data"]
    assert datasets.describe(Data()) is datasets.describe("mnist") is datasets.MNIST  # registry names as before


TOO_DEEP = {"family": "convnet", "layers": [8, "M", 8, "M", 8, "M", "H"]}  # 16 -> 14 -> 7 -> 5 -> 2 -> 0


def test_a_model_too_deep_for_the_images_fails_when_parsed(tmp_path):
    write_npz(tmp_path / "x.npz")
    assert parse_config({"model": TOO_DEEP}).data.dataset == "mnist"  # 28x28 leaves it room
    with pytest.raises(ConfigError) as caught:
        parse_config({"model": TOO_DEEP, "data": {"dataset": "npz", "path": str(tmp_path / "x.npz")}}, source="c.yaml")
    assert str(caught.value) == "c.yaml: key 'model.layers.4': the feature map shrinks to nothing at 8 (input 16x16)"


# (data section, key, fragment of the reason); {tmp} is the test's folder
BAD_CONFIGS = [
    ({"dataset": "npz"}, "data.path", "dataset npz needs a path: a .npz file with arrays x_train, y_train"),
    ({"dataset": "folder", "path": ""}, "data.path", "dataset folder needs a path: a folder holding train/CLASS"),
    ({"dataset": "mnist", "path": "x.npz"}, "data.path", "applies to dataset npz or folder only; 'mnist' is registered"),
    ({"dataset": "cifar"}, "data.dataset", "choose from mnist, fashion-mnist, kmnist, or your own data: npz or folder"),
    ({"dataset": "npz", "path": "gone.npz"}, "data.path",
     "{tmp}/gone.npz ('gone.npz' from the working directory {tmp}): no such file; give the path of numpy.savez("),
    ({"dataset": "folder", "path": "{tmp}/gone"}, "data.path", "{tmp}/gone: no such folder; give the path of DIR/train"),
    ({"dataset": "npz", "path": "{tmp}"}, "data.path", "{tmp} is a folder; dataset npz takes a .npz file"),
    ({"dataset": "folder", "path": "{tmp}/x.npz"}, "data.path", "{tmp}/x.npz is a file; dataset folder takes a folder"),
]


@pytest.mark.parametrize(("section", "key", "reason"), BAD_CONFIGS, ids=[c[2][:30] for c in BAD_CONFIGS])
def test_bad_data_sections_fail_at_their_key_when_parsed(tmp_path, monkeypatch, section, key, reason):
    write_npz(tmp_path / "x.npz")
    monkeypatch.chdir(tmp_path)
    section = {k: v.format(tmp=tmp_path) for k, v in section.items()}
    with pytest.raises(ConfigError) as caught:
        parse_config({"model": {"preset": "linear"}, "data": section}, source="c.yaml")
    print(caught.value)
    assert caught.value.key == key and reason.format(tmp=tmp_path) in caught.value.reason
    assert str(caught.value).startswith(f"c.yaml: key '{key}': ") and "\n" not in str(caught.value)


MODELS = {
    "linear": {"preset": "linear"},
    "tiny convnet": {"family": "convnet", "layers": [4, "M", 8, "GAP", "H"], "batchnorm": False},
}


@pytest.mark.parametrize("model", list(MODELS))
def test_training_on_own_data_beats_chance(own, model, logit_shapes):
    cfg_data, channels = own
    splits = data.load(cfg_data, "cpu")
    cfg = parse_config({"model": MODELS[model], "data": {"dataset": cfg_data.dataset, "path": cfg_data.path},
                        "epochs": 2, "batch_size": 10, "optimizer": {"name": "adam", "lr": 0.02}})
    history = hpo.trainer.train(cfg, splits)
    assert logit_shapes == [torch.Size([3, CLASSES])] * 2
    # chance is 1/3; over seeds 0-11, in fp32 and bf16, the convnet's worst is 0.65 and the linear model's 1.0
    assert history[-1].test_accuracy > 0.5


def test_the_trainer_refuses_data_other_than_the_configs(tmp_path):
    splits = data.load(Data(dataset="npz", path=str(write_npz(tmp_path / "a.npz"))), "cpu")
    cfg = parse_config({"model": {"preset": "linear"}, "epochs": 1,
                        "data": {"dataset": "npz", "path": str(write_npz(tmp_path / "b.npz"))}})
    with pytest.raises(UserError, match=f"at {tmp_path}/b.npz but {tmp_path}/a.npz is loaded"):
        hpo.trainer.train(cfg, splits)


# ----------------------------------------------------------------- bad data, one line each


def rgb(path: Path, size=(SIDE, SIDE)) -> None:
    Image.fromarray(np.full((size[1], size[0], 3), 128, np.uint8)).save(path)


def put(path: Path, body: bytes) -> Path:
    path.write_bytes(body)
    return path


def zipped(path: Path, **members: bytes) -> Path:
    """An .npz written member by member: the good arrays, with `members` (raw .npy bytes) replacing some."""
    good = write_npz(path.with_name("good.npz"))
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(path, "w") as archive:
        for name in owndata.ARRAYS:
            archive.writestr(f"{name}.npy", members.get(name, source.read(f"{name}.npy")))
    return path


def npy_header(shape: tuple) -> bytes:
    """The .npy header of a uint8 array of `shape`, without its data."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "|u1", "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def folder_with(tmp: Path, damage) -> Path:
    root = write_folder(tmp / "dir")
    damage(root)
    return root


X, Y = patterns(TRAIN, 1, 0)
# (case, source, writer(tmp) -> path, fragment of the one line; {path} is the file or folder written)
BAD_DATA = [
    ("npz missing arrays", "npz", lambda t: write_npz(t / "x.npz", x_test=None, y_test=None),
     "{path}: no array x_test, y_test (it holds x_train, y_train); write it with numpy.savez(FILE, x_train=..."),
    ("npz float images", "npz", lambda t: write_npz(t / "x.npz", x_train=X / 255),
     "{path}: x_train is float64; images must be uint8 pixels 0..255 (scale them to 0..255, then .astype(numpy.uint8))"),
    ("npz flat images", "npz", lambda t: write_npz(t / "x.npz", x_train=X.reshape(TRAIN, -1)),
     "{path}: x_train has shape (120, 256); images must be N x H x W (grayscale) or N x H x W x C"),
    ("npz channels first", "npz", lambda t: write_npz(t / "x.npz", x_train=np.repeat(X[:, None], 3, 1)),
     "{path}: x_train has shape (120, 3, 16, 16), channels first; store N x H x W x C"),
    ("npz image sizes differ", "npz", lambda t: write_npz(t / "x.npz", x_test=X[:40, :12, :12]),
     "{path}: x_train holds 16x16x1 images but x_test 12x12x1 (H x W x C); both splits need the same"),
    ("npz empty split", "npz", lambda t: write_npz(t / "x.npz", x_test=X[:0], y_test=Y[:0]),
     "{path}: x_test holds no images; each split needs at least one image per class"),
    ("npz float labels", "npz", lambda t: write_npz(t / "x.npz", y_train=Y.astype(float)),
     "{path}: y_train is float64; labels must be integers 0..K-1, one per image (.astype(numpy.int64))"),
    ("npz one-hot labels", "npz", lambda t: write_npz(t / "x.npz", y_train=np.eye(3, dtype=int)[Y]),
     "{path}: y_train has shape (120, 3); labels must be one integer 0..K-1 per image (one-hot rows? store y.argmax(1))"),
    ("npz N mismatch", "npz", lambda t: write_npz(t / "x.npz", y_train=Y[:-1]),
     "{path}: x_train holds 120 images but y_train 119 labels; each image needs exactly one label"),
    ("npz negative label", "npz", lambda t: write_npz(t / "x.npz", y_train=Y - 1),
     "{path}: y_train holds label -1; labels must be 0..K-1"),
    ("npz test label out of range", "npz", lambda t: write_npz(t / "x.npz", y_test=Y[:40] + 1),
     "{path}: y_test holds label 3 but y_train's labels stop at 2; both splits need the same classes 0..K-1"),
    ("npz a class missing", "npz", lambda t: write_npz(t / "x.npz", y_train=np.where(Y == 1, 2, Y)),
     "{path}: y_train has no image of class 1 (of 0..2); labels must be 0..K-1 with every class in both splits"),
    ("npz a huge label", "npz", lambda t: write_npz(t / "x.npz", y_train=np.where(np.arange(TRAIN) == 0, 10**12, Y)),
     # it built a range of 10**12 labels: a MemoryError traceback after asking for 7 TiB
     "{path}: y_train has no image of class 3, 4, 5, 6, 7, ... (of 0..1000000000000); labels must be 0..K-1"),
    ("npz uint64 label past int64", "npz", lambda t: write_npz(t / "x.npz", y_train=np.where(
        np.arange(TRAIN) == 0, np.uint64(2**64 - 1), Y.astype(np.uint64))),
     "{path}: y_train holds label 18446744073709551615; labels must be 0..K-1"),  # it said label -1
    ("npz one class", "npz", lambda t: write_npz(t / "x.npz", y_train=Y * 0, y_test=Y[:40] * 0),
     "{path}: y_train holds class 0 only; a classifier needs labels 0..K-1 with K >= 2"),
    ("npz blank images", "npz", lambda t: write_npz(t / "x.npz", x_train=X * 0),
     "{path}: every training pixel is 0; the images hold nothing to learn from"),
    ("npz blank colour images", "npz", lambda t: write_npz(t / "x.npz", channels=3, x_train=np.full((TRAIN, SIDE, SIDE, 3), 7)
                                                               .astype(np.uint8) * np.array([1, 0, 2], np.uint8)),
     "{path}: every training pixel is (7, 0, 14), channel by channel; the images hold nothing to learn from"),
    ("npz object array", "npz", lambda t: write_npz(t / "x.npz", y_train=np.array(list(Y), dtype=object)),
     "{path}: cannot read array y_train ("),  # numpy's reason: object arrays need pickle
    ("not an npz", "npz", lambda t: put(t / "x.npz", b"x_train,y_train\n"),
     "{path}: not an .npz file (not a zip archive: another format, or cut short); write it with numpy.savez("),
    ("npy, not npz", "npz", lambda t: put(t / "x.npz", npy_bytes(X)),
     "{path}: a .npy file holds one array, not the four an .npz needs"),
    ("npz member without a header", "npz", lambda t: zipped(t / "x.npz", x_train=b"garbage"),
     "{path}: x_train is not a NumPy array (its x_train.npy has no array header); write it with numpy.savez("),
    ("npz header claims 10 TB", "npz", lambda t: zipped(t / "x.npz", x_train=npy_header((10**6, 10**7)) + bytes(100)),
     "{path}: x_train's header declares (1000000, 10000000) uint8 (10,000,000,000,000 bytes) but the file holds 100;"),
    ("npz a pipe", "npz", lambda t: (os.mkfifo(t / "x.npz"), t / "x.npz")[1],  # reading it would wait forever
     "{path} is not a regular file; dataset npz takes a .npz file"),
    ("npz cut short", "npz", lambda t: put(t / "x.npz", write_npz(t / "y.npz").read_bytes()[:500]),
     "{path}: not an .npz file (not a zip archive"),
    ("folder without test", "folder", lambda t: folder_with(t, lambda r: os.rename(r / "test", r / "val")),
     "{path}: no test/ folder; lay the images out as DIR/train/CLASS/*.png and DIR/test/CLASS/*.png (or .jpg)"),
    ("folder of one class", "folder", lambda t: folder_with(t, lambda r: [
        os.rename(r / s / c, r / f"{s}-{c}") for s in ("train", "test") for c in ("plain", "vertical")]),
     "{path}/train: 1 class folder (horizontal); a classifier needs 2 or more, one sub-folder of images per"),
    ("folder classes differ", "folder", lambda t: folder_with(t, lambda r: os.rename(r / "test" / "plain",
                                                                                     r / "test" / "blank")),
     "{path}/test: its class folders differ from train/'s (missing plain; extra blank); both splits need the same"),
    ("folder empty class", "folder", lambda t: folder_with(t, lambda r: [
        p.rename(p.with_suffix(".bmp")) for p in (r / "test" / "vertical").iterdir()]),
     "{path}/test/vertical: no .png, .jpg or .jpeg images; every class folder needs at least one (or remove class"),
    ("folder link to nothing", "folder", lambda t: folder_with(t, lambda r: os.symlink(
        r / "gone.png", r / "train" / "plain" / "zz.png")),
     "{path}/train/plain/zz.png: a link to nothing; give the image itself, or remove it"),
    ("folder unreadable image", "folder", lambda t: folder_with(t, lambda r: put(r / "train" / "plain" / "001.png",
                                                                           b"\x89PNG\r\n\x1a\n cut short")),
     "{path}/train/plain/001.png: not a readable PNG or JPEG (Pillow cannot identify it); replace or delete"),
    ("folder truncated image", "folder", lambda t: folder_with(t, lambda r: put(r / "train" / "plain" / "001.png", (
        r / "train" / "plain" / "004.png").read_bytes()[:-40])),
     "{path}/train/plain/001.png: not a readable PNG or JPEG (image file is truncated"),
    ("folder sizes differ", "folder", lambda t: folder_with(t, lambda r: rgb(r / "test" / "plain" / "x.png", (20, 16))),
     "images differ in size: {path}/train/horizontal/000.png is 16x16 but {path}/test/plain/x.png is 20x16"),
    ("folder modes differ", "folder", lambda t: folder_with(t, lambda r: rgb(r / "train" / "vertical" / "x.png")),
     "images differ in mode: {path}/train/horizontal/000.png is grayscale but {path}/train/vertical/x.png is RGB"),
    ("folder 16-bit image", "folder", lambda t: folder_with(t, lambda r: Image.fromarray(
        np.zeros((SIDE, SIDE), np.uint16)).save(r / "train" / "plain" / "x.png")),
     "{path}/train/plain/x.png: mode I"),  # I;16 or I, as Pillow's version reads it
]


@pytest.mark.parametrize(("source", "write", "expect"), [c[1:] for c in BAD_DATA], ids=[c[0] for c in BAD_DATA])
def test_bad_data_is_one_line_naming_the_file(tmp_path, source, write, expect):
    path = write(tmp_path).resolve()
    with pytest.raises(UserError) as caught:
        datasets.describe(Data(dataset=source, path=str(path)))
    message = str(caught.value)
    print(message)
    assert expect.format(path=path) in message and "\n" not in message


def test_hpo_train_shows_bad_data_as_one_line_and_exit_2(tmp_path, capsys):
    write_npz(tmp_path / "x.npz", y_test=Y[:40] + 1)
    (tmp_path / "c.yaml").write_text(f"model: {{preset: linear}}\ndata: {{dataset: npz, path: {tmp_path}/x.npz}}\n")
    assert cli.main(["train", "--config", str(tmp_path / "c.yaml"), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    print(err)
    assert err == (f"hpo train: error: {tmp_path}/x.npz: y_test holds label 3 but y_train's labels stop at 2; "
                   "both splits need the same classes 0..K-1\n")


def test_hpo_data_checks_your_own_file_or_folder_where_it_is(tmp_path, capsys, monkeypatch):
    """`hpo data PATH`: the counts per class, shape and pixel statistics the trainer will use, and
    the data line to put in a config; nothing fetched, nothing written."""
    monkeypatch.chdir(tmp_path)
    write_npz(tmp_path / "grey.npz")
    write_folder(tmp_path / "rgb", channels=3)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert cli.main(["data", "grey.npz"]) == 0
    out = capsys.readouterr().out
    described = datasets.describe(Data(dataset="npz", path="grey.npz"))
    assert f"{TRAIN:,} training and {TEST:,} test images of 1x{SIDE}x{SIDE}" in out and f"{CLASSES} classes" in out
    assert f"pixel mean {described.mean[0]:.4f}, std {described.std[0]:.4f}" in out
    assert f"data: {{dataset: npz, path: {tmp_path / 'grey.npz'}}}" in out
    assert cli.main(["data", "rgb"]) == 0
    out = capsys.readouterr().out
    per_class = [line.split("│")[1:4] for line in out.splitlines() if line.startswith("│")]
    assert [[cell.strip() for cell in row] for row in per_class] == [
        [f"{k} {name}", str(np.sum(np.arange(TRAIN) % CLASSES == k)), str(np.sum(np.arange(TEST) % CLASSES == k))]
        for k, name in enumerate(NAMES)] + [
        ["total", str(TRAIN), str(TEST)]]
    assert f"data: {{dataset: folder, path: {tmp_path / 'rgb'}}}" in out
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("argv,expect", [
    (["data", "missing.npz"], "hpo data: error: unknown dataset 'missing.npz'; choose from mnist, fashion-mnist, "
                              "kmnist, or give the path of your own images"),
    (["data", "bad.npz"], "hpo data: error: {tmp}/bad.npz: y_test holds label 3 but y_train's labels stop at 2"),
    (["data", "grey.npz", "--dataset", "mnist"], "hpo data: error: hpo data grey.npz --dataset mnist: two datasets"),
    (["data", "grey.npz", "--data-dir", "d"], "hpo data: error: --data-dir is where registered datasets live"),
], ids=["no such path", "bad labels", "two datasets", "data dir for own data"])
def test_hpo_data_with_a_bad_path_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch, argv, expect):
    monkeypatch.chdir(tmp_path)
    write_npz(tmp_path / "grey.npz")
    write_npz(tmp_path / "bad.npz", y_test=Y[:40] + 1)
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    print(captured.err)
    assert captured.err.startswith(expect.format(tmp=tmp_path)) and captured.err.count("\n") == 1
    assert captured.out == "" and not (tmp_path / "d").exists()


def test_a_subset_larger_than_your_data_names_the_file(tmp_path, capsys):
    npz = write_npz(tmp_path / "x.npz")
    (tmp_path / "c.yaml").write_text(f"model: {{preset: linear}}\ndata: {{dataset: npz, path: {npz}, "
                                     f"train_subset: {TRAIN + 1}}}\n")
    assert cli.main(["train", "--config", str(tmp_path / "c.yaml"), "--epochs", "1"]) == 2
    assert capsys.readouterr().err == (f"hpo train: error: {tmp_path}/c.yaml: key 'data.train_subset': {TRAIN + 1:,} is "
                                       f"more than the {TRAIN:,} train images of {npz}; lower it, or leave it out to "
                                       "use them all\n")


def study_on_own_data(folder: Path, name: str, model: dict):
    """A study NAME of one-epoch trials of `model` on folder/d.npz (written now): its storage's URL,
    and run(trials), which runs it with `hpo run` from `folder`."""
    from test_service import hpo  # noqa: PLC0415

    write_npz(folder / "d.npz")
    study = folder / f"{name}.yaml"
    study.write_text(yaml.safe_dump({
        "name": name, "base": {"model": model, "optimizer": {"name": "sgd", "lr": 0.05},
                               "batch_size": 40, "epochs": 1, "data": {"dataset": "npz", "path": "d.npz"}},
        "search": {"optimizer.lr": {"float": [0.01, 0.1], "log": True}}, "pruner": {"name": "none"}}))
    url = f"sqlite:///{folder / (name + '.db')}"

    def run(trials: int):
        return hpo("run", "--study", str(study), "--trials", str(trials), "--storage", url, "--device", "cpu",
                   "--quiet", cwd=folder, check=False)

    return url, run


def test_a_study_refuses_your_data_changed_since_its_trials_trained(tmp_path):
    """A class added to shapes.npz between two runs of one study: the new trials trained on four
    classes were pruned against, and ranked beside, trials on three, with no word."""
    import shutil  # noqa: PLC0415

    from test_service import hpo  # noqa: PLC0415

    path = tmp_path / "d.npz"
    url, run = study_on_own_data(tmp_path, "own", {"family": "mlp", "hidden": [8]})
    assert run(1).returncode == 0
    exported = yaml.safe_load(hpo("export", "--study", "own", "--storage", url, cwd=tmp_path).stdout)
    digest = datasets.describe(Data(dataset="npz", path=str(path))).digest
    assert exported["trials"][0]["data_digest"] == digest  # what hpo train compares the data it finds with
    y_test = patterns(TEST, 1, 1)[1].copy()
    y_test[0] = (y_test[0] + 1) % CLASSES  # one label changed is other data too
    write_npz(path, y_test=y_test)
    refused = run(2)
    assert refused.returncode == 2 and refused.stderr.strip() == (
        f"hpo run: error: study 'own' in {url} was searched on other data: d.npz has changed since its trials "
        "trained (its images, labels or classes differ), and trials on other data do not compare; restore the data, "
        f"give this study file another name: key, or delete the old study first (hpo delete --study own --storage {url})")
    assert len(optuna.load_study(study_name="own", storage=url).trials) == 1
    write_npz(path)  # restored
    assert run(2).returncode == 0
    # the digest is of the data, not of where it lies: a copy elsewhere is the same data
    copy = shutil.copy(path, tmp_path / "elsewhere.npz")
    assert datasets.describe(Data(dataset="npz", path=str(copy))).digest == \
        datasets.describe(Data(dataset="npz", path=str(path))).digest


def test_eval_val_on_too_few_training_images_is_one_line_before_any_trial(tmp_path):
    """eval: val holds out a sixth of the training images: of 5, none. hpo check passed it
    ("0 held out") and every trial of hpo run failed with ZeroDivisionError."""
    from test_service import hpo  # noqa: PLC0415

    write_npz(tmp_path / "few.npz", x_train=X[:12], y_train=Y[:12])  # 2 held out, for 3 classes
    (tmp_path / "few.yaml").write_text(yaml.safe_dump({
        "name": "few", "eval": "val",
        "base": {"model": {"family": "mlp", "hidden": [8]}, "optimizer": {"name": "sgd", "lr": 0.05},
                 "batch_size": 4, "epochs": 1, "data": {"dataset": "npz", "path": "few.npz"}},
        "search": {"optimizer.lr": {"float": [0.01, 0.1]}}}))
    line = (f"few.yaml: key 'eval': val scores the epochs on a sixth of the training images, held out: 2 of "
            f"{tmp_path / 'few.npz'}'s 12, fewer than its 3 classes; give it 18 or more training images, or score "
            "on the test set (eval: test)")
    for command in (["check", "few.yaml"], ["run", "--study", "few.yaml", "--trials", "1", "--device", "cpu"]):
        done = hpo(*command, cwd=tmp_path, check=False)
        assert done.returncode == 2 and done.stderr.splitlines()[0] == f"hpo {command[0]}: error: {line}", done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["few.npz", "few.yaml"]  # no database, no folder


def test_colour_images_with_one_channel_the_same_everywhere_train(tmp_path):
    """Red-and-green images whose blue is 0 everywhere were refused as holding nothing to learn
    from. The constant channel is normalized to 0 (std 1); the others carry the classes."""
    x_train, y_train = patterns(TRAIN, 3, 0)
    x_test, y_test = patterns(TEST, 3, 1)
    x_train[..., 2], x_test[..., 2] = 0, 0
    path = tmp_path / "rg.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    dataset = datasets.describe(Data(dataset="npz", path=str(path)))
    assert dataset.mean[2] == 0 and dataset.std[2] == 1.0 and min(dataset.std[:2]) > 0
    splits = data.load(Data(dataset="npz", path=str(path)))
    assert torch.count_nonzero(splits.train_x[:, 2]) == 0 and splits.train_x[:, :2].std() > 0.5


def test_hpo_data_shows_a_constant_channels_std_as_0(tmp_path, capsys):
    """`hpo data` printed 1.0000 as the std of a blue channel that is 0 everywhere: the divisor hpo
    normalizes it with, not the data's spread."""
    x_train, y_train = patterns(TRAIN, 3, 0)
    x_test, y_test = patterns(TEST, 3, 1)
    x_train[..., 2], x_test[..., 2] = 0, 0
    np.savez(tmp_path / "rg.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    assert cli.main(["data", str(tmp_path / "rg.npz")]) == 0
    headline = capsys.readouterr().out.splitlines()[0]
    assert headline.endswith(", 0 (constant: divided by 1)") and "1.0000" not in headline, headline
