"""safetensors files as this package writes them: arrays plus a JSON ``__metadata__``, read memory-mapped.

Writing goes through the ``safetensors`` library (atomically); reading maps the arrays with ``numpy.memmap`` from
the offsets in the file's header, so opening a file costs its header only and an array's pages are read when
touched. Nothing in a safetensors file is code: reading one never runs anything.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np

from crossview.errors import CrossviewError
from crossview.io import atomic_write

_DTYPES = {"F16": np.float16, "F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32,
           "I16": np.int16, "U8": np.uint8, "I8": np.int8, "U16": np.uint16, "U32": np.uint32, "U64": np.uint64,
           "BOOL": np.bool_}


def write(path: str | Path, arrays: dict[str, np.ndarray], metadata: dict[str, Any] | None = None) -> Path:
    """Write numpy ``arrays`` and ``metadata`` (values JSON-encoded unless already strings) atomically."""
    from safetensors.numpy import save_file

    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    return atomic_write(Path(path), lambda p: save_file(arrays, str(p), metadata=meta))


def header(path: str | Path) -> tuple[dict[str, Any], int]:
    """``(header dict, byte offset of the data)`` of a safetensors file."""
    path = Path(path)
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise CrossviewError(f"{path} is not a safetensors file (shorter than its header)")
        (n,) = struct.unpack("<Q", raw)
        if n > 100 * 2**20:
            raise CrossviewError(f"{path} is not a safetensors file (header of {n} bytes)")
        try:
            head = json.loads(f.read(n))
        except ValueError as exc:
            raise CrossviewError(f"{path} is not a safetensors file (its header is not JSON)") from exc
    return head, 8 + n


class STFile:
    """One safetensors file opened for reading: ``.metadata`` (JSON-decoded) and ``[name]`` -> a read-only memmap."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._head, self._base = header(self.path)
        raw = self._head.pop("__metadata__", None) or {}
        self.metadata: dict[str, Any] = {}
        for k, v in raw.items():
            try:
                self.metadata[k] = json.loads(v)
            except ValueError:
                self.metadata[k] = v

    def keys(self) -> list[str]:
        return list(self._head)

    def __contains__(self, name: str) -> bool:
        return name in self._head

    def __getitem__(self, name: str) -> np.ndarray:
        info = self._head[name]
        dtype = _DTYPES.get(info["dtype"])
        if dtype is None:
            raise CrossviewError(f"{self.path}: tensor {name} has dtype {info['dtype']}, which numpy cannot map")
        start, end = info["data_offsets"]
        shape = tuple(info["shape"])
        if end == start:
            return np.zeros(shape, dtype)
        return np.memmap(self.path, dtype=dtype, mode="r", offset=self._base + start, shape=shape)
