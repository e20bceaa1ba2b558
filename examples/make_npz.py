"""Write shapes.npz: a small image set of your own, in the layout hpo reads.

Arrays x_train, y_train, x_test, y_test; images uint8 N x H x W (grayscale); labels 0..K-1.
Three classes drawn at random places and sizes over noise: 0 square, 1 disk, 2 cross.

    python make_npz.py [--train 3000] [--test 600] [-o shapes.npz]
"""

import argparse

import numpy as np

SIDE = 24


def draw(kind: int, rng: np.random.Generator) -> np.ndarray:
    image = rng.integers(0, 60, (SIDE, SIDE)).astype(np.float32)
    r = rng.integers(4, 8)
    cy, cx = rng.integers(r + 1, SIDE - r - 1, size=2)
    yy, xx = np.mgrid[:SIDE, :SIDE]
    if kind == 0:
        mask = (abs(yy - cy) <= r) & (abs(xx - cx) <= r)
    elif kind == 1:
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    else:
        mask = ((abs(yy - cy) <= 1) & (abs(xx - cx) <= r)) | ((abs(xx - cx) <= 1) & (abs(yy - cy) <= r))
    image[mask] = rng.integers(180, 255)
    return image.clip(0, 255).astype(np.uint8)


def split(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    labels = np.arange(n) % 3
    rng.shuffle(labels)
    return np.stack([draw(int(k), rng) for k in labels]), labels.astype(np.int64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=3000)
    parser.add_argument("--test", type=int, default=600)
    parser.add_argument("-o", "--output", default="shapes.npz")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x_train, y_train = split(args.train, rng)
    x_test, y_test = split(args.test, rng)
    np.savez_compressed(args.output, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    print(f"wrote {args.output}: {len(x_train):,} train and {len(x_test):,} test images of {SIDE}x{SIDE}, 3 classes")


if __name__ == "__main__":
    main()
