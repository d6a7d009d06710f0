"""``orb``: local features of a picture (ORB keypoints and binary descriptors), the robust signal.

PDQ sees a picture as a whole, so a crop, a rotation, a border or the picture pasted into another
one moves its hash far away. Local features survive those edits: each keypoint describes a small
patch, and a match is a *set* of keypoint correspondences that one geometric transform explains
(see :mod:`vigil.core.robust`, which indexes, retrieves and verifies them).

Flow for one picture: the (border-trimmed) luma plane the decoder already made is rescaled so its
long side is 640 (``MIN_SIDE`` = ``MAX_SIDE``) → ORB finds up to ``QUERY_FEATURES`` keypoints (used as
is when the picture is a query) → the ``BANK_FEATURES`` strongest, spread over a 4x4 grid so that
no textured corner takes them all, form the *payload* kept for a banked picture.

Canonical form: a payload is ~9 KB, far more than the 256 characters a signal value may hold, so
the value is the payload's content address, ``orb:<32 hex>`` (BLAKE2b-128 of the payload bytes),
and the payload itself lives beside the signal in the ``robust_payloads`` table (see
:mod:`vigil.store.robust_models`). An exported ``orb`` value therefore names features but does not
carry them: an importer without the payload stores the signal, and it takes part in matching once
its payload is present (the same picture banked there, or the payload imported with
:func:`vigil.core.robust.import_payloads`).

Distance between two *values* is ``0`` for the same payload and ``100`` otherwise: the robust
tier's distance is ``100 - verified inliers`` (see :data:`default_threshold`), and two different
payloads compared by name alone verify nothing.

Payload layout (version 1, little-endian)::

    b"VORB" u8 version  u16 width  u16 height  u16 n
    n * (i16 x*16, i16 y*16)      keypoint centres in the rescaled picture, 1/16 px
    n * 32 bytes                  ORB descriptors (256 bits)
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import struct
import typing as t

import numpy as np

from vigil.errors import InvalidSignal, MediaError
from vigil.signals.base import ImageHasher, Signal

if t.TYPE_CHECKING:
    from vigil.media.image import DecodedImage

__all__ = [
    "BANK_FEATURES",
    "LocalFeatures",
    "OrbSignal",
    "extract_features",
    "pack_payload",
    "unpack_payload",
]

MAX_SIDE = 640
#: small pictures are enlarged to this long side: FAST finds more keypoints on a picture embedded
#: small in another (picture-in-picture) when the query is enlarged to 640 first
MIN_SIDE = 640
QUERY_FEATURES = 1000
BANK_FEATURES = 256
#: below this many keypoints a picture is too flat to verify geometrically: kept, never indexed
MIN_FEATURES = 40
MAGIC = b"VORB"
VERSION = 1
_HEAD = struct.Struct("<4sBHHH")
_HEX32 = re.compile(r"[0-9a-f]{32}")


@dataclasses.dataclass(frozen=True)
class LocalFeatures:
    """Keypoints (n, 2) float32 in a picture of ``size`` (rows, cols) and descriptors (n, 32)."""

    xy: np.ndarray
    desc: np.ndarray
    size: tuple[int, int]
    #: the source picture's pixel coordinates = ``xy * scale``
    scale: float = 1.0
    #: ORB pyramid level of each keypoint (not stored in payloads)
    octave: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.xy)


def _orb(n: int) -> t.Any:
    import cv2

    return cv2.ORB_create(  # type: ignore[attr-defined]
        nfeatures=n, scaleFactor=1.2, nlevels=8, edgeThreshold=19, patchSize=19, fastThreshold=12
    )


def prepare_luma(luma: np.ndarray) -> tuple[np.ndarray, float]:
    """uint8 grey at a long side within [MIN_SIDE, MAX_SIDE]; and the factor back to ``luma``."""
    import cv2

    rows, cols = luma.shape
    long = max(rows, cols)
    target = min(MAX_SIDE, max(MIN_SIDE, long))
    f = target / long
    grey = np.clip(luma, 0, 255).astype(np.uint8)
    if abs(f - 1.0) > 1e-3:
        size = (max(1, round(cols * f)), max(1, round(rows * f)))
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
    return grey, 1.0 / f


def extract_features(grey: np.ndarray, n: int = QUERY_FEATURES, scale: float = 1.0) -> LocalFeatures:
    """ORB keypoints and descriptors of a uint8 grey picture, strongest first."""
    import cv2

    try:
        kps, desc = _orb(n).detectAndCompute(grey, None)
    except cv2.error as exc:  # a degenerate picture (e.g. 1 px high) is a media problem
        raise MediaError(f"cannot compute local features: {exc}") from exc
    if desc is None or not kps:
        return LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8),
                             grey.shape[:2], scale)
    order = np.argsort([-k.response for k in kps], kind="stable")
    xy = np.array([kps[i].pt for i in order], np.float32).reshape(-1, 2)
    octave = np.array([kps[i].octave for i in order], np.int16)
    return LocalFeatures(xy, np.ascontiguousarray(desc[order]), grey.shape[:2], scale, octave)


def select_for_bank(f: LocalFeatures, k: int = BANK_FEATURES) -> LocalFeatures:
    """The ``k`` strongest keypoints, taken round-robin from a 4x4 grid of cells (strongest first
    in each), so every part of the picture keeps some: coverage needs them spread out."""
    if len(f) <= k:
        return f
    rows, cols = f.size
    cell = (np.minimum(3, (f.xy[:, 1] * 4 // max(rows, 1)).astype(int)) * 4
            + np.minimum(3, (f.xy[:, 0] * 4 // max(cols, 1)).astype(int)))
    if f.octave is not None:
        # fine levels dominate by count; coarse ones are what survives a strong downscale
        # (picture-in-picture), so they get cells of their own
        cell = cell + 16 * np.minimum(2, f.octave.astype(int) // 2)
    rank = np.zeros(len(f), np.int64)
    seen: dict[int, int] = {}
    for i, c in enumerate(cell.tolist()):  # f is strongest first, so rank within a cell is order
        rank[i] = seen.get(c, 0)
        seen[c] = rank[i] + 1
    keep = np.lexsort((np.arange(len(f)), rank))[:k]
    keep.sort()
    return LocalFeatures(f.xy[keep], f.desc[keep], f.size, f.scale, f.octave[keep] if f.octave is not None else None)


def pack_payload(f: LocalFeatures) -> bytes:
    rows, cols = f.size
    xy = np.round(f.xy * 16).astype("<i2")
    return (_HEAD.pack(MAGIC, VERSION, cols, rows, len(f)) + xy.tobytes()
            + np.ascontiguousarray(f.desc, np.uint8).tobytes())


def unpack_payload(data: bytes) -> LocalFeatures:
    try:
        magic, version, cols, rows, n = _HEAD.unpack_from(data)
    except struct.error as exc:
        raise InvalidSignal("orb payload too short") from exc
    if magic != MAGIC or version != VERSION or len(data) != _HEAD.size + n * 36:
        raise InvalidSignal(f"not an orb payload of version {VERSION}")
    xy = np.frombuffer(data, "<i2", n * 2, _HEAD.size).astype(np.float32).reshape(n, 2) / 16
    desc = np.frombuffer(data, np.uint8, n * 32, _HEAD.size + n * 4).reshape(n, 32)
    return LocalFeatures(xy, desc, (rows, cols))


def payload_digest(payload: bytes) -> str:
    return hashlib.blake2b(payload, digest_size=16).hexdigest()


@dataclasses.dataclass(frozen=True)
class RobustAnalysis:
    """What one decode gives: the signal to bank, its payload, and the query features."""

    signal: Signal
    payload: bytes
    query: LocalFeatures
    #: the query features of the mirrored picture, computed on demand (see :meth:`mirrored`)
    grey: np.ndarray

    def mirrored(self) -> LocalFeatures:
        f = extract_features(np.ascontiguousarray(self.grey[:, ::-1]), QUERY_FEATURES,
                             self.query.scale)
        return f

    @property
    def banked(self) -> LocalFeatures:
        return unpack_payload(self.payload)


class OrbSignal(ImageHasher):
    """ORB local features of an image, named by the digest of their payload."""

    name = "orb"
    content_kinds = ("image",)
    distance_kind = "exact"
    #: the robust tier's distance is 100 - inliers: 85 means "at least 15 verified inliers"
    default_threshold = 85
    max_threshold = 100
    examples = (
        "00112233445566778899aabbccddeeff",
        "3c5e0d1a9b7f26e84d10c2a7f9e35b61",
        "ffffffffffffffffffffffffffffffff",
    )

    @classmethod
    def validate(cls, value: str) -> str:
        v = value.strip().lower()
        if not _HEX32.fullmatch(v):
            raise InvalidSignal(
                f"orb value must be 32 hex digits (a payload digest), got {value!r}", value=value
            )
        return v

    @classmethod
    def distance(cls, a: str, b: str) -> int:
        return 0 if a == b else 100

    @classmethod
    def indexable(cls, signal: Signal) -> bool:
        return signal.quality is None or signal.quality >= MIN_FEATURES

    @classmethod
    def analyse(cls, image: DecodedImage) -> RobustAnalysis:
        grey, scale = prepare_luma(image.trimmed_luma())
        query = extract_features(grey, QUERY_FEATURES, scale)
        payload = pack_payload(select_for_bank(query))
        sig = Signal(cls.name, payload_digest(payload), min(len(query), BANK_FEATURES))
        return RobustAnalysis(sig, payload, query, grey)

    @classmethod
    def hash_image(cls, image: DecodedImage) -> list[Signal]:
        return [cls.analyse(image).signal]
