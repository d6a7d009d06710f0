"""Video frame signals: a PDQ hash per sampled frame, with its time and quality (vPDQ-style).

A video's signal is not one value but a sequence: for each sampled frame (about one a second plus
the first frame of each shot, see :mod:`vigil.media.video`) the PDQ hash of the frame with its
uniform borders (letterbox, pillarbox) trimmed, the PDQ quality, the presentation time and the
frame number. The hashing reuses :mod:`vigil.signals.pdq` as is: one DCT per frame gives the
stored hash and, for queries, the mirrored hash (a horizontally flipped re-upload), and
:func:`vigil.media.image.find_borders` trims each frame on its own, so bars that come and go
within a video are handled frame by frame.

Three forms:

* :class:`VideoSignals` in memory (NumPy arrays: cheap to index and to pack);
* the vPDQ text form of Meta's tools, one frame per line ``frame_number,pdq_hex,quality,timestamp``
  (timestamp in seconds with 3 decimals), so vPDQ hashes can be banked and ours shared
  (:meth:`VideoSignals.to_vpdq`, :meth:`VideoSignals.from_vpdq`);
* a compact binary form for the store (:meth:`VideoSignals.pack`): the hashes as 32 raw bytes
  each, the qualities as one byte each, and frame numbers and timestamps delta-coded and
  zlib-compressed (they are nearly regular, so they shrink to a byte or two a frame). About 34
  bytes a frame, i.e. well under 64 bytes per second of video at the default rate.
"""

from __future__ import annotations

import dataclasses
import re
import struct
import typing as t
import zlib

import numpy as np
from PIL import Image

from vigil.errors import ImportFormatError, InvalidSignal
from vigil.signals.pdq import _bits_to_hex, pdq_dct

if t.TYPE_CHECKING:
    from vigil.media.video import SampledFrame

__all__ = ["FORMAT_VERSION", "VideoSignals", "hash_frames"]

FORMAT_VERSION = 1
_MAGIC = b"VPDQ"
_HEAD = struct.Struct("<4sBIdd")  # magic, version, frame count, duration, rate
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
#: frames are mean-pooled to a short side of about this many pixels before PDQ (whose tent
#: filter ends at 64x64 anyway): 480p costs a ninth of the filter work
POOL_SIDE = 128


@dataclasses.dataclass(frozen=True, eq=False)
class VideoSignals:
    """Frame signals of one video, in time order.

    ``codes`` (n, 32) uint8 are the PDQ hashes (Meta's byte order, as ``bytes.fromhex(hex)``);
    ``mirrored`` the hashes of the horizontally mirrored frames (queries only; not stored);
    ``scene_cut`` whether a frame starts a shot (queries only).
    """

    codes: np.ndarray
    quality: np.ndarray
    timestamps: np.ndarray
    frames: np.ndarray
    duration: float
    rate: float
    mirrored: np.ndarray | None = None
    scene_cut: np.ndarray | None = None
    #: the rate a bank keeps (:meth:`thin`); a query is sampled denser than that (see
    #: :mod:`vigil.media.video`), None when the frames are already the stored form
    store_rate: float | None = None

    def __len__(self) -> int:
        return len(self.codes)

    def hex(self, i: int) -> str:
        return bytes(self.codes[i]).hex()

    def summary(self) -> dict[str, t.Any]:
        """What ``vigil hash --json`` reports for a video: its stored (banked, exported) frame
        signals, and how many frames a query of it uses."""
        stored = self.thin()
        q = stored.quality
        return {
            "frames": len(stored),
            "rate": stored.rate,
            "duration": round(self.duration, 3),
            "scene_frames": int(stored.scene_cut.sum()) if stored.scene_cut is not None else None,
            "low_quality_frames": int((q < 50).sum()) if len(q) else 0,
            "stored_bytes": len(stored.pack()),
            "query_frames": len(self),
            "query_rate": self.rate,
        }

    def thin(self, rate: float | None = None) -> VideoSignals:
        """The stored form: one frame per ``1/rate`` s (the first at or after each grid time)
        plus every scene-change frame. ``rate`` defaults to ``store_rate``; a no-op when the
        frames are no denser than that already."""
        rate = rate or self.store_rate
        if rate is None or rate >= self.rate or not len(self):
            return self
        grid = np.floor(self.timestamps * rate + 1e-6).astype(np.int64)
        first = np.concatenate([[True], grid[1:] != grid[:-1]])
        keep = first | (self.scene_cut if self.scene_cut is not None else False)
        idx = np.flatnonzero(keep)
        return dataclasses.replace(
            self, codes=self.codes[idx], quality=self.quality[idx],
            timestamps=self.timestamps[idx], frames=self.frames[idx], rate=rate,
            mirrored=None if self.mirrored is None else self.mirrored[idx],
            scene_cut=None if self.scene_cut is None else self.scene_cut[idx], store_rate=None)

    # -- vPDQ text -------------------------------------------------------------------------------
    def to_vpdq(self) -> str:
        """Meta's vPDQ text form: ``frame_number,pdq_hex,quality,timestamp`` per line (of the
        stored form, :meth:`thin`)."""
        if self.store_rate is not None and self.store_rate < self.rate:
            return self.thin().to_vpdq()
        return "".join(
            f"{int(f)},{bytes(c).hex()},{int(q)},{ts:.3f}\n"
            for f, c, q, ts in zip(self.frames, self.codes, self.quality, self.timestamps)
        )

    @classmethod
    def from_vpdq(cls, text: str, *, rate: float | None = None) -> VideoSignals:
        """Parse vPDQ text (blank lines and ``#`` comments skipped). Any bad line raises
        :class:`ImportFormatError` with its number; frames are put in time order."""
        rows: list[tuple[int, bytes, int, float]] = []
        for no, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            parts = [p.strip() for p in line.split(",")]
            if len(parts) != 4:
                raise ImportFormatError(
                    f"line {no}: expected frame_number,pdq_hex,quality,timestamp, got {len(parts)} "
                    "fields", line=no)
            fno, hx, qual, ts = parts
            if not _HEX64.fullmatch(hx):
                raise ImportFormatError(f"line {no}: the PDQ hash must be 64 hex digits", line=no)
            try:
                f_i, q_i, t_f = int(fno), int(qual), float(ts)
            except ValueError:
                raise ImportFormatError(
                    f"line {no}: frame number and quality must be integers, timestamp a number",
                    line=no) from None
            if f_i < 0 or not 0 <= q_i <= 100 or not 0 <= t_f < 1e7:
                raise ImportFormatError(
                    f"line {no}: frame number >= 0, quality 0-100 and timestamp >= 0 expected",
                    line=no)
            rows.append((f_i, bytes.fromhex(hx), q_i, t_f))
        if not rows:
            raise ImportFormatError("no frames in the vPDQ text", line=0)
        rows.sort(key=lambda r: (r[3], r[0]))
        ts_arr = np.array([r[3] for r in rows], np.float64)
        if rate is None:  # the sampling rate the hashes were made at, for the record
            gaps = np.diff(ts_arr)
            gaps = gaps[gaps > 0]
            rate = float(1.0 / np.median(gaps)) if len(gaps) else 1.0
        return cls(
            codes=np.frombuffer(b"".join(r[1] for r in rows), np.uint8).reshape(-1, 32).copy(),
            quality=np.array([r[2] for r in rows], np.uint8),
            timestamps=ts_arr,
            frames=np.array([r[0] for r in rows], np.int64),
            duration=float(ts_arr[-1]) + 1.0 / max(rate, 1e-3),
            rate=round(rate, 3),
        )

    # -- storage ---------------------------------------------------------------------------------
    def pack(self) -> bytes:
        """The compact stored form (see the module docstring) of :meth:`thin`'s frames."""
        if self.store_rate is not None and self.store_rate < self.rate:
            return self.thin().pack()
        n = len(self)
        ms = np.round(self.timestamps * 1000).astype(np.int64)
        deltas = np.concatenate([np.diff(ms, prepend=0), np.diff(self.frames, prepend=0)])
        if len(deltas) and (deltas.min() < -(2**31) or deltas.max() >= 2**31):
            raise InvalidSignal("frame numbers or timestamps out of range for storage")
        tail = zlib.compress(deltas.astype("<i4").tobytes(), 9)
        return b"".join([
            _HEAD.pack(_MAGIC, FORMAT_VERSION, n, self.duration, self.rate),
            np.ascontiguousarray(self.codes, np.uint8).tobytes(),
            np.ascontiguousarray(self.quality, np.uint8).tobytes(),
            tail,
        ])

    @classmethod
    def unpack(cls, blob: bytes) -> VideoSignals:
        try:
            magic, version, n, duration, rate = _HEAD.unpack_from(blob, 0)
        except struct.error as exc:
            raise InvalidSignal("stored video signals are truncated") from exc
        if magic != _MAGIC or version != FORMAT_VERSION:
            raise InvalidSignal(f"stored video signals: unknown format {magic!r} v{version}")
        off = _HEAD.size
        codes = np.frombuffer(blob, np.uint8, n * 32, off).reshape(n, 32)
        quality = np.frombuffer(blob, np.uint8, n, off + n * 32)
        try:
            deltas = np.frombuffer(zlib.decompress(blob[off + n * 33:]), "<i4").astype(np.int64)
        except zlib.error as exc:
            raise InvalidSignal("stored video signals are corrupt") from exc
        if len(deltas) != 2 * n:
            raise InvalidSignal("stored video signals are corrupt")
        return cls(codes=codes, quality=quality, timestamps=np.cumsum(deltas[:n]) / 1000.0,
                   frames=np.cumsum(deltas[n:]), duration=duration, rate=rate)


def hash_frames(frames: t.Iterable[SampledFrame], *, rate: float, duration: float | None = None,
                trim: t.Callable[[np.ndarray], tuple[int, int, int, int]] | None = None,
                store_rate: float | None = None) -> VideoSignals:
    """PDQ of each sampled frame, plus its mirror image's. ``trim`` finds a frame's uniform
    borders (:func:`vigil.media.image.find_borders`; passed in because signals sit above
    media in the layering), which are cut off before hashing."""
    codes: list[bytes] = []
    mirrored: list[bytes] = []
    quality: list[int] = []
    stamps: list[float] = []
    numbers: list[int] = []
    cuts: list[bool] = []
    for fr in frames:
        y = fr.luma
        if trim is not None:
            top, bottom, left, right = trim(y)
            y = y[top:bottom, left:right]
        rows, cols = y.shape
        k = min(rows, cols) // POOL_SIDE
        if k >= 2:
            # k x k box average first (Pillow's reduce, in C; the filter is told the full size,
            # as for a JPEG's scaled decode): a fraction of the tent filter's work for the same
            # hash within a few bits
            small = np.asarray(Image.fromarray(np.ascontiguousarray(y)).reduce(k))
            coeffs, q = pdq_dct(small, full_size=(rows, cols))
        else:
            coeffs, q = pdq_dct(y)
        variants = dihedral_hashes_pair(coeffs)
        codes.append(bytes.fromhex(variants[0]))
        mirrored.append(bytes.fromhex(variants[1]))
        quality.append(q)
        stamps.append(fr.timestamp)
        numbers.append(fr.frame)
        cuts.append(fr.scene_cut)
    n = len(codes)
    ts = np.array(stamps, np.float64)
    return VideoSignals(
        codes=np.frombuffer(b"".join(codes), np.uint8).reshape(n, 32).copy(),
        quality=np.array(quality, np.uint8),
        timestamps=ts,
        frames=np.array(numbers, np.int64),
        duration=float(duration if duration is not None else (ts[-1] + 1.0 / rate if n else 0.0)),
        rate=rate,
        mirrored=np.frombuffer(b"".join(mirrored), np.uint8).reshape(n, 32).copy(),
        scene_cut=np.array(cuts, bool),
        store_rate=store_rate,
    )


_MIRROR = np.where(np.arange(16) % 2 == 0, -1.0, 1.0)


def dihedral_hashes_pair(coeffs: np.ndarray) -> tuple[str, str]:
    """The hash of the frame and of its left-right mirror image, from the same DCT (mirroring
    the columns negates the odd DCT frequencies, see :mod:`vigil.signals.pdq`)."""
    return _bits_to_hex(coeffs), _bits_to_hex(coeffs * _MIRROR[None, :])
