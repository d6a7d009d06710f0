"""Settings: where data lives, which database, and the decoding limits.

Read from the environment (``VIGIL_DATA``, ``VIGIL_DATABASE_URL``, ``VIGIL_MAX_BYTES``,
``VIGIL_MAX_PIXELS``) and overridable by CLI options; nothing is read at import time.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from vigil.errors import UsageError
from vigil.media.image import ImageLimits

__all__ = ["Settings", "env_number"]


def env_number(name: str, default: float, *, integer: bool = False,
               allow_zero: bool = False) -> float:
    """A number from the environment variable ``name`` (``default`` when unset or empty), read
    when called, never at import. A malformed, negative, or (unless ``allow_zero``) zero value
    is a :class:`~vigil.errors.UsageError` naming the variable: a setting that cannot be used
    must stop the program, not be ignored."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise UsageError(f"{name} must be {kind}, got {raw!r}") from None
    if value < 0 or (value == 0 and not allow_zero):
        need = "must not be negative" if allow_zero else "must be positive"
        raise UsageError(f"{name} {need}, got {raw!r}")
    return value


@dataclasses.dataclass(frozen=True)
class Settings:
    data_dir: Path = Path("vigil-data")
    database_url: str | None = None
    limits: ImageLimits = ImageLimits()

    @classmethod
    def from_env(cls, data_dir: Path | None = None, database_url: str | None = None) -> Settings:
        base = ImageLimits()
        return cls(
            data_dir=Path(data_dir or os.environ.get("VIGIL_DATA") or "vigil-data"),
            database_url=database_url or os.environ.get("VIGIL_DATABASE_URL") or None,
            limits=ImageLimits(
                max_bytes=int(env_number("VIGIL_MAX_BYTES", base.max_bytes, integer=True)),
                max_pixels=int(env_number("VIGIL_MAX_PIXELS", base.max_pixels, integer=True)),
            ),
        )

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "index"
