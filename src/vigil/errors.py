"""One exception tree for all of Vigil.

Every error Vigil raises on purpose derives from :class:`VigilError`. Each carries a stable
machine-readable ``code`` (used in JSON output and, later, in API error bodies), an HTTP-ish
``status`` for the service face, and structured ``details``::

    VigilError
    ├── UsageError                  bad arguments or configuration (CLI exit 2)
    ├── Unauthorized                no, a bad or a revoked API token (401)
    ├── Forbidden                   a token whose role may not do this (403)
    ├── InvalidSignal               a signal string that does not parse or validate
    ├── UnknownSignalType           a signal type name nobody registered
    ├── MediaError                  content that cannot be decoded safely
    │   ├── EmptyFile               zero bytes
    │   ├── FileTooLarge            more bytes than the configured limit
    │   ├── UnsupportedMedia        not a format we decode (text, PDF, ...)
    │   ├── DecompressionBomb       declared pixel count over the limit
    │   ├── MediaTooLong            a video (or audio) longer than the duration limit
    │   ├── DecodeTimeout           decoding ran past its wall-clock limit
    │   └── CorruptMedia            truncated or malformed data
    ├── StoreError                  database problems, translated from SQLAlchemy
    │   ├── NotFound                a bank or entry that does not exist
    │   └── Conflict                e.g. a bank name that already exists
    ├── ImportFormatError           a malformed CSV/JSONL row, with its line number
    └── IndexFileError              an index file that is corrupt or of another version

Foreign exceptions (Pillow, SQLAlchemy, FAISS) are translated at the boundary with
``raise ... from exc`` so callers only ever need to catch :class:`VigilError`.
"""

from __future__ import annotations

import typing as t

__all__ = [
    "Conflict",
    "CorruptMedia",
    "DecodeTimeout",
    "DecompressionBomb",
    "EmptyFile",
    "FileTooLarge",
    "Forbidden",
    "ImportFormatError",
    "IndexFileError",
    "InvalidSignal",
    "MediaError",
    "MediaTooLong",
    "NotFound",
    "StoreError",
    "Unauthorized",
    "UnknownSignalType",
    "UnsupportedMedia",
    "UsageError",
    "VigilError",
]


class VigilError(Exception):
    """Base of every error Vigil raises on purpose."""

    code: t.ClassVar[str] = "error"
    status: t.ClassVar[int] = 500

    def __init__(self, message: str, **details: t.Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, t.Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


class UsageError(VigilError):
    code = "usage"
    status = 422


class Unauthorized(VigilError):
    code = "unauthorized"
    status = 401


class Forbidden(VigilError):
    code = "forbidden"
    status = 403


class InvalidSignal(VigilError, ValueError):
    code = "invalid_signal"
    status = 422


class UnknownSignalType(InvalidSignal):
    code = "unknown_signal_type"


class MediaError(VigilError):
    code = "media_error"
    status = 422


class EmptyFile(MediaError):
    code = "empty_file"


class FileTooLarge(MediaError):
    code = "file_too_large"
    status = 413


class UnsupportedMedia(MediaError):
    code = "unsupported_media"
    status = 415


class DecompressionBomb(MediaError):
    code = "decompression_bomb"
    status = 413


class CorruptMedia(MediaError):
    code = "corrupt_media"


class MediaTooLong(MediaError):
    code = "media_too_long"
    status = 413


class DecodeTimeout(MediaError):
    code = "decode_timeout"
    status = 422


class StoreError(VigilError):
    code = "store_error"
    status = 503


class NotFound(StoreError):
    code = "not_found"
    status = 404


class Conflict(StoreError):
    code = "conflict"
    status = 409


class ImportFormatError(VigilError):
    code = "import_format"
    status = 422


class IndexFileError(VigilError):
    code = "index_file"
    status = 500
