"""The IDX reader's and data folder's errors: corrupt or empty gzip files, empty roots."""

import gzip
import shutil

import pytest

from neuroeq.data import load_dataset, read_idx
from neuroeq.data.idx import resolve_root
from neuroeq.errors import ConfigError
from tests.conftest import SHARED_DATA

LABELS = SHARED_DATA / "mnist" / "t10k-labels-idx1-ubyte.gz"
needs_mnist = pytest.mark.skipif(not LABELS.is_file(), reason="no MNIST files in shared/data")


@needs_mnist
def test_corrupt_compressed_data_is_named_not_a_zlib_error(tmp_path):
    corrupt = tmp_path / "t10k-labels-idx1-ubyte.gz"
    shutil.copyfile(LABELS, corrupt)
    data = bytearray(corrupt.read_bytes())
    data[100:116] = bytes(b ^ 0xFF for b in data[100:116])  # deflate stream, not the CRC
    corrupt.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match=rf"^'{corrupt}': cannot read IDX file \(Error -3 "
                                          r".*\); the file is missing, truncated, corrupt"):
        read_idx(corrupt)


@needs_mnist
def test_the_real_file_still_reads(tmp_path):
    assert read_idx(LABELS).shape == (10000,)


def test_an_empty_gzip_file_is_called_empty_not_a_bad_magic_number(tmp_path):
    (tmp_path / "a.gz").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"'.*a\.gz': is empty \(0 bytes\); truncated"):
        read_idx(tmp_path / "a.gz")
    (tmp_path / "b").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"is empty \(0 bytes\)"):
        read_idx(tmp_path / "b")


def test_a_gzip_file_of_nothing_or_of_a_few_bytes_is_called_truncated(tmp_path):
    with gzip.open(tmp_path / "a.gz", "wb"):
        pass
    with pytest.raises(ConfigError, match="holds no data once decompressed; truncated"):
        read_idx(tmp_path / "a.gz")
    with gzip.open(tmp_path / "b.gz", "wb") as handle:
        handle.write(b"\x00\x00")
    with pytest.raises(ConfigError, match="holds only 2 bytes, less than an IDX header"):
        read_idx(tmp_path / "b.gz")


@pytest.mark.parametrize("root", ["", "  "])
def test_an_empty_root_is_refused_by_name(tmp_path, monkeypatch, root):
    monkeypatch.setenv("NEUROEQ_DATA_DIR", str(tmp_path))
    message = (rf"^data set 'mnist': root '{root}' is empty; give a folder \(protocol key "
               r"data.root\) or leave it out to use \$NEUROEQ_DATA_DIR$")
    with pytest.raises(ConfigError, match=message):
        load_dataset("mnist", root=root)
    with pytest.raises(ConfigError, match=message):
        resolve_root(root, "mnist")


def test_an_empty_data_dir_variable_is_said_to_be_empty_not_unset(monkeypatch):
    monkeypatch.setenv("NEUROEQ_DATA_DIR", "")
    with pytest.raises(ConfigError, match=r"\$NEUROEQ_DATA_DIR is set but empty"):
        load_dataset("mnist")


@needs_mnist
def test_the_data_dir_variable_is_used_when_no_root_is_given(monkeypatch):
    monkeypatch.setenv("NEUROEQ_DATA_DIR", str(SHARED_DATA))
    assert resolve_root(None, "mnist", "test") == SHARED_DATA / "mnist"
