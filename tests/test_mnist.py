"""convkit.mnist (``convkit train-mnist``, examples/mnist.py): the IDX reader on
small files written here (plain and gzipped, malformed ones), the digits
stand-in, network A learning the digits, the command line end to end, and the
comparison with PyTorch."""

from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

import convkit
from convkit import mnist

IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B,
             np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}


def _idx_bytes(arr, code=None, magic=None):
    """An IDX file's bytes, written independently of the reader."""
    arr = np.asarray(arr)
    big = arr.astype(arr.dtype.newbyteorder(">")) if arr.dtype.itemsize > 1 else arr
    code = IDX_CODES[big.dtype] if code is None else code
    head = magic if magic is not None else bytes([0, 0, code, arr.ndim])
    return head + struct.pack(f">{arr.ndim}I", *arr.shape) + big.tobytes()


def _write(path, data: bytes, gz=False):
    path = str(path) + (".gz" if gz else "")
    with (gzip.open(path, "wb") if gz else open(path, "wb")) as f:
        f.write(data)
    return path


def _fake_mnist(directory, n_train=40, n_test=20, gz=(False, True, True, False), seed=0):
    """Four small MNIST-shaped IDX files (some gzipped); returns the arrays."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for (key, arr), z in zip(arrays.items(), gz):
        _write(os.path.join(directory, mnist.MNIST_FILES[key]), _idx_bytes(arr), gz=z)
    return arrays


@pytest.fixture
def one_thread():
    """Tiny batches: OpenMP fork/join would dominate on a shared 2-core machine."""
    original = convkit.get_num_threads()
    convkit.set_num_threads(1)
    yield
    convkit.set_num_threads(original)


# --------------------------------------------------------------------------- #
# IDX reader
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_read_idx_images_and_labels(tmp_path, gz):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 7, dtype=np.uint8)
    got_images = mnist.read_idx(_write(tmp_path / "img", _idx_bytes(images), gz=gz))
    got_labels = mnist.read_idx(_write(tmp_path / "lbl", _idx_bytes(labels), gz=gz))
    assert got_images.dtype == np.uint8 and got_images.shape == (7, 28, 28)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    assert got_images.flags.writeable and got_images.flags.c_contiguous


@pytest.mark.parametrize("dtype", [np.int8, ">i2", ">i4", ">f4", ">f8"])
def test_read_idx_other_types_in_native_byte_order(tmp_path, dtype):
    arr = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    got = mnist.read_idx(_write(tmp_path / "a", _idx_bytes(arr)))
    assert got.dtype.isnative and got.dtype == np.dtype(dtype).newbyteorder("=")
    np.testing.assert_array_equal(got, arr)


def test_read_idx_rejects_malformed_files(tmp_path):
    labels = np.arange(10, dtype=np.uint8)
    good = _idx_bytes(labels)
    cases = {
        "magic": (_idx_bytes(labels, magic=b"\x01\x02\x08\x01"), "not an IDX file"),
        "gzip-looking text": (b"\x1f\x8bhello", "gzip"),
        "type code": (_idx_bytes(labels, code=0x07), "unknown IDX type code 0x07"),
        "no dims": (b"\x00\x00\x08\x00", "0 dimensions"),
        "short": (b"\x00\x00", "too short"),
        "header": (good[:6], "truncated header"),
        "truncated": (good[:-3], "truncated"),
        "trailing": (good + b"\x00", "trailing bytes"),
        "images truncated": (_idx_bytes(np.zeros((3, 28, 28), np.uint8))[:-100], "truncated"),
    }
    for name, (data, message) in cases.items():
        path = _write(tmp_path / name.replace(" ", "_"), data)
        with pytest.raises(ValueError, match=message) as info:
            mnist.read_idx(path)
        assert path in str(info.value), name
    # a gzip stream cut short (random pixels, so that the stream is long)
    noise = np.random.default_rng(2).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    stream = gzip.compress(_idx_bytes(noise))
    path = _write(tmp_path / "cut.gz", stream[:len(stream) // 2])
    with pytest.raises(ValueError, match="gzip"):
        mnist.read_idx(path)


def test_load_mnist_plain_and_gz(tmp_path):
    arrays = _fake_mnist(tmp_path)
    data = mnist.load_mnist(tmp_path)
    assert data["x_train"].shape == (40, 1, 28, 28) and data["x_train"].dtype == np.float32
    assert data["x_test"].shape == (20, 1, 28, 28)
    np.testing.assert_allclose(data["x_train"][:, 0] * 255, arrays["train_images"], atol=1e-4)
    assert data["y_test"].dtype == np.int64
    np.testing.assert_array_equal(data["y_test"], arrays["test_labels"])


def test_load_mnist_rejects_wrong_dims_and_missing_files(tmp_path):
    _fake_mnist(tmp_path, gz=(False,) * 4)
    images = os.path.join(tmp_path, mnist.MNIST_FILES["train_images"])
    labels = os.path.join(tmp_path, mnist.MNIST_FILES["train_labels"])
    bad = {
        images: [(np.zeros((40, 784), np.uint8), "shape \\(N, rows, cols\\)"),
                 (np.zeros((40, 27, 28), np.uint8), "28x28"),
                 (np.zeros((40, 28, 28), ">f4"), "uint8 images")],
        labels: [(np.zeros((39,), np.uint8), "39 labels"),
                 (np.zeros((40, 1), np.uint8), "shape \\(N,\\)"),
                 (np.full((40,), 10, np.uint8), "0..9")],
    }
    for path, variants in bad.items():
        original = open(path, "rb").read()
        for arr, message in variants:
            _write(path, _idx_bytes(arr))
            with pytest.raises(ValueError, match=message):
                mnist.load_mnist(tmp_path)
        _write(path, original)
    mnist.load_mnist(tmp_path)  # restored: loads again
    os.remove(os.path.join(tmp_path, mnist.MNIST_FILES["test_labels"]))
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        mnist.load_mnist(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        mnist.load_mnist(tmp_path / "nowhere")


# --------------------------------------------------------------------------- #
# digits stand-in and training
# --------------------------------------------------------------------------- #

def test_digits_as_28x28():
    pytest.importorskip("sklearn.datasets")
    data = mnist.load_digits()
    assert data["x_train"].shape == (1437, 1, 28, 28) and data["x_test"].shape == (360, 1, 28, 28)
    assert data["x_train"].dtype == np.float32
    assert 0.0 == data["x_train"].min() and data["x_train"].max() == 1.0
    assert not data["x_train"][:, :, :2].any() and not data["x_train"][:, :, :, -2:].any()  # border
    np.testing.assert_array_equal(mnist.load_digits()["y_test"], data["y_test"])  # fixed split


def test_digits_without_sklearn_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # makes the import fail
    with pytest.raises(RuntimeError, match="scikit-learn"):
        mnist.load_digits()


def test_network_a_learns_the_digits(tmp_path, one_thread):
    pytest.importorskip("sklearn.datasets")
    out = tmp_path / "a.json"
    # Adam, lr 2e-3, batch 32, 10 epochs (~3 s): over seeds 0..19 the final test
    # accuracy was 0.964..0.986 (plain SGD's final epoch varied far more).
    rc = mnist.main(["--net", "A", "--epochs", "10", "--batch-size", "32", "--optimizer", "adam",
                     "--lr", "0.002", "--seed", "0", "--no-progress", "--json", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    seconds = sum(row["seconds"] for row in result["history"])
    print(f"network A, digits: test accuracy {result['final_test_acc']:.4f}, {seconds:.1f} s of training")
    assert result["final_test_acc"] >= 0.95
    assert result["history"][-1]["train_loss"] < result["history"][0]["train_loss"]


def test_build_net_shapes():
    import convkit.nn as nn
    x = np.zeros((2, 1, 28, 28), np.float32)
    for name in mnist.NETS:
        assert mnist.build_net(name)(x).shape == (2, 10)
    assert sum(p.size for p in mnist.build_net("B").parameters()) == 3274634  # the classic count
    with pytest.raises(ValueError, match="build_net"):
        mnist.build_net("C", nn)


# --------------------------------------------------------------------------- #
# command line
# --------------------------------------------------------------------------- #

def test_cli_on_idx_files(tmp_path, capsys, one_thread):
    _fake_mnist(tmp_path)
    out = tmp_path / "r.json"
    rc = mnist.main(["--data", str(tmp_path), "--net", "B", "--epochs", "2", "--limit", "16",
                     "--batch-size", "8", "--no-progress", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "network B on mnist: 16 training / 16 test images, adam lr 0.0001, batch 8" in text
    assert "epoch   2/2" in text and "final test accuracy" in text
    result = json.loads(out.read_text())
    assert result["dataset"] == "mnist" and result["n_train"] == 16 and len(result["history"]) == 2
    assert set(result["history"][0]) == {"epoch", "train_loss", "train_acc", "test_acc", "seconds"}


def test_cli_bad_arguments(tmp_path, capsys):
    for argv, message in [(["--epochs", "0"], "--epochs must be >= 1"),
                          (["--lr", "-1"], "--lr must be > 0"),
                          (["--optimizer", "adam", "--momentum", "0.9"], "--momentum"),
                          (["--data", str(tmp_path)], "train-images-idx3-ubyte")]:
        assert mnist.main(argv + ["--no-progress"]) == 2
        assert message in capsys.readouterr().err


def test_plot(tmp_path, one_thread):
    pytest.importorskip("sklearn.datasets")
    argv = ["--epochs", "1", "--limit", "32", "--no-progress", "--plot", str(tmp_path / "c.png")]
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match="matplotlib"):
            mnist.train(mnist_args(argv))
        return
    assert mnist.main(argv) == 0
    assert (tmp_path / "c.png").stat().st_size > 0


def mnist_args(argv):
    import argparse
    p = argparse.ArgumentParser()
    mnist.add_arguments(p)
    return p.parse_args(argv)


def test_python_m_convkit_train_mnist(tmp_path):
    _fake_mnist(tmp_path)
    out = tmp_path / "r.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    # cwd outside the repository: the installed package (with its extension) is imported
    proc = subprocess.run([sys.executable, "-m", "convkit", "train-mnist", "--data", str(tmp_path),
                           "--epochs", "1", "--limit", "24", "--no-progress", "--json", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "final test accuracy" in proc.stdout
    assert json.loads(out.read_text())["n_train"] == 24


@pytest.mark.torch
def test_compare_torch(tmp_path, capsys, one_thread):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn.datasets")
    out = tmp_path / "t.json"
    rc = mnist.main(["--epochs", "2", "--limit", "256", "--batch-size", "32", "--momentum", "0.9",
                     "--no-progress", "--compare-torch", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "torch/convkit" in text
    result = json.loads(out.read_text())
    ours, theirs = result["history"], result["torch"]["history"]
    assert len(theirs) == 2 and result["speedup_vs_torch"] > 0
    # same initial weights and batches: the same training, up to float32 rounding
    for a, b in zip(ours, theirs):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-3)
        assert abs(a["test_acc"] - b["test_acc"]) <= 2 / result["n_test"]
