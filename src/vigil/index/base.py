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

__all__ = ["FORMAT_VERSION", "IndexHeader", "SignalIndex", "read_index_file", "write_index_file"]

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


def write_index_file(path: Path, header: IndexHeader, ids: np.ndarray, codes: np.ndarray) -> None:
    """Write atomically: a temp file in the same folder, fsync, rename."""
    head = json.dumps(header, sort_keys=True).encode()
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tmp.open("wb") as fh:
        fh.write(MAGIC + struct.pack("<II", FORMAT_VERSION, len(head)) + head)
        fh.write(np.ascontiguousarray(ids, dtype="<i8").tobytes())
        fh.write(np.ascontiguousarray(codes, dtype=np.uint8).tobytes())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_index_file(path: Path) -> tuple[IndexHeader, np.ndarray, np.ndarray]:
    """Read and check an index file; any inconsistency raises :class:`IndexFileError`."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise IndexFileError(f"{path}: cannot read index file: {exc}", path=str(path)) from exc
    if data[:8] != MAGIC:
        raise IndexFileError(f"{path}: not a Vigil index file", path=str(path))
    version, hlen = struct.unpack_from("<II", data, 8)
    if version != FORMAT_VERSION:
        raise IndexFileError(
            f"{path}: index format version {version}, this Vigil reads {FORMAT_VERSION}",
            path=str(path),
            version=version,
        )
    try:
        header = t.cast(IndexHeader, json.loads(data[16 : 16 + hlen]))
        count, size = int(header["count"]), int(header["code_size"])
    except (ValueError, KeyError, TypeError) as exc:
        raise IndexFileError(f"{path}: corrupt index header", path=str(path)) from exc
    start = 16 + hlen
    if len(data) != start + count * (8 + size):
        raise IndexFileError(
            f"{path}: index file truncated or padded ({len(data)} bytes for {count} entries)",
            path=str(path),
        )
    ids = np.frombuffer(data, dtype="<i8", count=count, offset=start).astype(np.int64)
    codes = np.frombuffer(data, dtype=np.uint8, count=count * size, offset=start + count * 8)
    return header, ids, codes.reshape(count, size)
