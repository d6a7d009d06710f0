"""The Hamming index returns exactly what a brute-force scan does; the exact index and the index
file format round-trip, and damaged files are refused with a typed error."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from vigil.errors import IndexFileError
from vigil.index.base import read_index_file, write_index_file
from vigil.index.exact import ExactIndex
from vigil.index.hamming import HammingIndex

POP = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)


def brute(codes: np.ndarray, ids: np.ndarray, q: np.ndarray, radius: int) -> set[tuple[int, int]]:
    d = POP[np.bitwise_xor(codes, q)].sum(axis=1)
    return {(int(i), int(x)) for i, x in zip(ids[d <= radius], d[d <= radius])}


def flip_bits(code: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    bits = np.unpackbits(code)
    idx = rng.choice(256, size=n, replace=False)
    bits[idx] ^= 1
    return np.packbits(bits)


@pytest.fixture
def planted():
    rng = np.random.default_rng(7)
    n = 20_000
    codes = rng.integers(0, 256, size=(n, 32), dtype=np.uint8)
    queries = rng.integers(0, 256, size=(16, 32), dtype=np.uint8)
    # plant near-duplicates of each query at distances 0..40 (some inside, some outside 31)
    for qi, q in enumerate(queries):
        for k, dist in enumerate(range(0, 41, 4)):
            codes[qi * 20 + k] = flip_bits(q, dist, rng)
    ids = rng.permutation(n).astype(np.int64) * 7 + 3
    return ids, codes, queries


def test_radius_search_equals_brute_force(planted):
    ids, codes, queries = planted
    index = HammingIndex()
    index.add(ids, codes)
    assert len(index) == len(ids)
    for radius in (0, 12, 31, 32):
        got = index.query(queries, radius)
        for q, hits in zip(queries, got):
            want = brute(codes, ids, q, radius)
            assert set(hits) == want
    # the planted ones are really there: 8 per query within 31 (0,4,...,28)
    assert all(len([h for h in hits if h[1] <= 31]) >= 8 for hits in index.query(queries, 31))


def test_remove_stops_matching_and_re_add_restores(planted):
    ids, codes, queries = planted
    index = HammingIndex()
    index.add(ids, codes)
    target = index.query(queries[:1], 31)[0]
    gone = [i for i, _ in target[:3]]
    index.remove(np.array(gone))
    after = {i for i, _ in index.query(queries[:1], 31)[0]}
    assert not after & set(gone)
    assert len(index) == len(ids) - 3
    index.remove(np.array(gone))  # removing again is harmless
    assert len(index) == len(ids) - 3
    pos = [int(np.flatnonzero(ids == g)[0]) for g in gone]
    index.add(np.array(gone), codes[pos])
    assert {i for i, _ in index.query(queries[:1], 31)[0]} >= set(gone)


def test_empty_index_and_export_round_trip(planted):
    index = HammingIndex()
    assert index.query(np.zeros((2, 32), np.uint8), 31) == [[], []]
    ids, codes, _ = planted
    index.add(ids[:100], codes[:100])
    e_ids, e_codes = index.export()
    order = np.argsort(e_ids)
    want = np.argsort(ids[:100])
    assert np.array_equal(e_ids[order], ids[:100][want])
    assert np.array_equal(e_codes[order], codes[:100][want])


def test_exact_index():
    index = ExactIndex(16)
    a, b = bytes(range(16)), bytes(range(1, 17))
    index.add(np.array([1, 2, 3]), np.frombuffer(a + a + b, np.uint8))
    assert index.query(np.frombuffer(a, np.uint8)) == [[(1, 0), (2, 0)]]
    index.remove(np.array([1]))
    assert index.query(np.frombuffer(a, np.uint8)) == [[(2, 0)]]
    index.remove(np.array([2, 99]))
    assert index.query(np.frombuffer(a, np.uint8)) == [[]]
    assert len(index) == 1
    ids, codes = index.export()
    assert ids.tolist() == [3] and codes.tobytes() == b


def _header(n: int) -> dict:
    return {"signal_type": "pdq", "kind": "hamming", "code_size": 32, "count": n,
            "last_seq": 5, "store_id": "abc"}


def test_index_file_round_trip(tmp_path: Path):
    ids = np.arange(10, dtype=np.int64)
    codes = np.arange(320, dtype=np.int64).astype(np.uint8).reshape(10, 32)
    path = tmp_path / "pdq.vidx"
    write_index_file(path, _header(10), ids, codes)
    header, r_ids, r_codes = read_index_file(path)
    assert header["last_seq"] == 5 and header["store_id"] == "abc"
    assert np.array_equal(ids, r_ids) and np.array_equal(codes, r_codes)
    assert not list(tmp_path.glob("*.tmp*"))  # written atomically


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b"NOTVIGIL" + b[8:], "not a Vigil index"),
        (lambda b: b[:8] + struct.pack("<I", 99) + b[12:], "format version 99"),
        (lambda b: b[:-7], "truncated"),
        (lambda b: b[:16] + b"{broken" + b[23:], "corrupt index header"),
    ],
)
def test_damaged_index_files_are_refused(tmp_path: Path, damage, message):
    path = tmp_path / "pdq.vidx"
    write_index_file(path, _header(4), np.arange(4, dtype=np.int64), np.zeros((4, 32), np.uint8))
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(IndexFileError, match=message):
        read_index_file(path)


def test_index_files_are_not_pickle(tmp_path: Path):
    path = tmp_path / "pdq.vidx"
    write_index_file(path, _header(1), np.arange(1, dtype=np.int64), np.zeros((1, 32), np.uint8))
    data = path.read_bytes()
    assert data.startswith(b"VIGILIDX") and b"\x80\x04\x95" not in data[:32]
