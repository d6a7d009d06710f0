"""Video frame signals: a PDQ hash per sampled frame, with its time and quality (vPDQ-style).

A video's signal is not one value but a sequence: for each sampled frame (about one a second plus
the first frame of each shot, see :mod:`vigil.media.video`) the PDQ hash of the frame with its
uniform borders (letterbox, pillarbox) trimmed, the PDQ quality, the presentation time and the
frame number. The hashing reuses :mod:`vigil.signals.pdq` as is: one DCT per frame gives the
stored hash and, for queries, the mirrored hash (a horizontally flipped re-upload). Bars are cut off first: by the box
:func:`vigil.media.video.shot_boxes` found for the frame's shot (bars are constant within a shot,
so bars that come and go between shots are handled shot by shot), or by a trim of the frame on
its own when no such box is given.

Three forms:

* :class:`VideoSignals` in memory (NumPy arrays: cheap to index and to pack);
* the vPDQ text form of Meta's tools, one frame per line ``frame_number,pdq_hex,quality,timestamp``
  (timestamp in seconds with 3 decimals), so vPDQ hashes can be banked and ours shared
  (:meth:`VideoSignals.to_vpdq`, :meth:`VideoSignals.from_vpdq`);
* a compact binary form for the store (:meth:`VideoSignals.pack`): the hashes as 32 raw bytes
  each, the qualities as one byte each, the crop codes (below) as 8 bytes each, and frame
  numbers and timestamps delta-coded and zlib-compressed (they are nearly regular, so they
  shrink to a byte or two a frame). About 43 bytes a frame, i.e. about 50 bytes per second of
  video at the default rate, under the budget of 64. Format 1 (no crop codes) is what imported
  vPDQ hashes are stored as, and is still read.

Crop codes. Frame PDQ does not survive a crop (see the section "crop codes" below for the
numbers), so each frame also gets a 64-bit code of the low frequencies of its central box; a
query computes the same code for a grid of 225 boxes, one of which is where the banked centre
box sits in a frame cropped by up to 10% a side. They are not part of the vPDQ text form.
"""

from __future__ import annotations

import dataclasses
import functools
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

#: 1: frames only (e.g. imported vPDQ); 2: frames and their crop codes (see below)
FORMAT_VERSION = 2
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
    #: (n, 8) crop code of each frame's central box (stored; None for imported vPDQ hashes)
    crops: np.ndarray | None = None
    #: (n, boxes, 8) crop codes of the query's grid of boxes (queries only; not stored)
    crop_grid: np.ndarray | None = None

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
            scene_cut=None if self.scene_cut is None else self.scene_cut[idx], store_rate=None,
            crops=None if self.crops is None else self.crops[idx],
            crop_grid=None if self.crop_grid is None else self.crop_grid[idx])

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
        crops = b"" if self.crops is None else np.ascontiguousarray(self.crops, np.uint8).tobytes()
        return b"".join([
            _HEAD.pack(_MAGIC, 2 if crops else 1, n, self.duration, self.rate),
            np.ascontiguousarray(self.codes, np.uint8).tobytes(),
            np.ascontiguousarray(self.quality, np.uint8).tobytes(),
            crops,
            tail,
        ])

    @classmethod
    def unpack(cls, blob: bytes) -> VideoSignals:
        try:
            magic, version, n, duration, rate = _HEAD.unpack_from(blob, 0)
        except struct.error as exc:
            raise InvalidSignal("stored video signals are truncated") from exc
        if magic != _MAGIC or version not in (1, 2):
            raise InvalidSignal(f"stored video signals: unknown format {magic!r} v{version}")
        off = _HEAD.size
        crop_len = n * CROP_BYTES if version == 2 else 0
        if len(blob) < off + n * 33 + crop_len:
            raise InvalidSignal("stored video signals are truncated")
        codes = np.frombuffer(blob, np.uint8, n * 32, off).reshape(n, 32)
        quality = np.frombuffer(blob, np.uint8, n, off + n * 32)
        crops = (np.frombuffer(blob, np.uint8, crop_len, off + n * 33).reshape(n, CROP_BYTES)
                 if version == 2 else None)
        try:
            deltas = np.frombuffer(zlib.decompress(blob[off + n * 33 + crop_len:]),
                                   "<i4").astype(np.int64)
        except zlib.error as exc:
            raise InvalidSignal("stored video signals are corrupt") from exc
        if len(deltas) != 2 * n:
            raise InvalidSignal("stored video signals are corrupt")
        return cls(codes=codes, quality=quality, timestamps=np.cumsum(deltas[:n]) / 1000.0,
                   frames=np.cumsum(deltas[n:]), duration=duration, rate=rate, crops=crops)


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
    grids: list[np.ndarray] = []
    for fr in frames:
        y = fr.luma
        # the shot's bar box when the decoder found one (vigil.media.video.shot_boxes: bars
        # are constant over a shot, picture is not), else this frame's own trim
        box = getattr(fr, "box", None)
        if box is None and trim is not None:
            box = trim(y)
        if box is not None:
            top, bottom, left, right = box
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
            small = y
            coeffs, q = pdq_dct(y)
        # crop codes from a further 2x2 reduction (32 cells per box need no more pixels)
        k2 = min(small.shape) // (POOL_SIDE // 2)
        grids.append(crop_codes(
            np.asarray(Image.fromarray(np.ascontiguousarray(small)).reduce(k2)) if k2 >= 2
            else small, query=True))
        variants = dihedral_hashes_pair(coeffs)
        codes.append(bytes.fromhex(variants[0]))
        mirrored.append(bytes.fromhex(variants[1]))
        quality.append(q)
        stamps.append(fr.timestamp)
        numbers.append(fr.frame)
        cuts.append(fr.scene_cut)
    n = len(codes)
    ts = np.array(stamps, np.float64)
    grid = (np.stack(grids) if grids else np.zeros((0, len(_axis_boxes(True)) ** 2, CROP_BYTES),
                                                   np.uint8))
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
        crops=grid[:, _centre_box()].copy(),
        crop_grid=grid,
    )


_MIRROR = np.where(np.arange(16) % 2 == 0, -1.0, 1.0)


# -- crop codes -----------------------------------------------------------------------------------
# PDQ of a frame moves 35 bits when the picture shifts by 1% of its width and 100 bits at 3%
# (measured on corpus frames), so a cropped re-upload cannot be matched by hashing "the
# query's version" of a banked region on any practical grid of guesses. What survives such
# shifts is the lowest part of the spectrum: a 64-bit code from the 8x8 lowest DCT frequencies
# (1-8, as PDQ's, without DC) of a region moves 2-4 bits under a shift of 2.5% of the region.
# So a bank stores, per stored frame, that code of the frame's central CROP_KEEP box (8 bytes),
# and a query hashes the same code for a grid of boxes: every box of side 0.8-1.0 of the frame
# (per axis, in steps of CROP_STEP) that could be the banked centre box after a crop of up to
# (1 - CROP_KEEP) / 2 per side. The whole grid is two matrix products per frame: each axis has
# a fixed (boxes x 8, pixels) matrix that resamples a box to 32 cells and takes the 8 DCT
# frequencies, so all boxes' 8x8 coefficients are blocks of My @ Y @ Mx^T.

#: side of the banked central box, as a share of the frame (per axis)
CROP_KEEP = 0.8
#: grid step of the query's box sides and positions (share of the frame)
CROP_STEP = 0.05
CROP_BYTES = 8
_CELLS = 32
_DCT8 = np.cos((np.pi / 2 / _CELLS) * np.outer(np.arange(1, 9), 2 * np.arange(_CELLS) + 1))


def _axis_boxes(query: bool) -> list[tuple[float, float]]:
    """(start, side) shares along one axis: the banked centre box, or the query's grid."""
    if not query:
        return [((1 - CROP_KEEP) / 2, CROP_KEEP)]
    out = []
    for k in range(round((1 - CROP_KEEP) / CROP_STEP) + 1):
        side = CROP_KEEP + k * CROP_STEP
        for j in range(round((1 - side) / CROP_STEP) + 1):
            out.append((j * CROP_STEP, side))
    return out


@functools.lru_cache(maxsize=64)
def _axis_matrix(n: int, query: bool) -> np.ndarray:
    """(boxes * 8, n): pixel line -> the 8 low DCT frequencies of each box resampled to 32
    cells (area-weighted, so fractional cell edges are exact)."""
    p = np.arange(n, dtype=np.float64)
    mats = []
    for start, side in _axis_boxes(query):
        edges = (start + side * np.arange(_CELLS + 1) / _CELLS) * n
        e0, e1 = edges[:-1, None], edges[1:, None]
        w = np.clip(np.minimum(p[None, :] + 1, e1) - np.maximum(p[None, :], e0), 0, None)
        w /= np.maximum(w.sum(axis=1, keepdims=True), 1e-9)
        mats.append(_DCT8 @ w)
    return np.concatenate(mats).astype(np.float32)


@functools.lru_cache(maxsize=1)
def _centre_box() -> int:
    """Position of the banked centre box in the query grid (rows x columns of boxes)."""
    boxes = _axis_boxes(True)
    i = min(range(len(boxes)), key=lambda k: abs(boxes[k][0] - (1 - CROP_KEEP) / 2)
            + abs(boxes[k][1] - CROP_KEEP))
    return i * len(boxes) + i


def crop_codes(luma: np.ndarray, *, query: bool) -> np.ndarray:
    """Crop codes of one (pooled) luma frame: (1, 8) uint8 for a bank (the central box), or
    (boxes, 8) for a query (every box of the grid, see above)."""
    y = np.asarray(luma, np.float32)
    my, mx = _axis_matrix(y.shape[0], query), _axis_matrix(y.shape[1], query)
    coeffs = (my @ y @ mx.T).reshape(my.shape[0] // 8, 8, mx.shape[0] // 8, 8)
    blocks = coeffs.transpose(0, 2, 1, 3).reshape(-1, 64)
    part = np.partition(blocks, (31, 32), axis=1)
    med = (part[:, 31:32] + part[:, 32:33]) / 2  # the median of 64, cheaper than np.median
    return np.packbits(blocks > med, axis=1)


def dihedral_hashes_pair(coeffs: np.ndarray) -> tuple[str, str]:
    """The hash of the frame and of its left-right mirror image, from the same DCT (mirroring
    the columns negates the odd DCT frequencies, see :mod:`vigil.signals.pdq`)."""
    return _bits_to_hex(coeffs), _bits_to_hex(coeffs * _MIRROR[None, :])
