"""Benchmark data sets: MNIST, Fashion-MNIST, CIFAR-10 (three layouts) and the 8x8 digits.

Every loader returns ``(images, labels)``: images ``(N, H, W, C)`` float32 in [0, 1] (or the
raw uint8 with ``as_uint8=True``), labels ``(N,)`` int32. The data directory is the argument,
else ``$JIGCNN_DATA``; files are found either in a per-set subfolder (``mnist/``,
``fashion-mnist/``, ``cifar-10-jpeg/``, ``cifar-10-subset-png/``, ``sklearn-digits/``,
``cifar-10-batches-py/``) or directly in the directory. ``download`` fetches the official
files for users who are online and refuses a file whose checksum differs.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import pathlib
import pickle
import re
import shutil
import tarfile
import urllib.request
import warnings
from typing import Sequence

import numpy as np
from PIL import Image

from jigcnn.atomic import atomic_path
from jigcnn.data.images import CACHE_READ_ERRORS, DataError

MNIST_CLASSES = tuple(str(i) for i in range(10))
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
DIGITS_CLASSES = MNIST_CLASSES

# Official addresses and checksums (md5 as published by each data set's authors).
OFFICIAL = {
    "mnist": {
        "urls": ("https://yann.lecun.com/exdb/mnist/", "https://ossci-datasets.s3.amazonaws.com/mnist/"),
        "files": {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    },
    "fashion-mnist": {
        "urls": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        "files": {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    },
    "cifar-10-python": {
        "urls": ("https://www.cs.toronto.edu/~kriz/",),
        "files": {"cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a"},
    },
    "sklearn-digits": {
        "urls": ("https://raw.githubusercontent.com/scikit-learn/scikit-learn/main/sklearn/datasets/data/",),
        "files": {"digits.csv.gz": "9b335364a7bfd63947c7480a5bd51f2d"},
    },
}


class ChecksumError(DataError):
    """A downloaded file whose checksum differs from the expected one (the file is refused)."""


class DataNotFoundError(DataError):
    """A data set's files are not in the data directory; the message lists the places searched."""


# ---------------------------------------------------------------- locating files


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """The data directory: the argument, else ``$JIGCNN_DATA``; a clear error when neither is a folder."""
    if data_dir is None:
        env = os.environ.get("JIGCNN_DATA")
        if not env:
            raise DataError("no data directory: pass data_dir= or set the JIGCNN_DATA environment variable")
        data_dir = env
    p = pathlib.Path(data_dir).expanduser()
    if not p.is_dir():
        raise DataError(f"data directory {p} does not exist or is not a folder")
    return p


def _find(data_dir, subdirs: Sequence[str], names: Sequence[str], what: str) -> pathlib.Path:
    root = resolve_data_dir(data_dir)
    tried = []
    for d in [root / s for s in subdirs] + [root]:
        for n in names:
            p = d / n
            tried.append(str(p))
            if p.exists():
                return p
    raise DataNotFoundError(f"{what} not found; looked for: {', '.join(tried)}")


def _cache_root(cache) -> pathlib.Path | None:
    if cache is False or cache is None:
        return None
    if cache is not True:
        return pathlib.Path(cache)
    env = os.environ.get("JIGCNN_CACHE")
    if env:
        return pathlib.Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "jigcnn"


def _finish(images: np.ndarray, labels, as_uint8: bool, scale: float = 255.0):
    labels = np.asarray(labels, dtype=np.int32)
    if as_uint8:
        return images, labels
    return images.astype(np.float32) / np.float32(scale), labels


def _check_split(split: str):
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")


# ---------------------------------------------------------------- MNIST, Fashion-MNIST


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an idx file (gzipped or not): the array with the shape its header gives."""
    path = pathlib.Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DataError(f"{path}: corrupt gzip stream ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an idx file (bad magic number)")
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if raw[2] not in dtypes:
        raise DataError(f"{path}: unknown idx data type 0x{raw[2]:02x}")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dt = np.dtype(dtypes[raw[2]])
    expected = 4 + 4 * ndim + int(np.prod(dims)) * dt.itemsize
    if len(raw) != expected:
        raise DataError(f"{path}: idx header says {dims} ({expected} bytes), file has {len(raw)} bytes")
    return np.frombuffer(raw, dt, offset=4 + 4 * ndim).reshape(dims).astype(dt.newbyteorder("="))


def _load_idx_set(data_dir, subdir, split, as_uint8, what):
    _check_split(split)
    prefix = "train" if split == "train" else "t10k"
    arrays = []
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        base = f"{prefix}-{kind}"
        names = [base + ".gz", base, base.replace("-idx", ".idx")]
        arrays.append(read_idx(_find(data_dir, [subdir], names, f"{what} {split} {kind.split('-')[0]}")))
    images, labels = arrays
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"{what} {split}: images {images.shape} and labels {labels.shape} do not match")
    return _finish(images[..., None], labels, as_uint8)


def load_mnist(data_dir=None, split: str = "train", *, as_uint8: bool = False):
    """MNIST: images (N, 28, 28, 1), 60000 train / 10000 test, labels 0..9."""
    return _load_idx_set(data_dir, "mnist", split, as_uint8, "MNIST")


def load_fashion_mnist(data_dir=None, split: str = "train", *, as_uint8: bool = False):
    """Fashion-MNIST: images (N, 28, 28, 1), 60000 train / 10000 test, labels 0..9 (FASHION_MNIST_CLASSES)."""
    return _load_idx_set(data_dir, "fashion-mnist", split, as_uint8, "Fashion-MNIST")


# ---------------------------------------------------------------- digits


def load_digits(data_dir=None, *, as_uint8: bool = False):
    """The 8x8 digits (scikit-learn's CSV): images (1797, 8, 8, 1) scaled from 0..16 to [0, 1], labels 0..9."""
    p = _find(data_dir, ["sklearn-digits", "digits"], ["digits.csv.gz", "digits.csv"], "digits CSV")
    opener = gzip.open if p.suffix == ".gz" else open
    try:
        with opener(p, "rt") as f:
            data = np.loadtxt(f, delimiter=",")
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{p}: cannot parse the digits CSV ({e})") from None
    if data.ndim != 2 or data.shape[1] != 65:
        raise DataError(f"{p}: expected rows of 65 numbers (64 pixels + label), got shape {data.shape}")
    images = data[:, :64].reshape(-1, 8, 8, 1)
    if as_uint8:
        return images.astype(np.uint8), data[:, 64].astype(np.int32)
    return _finish(images, data[:, 64], False, scale=16.0)


# ---------------------------------------------------------------- CIFAR-10


class _SafeUnpickler(pickle.Unpickler):
    # The official batches hold only dicts, lists, bytes and numpy arrays; refuse anything else.
    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR-10 batch")


def _read_cifar_batch(data: bytes, where: str):
    try:
        d = _SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
        x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        y = np.asarray(d[b"labels"], dtype=np.int32)
    except (pickle.UnpicklingError, KeyError, ValueError, EOFError, TypeError) as e:
        raise DataError(f"{where}: not a CIFAR-10 python batch ({e})") from None
    if len(x) != len(y):
        raise DataError(f"{where}: {len(x)} images but {len(y)} labels")
    return x, y


def _cifar_python(data_dir, split):
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    try:
        folder = _find(data_dir, ["cifar-10"], ["cifar-10-batches-py"], "CIFAR-10 python batches folder")
    except DataNotFoundError:
        folder = None
    parts = []
    if folder is not None:
        for n in names:
            if not (folder / n).is_file():
                raise DataError(f"{folder / n}: missing CIFAR-10 batch")
            parts.append(_read_cifar_batch((folder / n).read_bytes(), str(folder / n)))
    else:
        tar = _find(data_dir, ["cifar-10"], ["cifar-10-python.tar.gz"],
                    "CIFAR-10 python batches (neither a cifar-10-batches-py folder nor the tar.gz)")
        with tarfile.open(tar) as tf:
            members = {pathlib.PurePosixPath(m.name).name: m for m in tf.getmembers() if m.isfile()}
            for n in names:
                if n not in members:
                    raise DataError(f"{tar}: has no member {n}")
                parts.append(_read_cifar_batch(tf.extractfile(members[n]).read(), f"{tar}:{n}"))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


_JPEG_MEMBER = re.compile(r"(?:^|/)(train|test)/([a-z]+)/(\d+)\.jpg$")


def _cifar_jpeg(data_dir, split, cache, max_per_class):
    tar = _find(data_dir, ["cifar-10-jpeg"], ["cifar10-jpeg.tar.gz"], "CIFAR-10 JPEG archive")
    croot = _cache_root(cache) if max_per_class is None else None
    cpath = None
    if croot is not None:
        h = hashlib.sha256()
        with open(tar, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        cpath = croot / f"cifar10-jpeg-{split}-{h.hexdigest()[:16]}.npz"
        if cpath.exists():
            try:
                with np.load(cpath, allow_pickle=False) as z:
                    images, labels = z["images"], z["labels"]
                if images.shape[1:] != (32, 32, 3) or len(images) != len(labels):
                    raise ValueError(f"arrays of shapes {images.shape} and {labels.shape}")
                return images, labels
            except CACHE_READ_ERRORS as e:  # a damaged cache file is rebuilt below
                warnings.warn(f"{cpath}: unreadable cache file, rebuilding it ({type(e).__name__}: {e})", stacklevel=3)
    found = {}
    with tarfile.open(tar, "r:gz") as tf:
        for m in tf:
            mm = _JPEG_MEMBER.search(m.name)
            if not (m.isfile() and mm and mm.group(1) == split):
                continue
            cls, num = mm.group(2), int(mm.group(3))
            if cls not in CIFAR10_CLASSES:
                raise DataError(f"{tar}:{m.name}: unknown class folder {cls!r}")
            if max_per_class is not None and num >= max_per_class:
                continue
            try:
                with Image.open(io.BytesIO(tf.extractfile(m).read())) as im:
                    arr = np.asarray(im.convert("RGB"))
            except (OSError, SyntaxError) as e:
                raise DataError(f"{tar}:{m.name}: unreadable JPEG ({e})") from None
            if arr.shape != (32, 32, 3):
                raise DataError(f"{tar}:{m.name}: expected a 32x32 RGB image, got {arr.shape}")
            found[(CIFAR10_CLASSES.index(cls), num)] = arr
    if not found:
        raise DataError(f"{tar}: no {split}/<class>/NNNN.jpg members")
    keys = sorted(found)  # class by class, in the official order within a class
    images = np.stack([found[k] for k in keys])
    labels = np.array([k[0] for k in keys], dtype=np.int32)
    if cpath is not None:
        try:
            with atomic_path(cpath) as tmp:
                np.savez(tmp, images=images, labels=labels)
        except OSError as e:  # caching is an optimisation; an unwritable cache folder is not an error
            warnings.warn(f"{cpath}: could not write cache ({e.strerror or e})", stacklevel=3)
    return images, labels


def _cifar_png_subset(data_dir, split):
    js = _find(data_dir, ["cifar-10-subset-png"], ["cifar10_labels.js"], "CIFAR-10 PNG subset labels")
    text = js.read_text()
    try:
        all_labels = json.loads(text[text.index("["): text.rindex("]") + 1])
    except ValueError as e:
        raise DataError(f"{js}: cannot parse the label list ({e})") from None
    folder = js.parent
    batches = []
    if split == "train":
        k = 0
        while (folder / f"cifar10_batch_{k}.png").exists() and k < 50:
            batches.append((folder / f"cifar10_batch_{k}.png", 1000 * k))
            k += 1
    elif (folder / "cifar10_batch_50.png").exists():
        batches.append((folder / "cifar10_batch_50.png", 50000))
    if not batches:
        raise DataError(f"{folder}: no cifar10_batch_*.png for split {split!r}")
    xs, ys = [], []
    for p, first in batches:
        with Image.open(p) as im:
            arr = np.asarray(im.convert("RGB"))
        if arr.shape != (1000, 1024, 3):
            raise DataError(f"{p}: expected a 1024x1000 RGB strip, got {arr.shape}")
        if first + 1000 > len(all_labels):
            raise DataError(f"{js}: has {len(all_labels)} labels, {p.name} needs {first + 1000}")
        xs.append(arr.reshape(1000, 32, 32, 3))
        ys.append(all_labels[first: first + 1000])
    return np.concatenate(xs), np.concatenate(ys)


def load_cifar10(data_dir=None, split: str = "train", source: str = "auto", *, as_uint8: bool = False, cache=True,
                 max_per_class: int | None = None):
    """CIFAR-10: images (N, 32, 32, 3), labels 0..9 (CIFAR10_CLASSES).

    source: 'python' (official batches: folder ``cifar-10-batches-py`` or ``cifar-10-python.tar.gz``;
    data-set order), 'jpeg' (``cifar10-jpeg.tar.gz``, train/<class>/NNNN.jpg, lossy re-encoding; ordered class
    by class; decoded once and cached as .npz under ``cache``: True = $JIGCNN_CACHE or ~/.cache/jigcnn),
    'png-subset' (the lossless 4000/1000 ConvNetJS strips; data-set order), or 'auto' (the first of python,
    jpeg, png-subset that is present). ``max_per_class`` (jpeg only) decodes just the first few per class.
    """
    _check_split(split)
    if source not in ("auto", "python", "jpeg", "png-subset"):
        raise ValueError(f"source must be 'auto', 'python', 'jpeg' or 'png-subset', got {source!r}")
    if max_per_class is not None and source != "jpeg":
        raise ValueError("max_per_class applies to source='jpeg' only")
    loaders = {
        "python": lambda: _cifar_python(data_dir, split),
        "jpeg": lambda: _cifar_jpeg(data_dir, split, cache, max_per_class),
        "png-subset": lambda: _cifar_png_subset(data_dir, split),
    }
    if source != "auto":
        x, y = loaders[source]()
        return _finish(x, y, as_uint8)
    errors = []
    for name in ("python", "jpeg", "png-subset"):
        try:
            x, y = loaders[name]()
        except DataNotFoundError as e:
            errors.append(f"{name}: {e}")
            continue
        return _finish(x, y, as_uint8)
    raise DataNotFoundError("CIFAR-10 not found in any layout: " + "; ".join(errors))


# ---------------------------------------------------------------- downloads


def _digest(path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, dest: str | os.PathLike, md5: str | None = None, sha256: str | None = None,
             timeout: float = 60.0) -> pathlib.Path:
    """Fetch ``url`` to ``dest`` via a temporary file, verify md5/sha256, then rename; a mismatch is refused.

    An existing ``dest`` with the right checksum is kept without downloading.
    """
    if md5 is None and sha256 is None:
        raise ValueError(f"download({url!r}): give md5= or sha256= so the file can be verified")
    dest = pathlib.Path(dest)
    checks = [(a, v.lower()) for a, v in (("md5", md5), ("sha256", sha256)) if v]
    if dest.is_file() and all(_digest(dest, a) == v for a, v in checks):
        return dest
    with atomic_path(dest) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as f:
                shutil.copyfileobj(r, f, 1 << 20)
        except OSError as e:
            raise DataError(f"{url}: download failed ({e})") from None
        for algo, want in checks:
            got = _digest(tmp, algo)
            if got != want:
                raise ChecksumError(f"{url}: {algo} {got} differs from the expected {want}; file refused")
    return dest


def download_dataset(name: str, data_dir=None, urls: Sequence[str] | None = None) -> pathlib.Path:
    """Download one data set of OFFICIAL (``mnist``, ``fashion-mnist``, ``cifar-10-python``, ``sklearn-digits``).

    Files go to ``<data_dir>/<name>/`` (``cifar-10-python`` goes to ``<data_dir>/cifar-10/``); base
    addresses are tried in order. Returns the folder.
    """
    if name not in OFFICIAL:
        raise ValueError(f"unknown data set {name!r}; known: {sorted(OFFICIAL)}")
    root = pathlib.Path(data_dir) if data_dir is not None else resolve_data_dir(None)
    folder = root / ("cifar-10" if name == "cifar-10-python" else name)
    entry = OFFICIAL[name]
    for fname, md5 in entry["files"].items():
        errors = []
        for base in urls or entry["urls"]:
            try:
                download(base.rstrip("/") + "/" + fname, folder / fname, md5=md5)
                break
            except ChecksumError:
                raise
            except DataError as e:
                errors.append(str(e))
        else:
            raise DataError(f"{name}: could not download {fname}: " + "; ".join(errors))
    return folder
