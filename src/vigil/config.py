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

__all__ = ["Settings"]


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise UsageError(f"{name} must be an integer, got {raw!r}") from None
    if value <= 0:
        raise UsageError(f"{name} must be positive, got {value}")
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
                max_bytes=_env_int("VIGIL_MAX_BYTES", base.max_bytes),
                max_pixels=_env_int("VIGIL_MAX_PIXELS", base.max_pixels),
            ),
        )

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "index"
