"""Exact-value index for cryptographic hashes (md5, sha256): a dict from value to ids."""

from __future__ import annotations

import typing as t

import numpy as np

__all__ = ["ExactIndex"]


class ExactIndex:
    kind: t.ClassVar[str] = "exact"

    def __init__(self, code_size: int) -> None:
        self.code_size = code_size
        self._by_code: dict[bytes, set[int]] = {}
        self._by_id: dict[int, bytes] = {}

    def add(self, ids: np.ndarray, codes: np.ndarray) -> None:
        codes = np.ascontiguousarray(codes, dtype=np.uint8).reshape(-1, self.code_size)
        for i, code in zip(np.asarray(ids, dtype=np.int64).tolist(), codes):
            key = code.tobytes()
            self._by_code.setdefault(key, set()).add(i)
            self._by_id[i] = key

    def remove(self, ids: np.ndarray) -> None:
        for i in np.asarray(ids, dtype=np.int64).tolist():
            key = self._by_id.pop(i, None)
            if key is not None:
                bucket = self._by_code[key]
                bucket.discard(i)
                if not bucket:
                    del self._by_code[key]

    def query(self, codes: np.ndarray, radius: int = 0) -> list[list[tuple[int, int]]]:
        codes = np.ascontiguousarray(codes, dtype=np.uint8).reshape(-1, self.code_size)
        return [sorted((i, 0) for i in self._by_code.get(c.tobytes(), ())) for c in codes]

    def export(self) -> tuple[np.ndarray, np.ndarray]:
        ids = np.fromiter(self._by_id, dtype=np.int64, count=len(self._by_id))
        codes = np.frombuffer(b"".join(self._by_id.values()), dtype=np.uint8)
        return ids, codes.reshape(len(ids), self.code_size)

    def __len__(self) -> int:
        return len(self._by_id)
