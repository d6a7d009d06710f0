"""Exact Hamming-radius search over fixed-size binary codes (PDQ: 256 bits), with FAISS.

``faiss.IndexBinaryFlat`` scans every code with popcount kernels, so results are identical to a
brute-force scan; wrapping it in ``IndexBinaryIDMap`` keeps our int64 ids beside the codes, which is
40 bytes per 256-bit entry in all. ``remove_ids`` compacts the arrays in place (one memmove), so a
disable is reflected at once without a rebuild.

Adds and removes are plain: the caller (:mod:`vigil.core.indexes`) removes every touched id
before re-adding the ones that should be present, which keeps replays idempotent without a
per-id membership table (that would cost more memory than the codes themselves).
"""

from __future__ import annotations

import os
import typing as t

import numpy as np

from vigil.errors import UsageError

__all__ = ["HammingIndex"]

_THREADS_SET = False


def _configure_faiss(faiss: t.Any) -> None:
    """One OpenMP thread by default (``VIGIL_FAISS_THREADS`` overrides): a few queries per call are
    too little work to share, and on a busy machine OpenMP's spinning threads made a single lookup
    six times slower (benchmarks/bench_lookup.py). Parallelism comes from concurrent requests."""
    global _THREADS_SET
    if not _THREADS_SET:
        faiss.omp_set_num_threads(max(1, int(os.environ.get("VIGIL_FAISS_THREADS", "1") or 1)))
        _THREADS_SET = True


class HammingIndex:
    """FAISS binary flat index with our ids."""

    kind: t.ClassVar[str] = "hamming"

    def __init__(self, code_size: int = 32) -> None:
        import faiss

        self._faiss = faiss
        _configure_faiss(faiss)
        self.code_size = code_size
        self._flat = faiss.IndexBinaryFlat(code_size * 8)  # keep a reference: IDMap wraps it
        self._index = faiss.IndexBinaryIDMap(self._flat)

    def add(self, ids: np.ndarray, codes: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        codes = np.ascontiguousarray(codes, dtype=np.uint8).reshape(-1, self.code_size)
        if len(ids) != len(codes):
            raise UsageError("ids and codes differ in length")
        if len(ids):
            self._index.add_with_ids(codes, ids)

    def remove(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) and len(self):
            self._index.remove_ids(ids)  # type: ignore[arg-type]  # the SWIG wrapper takes arrays

    def query(self, codes: np.ndarray, radius: int) -> list[list[tuple[int, int]]]:
        """For each query code, every (id, distance) with distance <= radius."""
        q = np.ascontiguousarray(codes, dtype=np.uint8).reshape(-1, self.code_size)
        if len(self) == 0 or len(q) == 0:
            return [[] for _ in range(len(q))]
        lims, dist, labels = self._index.range_search(q, int(radius) + 1)  # FAISS: strictly below
        return [
            list(zip(labels[lims[i] : lims[i + 1]].tolist(), dist[lims[i] : lims[i + 1]].tolist()))
            for i in range(len(q))
        ]

    def export(self) -> tuple[np.ndarray, np.ndarray]:
        n = self._index.ntotal
        ids = self._faiss.vector_to_array(self._index.id_map).astype(np.int64)
        xb = self._flat.xb  # type: ignore[attr-defined]
        codes = self._faiss.vector_to_array(xb).reshape(n, self.code_size)
        return ids, codes

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def memory_bytes(self) -> int:
        """Bytes held by codes and ids (what scales with the number of entries)."""
        return len(self) * (self.code_size + 8)
