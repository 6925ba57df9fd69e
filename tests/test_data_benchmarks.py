"""Benchmark loaders on ../shared/data (skipped when absent), layouts, data-dir resolution, downloads."""

import gzip
import hashlib
import pickle
import shutil
import tarfile

import numpy as np
import pytest

from jigcnn.data.benchmarks import (
    OFFICIAL,
    ChecksumError,
    load_cifar10,
    load_digits,
    load_fashion_mnist,
    load_mnist,
    read_idx,
    resolve_data_dir,
    download,
    download_dataset,
)
from jigcnn.data.images import DataError

MNIST_COUNTS = {
    "train": [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
    "test": [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009],
}
MNIST_MEAN = {"train": 33.32, "test": 33.79}
FASHION_MEAN = {"train": 72.94, "test": 73.15}


@pytest.mark.parametrize("split", ["train", "test"])
def test_mnist(shared_data_dir, split):
    x, y = load_mnist(shared_data_dir, split)
    n = 60000 if split == "train" else 10000
    assert x.shape == (n, 28, 28, 1) and x.dtype == np.float32 and y.dtype == np.int32
    assert 0.0 == x.min() and x.max() == 1.0
    assert np.bincount(y).tolist() == MNIST_COUNTS[split]
    assert round(float(x.mean()) * 255, 2) == MNIST_MEAN[split]


@pytest.mark.parametrize("split", ["train", "test"])
def test_fashion_mnist(shared_data_dir, split):
    x, y = load_fashion_mnist(shared_data_dir, split, as_uint8=True)
    n = 60000 if split == "train" else 10000
    assert x.shape == (n, 28, 28, 1) and x.dtype == np.uint8
    assert np.bincount(y).tolist() == [n // 10] * 10
    assert round(float(x.mean()), 2) == FASHION_MEAN[split]


def test_digits(shared_data_dir):
    x, y = load_digits(shared_data_dir)
    assert x.shape == (1797, 8, 8, 1) and x.dtype == np.float32 and x.max() == 1.0 and x.min() == 0.0
    assert np.bincount(y).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    xr, _ = load_digits(shared_data_dir, as_uint8=True)
    assert xr.max() == 16 and np.allclose(xr / 16.0, x)


def test_cifar10_png_subset(shared_data_dir):
    x, y = load_cifar10(shared_data_dir, "train", source="png-subset")
    assert x.shape == (4000, 32, 32, 3) and x.dtype == np.float32
    assert np.bincount(y).tolist() == [396, 366, 420, 384, 422, 393, 414, 385, 407, 413]
    assert y[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    xt, yt = load_cifar10(shared_data_dir, "test", source="png-subset", as_uint8=True)
    assert xt.shape == (1000, 32, 32, 3) and xt.dtype == np.uint8
    assert np.bincount(yt).tolist() == [103, 89, 100, 103, 90, 86, 112, 102, 106, 109]
    assert yt[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]


def test_cifar10_jpeg_members_match_the_lossless_subset(shared_data_dir):
    xj, yj = load_cifar10(shared_data_dir, "train", source="jpeg", max_per_class=2, as_uint8=True)
    assert xj.shape == (20, 32, 32, 3) and yj.tolist() == [c for c in range(10) for _ in range(2)]
    # Image k of class c in the JPEG folders is the k-th image of class c in the original order.
    xp, yp = load_cifar10(shared_data_dir, "train", source="png-subset", as_uint8=True)
    for i in range(20):
        c, k = yj[i], i % 2
        ref = xp[np.flatnonzero(yp == c)[k]]
        err = np.abs(xj[i].astype(float) - ref).mean()
        assert err < 15, (c, k, err)  # JPEG noise is about 5.8; a wrong image is about 69


@pytest.mark.slow
def test_cifar10_jpeg_full_decode_and_cache(shared_data_dir, tmp_path):
    x, y = load_cifar10(shared_data_dir, "train", source="jpeg", cache=tmp_path)
    assert x.shape == (50000, 32, 32, 3) and np.bincount(y).tolist() == [5000] * 10
    assert len(list(tmp_path.glob("cifar10-jpeg-train-*.npz"))) == 1
    x2, y2 = load_cifar10(shared_data_dir, "train", source="jpeg", cache=tmp_path)
    np.testing.assert_array_equal(x, x2)
    xt, yt = load_cifar10(shared_data_dir, "test", source="jpeg", cache=tmp_path)
    assert xt.shape == (10000, 32, 32, 3) and np.bincount(yt).tolist() == [1000] * 10


def _fake_batch(n, seed):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = rng.integers(0, 10, n).tolist()
    return pickle.dumps({b"batch_label": b"x", b"labels": labels, b"data": data}, protocol=2), data, labels


def test_cifar10_python_batches_folder_and_tar(tmp_path):
    folder = tmp_path / "d" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    datas, labs = [], []
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        raw, data, labels = _fake_batch(3, i)
        (folder / name).write_bytes(raw)
        datas.append(data)
        labs.append(labels)
    x, y = load_cifar10(tmp_path / "d", "train", source="python", as_uint8=True)
    assert x.shape == (15, 32, 32, 3) and y.tolist() == sum(labs[:5], [])
    # Channel-major rows (1024 R, 1024 G, 1024 B) become HWC.
    np.testing.assert_array_equal(x[0, 0, 1], datas[0][0, [1, 1025, 2049]])
    xt, yt = load_cifar10(tmp_path / "d", "test", source="auto")
    assert xt.shape == (3, 32, 32, 3) and xt.dtype == np.float32 and yt.tolist() == labs[5]
    # The same batches inside the official tar.gz.
    tar_dir = tmp_path / "t"
    tar_dir.mkdir()
    with tarfile.open(tar_dir / "cifar-10-python.tar.gz", "w:gz") as tf:
        tf.add(folder, arcname="cifar-10-batches-py")
    x2, y2 = load_cifar10(tar_dir, "train", source="python", as_uint8=True)
    np.testing.assert_array_equal(x2, x)
    np.testing.assert_array_equal(y2, y)


def test_cifar10_python_refuses_foreign_pickles(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()

    class Evil:
        def __reduce__(self):
            return (shutil.rmtree, (str(tmp_path / "victim"),))

    (tmp_path / "victim").mkdir()
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}, protocol=2))
    with pytest.raises(DataError, match="refusing to load shutil.rmtree"):
        load_cifar10(tmp_path, "test", source="python")
    assert (tmp_path / "victim").is_dir()


def test_cifar10_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="source must be"):
        load_cifar10(tmp_path, source="binary")
    with pytest.raises(ValueError, match="split must be"):
        load_cifar10(tmp_path, split="valid")
    with pytest.raises(DataError, match="CIFAR-10 not found in any layout"):
        load_cifar10(tmp_path)


def _idx_bytes(arr):
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def test_idx_files_directly_in_dir_gz_or_not(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    imgs, labs = rng.integers(0, 256, (7, 28, 28)), rng.integers(0, 10, 7)
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(_idx_bytes(imgs))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(labs)))
    monkeypatch.setenv("JIGCNN_DATA", str(tmp_path))
    x, y = load_mnist(split="test", as_uint8=True)
    np.testing.assert_array_equal(x[..., 0], imgs)
    np.testing.assert_array_equal(y, labs)
    (tmp_path / "bad").write_bytes(_idx_bytes(imgs)[:-5])
    with pytest.raises(DataError, match="bad: idx header says"):
        read_idx(tmp_path / "bad")
    (tmp_path / "bad").write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(DataError, match="not an idx file"):
        read_idx(tmp_path / "bad")


def test_data_dir_resolution_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("JIGCNN_DATA", raising=False)
    with pytest.raises(DataError, match="pass data_dir= or set the JIGCNN_DATA"):
        resolve_data_dir()
    with pytest.raises(DataError, match="does not exist"):
        resolve_data_dir(tmp_path / "nope")
    with pytest.raises(DataError, match="MNIST train images not found; looked for: .*mnist/train-images-idx3-ubyte.gz"):
        load_mnist(tmp_path)


def test_download_verifies_and_refuses(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"hello digits")
    md5 = hashlib.md5(b"hello digits").hexdigest()
    sha = hashlib.sha256(b"hello digits").hexdigest()
    dest = tmp_path / "out" / "file.bin"
    assert download(src.as_uri(), dest, md5=md5, sha256=sha) == dest
    assert dest.read_bytes() == b"hello digits"
    bad = tmp_path / "out" / "bad.bin"
    with pytest.raises(ChecksumError, match="md5 .* differs from the expected 0+; file refused"):
        download(src.as_uri(), bad, md5="0" * 32)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["file.bin"]  # nothing else left behind
    with pytest.raises(ValueError, match="give md5= or sha256="):
        download(src.as_uri(), bad)
    with pytest.raises(DataError, match="download failed"):
        download((tmp_path / "missing").as_uri(), bad, md5=md5)


def test_download_dataset_from_a_local_mirror(shared_data_dir, tmp_path):
    mirror = (shared_data_dir / "sklearn-digits").as_uri()
    folder = download_dataset("sklearn-digits", tmp_path, urls=[(tmp_path / "nowhere").as_uri(), mirror])
    assert folder == tmp_path / "sklearn-digits"
    md5 = hashlib.md5((folder / "digits.csv.gz").read_bytes()).hexdigest()
    assert md5 == OFFICIAL["sklearn-digits"]["files"]["digits.csv.gz"]
    x, y = load_digits(tmp_path)
    assert x.shape == (1797, 8, 8, 1)
    with pytest.raises(ValueError, match="unknown data set"):
        download_dataset("imagenet", tmp_path)


def test_official_table_matches_the_shared_copies(shared_data_dir):
    for name in ("mnist", "fashion-mnist", "sklearn-digits"):
        for fname, md5 in OFFICIAL[name]["files"].items():
            assert hashlib.md5((shared_data_dir / name / fname).read_bytes()).hexdigest() == md5


def test_cifar10_auto_does_not_hide_a_corrupt_batch(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(b"garbage")
    with pytest.raises(DataError, match="test_batch: not a CIFAR-10 python batch"):
        load_cifar10(tmp_path, "test")
    with pytest.raises(ValueError, match="max_per_class applies to source='jpeg' only"):
        load_cifar10(tmp_path, "test", max_per_class=3)
