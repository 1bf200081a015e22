"""Integer tensors out of a ``torch.save`` file, without PyTorch.

A ``torch.save`` file (the zip format, PyTorch 1.6 and later) is a zip archive of one folder
holding ``data.pkl`` (a pickle of the saved object, protocol 2) and ``data/KEY`` (each storage's
raw bytes, in the order ``byteorder`` names). A tensor is pickled as a call of
``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[,
metadata])`` whose storage is a persistent id ``("storage", torch.<Type>Storage, KEY, location,
numel)``. The unpickler here allows only those names (like ``torch.load(weights_only=True)`` it
runs no other code), and rebuilds a tensor as :class:`Tensor`: its shape and its elements in
row-major order. Enough for SGLang's expert-distribution dump, which holds a dict of ints, None,
floats and one int32 tensor.
"""

from __future__ import annotations

import collections
import io
import itertools
import math
import pickle
import sys
import zipfile
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

STORAGE_CODES = {
    "ByteStorage": "B",
    "CharStorage": "b",
    "ShortStorage": "h",
    "IntStorage": "i",
    "LongStorage": "q",
    "FloatStorage": "f",
    "DoubleStorage": "d",
    "BoolStorage": "B",
}
"""``array`` type codes of the storages this reader knows (by the element's size and kind)."""


class DumpFormatError(ValueError):
    """The file is not a ``torch.save`` archive this reader understands."""


@dataclass(frozen=True, slots=True)
class StorageType:
    name: str


@dataclass(frozen=True, slots=True)
class Storage:
    values: array[Any]


@dataclass(frozen=True, slots=True)
class Tensor:
    """A rebuilt tensor: ``shape`` and its elements in row-major order (``flat``)."""

    shape: tuple[int, ...]
    flat: array[Any]


def _elements(
    values: array[Any], offset: int, size: tuple[int, ...], stride: tuple[int, ...]
) -> array[Any]:
    count = math.prod(size)
    contiguous = all(stride[i] == math.prod(size[i + 1 :]) for i in range(len(size)) if size[i] > 1)
    if contiguous:
        return values[offset : offset + count]
    picked = array(values.typecode)
    for index in itertools.product(*(range(n) for n in size)):
        picked.append(values[offset + sum(i * s for i, s in zip(index, stride, strict=True))])
    return picked


def _rebuild_tensor_v2(
    storage: Storage,
    offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    requires_grad: bool = False,
    hooks: Any = None,
    metadata: Any = None,
) -> Tensor:
    if not isinstance(storage, Storage):
        raise DumpFormatError("a tensor without a storage")
    return Tensor(tuple(size), _elements(storage.values, offset, tuple(size), tuple(stride)))


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], archive: zipfile.ZipFile, root: str, swap: bool) -> None:
        super().__init__(file)
        self.archive, self.root, self.swap = archive, root, swap

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in STORAGE_CODES:
            return StorageType(name)
        raise DumpFormatError(f"{module}.{name} is not allowed in a dump")

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise DumpFormatError(f"unknown persistent id {pid!r}")
        kind, key, numel = pid[1], pid[2], pid[4]
        if not isinstance(kind, StorageType):
            raise DumpFormatError("a storage of an unknown type")
        values = array(STORAGE_CODES[kind.name])
        values.frombytes(self.archive.read(f"{self.root}data/{key}"))
        if self.swap:
            values.byteswap()
        if len(values) != numel:
            raise DumpFormatError(f"storage {key} holds {len(values)} elements, not {numel}")
        return Storage(values)


def load(path: Path) -> Any:
    """The object saved in ``path``, its tensors as :class:`Tensor`."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise DumpFormatError(f"{path.name} is not a torch.save zip archive") from None
    with archive:
        pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
        if len(pickles) != 1:
            raise DumpFormatError(f"{path.name} has no single data.pkl")
        root = pickles[0].removesuffix("data.pkl")
        order = "little"
        if f"{root}byteorder" in archive.namelist():
            order = archive.read(f"{root}byteorder").decode().strip()
        data = io.BytesIO(archive.read(pickles[0]))
        try:
            return _Unpickler(data, archive, root, order != sys.byteorder).load()
        except (pickle.UnpicklingError, EOFError, KeyError, TypeError) as exc:
            raise DumpFormatError(f"{path.name}: {type(exc).__name__}: {exc}") from None
