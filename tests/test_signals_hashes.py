"""md5 and sha256: known vectors, file vs bytes, streaming, and the conformance kit."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from vigil.errors import InvalidSignal
from vigil.signals.base import Signal
from vigil.signals.hashes import _CHUNK, Md5Signal, Sha256Signal
from vigil.testing import SignalTypeContract

FOX = b"The quick brown fox jumps over the lazy dog"

VECTORS = [
    (Md5Signal, b"", "d41d8cd98f00b204e9800998ecf8427e"),
    (Md5Signal, FOX, "9e107d9d372bb6826bd81d3542a419d6"),
    (Md5Signal, FOX + b".", "e4d909c290d0fb1ca068ffaddf22cbd0"),
    (Sha256Signal, b"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    (Sha256Signal, FOX, "d7a8fbb307d7809469ca9abcb0082e4f8d5651e46d3cdb762d02d0bf37c9e592"),
    (Sha256Signal, b"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
]


class TestMd5Contract(SignalTypeContract):
    TYPE = Md5Signal
    INVALID = ("d41d8cd98f00b204e9800998ecf8427", "md5:d41d8cd98f00b204e9800998ecf8427e")


class TestSha256Contract(SignalTypeContract):
    TYPE = Sha256Signal
    # an md5 is not a sha256, however hex it is
    INVALID = ("d41d8cd98f00b204e9800998ecf8427e",)


@pytest.mark.parametrize(("stype", "data", "expected"), VECTORS)
def test_known_vectors(stype: type[Md5Signal], data: bytes, expected: str) -> None:
    assert stype.hash_bytes(data) == Signal(stype.name, expected)
    assert str(stype.hash_bytes(data)) == f"{stype.name}:{expected}"


@pytest.mark.parametrize(("stype", "data", "expected"), VECTORS)
def test_hash_file_equals_hash_bytes(
    tmp_path: Path, stype: type[Md5Signal], data: bytes, expected: str
) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    assert stype.hash_file(path).value == expected


@pytest.mark.parametrize("stype", [Md5Signal, Sha256Signal])
def test_streams_files_larger_than_one_chunk(tmp_path: Path, stype: type[Md5Signal]) -> None:
    # 2.5 chunks, with the chunk boundaries falling inside a repeating pattern, so a dropped or
    # repeated chunk changes the digest
    data = bytes(range(251)) * ((_CHUNK * 5 // 2) // 251 + 1)
    assert len(data) > 2 * _CHUNK
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    expected = hashlib.new(stype.name, data).hexdigest()
    assert stype.hash_file(path).value == expected
    assert stype.hash_bytes(data).value == expected


def test_hash_file_reads_in_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file is never read whole: every read asks for at most one chunk."""
    data = b"x" * (3 * _CHUNK + 17)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    sizes: list[int] = []
    real_open = Path.open

    def spy_open(self: Path, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        fh = real_open(self, *args, **kwargs)  # type: ignore[call-overload]
        real_read = fh.read

        def read(n: int = -1) -> bytes:
            sizes.append(n)
            return real_read(n)

        fh.read = read
        return fh

    monkeypatch.setattr(Path, "open", spy_open)
    assert Sha256Signal.hash_file(path).value == hashlib.sha256(data).hexdigest()
    assert sizes and all(0 < n <= _CHUNK for n in sizes)
    assert len(sizes) == 5  # 3 full chunks, the tail, and the empty read that ends the loop


@pytest.mark.parametrize("stype", [Md5Signal, Sha256Signal])
def test_validate_normalises_case_and_whitespace(stype: type[Md5Signal]) -> None:
    value = stype.examples[1]
    assert stype.validate(f"  {value.upper()}\n") == value
    assert Signal.parse(f"{stype.name.upper()}:{value.upper()}") == Signal(stype.name, value)


@pytest.mark.parametrize(
    ("stype", "value"),
    [
        (Md5Signal, "d41d8cd98f00b204e9800998ecf8427e0"),
        (Md5Signal, "z41d8cd98f00b204e9800998ecf8427e"),
        (Sha256Signal, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85"),
    ],
)
def test_invalid_message_names_the_type_and_length(stype: type[Md5Signal], value: str) -> None:
    with pytest.raises(InvalidSignal, match=rf"{stype.name} value must be \d+ hex digits") as exc:
        stype.validate(value)
    assert exc.value.details["value"] == value
    assert exc.value.code == "invalid_signal"


def test_distance_is_exact() -> None:
    a, b = Md5Signal.examples
    assert Md5Signal.distance(a, a) == 0
    assert Md5Signal.distance(a, b) == 1
    assert Md5Signal.distance_kind == "exact"
    assert Md5Signal.default_threshold == Md5Signal.max_threshold == 0
