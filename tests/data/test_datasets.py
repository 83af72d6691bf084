"""Data sets: the IDX reader (good, truncated, wrong magic, MD5), the built-in task, MNIST."""

import gzip
import struct

import numpy as np
import pytest
import torch

from neuroeq.data import LabeledData, idx, load_dataset, read_idx
from neuroeq.data.idx import load_idx_split, md5sum
from neuroeq.errors import ConfigError
from tests.conftest import SHARED_DATA


def _write_idx(path, array, magic_type=0x08, truncate=0):
    header = bytes([0, 0, magic_type, array.ndim]) + b"".join(
        struct.pack(">I", n) for n in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    with gzip.open(path, "wb") as handle:
        handle.write(payload[:len(payload) - truncate])


def test_reads_a_good_file(tmp_path):
    images = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    _write_idx(tmp_path / "a.gz", images)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.gz"), images)


def test_truncated_file_is_refused(tmp_path):
    _write_idx(tmp_path / "a.gz", np.zeros((5, 28, 28)), truncate=100)
    with pytest.raises(ConfigError, match="truncated or corrupt"):
        read_idx(tmp_path / "a.gz")


def test_wrong_magic_is_refused(tmp_path):
    with gzip.open(tmp_path / "a.gz", "wb") as handle:
        handle.write(b"\x1f\x8b\x08\x03" + b"\x00" * 32)
    with pytest.raises(ConfigError, match="magic"):
        read_idx(tmp_path / "a.gz")
    _write_idx(tmp_path / "b.gz", np.zeros(4), magic_type=0x0D)
    with pytest.raises(ConfigError, match="unsupported"):
        read_idx(tmp_path / "b.gz")


@pytest.mark.parametrize("header, message", [
    # sizes whose product wraps to 0 in 64-bit numpy (2^31 · 2^31 · 4)
    (bytes([0, 0, 8, 3]) + struct.pack(">III", 2 ** 31, 2 ** 31, 4), "promises"),
    (bytes([0, 0, 8, 255]) + b"\x00" * 1020, "255 dimensions"),
])
def test_a_corrupt_header_is_named(tmp_path, header, message):
    with gzip.open(tmp_path / "a.gz", "wb") as handle:
        handle.write(header)
    with pytest.raises(ConfigError, match=message):
        read_idx(tmp_path / "a.gz")


def test_not_gzip_is_refused(tmp_path):
    (tmp_path / "a.gz").write_bytes(b"hello")
    with pytest.raises(ConfigError, match="cannot read"):
        read_idx(tmp_path / "a.gz")


def test_missing_directory_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("NEUROEQ_DATA_DIR", raising=False)
    with pytest.raises(ConfigError, match="NEUROEQ_DATA_DIR"):
        load_dataset("mnist")
    with pytest.raises(ConfigError, match="no train-labels"):
        load_dataset("mnist", root=tmp_path)


def _tiny_split(folder, monkeypatch, split="test", count=3):
    """Write a ``count``-sample MNIST ``split`` under ``folder`` (and no other files) and
    make the loader accept its MD5 sums and size."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {f"{split}_images": rng.integers(0, 256, (count, 28, 28)),
              f"{split}_labels": np.arange(count) % 10}
    for key, array in arrays.items():
        filename = idx.FILES["mnist"][key][0]
        _write_idx(folder / filename, array)
        monkeypatch.setitem(idx.FILES["mnist"], key, (filename, md5sum(folder / filename)))
    monkeypatch.setitem(idx.EXPECTED_COUNT, split, count)


def test_test_split_loads_from_a_folder_without_train_files(tmp_path, monkeypatch):
    _tiny_split(tmp_path / "mnist", monkeypatch)
    test = load_dataset("mnist", "test", root=tmp_path)
    assert test.x.shape == (3, 784) and test.y.tolist() == [0, 1, 2]
    with pytest.raises(ConfigError, match="no train-labels-idx1-ubyte.gz"):
        load_dataset("mnist", "train", root=tmp_path)


def test_missing_test_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="no t10k-labels-idx1-ubyte.gz"):
        load_dataset("mnist", "test", root=tmp_path)


def test_a_root_starting_with_tilde_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    _tiny_split(tmp_path / "data" / "mnist", monkeypatch, "train")
    assert len(load_dataset("mnist", root="~/data")) == 3
    monkeypatch.setenv("NEUROEQ_DATA_DIR", "~/data")
    assert len(load_dataset("mnist")) == 3


@pytest.mark.parametrize("limit", [True, False, 0, -1, 2.5, "10"])
def test_limit_must_be_a_whole_number_of_at_least_one(limit):
    with pytest.raises(ConfigError, match=f"limit must be a whole number of at least 1, "
                                          f"got {limit!r}"):
        load_dataset("digits", limit=limit)


def test_md5_mismatch_is_refused(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        _write_idx(folder / name, np.zeros((3, 2)))
    with pytest.raises(ConfigError, match="MD5"):
        load_idx_split("mnist", "train", tmp_path)


def test_builtin_digits_task():
    train, test = load_dataset("digits"), load_dataset("digits", "test")
    assert train.x.shape == (1348, 64) and test.x.shape == (449, 64)
    assert float(train.x.min()) >= 0 and float(train.x.max()) <= 1
    assert set(train.y.tolist()) == set(range(10))
    assert len(load_dataset("digits", limit=10)) == 10


def test_unknown_dataset_and_split():
    with pytest.raises(ConfigError, match="unknown data set"):
        load_dataset("cifar")
    with pytest.raises(ConfigError, match="split"):
        load_dataset("digits", "validation")


@pytest.mark.skipif(not (SHARED_DATA / "mnist").is_dir(), reason="MNIST files not present")
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_real_idx_files(name):
    test = load_dataset(name, "test", root=SHARED_DATA)
    assert test.x.shape == (10000, 784) and test.y.shape == (10000,)
    assert set(test.y.tolist()) == set(range(10))
    # pixel intensities scaled to [0, 1] (bytes / 255), as the networks' inputs
    assert test.x.dtype == torch.float32
    assert float(test.x.min()) == 0.0 and float(test.x.max()) == 1.0


@pytest.mark.parametrize("x, y, classes, message", [
    (torch.rand(4, 3), torch.zeros(3, dtype=torch.long), 2, r"x \(4, 3\) and y \(3,\) must be"),
    (torch.rand(4), torch.zeros(4, dtype=torch.long), 2, r"must be \(samples, features\)"),
    (torch.rand(3, 2), torch.rand(3), 2, "integer class labels, got torch.float32"),
    (torch.rand(3, 2), torch.tensor([0, 2, 1]), 2, r"labels span 0\.\.2, outside \[0, 2\)"),
    (torch.rand(3, 2), torch.tensor([0, -1, 1]), 2, r"labels span -1\.\.1"),
    (torch.rand(3, 2), torch.tensor([0, 1, 1]), 0, "n_classes 0 must be a positive integer"),
])
def test_a_data_set_that_contradicts_itself_is_refused(x, y, classes, message):
    with pytest.raises(ConfigError, match=message):
        LabeledData(x, y, classes, "made")


def test_a_root_given_for_the_builtin_task_is_said_to_be_unread(tmp_path):
    with pytest.warns(RuntimeWarning, match="'digits' is built in; root .* is not read"):
        data = load_dataset("digits", "test", root=tmp_path, limit=5)
    assert len(data.y) == 5
