"""The signal-type protocol and the value object for one fingerprint.

A *signal type* is one way of fingerprinting content (``md5``, ``pdq``, ...). Each is a module
holding one class made of class attributes and classmethods; nothing is instantiated. Capabilities
are expressed by which base class a type derives from (:class:`FileHasher` hashes a file's bytes,
:class:`ImageHasher` hashes decoded pixels) and are checked once, when the type is registered.

A :class:`Signal` is an immutable value with exactly one canonical string form, ``type:value``,
which round-trips through :meth:`Signal.parse`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import typing as t
from pathlib import Path

from vigil.errors import InvalidSignal

if t.TYPE_CHECKING:
    from vigil.media.image import DecodedImage

__all__ = [
    "ContentKind",
    "DistanceKind",
    "FileHasher",
    "ImageHasher",
    "Signal",
    "SignalType",
]

ContentKind = t.Literal["file", "image", "video", "audio", "text", "url"]
DistanceKind = t.Literal["exact", "hamming"]


@dataclasses.dataclass(frozen=True, slots=True)
class Signal:
    """One fingerprint: ``type`` plus normalised ``value``; ``quality`` where the type has one.

    ``variant`` records how the content was prepared before hashing: ``None`` for the content as
    is, ``"trimmed"`` when uniform borders were removed first. Equality and the canonical string
    only involve type and value.
    """

    type: str
    value: str
    quality: int | None = dataclasses.field(default=None, compare=False)
    variant: str | None = dataclasses.field(default=None, compare=False)

    def __str__(self) -> str:
        return f"{self.type}:{self.value}"

    @classmethod
    def parse(cls, text: str) -> Signal:
        """Parse ``type:value`` (also accepts ``type,value``) and validate the value."""
        from vigil.signals import registry

        text = text.strip()
        sep = ":" if ":" in text else ","
        name, _, value = text.partition(sep)
        if not value:
            raise InvalidSignal(f"not a signal {text!r}: expected 'type:value'", signal=text)
        stype = registry.get(name.strip().lower())
        return cls(stype.name, stype.validate(value.strip()))

    def to_dict(self) -> dict[str, t.Any]:
        out: dict[str, t.Any] = {"type": self.type, "value": self.value}
        if self.quality is not None:
            out["quality"] = self.quality
        if self.variant is not None:
            out["variant"] = self.variant
        return out


class SignalType:
    """Base of every signal type. Subclasses set the class attributes and implement validate."""

    #: storage key and the prefix of the canonical form; a literal, never derived from the class
    name: t.ClassVar[str]
    content_kinds: t.ClassVar[tuple[ContentKind, ...]]
    distance_kind: t.ClassVar[DistanceKind]
    #: default match threshold (a distance, inclusive); banks override per signal type
    default_threshold: t.ClassVar[int] = 0
    #: largest threshold a bank may set (keeps radius searches meaningful)
    max_threshold: t.ClassVar[int] = 0
    #: a few known-good values; used by the conformance kit and the docs
    examples: t.ClassVar[tuple[str, ...]] = ()

    @classmethod
    def validate(cls, value: str) -> str:
        """Return the normalised value, or raise :class:`InvalidSignal`."""
        raise NotImplementedError  # pragma: no cover - every registered type overrides it

    @classmethod
    def distance(cls, a: str, b: str) -> int:
        """Distance between two validated values: 0 for identical."""
        return 0 if a == b else 1

    @classmethod
    def signal(cls, value: str) -> Signal:
        return Signal(cls.name, cls.validate(value))

    #: bytes per index code (see :meth:`to_code`)
    code_size: t.ClassVar[int] = 16

    @classmethod
    def to_code(cls, value: str) -> bytes:
        """The fixed-size bytes an index stores for a validated value. Hex-valued types store the
        bytes themselves; others a 128-bit BLAKE2 digest (exact matching only)."""
        return hashlib.blake2b(value.encode(), digest_size=16).digest()

    @classmethod
    def indexable(cls, signal: Signal) -> bool:
        """Whether a banked signal takes part in matching (PDQ: not when of low quality)."""
        return True


class FileHasher(SignalType):
    """A signal type computed from a file's raw bytes, whatever the file is."""

    @classmethod
    def hash_file(cls, path: Path) -> Signal:
        raise NotImplementedError  # pragma: no cover

    @classmethod
    def hash_bytes(cls, data: bytes) -> Signal:
        raise NotImplementedError  # pragma: no cover


class ImageHasher(SignalType):
    """A signal type computed from decoded pixels. May return several signals (e.g. trimmed and
    untrimmed) for one image; the first is the canonical one used by banks and queries."""

    @classmethod
    def hash_image(cls, image: DecodedImage) -> list[Signal]:
        raise NotImplementedError  # pragma: no cover
