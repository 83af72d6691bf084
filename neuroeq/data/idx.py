"""Reading MNIST-style IDX files (``*-idx3-ubyte.gz``), checked by magic number, shape and
MD5 sum.

IDX layout: two zero bytes, a type byte (``0x08`` = unsigned byte), the number of
dimensions, one big-endian ``uint32`` per dimension, then the data.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import zlib
from pathlib import Path

import numpy as np

from neuroeq.errors import ConfigError

DATA_DIR_ENV = "NEUROEQ_DATA_DIR"
#: dimensions an IDX file may declare (MNIST: 3 for images, 1 for labels)
MAX_IDX_DIMENSIONS = 4

#: The original files and their MD5 sums (as published with the data sets).
FILES: dict[str, dict[str, tuple[str, str]]] = {
    "mnist": {
        "train_images": ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        "train_labels": ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
        "test_images": ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
        "test_labels": ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
    },
    "fashion_mnist": {
        "train_images": ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        "train_labels": ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
        "test_images": ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
        "test_labels": ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
    },
}
#: Sub-folders tried under the data directory for each data set.
SUBFOLDERS = {"mnist": ("mnist", "MNIST", ""), "fashion_mnist": ("fashion-mnist",
                                                                  "fashion_mnist", "")}
EXPECTED_COUNT = {"train": 60000, "test": 10000}


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (gzip-compressed or not) into a ``uint8`` array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise ConfigError(f"{str(path)!r}: cannot read IDX file ({exc}); "
                          "the file is missing, truncated, corrupt or not gzip") from None
    if len(raw) < 4:
        raise ConfigError(f"{str(path)!r}: {_empty_or_short(path, raw)}; truncated (an "
                          "interrupted download?) or not an IDX file")
    if raw[0] != 0 or raw[1] != 0:
        raise ConfigError(f"{str(path)!r}: not an IDX file (bad magic number)")
    if raw[2] != 0x08:
        raise ConfigError(f"{str(path)!r}: IDX type {raw[2]:#04x} unsupported "
                          "(expected 0x08, unsigned bytes)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if not 1 <= ndim <= MAX_IDX_DIMENSIONS:
        raise ConfigError(f"{str(path)!r}: IDX header says {ndim} dimensions; images and "
                          f"labels have 1 to {MAX_IDX_DIMENSIONS}")
    if len(raw) < header:
        raise ConfigError(f"{str(path)!r}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = math.prod(shape)  # a Python int: no overflow for a corrupt header
    if len(raw) - header != expected:
        raise ConfigError(f"{str(path)!r}: IDX header promises {shape} = {expected} bytes, "
                          f"file holds {len(raw) - header}: truncated or corrupt")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _empty_or_short(path: Path, raw: bytes) -> str:
    """What is wrong with an IDX file of fewer than 4 bytes (its header's first word)."""
    if not raw:
        compressed = path.suffix == ".gz" and path.stat().st_size > 0
        return "holds no data once decompressed" if compressed else "is empty (0 bytes)"
    return f"holds only {len(raw)} bytes, less than an IDX header"


def _data_dir(name: str) -> str:
    """``$NEUROEQ_DATA_DIR``, for data set ``name`` given no root; unset or empty, an error."""
    folder = os.environ.get(DATA_DIR_ENV)
    if folder is None:
        raise ConfigError(f"data set {name!r} needs its IDX files: pass root=DIR (protocol key "
                          f"data.root) or set {DATA_DIR_ENV}; the built-in task 'digits' "
                          "needs no download")
    if not folder.strip():
        raise ConfigError(f"data set {name!r}: ${DATA_DIR_ENV} is set but empty; set it to the "
                          "folder holding the IDX files, or pass root=DIR (protocol key "
                          "data.root)")
    return folder


def resolve_root(root: str | os.PathLike | None, name: str, split: str = "train") -> Path:
    """The directory holding ``name``'s ``split`` files: ``root``, else
    ``$NEUROEQ_DATA_DIR`` (a leading ``~`` is expanded), or one of its sub-folders."""
    if isinstance(root, str) and not root.strip():
        raise ConfigError(f"data set {name!r}: root {root!r} is empty; give a folder (protocol "
                          f"key data.root) or leave it out to use ${DATA_DIR_ENV}")
    base = Path(root if root is not None else _data_dir(name)).expanduser()
    labels = FILES[name][f"{split}_labels"][0]
    for sub in SUBFOLDERS[name]:
        folder = base / sub if sub else base
        if (folder / labels).is_file():
            return folder
    tried = ", ".join(sub or "." for sub in SUBFOLDERS[name])
    raise ConfigError(f"data set {name!r}: no {labels} under {str(base)!r} "
                      f"(tried sub-folders {tried})")


def load_idx_split(name: str, split: str, root: str | os.PathLike | None = None,
                   verify: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 28, 28)`` and labels ``(N,)`` of one split, MD5- and shape-checked."""
    if name not in FILES:
        raise ConfigError(f"unknown IDX data set {name!r}; known: {', '.join(FILES)}")
    folder = resolve_root(root, name, split)
    arrays = []
    for kind in ("images", "labels"):
        filename, expected_md5 = FILES[name][f"{split}_{kind}"]
        path = folder / filename
        if not path.is_file():
            raise ConfigError(f"data set {name!r}: missing file {str(path)!r}")
        if verify and md5sum(path) != expected_md5:
            raise ConfigError(f"{str(path)!r}: MD5 sum mismatch (corrupt or a different file; "
                              f"expected {expected_md5})")
        arrays.append(read_idx(path))
    images, labels = arrays
    count = EXPECTED_COUNT[split]
    if images.shape != (count, 28, 28) or labels.shape != (count,):
        raise ConfigError(f"data set {name!r} {split}: shapes {images.shape} and {labels.shape} "
                          f"(expected ({count}, 28, 28) and ({count},))")
    if int(labels.max()) > 9:
        raise ConfigError(f"data set {name!r} {split}: label {int(labels.max())} out of range")
    return images, labels
