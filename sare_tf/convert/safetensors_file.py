"""Reading `.safetensors` files without the safetensors package (the format holds no code).

The documented layout: an unsigned little-endian 64-bit header length N, then N bytes of UTF-8
JSON `{name: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, "__metadata__":
{...}}`, then the data buffer; offsets are relative to the buffer, little-endian, row-major.
Every entry is checked (known dtype, offsets inside the buffer, byte count = shape x itemsize)
before a tensor is built.
"""

from __future__ import annotations

import json
import os
import struct

import numpy as np

DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
    "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}  # fmt: skip
MAX_HEADER_BYTES = 100 * 1024 * 1024


def read_safetensors(path) -> dict[str, np.ndarray]:
    """`{name: float32-or-native numpy array}` of a `.safetensors` file (BF16 widened to float32).

    Raises:
        ValueError: the file is not a valid safetensors file (the problem and the tensor named).
    """
    path = os.fspath(path)
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) != 8:
            raise ValueError(
                f"{path}: not a safetensors file (shorter than its 8-byte header length)."
            )
        (header_bytes,) = struct.unpack("<Q", head)
        if header_bytes > min(MAX_HEADER_BYTES, size - 8):
            raise ValueError(
                f"{path}: not a safetensors file (header length {header_bytes} > file)."
            )
        try:
            header = json.loads(handle.read(header_bytes).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(
                f"{path}: not a safetensors file (its header is not JSON: {error})."
            ) from error
        if not isinstance(header, dict):
            raise ValueError(f"{path}: not a safetensors file (its header is not a JSON object).")
        buffer = np.memmap(handle, dtype=np.uint8, mode="r", offset=8 + header_bytes)
        return {
            name: _tensor(path, name, entry, buffer)
            for name, entry in header.items()
            if name != "__metadata__"
        }


def _tensor(path, name, entry, buffer) -> np.ndarray:
    dtype_name = entry.get("dtype") if isinstance(entry, dict) else None
    if dtype_name not in DTYPES and dtype_name != "BF16":
        raise ValueError(f"{path}: tensor {name!r} has an unsupported dtype {dtype_name!r}.")
    shape = tuple(int(d) for d in entry.get("shape", ()))
    begin, end = (int(v) for v in entry.get("data_offsets", (-1, -1)))
    itemsize = 2 if dtype_name == "BF16" else np.dtype(DTYPES[dtype_name]).itemsize
    if not 0 <= begin <= end <= buffer.size or end - begin != int(np.prod(shape)) * itemsize:
        raise ValueError(
            f"{path}: tensor {name!r} ({dtype_name} {list(shape)}) has data offsets "
            f"[{begin}, {end}] that do not fit its size or the file."
        )
    raw = np.asarray(buffer[begin:end])
    if dtype_name == "BF16":  # the upper 16 bits of a float32
        widened = raw.view("<u2").astype(np.uint32) << 16
        return widened.view(np.float32).reshape(shape)
    return (
        raw.view(np.dtype(DTYPES[dtype_name]).newbyteorder("<"))
        .reshape(shape)
        .astype(DTYPES[dtype_name])
    )
