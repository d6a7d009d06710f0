"""Signal types: content -> fingerprints, and the distance between two fingerprints.

One module per type; every type is a class with a literal ``name`` registered in one table,
:data:`registry`. Third-party types register through the ``vigil.signal_types`` entry-point group
(each entry point names a :class:`~vigil.signals.base.SignalType` subclass). Registration checks
that the name is free and that the class states what it can hash.
"""

from __future__ import annotations

import re
import typing as t
from importlib.metadata import entry_points

from vigil.errors import UnknownSignalType, UsageError
from vigil.signals.base import FileHasher, ImageHasher, Signal, SignalType
from vigil.signals.hashes import Md5Signal, Sha256Signal
from vigil.signals.pdq import PdqSignal
from vigil.signals.robust import OrbSignal

__all__ = [
    "BUILTIN_SIGNAL_TYPES",
    "ENTRY_POINT_GROUP",
    "FileHasher",
    "ImageHasher",
    "Signal",
    "SignalRegistry",
    "SignalType",
    "registry",
]

ENTRY_POINT_GROUP = "vigil.signal_types"
BUILTIN_SIGNAL_TYPES: tuple[type[SignalType], ...] = (
    Md5Signal, Sha256Signal, PdqSignal, OrbSignal
)
_NAME = re.compile(r"[a-z][a-z0-9-]{0,31}")


class SignalRegistry:
    """Name -> signal type table. Raises on duplicate names and incomplete types."""

    def __init__(self, types: t.Iterable[type[SignalType]] = ()) -> None:
        self._types: dict[str, type[SignalType]] = {}
        for st in types:
            self.register(st)

    def register(self, st: type[SignalType]) -> None:
        if not isinstance(st, type):  # e.g. an entry point naming an instance or a module
            raise UsageError(f"signal type {st!r} must be a class, not a {type(st).__name__}")
        name = getattr(st, "name", None)
        if not isinstance(name, str) or not _NAME.fullmatch(name):  # '$' would allow a "\n"
            raise UsageError(f"signal type {st!r} needs a literal lower-case name, got {name!r}")
        if name in self._types and self._types[name] is not st:
            raise UsageError(
                f"signal type name {name!r} is taken by {self._types[name].__qualname__}"
            )
        if not issubclass(st, (FileHasher, ImageHasher)):
            raise UsageError(f"signal type {name!r} must derive from FileHasher or ImageHasher")
        # A classmethod is bound anew on every access, so compare the functions underneath.
        required = [(SignalType, "validate")]
        if issubclass(st, FileHasher):
            required += [(FileHasher, "hash_bytes"), (FileHasher, "hash_file")]
        if issubclass(st, ImageHasher):
            required += [(ImageHasher, "hash_image")]
        for base, method in required:
            if getattr(st, method).__func__ is getattr(base, method).__func__:
                raise UsageError(f"signal type {name!r} does not implement {method}()")
        self._types[name] = st

    def get(self, name: str) -> type[SignalType]:
        try:
            return self._types[name]
        except KeyError:
            known = ", ".join(sorted(self._types))
            raise UnknownSignalType(
                f"unknown signal type {name!r} (known: {known})", signal_type=name
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def __iter__(self) -> t.Iterator[type[SignalType]]:
        return iter(self._types.values())

    def names(self) -> list[str]:
        return sorted(self._types)

    def file_hashers(self) -> list[type[FileHasher]]:
        return [st for st in self._types.values() if issubclass(st, FileHasher)]

    def image_hashers(self) -> list[type[ImageHasher]]:
        return [st for st in self._types.values() if issubclass(st, ImageHasher)]

    def load_plugins(self) -> None:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            self.register(ep.load())


registry = SignalRegistry(BUILTIN_SIGNAL_TYPES)
