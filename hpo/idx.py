"""The IDX format that MNIST-like datasets ship in: encode, decode, and read one split checked
against its description in `hpo.datasets`."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import torch

from hpo.datasets import Dataset, FileSpec
from hpo.errors import UserError


def encode_idx(array: torch.Tensor) -> bytes:
    """A uint8 tensor (labels [N], images [N, H, W] or [N, H, W, C]) in the IDX format."""
    magic = 0x0800 | array.dim()
    return struct.pack(f">I{array.dim()}I", magic, *array.shape) + array.numpy().tobytes()


def decode_idx(data: bytes, name: str) -> torch.Tensor:
    magic, = struct.unpack(">I", data[:4])
    ndim = magic & 0xFF
    if magic >> 8 != 0x08 or ndim not in (1, 3, 4):
        raise UserError(f"{name}: not an IDX file of unsigned bytes; delete it so hpo fetches it again")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = bytearray(data[4 + 4 * ndim :])
    if len(body) != torch.Size(shape).numel():
        raise UserError(f"{name}: its IDX header promises {'x'.join(map(str, shape))} bytes, "
                        f"the file holds {len(body)}; delete it so hpo fetches it again")
    return torch.frombuffer(body, dtype=torch.uint8).reshape(shape)


def read_file(folder: Path, spec: FileSpec) -> bytes:
    data = (folder / spec.name).read_bytes()
    return gzip.decompress(data) if spec.name.endswith(".gz") else data


def read_split(dataset: Dataset, folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images [N, C, H, W] and labels [N] of one split, checked against the description."""
    image_spec, label_spec = dataset.split_files(split)
    images = decode_idx(read_file(folder, image_spec), image_spec.name)
    labels = decode_idx(read_file(folder, label_spec), label_spec.name)
    if images.dim() == 3:  # N x H x W: one channel
        images = images.unsqueeze(1)
    elif images.dim() == 4:  # N x H x W x C
        images = images.permute(0, 3, 1, 2)
    if tuple(images.shape[1:]) != dataset.shape:
        got = "x".join(map(str, images.shape[1:])) or "no"
        want = "x".join(map(str, dataset.shape))
        raise UserError(f"{folder / image_spec.name}: holds {got} images (channels x height x width) but "
                        f"dataset {dataset.name!r} is described as {want}; the file is not {dataset.title}, "
                        f"or fix the shape where {dataset.name!r} is registered")
    if labels.dim() != 1 or labels.numel() != images.shape[0]:
        raise UserError(f"{folder / label_spec.name}: {labels.numel()} labels for the {images.shape[0]} images of "
                        f"{image_spec.name}; the two files are not one {dataset.title} split")
    if labels.numel() and int(labels.max()) >= dataset.classes:
        raise UserError(f"{folder / label_spec.name}: label {int(labels.max())} is out of range for the "
                        f"{dataset.classes} classes of {dataset.name!r}; fix classes where it is registered")
    return images, labels
