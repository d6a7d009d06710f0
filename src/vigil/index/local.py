"""Candidate retrieval for local features: FAISS binary inverted lists, with our int64 ids.

Every banked picture contributes up to 256 ORB descriptors, all stored under the id of its ``orb``
signal row; a query's descriptors each find their nearest banked descriptors and vote for the ids
they belong to (:meth:`LocalFeatureIndex.vote`). The few ids with most votes go on to geometric
verification (:mod:`vigil.core.robust`), so retrieval needs recall, not precision.

Growth: below ``FLAT_LIMIT`` descriptors (16 pictures) the index is ``IndexBinaryFlat`` (exact,
linear). A flat scan costs (query descriptors x banked descriptors): 500 x 10,000 is already ~20 ms,
so the inverted lists take over early. Above it the descriptors move into ``IndexBinaryIVF`` with
``nlist ~ sqrt(n)`` lists whose centroids are descriptors sampled evenly from the data (no k-means:
training would cost minutes at 25M descriptors and must be reproducible), searched with
``nprobe`` lists. A query then scans ``nlist + nprobe * n / nlist ~ O(sqrt n)`` codes: sublinear
growth. When the count has grown (or shrunk) 4-fold since the lists were chosen, they are chosen
again. Adds and removes are plain set operations on ids, as for the other indexes.

On disk (never pickle), a versioned layout like :mod:`vigil.index.base`::

    b"VIGILLFX" u32 version (1) u32 H, H bytes JSON header (count, nlist, last_seq, store_id, ...)
    nlist * 32    centroids (nlist is 0 for a flat index)
    count * 8     ids, little-endian int64
    count * 32    descriptors
"""

from __future__ import annotations

import typing as t
from pathlib import Path

import numpy as np

from vigil.errors import IndexFileError, UsageError
from vigil.index.base import read_envelope, write_envelope

__all__ = ["FLAT_LIMIT", "LocalFeatureIndex", "read_local_index", "write_local_index"]

MAGIC = b"VIGILLFX"
FORMAT_VERSION = 1
CODE = 32
FLAT_LIMIT = 4096
NPROBE = 8
#: see LocalFeatureIndex.vote; 0 scans the nprobe lists whole
SCAN_LIMIT = 2.0
MAX_NLIST = 4096


def _nlist_for(n: int) -> int:
    if n < FLAT_LIMIT:
        return 0
    return int(min(MAX_NLIST, 2 ** round(np.log2(np.sqrt(n)))))


class LocalFeatureIndex:
    kind: t.ClassVar[str] = "local-ivf"

    def __init__(self, nprobe: int = NPROBE) -> None:
        import faiss

        self._faiss = faiss
        self.nprobe = nprobe
        self.nlist = 0
        self._built_at = 0
        self._new_flat()

    # -- structure -------------------------------------------------------------------------
    def _new_flat(self) -> None:
        faiss = self._faiss
        self._quant: t.Any = None
        self._flat: t.Any = faiss.IndexBinaryFlat(CODE * 8)
        self._index: t.Any = faiss.IndexBinaryIDMap2(self._flat)
        self.nlist = 0

    def _new_ivf(self, centroids: np.ndarray) -> None:
        faiss = self._faiss
        self._quant = faiss.IndexBinaryFlat(CODE * 8)
        self._quant.add(np.ascontiguousarray(centroids, np.uint8))
        ivf = faiss.IndexBinaryIVF(self._quant, CODE * 8, len(centroids))
        ivf.is_trained = True
        ivf.nprobe = self.nprobe
        self._flat = None
        self._index = ivf
        self.nlist = len(centroids)

    def centroids(self) -> np.ndarray:
        if self._quant is None:
            return np.zeros((0, CODE), np.uint8)
        return self._faiss.vector_to_array(self._quant.xb).reshape(-1, CODE)

    def _rebalance(self) -> None:
        """Choose the lists again for the current size (see the module docstring)."""
        ids, codes = self.export()
        target = _nlist_for(len(ids))
        if target == 0:
            self._new_flat()
        else:
            step = len(codes) / target
            pick = (np.arange(target) * step).astype(np.int64)
            self._new_ivf(codes[pick])
        if len(ids):
            self._index.add_with_ids(np.ascontiguousarray(codes), ids)
        self._built_at = len(ids)

    def _maybe_rebalance(self) -> None:
        n = len(self)
        target = _nlist_for(n)
        if target == self.nlist:
            return
        if self.nlist == 0 or n > 4 * self._built_at or n * 4 < self._built_at:
            self._rebalance()

    # -- contract --------------------------------------------------------------------------
    def add(self, ids: np.ndarray, codes: np.ndarray) -> None:
        """Add descriptors; ``ids[i]`` is the signal id descriptor ``codes[i]`` belongs to."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        codes = np.ascontiguousarray(codes, dtype=np.uint8).reshape(-1, CODE)
        if len(ids) != len(codes):
            raise UsageError("ids and codes differ in length")
        if len(ids):
            self._index.add_with_ids(codes, ids)
            self._maybe_rebalance()

    def remove(self, ids: np.ndarray) -> None:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        if len(ids) and len(self):
            sel = self._faiss.IDSelectorBatch(len(ids), self._faiss.swig_ptr(ids))
            self._index.remove_ids(sel)

    def vote(self, codes: np.ndarray, *, k: int = 6, max_distance: int = 64,
             top: int = 8, min_votes: int = 5, share: float = 0.0,
             distinctive: int = 0) -> list[tuple[int, int]]:
        """Candidate ids for the query descriptors ``codes``: [(id, votes)], at most ``top``.

        ``votes`` counts the query descriptors that have the id among their ``k`` nearest
        within ``max_distance`` bits; ids with fewer than ``min_votes``, or under ``share`` of
        the leader's, are dropped. Most votes first, except that the last ``distinctive`` slots
        go to the leaders by *distinctive* votes (:func:`distinctive_votes`), when they are not
        among the others already: a picture embedded small in another one holds few of the
        query's descriptors, and the banked pictures whose descriptors are merely common
        (texture, sky, text) collect more plain votes than it does."""
        q = np.ascontiguousarray(codes, np.uint8).reshape(-1, CODE)
        if len(self) == 0 or len(q) == 0:
            return []
        if self.nlist and SCAN_LIMIT > 0:
            # the lists are unbalanced (centroids are sampled, not trained), and real descriptors
            # fall in the big ones: a query descriptor scans at most SCAN_LIMIT times what
            # nprobe balanced lists would hold, nearest lists first
            self._index.max_codes = max(1, int(SCAN_LIMIT * self.nprobe * len(self) / self.nlist))
        dist, labels = self._index.search(q, k)
        ok = (dist <= max_distance) & (labels >= 0)
        rows = np.nonzero(ok)[0]
        # one vote per (query descriptor, id): several banked descriptors of one picture near
        # one query descriptor are one piece of evidence, not several
        # (as one int64 key per pair: a 1-D unique is several times faster than unique rows)
        keys = np.unique(labels[ok] * len(q) + rows)
        if not len(keys):
            return []
        uid, counts = np.unique(keys // len(q), return_counts=True)
        order = np.lexsort((uid, -counts))[:top]
        floor = max(min_votes, share * counts[order[0]])
        ranked = [int(uid[i]) for i in order if counts[i] >= floor]
        keep = ranked[:max(0, top - distinctive)]
        if distinctive > 0:
            leaders = distinctive_votes(dist, labels, max_distance, min_votes)
            keep += [i for i in leaders if i not in keep][:distinctive]
        keep += [i for i in ranked if i not in keep][:top - len(keep)]
        # every distinctive vote is a plain one too: each id kept is in uid
        return [(i, int(counts[np.searchsorted(uid, i)])) for i in keep]

    def export(self) -> tuple[np.ndarray, np.ndarray]:
        faiss = self._faiss
        if self.nlist == 0:
            n = self._index.ntotal
            ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
            codes = faiss.vector_to_array(self._flat.xb).reshape(n, CODE)
            return ids, codes
        inv = self._index.invlists
        id_parts, code_parts = [], []
        for li in range(self.nlist):
            size = inv.list_size(li)
            if not size:
                continue
            id_parts.append(faiss.rev_swig_ptr(inv.get_ids(li), size).copy())
            code_parts.append(
                faiss.rev_swig_ptr(inv.get_codes(li), size * CODE).copy().reshape(size, CODE)
            )
        if not id_parts:
            return np.zeros(0, np.int64), np.zeros((0, CODE), np.uint8)
        return np.concatenate(id_parts).astype(np.int64), np.concatenate(code_parts)

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def memory_bytes(self) -> int:
        """Bytes held per descriptor (code + id) plus the centroids."""
        return len(self) * (CODE + 8) + self.nlist * CODE

    # -- files -----------------------------------------------------------------------------
    def load_arrays(self, centroids: np.ndarray, ids: np.ndarray, codes: np.ndarray) -> None:
        if len(centroids):
            self._new_ivf(centroids)
        else:
            self._new_flat()
        if len(ids):
            self._index.add_with_ids(np.ascontiguousarray(codes), np.ascontiguousarray(ids))
        self._built_at = len(ids)
        # a file written flat (or by a version with another FLAT_LIMIT) gets lists once it is big
        # enough for them, exactly as if its descriptors had just been added
        self._maybe_rebalance()


#: Lowe's ratio for distinctive votes: a query descriptor's nearest banked descriptor must be this
#: much nearer than the nearest one of any other picture
DISTINCTIVE_RATIO = 0.85


def distinctive_votes(dist: np.ndarray, labels: np.ndarray, max_distance: int,
                      min_votes: int = 1) -> list[int]:
    """Ids ranked by distinctive votes (best first; ties: smaller id first), with at least
    ``min_votes`` of them. ``dist``/``labels``: each query descriptor's nearest banked
    descriptors, nearest first (a FAISS search).

    A descriptor votes only for the picture of its nearest descriptor, and only when that is
    within ``max_distance`` bits and nearer than ``DISTINCTIVE_RATIO`` times the nearest one of
    any other picture (Lowe's ratio test, between pictures): a descriptor of a common texture is
    about as near to several pictures and gives none. A vote weighs ``1 - d1 / d2``, how much
    nearer the picture is than the next (measured side by side, counting votes alone left the
    embedded picture of one query tied with a stranger). When no other picture is among the
    neighbours found, the farthest of them (at least ``max_distance``) stands for ``d2``."""
    if not dist.size:
        return []
    n = len(dist)
    l1, d1 = labels[:, 0], dist[:, 0].astype(np.float64)
    other = (labels != l1[:, None]) & (labels >= 0)
    found = np.where(labels >= 0, dist, -1).max(1).astype(np.float64)
    d2 = np.where(other.any(1), dist[np.arange(n), np.argmax(other, axis=1)],
                  np.maximum(found, max_distance)).astype(np.float64)
    ok = (l1 >= 0) & (d1 <= max_distance) & (d1 <= DISTINCTIVE_RATIO * d2)
    if not ok.any():
        return []
    uid, inverse = np.unique(l1[ok], return_inverse=True)
    weight = np.bincount(inverse, weights=1.0 - d1[ok] / d2[ok])
    counts = np.bincount(inverse)
    order = np.lexsort((uid, -weight))
    return [int(uid[i]) for i in order if counts[i] >= min_votes]


def write_local_index(path: Path, header: dict[str, t.Any], index: LocalFeatureIndex) -> None:
    """Write atomically, in the envelope of :mod:`vigil.index.base`: centroids, ids, codes."""
    ids, codes = index.export()
    cents = index.centroids()
    write_envelope(
        path, MAGIC, FORMAT_VERSION,
        {**header, "count": len(ids), "nlist": len(cents), "code_size": CODE},
        np.asarray(cents, np.uint8), np.asarray(ids, "<i8"), np.asarray(codes, np.uint8),
    )


def read_local_index(path: Path, nprobe: int = NPROBE) -> tuple[dict[str, t.Any], LocalFeatureIndex]:
    header, data, start = read_envelope(path, MAGIC, FORMAT_VERSION, "local-feature index")
    try:
        count, nlist = int(header["count"]), int(header["nlist"])
    except (ValueError, KeyError, TypeError) as exc:
        raise IndexFileError(f"{path}: corrupt index header", path=str(path)) from exc
    if len(data) != start + nlist * CODE + count * (8 + CODE):
        raise IndexFileError(f"{path}: index file truncated or padded", path=str(path))
    cents = np.frombuffer(data, np.uint8, nlist * CODE, start).reshape(nlist, CODE)
    start += nlist * CODE
    ids = np.frombuffer(data, "<i8", count, start).astype(np.int64)
    codes = np.frombuffer(data, np.uint8, count * CODE, start + count * 8).reshape(count, CODE)
    index = LocalFeatureIndex(nprobe)
    index.load_arrays(cents, ids, codes)
    return header, index
