"""Cryptographic hashes of a file's bytes: ``md5`` and ``sha256``.

They match only byte-identical files, so they are the cheapest first tier of the cascade and the
only signal for content kinds nothing else understands.
"""

from __future__ import annotations

import hashlib
import re
import typing as t
from pathlib import Path

from vigil.errors import InvalidSignal
from vigil.signals.base import FileHasher, Signal

__all__ = ["Md5Signal", "Sha256Signal"]

_CHUNK = 1 << 20


class _DigestSignal(FileHasher):
    distance_kind = "exact"
    default_threshold = 0
    max_threshold = 0
    _algorithm: t.ClassVar[str]
    _hexlen: t.ClassVar[int]

    @classmethod
    def validate(cls, value: str) -> str:
        v = value.strip().lower()
        if not re.fullmatch(rf"[0-9a-f]{{{cls._hexlen}}}", v):
            raise InvalidSignal(
                f"{cls.name} value must be {cls._hexlen} hex digits, got {value!r}", value=value
            )
        return v

    @classmethod
    def to_code(cls, value: str) -> bytes:
        return bytes.fromhex(value)

    @classmethod
    def hash_bytes(cls, data: bytes) -> Signal:
        return Signal(cls.name, hashlib.new(cls._algorithm, data).hexdigest())

    @classmethod
    def hash_file(cls, path: Path) -> Signal:
        h = hashlib.new(cls._algorithm)
        with path.open("rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
        return Signal(cls.name, h.hexdigest())


class Md5Signal(_DigestSignal):
    """MD5 of the file's bytes (what many hash-sharing lists still carry)."""

    name = "md5"
    content_kinds = ("file",)
    _algorithm = "md5"
    _hexlen = 32
    code_size = 16
    examples = ("d41d8cd98f00b204e9800998ecf8427e", "9e107d9d372bb6826bd81d3542a419d6")


class Sha256Signal(_DigestSignal):
    """SHA-256 of the file's bytes."""

    name = "sha256"
    content_kinds = ("file",)
    _algorithm = "sha256"
    _hexlen = 64
    code_size = 32
    examples = (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "d7a8fbb307d7809469ca9abcb0082e4f8d5651e46d3cdb762d02d0bf37c9e592",
    )
