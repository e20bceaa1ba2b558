"""A user's own small classifier, for `model: {module: "shapes_net:make", ...}`.

hpo imports it by name (run from this folder, or put it on PYTHONPATH), passes the keyword
arguments from the study file (searched ones included) and, because the signature asks for
them, `input_shape` and `num_classes` taken from the data.
"""

from torch import nn


def make(width: int = 8, dropout: float = 0.1, input_shape=(1, 24, 24), num_classes=3) -> nn.Module:
    channels = input_shape[0]
    return nn.Sequential(
        nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(2 * width, num_classes),
    )
