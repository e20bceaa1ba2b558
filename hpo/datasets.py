"""The datasets hpo trains on, as data: files with pinned checksums, mirrors, shape, classes, statistics.

`hpo.data` fetches, verifies and loads whatever is described here, so a new IDX dataset is
one `register(Dataset(...))` call. Its files live in `ROOT/NAME/` (see `hpo.data.ensure`).
A user's own data (`data: {dataset: npz | folder, path: ...}`) is described from the data
itself by `describe`, which reads it with `hpo.owndata`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional

from hpo.errors import ConfigError, UserError

ALGORITHMS = ("sha256", "md5")
SPLITS = ("train", "test")
SOURCES = ("npz", "folder")  # a user's own data, at the config's data.path; never registry names

OWN_LAYOUT = {
    "npz": "a .npz file with arrays x_train, y_train, x_test, y_test (relative to the working directory)",
    "folder": "a folder holding train/CLASS/*.png|jpg and test/CLASS/*.png|jpg (relative to the working directory)",
}  # what data.path names, for the errors that ask for one
NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")  # it names a folder and a config value


@dataclass(frozen=True)
class FileSpec:
    name: str       # the file as stored in the folder; a name ending in .gz is gunzipped when read
    digest: str     # hex digest of the stored bytes, as published (or as computed from the original files)
    algorithm: str = "sha256"

    def __post_init__(self):
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"{self.name}: checksum algorithm {self.algorithm!r} is not one of {ALGORITHMS}")
        if not re.fullmatch(r"[0-9a-f]+", self.digest):
            raise ValueError(f"{self.name}: digest {self.digest!r} is not lowercase hex")


@dataclass(frozen=True, kw_only=True)
class Dataset:
    """What hpo needs to know about one dataset: where its images and labels come from, and their shape.

    A registered dataset (`source` "idx") is four IDX files (images and labels per split), each
    fetched as mirror + name; IDX mirrors serve gzip only, so a file stored uncompressed is
    fetched as name + ".gz" and gunzipped before its checksum is taken. Images are IDX of
    unsigned bytes, N x H x W (one channel) or N x H x W x C. A user's own data (`source` "npz"
    or "folder") has no files or mirrors but the resolved `path` it was described from.
    """

    name: str
    title: str
    shape: tuple[int, int, int]             # channels, height, width
    classes: int
    mean: tuple[float, ...]                 # per channel, of the training images as [0, 1] pixels
    std: tuple[float, ...]
    class_names: Optional[tuple[str, ...]] = None
    source: str = "idx"                     # "idx" (registered), or one of SOURCES
    train_images: Optional[FileSpec] = None  # the IDX files: required for "idx", absent otherwise
    train_labels: Optional[FileSpec] = None
    test_images: Optional[FileSpec] = None
    test_labels: Optional[FileSpec] = None
    mirrors: tuple[str, ...] = ()
    path: Optional[str] = None              # own data: the resolved .npz file or folder
    digest: Optional[str] = None            # own data: of its images, labels and classes (owndata.digest)
    sizes: Optional[tuple[int, int]] = None  # own data: its train and test images, counted as it was read

    def __post_init__(self):
        if not NAME.match(self.name):
            raise ValueError(f"dataset name {self.name!r}: use lowercase letters, digits and '-'")
        channels = self.shape[0]
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise ValueError(f"{self.name}: shape must be (channels, height, width), got {self.shape}")
        if self.classes < 2:
            raise ValueError(f"{self.name}: needs at least 2 classes, got {self.classes}")
        if len(self.mean) != channels or len(self.std) != channels or min(self.std) <= 0:
            raise ValueError(f"{self.name}: mean and std need one value per channel ({channels}), std > 0")
        if self.class_names is not None and len(self.class_names) != self.classes:
            raise ValueError(f"{self.name}: {len(self.class_names)} class names for {self.classes} classes")
        if self.source == "idx" and None in (self.train_images, self.train_labels, self.test_images, self.test_labels):
            raise ValueError(f"{self.name}: an IDX dataset needs train_images, train_labels, test_images, test_labels")
        if self.source != "idx" and (self.source not in SOURCES or self.path is None):
            raise ValueError(f"{self.name}: source is 'idx' or one of {SOURCES} with a path, got {self.source!r}")

    @property
    def files(self) -> tuple[FileSpec, ...]:
        """The four IDX files; none for a user's own data."""
        files = self.train_images, self.train_labels, self.test_images, self.test_labels
        return files if self.source == "idx" else ()

    def split_files(self, split: str) -> tuple[FileSpec, FileSpec]:
        """(images, labels) of the train or test split."""
        return (self.train_images, self.train_labels) if split == "train" else (self.test_images, self.test_labels)

    def class_name(self, index: int) -> str:
        return self.class_names[index] if self.class_names else str(index)


DATASETS: dict[str, Dataset] = {}


def register(dataset: Dataset, *, replace: bool = False) -> Dataset:
    """Make `dataset` known by its name (to configs, `hpo data --dataset`, `hpo.data.load`)."""
    if dataset.name in SOURCES or dataset.source != "idx":
        raise ValueError(f"register describes IDX datasets; {dataset.name!r} names a user's own data "
                         "(data: {dataset: npz | folder, path: ...} in a config)")
    if dataset.name in DATASETS and not replace:
        raise ValueError(f"a dataset named {dataset.name!r} is already registered; pass replace=True to replace it")
    DATASETS[dataset.name] = dataset
    return dataset


def get(name: str) -> Dataset:
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")
    return DATASETS[name]


_described: dict[tuple[str, str], tuple[tuple, Dataset]] = {}  # (source, path) -> (signature, description)


def describe(data: Any) -> Dataset:
    """The dataset a config's `data` section (a `hpo.config.Data`) names, a registry name, or
    the current description of a `Dataset`. Own data is read once to describe it, then again only
    when the file or a folder of it changes (see `hpo.owndata.signature`): cheap to call often."""
    if isinstance(data, Dataset):
        if data.source == "idx":
            return data
        name, path = data.source, data.path
    else:
        name, path = (data, None) if isinstance(data, str) else (data.dataset, data.path)
    if name not in SOURCES:
        if path is not None:
            raise ConfigError("data.path", f"applies to dataset npz or folder only; {name!r} is registered and "
                                           "lives in the data folder (--data-dir): remove data.path")
        return get(name)
    if path is None:
        raise ConfigError("data.path", f"dataset {name} needs a path: " + OWN_LAYOUT[name])
    from hpo import owndata  # noqa: PLC0415 - numpy and Pillow only for a user's own data

    found = owndata.locate(name, path)
    stamp = owndata.signature(name, found)
    cached = _described.get((name, str(found)))
    if cached is None or cached[0] != stamp:
        arrays = owndata.read(name, found)
        mean, std = owndata.statistics(arrays.train_x, found)
        _, height, width, channels = arrays.train_x.shape
        title = found.name + ("/" if name == "folder" else "")
        cached = stamp, Dataset(name=name, title=title, source=name, path=str(found),
                                shape=(channels, height, width), classes=arrays.classes,
                                mean=mean, std=std, class_names=arrays.class_names, digest=owndata.digest(arrays),
                                sizes=(len(arrays.train_y), len(arrays.test_y)))
        _described[(name, str(found))] = cached
    return cached[1]


def idx_files(algorithm: str, suffix: str, *digests: str) -> dict[str, FileSpec]:
    """The four files in the usual MNIST naming, in the order train images, train labels, test images, test labels."""
    names = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    keys = ("train_images", "train_labels", "test_images", "test_labels")
    return {key: FileSpec(name + suffix, digest, algorithm) for key, name, digest in zip(keys, names, digests)}


# sha256 of the uncompressed IDX files (the original LeCun bytes).
MNIST = register(Dataset(
    name="mnist", title="MNIST",
    **idx_files("sha256", "",
                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
    mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/"),
    shape=(1, 28, 28), classes=10, mean=(0.1307,), std=(0.3081,),  # of the 60,000 training images
))

# md5 of the gzipped files as published, pinned as torchvision pins them (torchvision/datasets/mnist.py).
# The mean and std are the commonly quoted values, not computed here (the files cannot be fetched on the dev machine).
FASHION_MNIST = register(Dataset(
    name="fashion-mnist", title="Fashion-MNIST",
    **idx_files("md5", ".gz",
                "8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
                "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"),
    mirrors=("https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
             "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"),
    shape=(1, 28, 28), classes=10, mean=(0.2860,), std=(0.3530,),
    class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot"),
))

KMNIST = register(Dataset(
    name="kmnist", title="Kuzushiji-MNIST",
    **idx_files("md5", ".gz",
                "bdb82020997e1d708af4cf47b453dcf7", "e144d726b3acfaa3e44228e80efcd344",
                "5c965bf0a639b31b8f53240b1b52f4d7", "7320c461ea6c1c855c0b718fb2a4b134"),
    mirrors=("https://codh.rois.ac.jp/kmnist/dataset/kmnist/", "http://codh.rois.ac.jp/kmnist/dataset/kmnist/"),
    shape=(1, 28, 28), classes=10, mean=(0.1918,), std=(0.3483,),
    class_names=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
))
