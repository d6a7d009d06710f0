"""Content -> signals: the one place that decides which signal types apply to a file.

Every file gets its byte hashes (md5, sha256). A file that decodes as an image also gets the
image signal types (PDQ); a file that is a video (by its bytes) gets frame signals instead
(:mod:`vigil.media.video`, :mod:`vigil.signals.vpdq`). A file that is neither is not an error
for hashing: it is checked by its byte hashes alone, and ``media_error`` says why no image signal
was computed. Only a file that cannot be read at all (missing, unreadable, over the byte limit,
empty) fails.
"""

from __future__ import annotations

import dataclasses
import typing as t
from pathlib import Path

from vigil.errors import EmptyFile, FileTooLarge, MediaError, UnsupportedMedia, VigilError
from vigil.media.image import DecodedImage, ImageLimits, decode_image
from vigil.media.video import VideoLimits, hash_video, looks_like_video
from vigil.signals import Signal, registry
from vigil.signals.pdq import PdqSignal
from vigil.signals.robust import OrbSignal, RobustAnalysis
from vigil.signals.vpdq import VideoSignals

__all__ = ["HashResult", "hash_file"]


@dataclasses.dataclass
class HashResult:
    path: str
    signals: list[Signal] = dataclasses.field(default_factory=list)
    #: the 8 dihedral PDQ hashes of the (trimmed) picture, for matching; not reported by `hash`
    pdq_query: dict[str, str] | None = None
    pdq_quality: int | None = None
    trimmed: bool = False
    #: local features for the robust tier (the ``orb`` signal, its payload, the query features);
    #: kept out of ``signals`` so `vigil hash` reports what it always did; banking adds it
    robust: RobustAnalysis | None = None
    media: dict[str, t.Any] | None = None
    media_error: VigilError | None = None
    error: VigilError | None = None
    #: a video's frame signals (vigil.signals.vpdq.VideoSignals); None for anything else
    video: VideoSignals | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, t.Any]:
        return {
            "path": self.path,
            "signals": [s.to_dict() for s in self.signals],
            "media": self.media,
            "note": self.media_error.message if self.media_error else None,
            "error": self.error.to_dict() if self.error else None,
            **({"video": self.video.summary()} if self.video is not None else {}),
        }


def hash_file(path: Path, limits: ImageLimits | None = None, *,
              progress: t.Callable[[float], None] | None = None,
              local_features: bool = True) -> HashResult:
    """Hash one file. Never raises for a bad file: the failure is in ``error``.

    A video (recognised by its bytes) gets frame signals instead of image signals; ``progress``
    is told the fraction of it decoded so far. ``local_features=False`` skips the robust tier's
    features (10-20 ms an image): `vigil hash` reports only the exchangeable signals."""
    limits = limits or ImageLimits()
    result = HashResult(path=str(path))
    try:
        if not path.is_file():
            raise MediaError(f"{path}: no such file", path=str(path))
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise FileTooLarge(
                f"{path}: {size} bytes is over the limit of {limits.max_bytes}",
                path=str(path),
                bytes=size,
            )
        data = path.read_bytes()
        if not data:
            raise EmptyFile(f"{path}: the file is empty (0 bytes)", path=str(path))
    except VigilError as exc:
        result.error = exc
        return result
    except OSError as exc:
        result.error = MediaError(f"{path}: cannot read: {exc.strerror or exc}", path=str(path))
        return result
    for fh in registry.file_hashers():
        result.signals.append(fh.hash_bytes(data))
    try:
        image = decode_image(data, limits, name=str(path))
    except UnsupportedMedia as exc:
        if looks_like_video(data[:400]):
            _add_video_signals(result, data, path, progress)
            return result
        result.media_error = exc  # not an image: byte hashes only
        return result
    except MediaError as exc:
        result.error = exc  # an image we could not decode safely: a real failure
        return result
    _add_image_signals(result, image, local_features, data)
    return result


def _add_video_signals(result: HashResult, data: bytes, path: Path,
                       progress: t.Callable[[float], None] | None) -> None:
    try:
        result.video, result.media = hash_video(data, VideoLimits.from_env(), name=str(path),
                                                progress=progress)
    except UnsupportedMedia as exc:
        result.media_error = exc  # e.g. audio only: byte hashes only
    except VigilError as exc:
        result.error = exc  # a video we could not decode safely: a real failure


def _add_image_signals(result: HashResult, image: DecodedImage, local_features: bool = True,
                       source: bytes | None = None) -> None:
    result.media = {
        "kind": "image",
        "format": image.format,
        "width": image.width,
        "height": image.height,
        "frames": image.frames,
    }
    result.trimmed = image.was_trimmed
    for ih in registry.image_hashers():
        if ih is PdqSignal:  # one DCT gives both the stored hashes and the 8 query variants
            signals, result.pdq_query, result.pdq_quality = PdqSignal.analyse(image)
            result.signals.extend(signals)
        elif ih is OrbSignal:
            if not local_features:
                continue
            try:
                result.robust = OrbSignal.analyse(image, source)  # bytes: embedded regions
            except MediaError:
                result.robust = None  # too degenerate for local features: other tiers still run
        else:
            result.signals.extend(ih.hash_image(image))
