"""Similarity indexes: one per signal type, holding every *enabled* signal of every bank.

Contract (STYLE.md §4): ``add(ids, values)``, ``remove(ids)``, ``query(values, radius)`` giving
``(id, distance)`` pairs, ``len()``. Ids are the store's signal row ids (int64); the matcher maps them
back to entries and banks and applies each bank's own threshold, so one index serves all banks and
the radius searched is the largest threshold any bank uses.

Removing an absent id is a no-op; adding an id that is already present is the caller's to avoid
(:mod:`vigil.core.indexes` removes every touched id before re-adding, which keeps replays of the
store's change log idempotent).

On disk an index is one file in a versioned binary layout, never pickle::

    b"VIGILIDX"  magic
    u32          format version (1)
    u32          header length H
    H bytes      JSON header: signal_type, kind, code_size, count, last_seq, store_id
    count * 8    ids, little-endian int64
    count * C    codes (C = code_size bytes each)
"""

from __future__ import annotations

import json
import os
import struct
import typing as t
from pathlib import Path

import numpy as np

from vigil.errors import IndexFileError

__all__ = [
    "FORMAT_VERSION",
    "IndexHeader",
    "SignalIndex",
    "read_envelope",
    "read_index_file",
    "write_envelope",
    "write_index_file",
]

MAGIC = b"VIGILIDX"
FORMAT_VERSION = 1


class IndexHeader(t.TypedDict):
    signal_type: str
    kind: str
    code_size: int
    count: int
    last_seq: int
    store_id: str


class SignalIndex(t.Protocol):
    kind: t.ClassVar[str]
    code_size: int

    def add(self, ids: np.ndarray, codes: np.ndarray) -> None: ...

    def remove(self, ids: np.ndarray) -> None: ...

    def query(self, codes: np.ndarray, radius: int) -> list[list[tuple[int, int]]]: ...

    def export(self) -> tuple[np.ndarray, np.ndarray]: ...

    def __len__(self) -> int: ...


def write_envelope(
    path: Path, magic: bytes, version: int, header: t.Mapping[str, t.Any], *arrays: np.ndarray
) -> None:
    """The envelope every Vigil index file shares: magic, version, JSON header, then the raw
    bytes of ``arrays`` in order. Written atomically: a temp file in the same folder, fsync,
    rename."""
    head = json.dumps(dict(header), sort_keys=True).encode()
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tmp.open("wb") as fh:
        fh.write(magic + struct.pack("<II", version, len(head)) + head)
        for arr in arrays:
            fh.write(np.ascontiguousarray(arr).tobytes())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_envelope(
    path: Path, magic: bytes, version: int, what: str = "index"
) -> tuple[dict[str, t.Any], bytes, int]:
    """Read and check an envelope: (header, the whole file, offset of the first array). A missing
    or unreadable file, another magic, version or a broken header raise :class:`IndexFileError`."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise IndexFileError(f"{path}: cannot read index file: {exc}", path=str(path)) from exc
    if data[:8] != magic:
        raise IndexFileError(f"{path}: not a Vigil {what} file", path=str(path))
    found, hlen = struct.unpack_from("<II", data, 8)
    if found != version:
        raise IndexFileError(
            f"{path}: {what} format version {found}, this Vigil reads {version}",
            path=str(path),
            version=found,
        )
    try:
        header = json.loads(data[16 : 16 + hlen])
        if not isinstance(header, dict):
            raise TypeError("header is not an object")
    except (ValueError, TypeError) as exc:
        raise IndexFileError(f"{path}: corrupt index header", path=str(path)) from exc
    return header, data, 16 + hlen


def write_index_file(path: Path, header: IndexHeader, ids: np.ndarray, codes: np.ndarray) -> None:
    write_envelope(
        path, MAGIC, FORMAT_VERSION, header,
        np.asarray(ids, dtype="<i8"), np.asarray(codes, dtype=np.uint8),
    )


def read_index_file(path: Path) -> tuple[IndexHeader, np.ndarray, np.ndarray]:
    """Read and check an index file; any inconsistency raises :class:`IndexFileError`."""
    raw, data, start = read_envelope(path, MAGIC, FORMAT_VERSION)
    try:
        header = t.cast(IndexHeader, raw)
        count, size = int(header["count"]), int(header["code_size"])
    except (ValueError, KeyError, TypeError) as exc:
        raise IndexFileError(f"{path}: corrupt index header", path=str(path)) from exc
    if len(data) != start + count * (8 + size):
        raise IndexFileError(
            f"{path}: index file truncated or padded ({len(data)} bytes for {count} entries)",
            path=str(path),
        )
    ids = np.frombuffer(data, dtype="<i8", count=count, offset=start).astype(np.int64)
    codes = np.frombuffer(data, dtype=np.uint8, count=count * size, offset=start + count * 8)
    return header, ids, codes.reshape(count, size)
