"""A user's own images: a NumPy `.npz` file or a folder of PNG/JPEG class folders, read and checked.

Both become uint8 arrays N x H x W x C and int64 labels 0..K-1 per split; `hpo.datasets.describe`
turns them into a `Dataset` (shape, classes, the training pixels' mean and std) and `hpo.data.load`
puts them on the device. Whatever is wrong with the data is one `UserError` line naming the file
or folder and the fix. Only numpy here (Pillow for folders): no torch, and no other hpo module.
"""

from __future__ import annotations

import hashlib
import math
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from hpo.errors import ConfigError, UserError

ARRAYS = ("x_train", "y_train", "x_test", "y_test")
SPLITS = ("train", "test")
EXTENSIONS = (".png", ".jpg", ".jpeg")  # matched case-insensitively; other files in a class folder are ignored
LAYOUT = {
    "npz": "numpy.savez(FILE, x_train=..., y_train=..., x_test=..., y_test=...)",
    "folder": "DIR/train/CLASS/*.png and DIR/test/CLASS/*.png (or .jpg)",
}


@dataclass(frozen=True)
class Arrays:
    """Both splits as read: images uint8 [N, H, W, C], labels int64 [N] in 0..classes-1."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: int
    class_names: Optional[tuple[str, ...]]  # a folder's class folders; None for an npz


def locate(kind: str, path: str | os.PathLike) -> Path:
    """The resolved file or folder; a relative path is taken from the working directory."""
    given = Path(path).expanduser()
    found = given.resolve()
    where = f"{found}" + ("" if given.is_absolute() else f" ({path!r} from the working directory {Path.cwd()})")
    if not found.exists():
        raise ConfigError("data.path", f"{where}: no such {'file' if kind == 'npz' else 'folder'}; "
                                       f"give the path of {LAYOUT[kind]}")
    if kind == "npz" and found.is_dir():
        raise ConfigError("data.path", f"{where} is a folder; dataset npz takes a .npz file "
                                       "(a folder of class folders of images is dataset: folder)")
    if kind == "npz" and not found.is_file():  # a device, a pipe: reading could block or never end
        raise ConfigError("data.path", f"{where} is not a regular file; dataset npz takes a .npz file")
    if kind == "folder" and not found.is_dir():
        raise ConfigError("data.path", f"{where} is a file; dataset folder takes a folder laid out as "
                                       f"{LAYOUT['folder']} (an .npz file is dataset: npz)")
    return found


def signature(kind: str, path: Path) -> tuple:
    """What changes when the data does, for a few stat calls: the npz file's mtime and size; a
    folder's own mtime and those of its split and class folders, which change when an image is
    added, removed or renamed (not when one is rewritten in place under the same name)."""
    if kind == "npz":
        stat = path.stat()
        return stat.st_mtime_ns, stat.st_size
    folders = [path] + [path / split for split in SPLITS]
    for split in SPLITS:
        try:
            folders += sorted(entry for entry in (path / split).iterdir() if entry.is_dir())
        except OSError:
            pass
    stamps = []
    for folder in folders:
        try:
            stamps.append((str(folder), folder.stat().st_mtime_ns))
        except OSError:
            stamps.append((str(folder), None))
    return tuple(stamps)


_last: dict[tuple, Arrays] = {}  # the latest read, for `hpo.data.load` right after `describe`


def read(kind: str, path: Path) -> Arrays:
    """Read and check the data at a located `path`; the latest read is kept until `forget()`."""
    key = (kind, str(path), signature(kind, path))
    if key not in _last:
        _last.clear()
        try:
            _last[key] = read_npz(path) if kind == "npz" else read_folder(path)
        except OSError as error:  # a file or folder that cannot be opened or listed (permissions, say)
            raise UserError(f"{error.filename or path}: cannot read it ({error.strerror or error}); "
                            "check that it is readable by this user") from None
    return _last[key]


def digest(arrays: Arrays) -> str:
    """What a study checks its own data by, run after run: a hash of both splits' images and
    labels and the class names (a registered dataset's files are pinned by their checksums)."""
    h = hashlib.blake2b(digest_size=12)
    for array in (arrays.train_x, arrays.train_y, arrays.test_x, arrays.test_y):
        h.update(repr((array.shape, array.dtype.str)).encode())
        h.update(np.ascontiguousarray(array).data)
    h.update(repr(arrays.class_names).encode())
    return h.hexdigest()


def forget() -> None:
    """Drop the kept arrays (once they are on the device, or once the data is only checked)."""
    _last.clear()


def statistics(train_x: np.ndarray, where: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std per channel of the training pixels as [0, 1] values, exact, from a histogram
    of the bytes (no float copy of the images). A channel that is the same everywhere (the blue of
    red-and-green images) has std 1: normalized, it is 0, and the others carry what there is to learn."""
    means, stds = [], []
    values = np.arange(256) / 255
    for c in range(train_x.shape[-1]):
        counts = np.bincount(train_x[..., c].ravel(), minlength=256)
        mean = float(counts @ values / counts.sum())
        means.append(mean)
        stds.append(float(np.sqrt(counts @ (values - mean) ** 2 / counts.sum())))
    if max(stds) == 0:
        pixels = [round(m * 255) for m in means]
        shown = str(pixels[0]) if len(pixels) == 1 else f"({', '.join(map(str, pixels))}), channel by channel"
        raise UserError(f"{where}: every training pixel is {shown}; the images hold nothing to learn from")
    return tuple(means), tuple(std if std > 0 else 1.0 for std in stds)


# ---------------------------------------------------------------- npz


def read_npz(path: Path) -> Arrays:
    with open(path, "rb") as file:
        if file.read(6) == b"\x93NUMPY":
            raise UserError(f"{path}: a .npy file holds one array, not the four an .npz needs; "
                            f"write it with {LAYOUT['npz']}")
    if not zipfile.is_zipfile(path):  # an .npz is a zip archive of .npy files
        raise UserError(f"{path}: not an .npz file (not a zip archive: another format, or cut short); "
                        f"write it with {LAYOUT['npz']}")
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise UserError(f"{path}: not a readable .npz file ({error}); write it with {LAYOUT['npz']}") from None
    with npz:
        if missing := [name for name in ARRAYS if name not in npz.files]:
            raise UserError(f"{path}: no array {', '.join(missing)} (it holds {', '.join(npz.files) or 'none'}); "
                            f"write it with {LAYOUT['npz']}")
        arrays = {}
        for name in ARRAYS:
            try:
                check_header(npz.zip, name, path)  # before numpy allocates what the header claims
                arrays[name] = npz[name]
            except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
                raise UserError(f"{path}: cannot read array {name} ({error}); write it with {LAYOUT['npz']}") from None
    splits = []
    for split in SPLITS:
        x = images(arrays[f"x_{split}"], f"x_{split}", path)
        splits.append((x, labels(arrays[f"y_{split}"], f"y_{split}", len(x), path)))
    (train_x, train_y), (test_x, test_y) = splits
    if train_x.shape[1:] != test_x.shape[1:]:
        raise UserError(f"{path}: x_train holds {side(train_x)} images but x_test {side(test_x)} (H x W x C); "
                        "both splits need the same image size and channels")
    classes = check_classes(train_y, test_y, path)
    return Arrays(train_x, train_y, test_x, test_y, classes, None)


def check_header(archive: zipfile.ZipFile, name: str, path: Path) -> None:
    """UserError unless the archive's NAME.npy is a NumPy array whose data is all there: numpy
    hands back the raw bytes of a member without the header, and allocates whatever shape a header
    declares (90 TiB, say) before it finds the data missing."""
    member = archive.getinfo(f"{name}.npy")
    with archive.open(member) as handle:
        try:
            version = np.lib.format.read_magic(handle)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(handle)
        except ValueError:
            raise UserError(f"{path}: {name} is not a NumPy array (its {name}.npy has no array header); "
                            f"write it with {LAYOUT['npz']}") from None
        header = handle.tell()
    if dtype.hasobject:
        return  # numpy refuses those without pickle, in a line of its own
    declared = math.prod(shape) * dtype.itemsize
    if declared > member.file_size - header:
        raise UserError(f"{path}: {name}'s header declares {tuple(shape)} {dtype} ({declared:,} bytes) but the file "
                        f"holds {member.file_size - header:,}; it is cut short or damaged: write it again with "
                        f"{LAYOUT['npz']}")


def side(x: np.ndarray) -> str:
    return "x".join(map(str, x.shape[1:]))


def images(x: np.ndarray, name: str, path: Path) -> np.ndarray:
    """uint8 [N, H, W, C] from N x H x W (one channel) or N x H x W x C."""
    if x.dtype != np.uint8:
        raise UserError(f"{path}: {name} is {x.dtype}; images must be uint8 pixels 0..255 "
                        "(scale them to 0..255, then .astype(numpy.uint8))")
    if x.ndim not in (3, 4) or 0 in x.shape[1:]:
        raise UserError(f"{path}: {name} has shape {x.shape}; images must be N x H x W (grayscale) or N x H x W x C")
    if x.ndim == 4 and x.shape[3] > 4 and x.shape[1] <= 4:
        raise UserError(f"{path}: {name} has shape {x.shape}, channels first; store N x H x W x C "
                        "(numpy.transpose(x, (0, 2, 3, 1)))")
    if len(x) == 0:
        raise UserError(f"{path}: {name} holds no images; each split needs at least one image per class")
    return x[..., None] if x.ndim == 3 else x


def labels(y: np.ndarray, name: str, n: int, path: Path) -> np.ndarray:
    """int64 [N]; an N x 1 column (as Keras ships CIFAR-10) is taken as N."""
    y = y[:, 0] if y.ndim == 2 and y.shape[1] == 1 else y
    if not np.issubdtype(y.dtype, np.integer):
        raise UserError(f"{path}: {name} is {y.dtype}; labels must be integers 0..K-1, one per image "
                        "(.astype(numpy.int64))")
    if y.ndim != 1:
        raise UserError(f"{path}: {name} has shape {y.shape}; labels must be one integer 0..K-1 per image "
                        "(one-hot rows? store y.argmax(1))")
    if len(y) != n:
        raise UserError(f"{path}: x_{name[2:]} holds {n} images but {name} {len(y)} labels; "
                        "each image needs exactly one label")
    if y.dtype.kind == "u" and y.size and y.max() > np.iinfo(np.int64).max:  # would wrap to a negative label
        raise UserError(f"{path}: {name} holds label {y.max()}; labels must be 0..K-1, one per image")
    return y.astype(np.int64)


def check_classes(train_y: np.ndarray, test_y: np.ndarray, path: Path) -> int:
    """K, where the labels of both splits are 0..K-1 and each split has every class."""
    for name, y in (("y_train", train_y), ("y_test", test_y)):
        if y.min() < 0:
            raise UserError(f"{path}: {name} holds label {y.min()}; labels must be 0..K-1")
    classes = int(train_y.max()) + 1
    if classes < 2:
        raise UserError(f"{path}: y_train holds class 0 only; a classifier needs labels 0..K-1 with K >= 2")
    if test_y.max() >= classes:
        raise UserError(f"{path}: y_test holds label {test_y.max()} but y_train's labels stop at {classes - 1}; "
                        "both splits need the same classes 0..K-1")
    for name, y in (("y_train", train_y), ("y_test", test_y)):
        present = np.unique(y)
        # the first absent classes lie below len(present) + 6: never a range as long as a huge label
        if len(absent := np.setdiff1d(np.arange(min(classes, len(present) + 6)), present)):
            shown = ", ".join(map(str, absent[:5])) + (", ..." if len(absent) > 5 else "")
            raise UserError(f"{path}: {name} has no image of class {shown} (of 0..{classes - 1}); labels must be "
                            "0..K-1 with every class in both splits")
    return classes


# ---------------------------------------------------------------- folder

GREY = ("1", "L", "LA", "La")
COLOUR = ("RGB", "RGBA", "RGBa", "RGBX", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV")


def read_folder(root: Path) -> Arrays:
    for split in SPLITS:
        if not (root / split).is_dir():
            raise UserError(f"{root}: no {split}/ folder; lay the images out as {LAYOUT['folder']}")
    names = {split: sorted(d.name for d in (root / split).iterdir() if d.is_dir() and not d.name.startswith("."))
             for split in SPLITS}
    classes = names["train"]
    if len(classes) < 2:
        raise UserError(f"{root / 'train'}: {len(classes) or 'no'} class folder{'' if classes else 's'}"
                        f"{' (' + classes[0] + ')' if classes else ''}; a classifier needs 2 or more, "
                        f"one sub-folder of images per class: {LAYOUT['folder']}")
    if names["test"] != classes:
        missing = sorted(set(classes) - set(names["test"]))
        extra = sorted(set(names["test"]) - set(classes))
        raise UserError(f"{root / 'test'}: its class folders differ from train/'s (" + "; ".join(
            part for part in (missing and f"missing {', '.join(missing)}", extra and f"extra {', '.join(extra)}")
            if part) + "); both splits need the same class folders")
    splits, first = [], None
    for split in SPLITS:
        xs, ys = [], []
        for k, name in enumerate(classes):
            files = sorted(f for f in (root / split / name).iterdir()
                           if f.suffix.lower() in EXTENSIONS and not f.name.startswith(".") and not f.is_dir())
            for file in files:
                if not file.is_file():  # skipped, the class would silently lose the image
                    what = "a link to nothing" if file.is_symlink() and not file.exists() else "not a regular file"
                    raise UserError(f"{file}: {what}; give the image itself, or remove it")
            if not files:
                raise UserError(f"{root / split / name}: no .png, .jpg or .jpeg images; every class folder needs "
                                f"at least one (or remove class {name!r} from train/ and test/)")
            for file in files:
                xs.append(pixels(file))
                first = first or (file, xs[-1])
                check_same(first, file, xs[-1])
            ys += [k] * len(files)
        splits.append((np.stack(xs), np.array(ys, dtype=np.int64)))
    (train_x, train_y), (test_x, test_y) = splits
    return Arrays(train_x, train_y, test_x, test_y, len(classes), tuple(classes))


def pixels(path: Path) -> np.ndarray:
    """uint8 [H, W, C]: grayscale modes give 1 channel, colour modes (palette, CMYK, ...) 3 (RGB).
    Transparency is composited over black, the colour augmentation fills the corners with."""
    from PIL import Image, UnidentifiedImageError  # noqa: PLC0415 - Pillow only for a folder of images

    try:
        with Image.open(path) as img:
            img.load()
            mode, alpha = img.mode, img.mode in ("LA", "La", "PA", "RGBA", "RGBa") or "transparency" in img.info
            if mode not in GREY + COLOUR:
                raise UserError(f"{path}: mode {mode} (16-bit or float pixels) is not supported; "
                                "save it as 8-bit grayscale or RGB")
            target = ("LA" if mode in GREY else "RGBA") if alpha else ("L" if mode in GREY else "RGB")
            x = np.asarray(img.convert(target))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        why = "Pillow cannot identify it" if isinstance(error, UnidentifiedImageError) else error
        raise UserError(f"{path}: not a readable PNG or JPEG ({why}); replace or delete the file") from None
    if alpha:
        x = ((x[..., :-1].astype(np.uint16) * x[..., -1:] + 127) // 255).astype(np.uint8)
    return x[..., None] if x.ndim == 2 else x


def check_same(first: tuple[Path, np.ndarray], path: Path, x: np.ndarray) -> None:
    """Every image has the first one's size and channels; the error names one image of each."""
    ref, y = first
    if x.shape[:2] != y.shape[:2]:
        raise UserError(f"images differ in size: {ref} is {y.shape[1]}x{y.shape[0]} but {path} is "
                        f"{x.shape[1]}x{x.shape[0]} (width x height); resize them all to one size")
    if x.shape[2] != y.shape[2]:
        kind = {1: "grayscale", 3: "RGB"}
        raise UserError(f"images differ in mode: {ref} is {kind[y.shape[2]]} but {path} is {kind[x.shape[2]]}; "
                        "convert them all to one (Pillow: img.convert('RGB') or img.convert('L'))")
