"""PDQ: Meta's 256-bit perceptual image hash, computed in NumPy.

The algorithm follows Meta's reference (``pdq/cpp/hashing/pdqhashing.cpp``):

1. luminance ``Y = 0.299 R + 0.587 G + 0.114 B`` as float;
2. two X,Y passes of a 1-D box filter (a tent filter, Jarosz 2001) whose window is
   ``ceil(dimension / 128)``;
3. decimation to 64x64 by sampling the centre of each cell;
4. the quality metric: summed quantised gradients of the 64x64 buffer / 90, capped at 100;
5. a 16x64 DCT matrix ``D`` (frequencies 1..16, no DC) and ``B = D A Dᵀ``;
6. bit ``k = 16 i + j`` is set when ``B[i, j]`` exceeds the (lower) median of ``B``.

The hex form is Meta's: the 256-bit integer whose bit ``k`` is set, as 64 lower-case hex digits,
most significant first.

Two things make this faster than the reference path without changing the result beyond a few bits:
the decoder (:mod:`vigil.media.image`) asks JPEG for a DCT-domain downscale (libjpeg's scaled
decode) and decodes only the luma plane, and the box filter runs on cumulative sums. The box
window is scaled to the decoded size, so the tent filter covers the same part of the picture as the
reference's on the full-size image.

Dihedral variants (flips, 90° rotations) come from sign flips and transposes of ``B`` (the DCT basis
is even or odd about the centre), so matching all 8 orientations costs one hash, not eight.
"""

from __future__ import annotations

import functools
import re
import typing as t

import numpy as np

from vigil.errors import InvalidSignal
from vigil.signals.base import ImageHasher, Signal

if t.TYPE_CHECKING:
    from vigil.media.image import DecodedImage

__all__ = [
    "DIHEDRAL_VARIANTS",
    "LOW_QUALITY",
    "PdqSignal",
    "dihedral_hashes",
    "hash_luma",
    "hex_to_bytes",
    "pdq_dct",
]

#: below this quality a PDQ hash is kept and reported, but never used for perceptual matching
LOW_QUALITY = 50

_DCT = (
    np.sqrt(2.0 / 64.0)
    * np.cos((np.pi / 2 / 64.0) * np.outer(np.arange(1, 17), 2 * np.arange(64) + 1))
).astype(np.float64)

# Frequency k+1 of the DCT basis is even about the centre for odd k+1 and odd for even k+1:
# mirroring an axis multiplies coefficient k by (-1)**(k+1).
_MIRROR = np.where(np.arange(16) % 2 == 0, -1.0, 1.0)


@functools.lru_cache(maxsize=512)
def _sample_weights(full_n: int, red_n: int) -> np.ndarray:
    """Weights that give the reference's 64 filtered samples along one axis from a decode of
    ``red_n`` pixels of an axis that has ``full_n`` pixels at full resolution.

    The reference box-filters the whole picture twice (mean over the clipped window
    ``[o + half - w, o + half - 1]``, ``half = (w + 2) // 2``, ``w = ceil(full_n / 128)``), then
    keeps 64 samples. Both passes are linear, so each kept sample is a fixed weighting of the input
    row (or column): we compute those weights once per size, on the full-resolution grid, and sum
    them over the pixels that each downscaled pixel stands for. Returned as a dense (64, red_n)
    float32 matrix: one BLAS product per axis beats any sparse gather at these sizes.
    """
    w = -(-full_n // 128)
    half = (w + 2) // 2
    q = np.arange(full_n)
    lo = np.clip(q + half - w, 0, full_n)
    hi = np.clip(q + half, 0, full_n)
    inv = 1.0 / (hi - lo)
    samples = ((np.arange(64) + 0.5) * full_n / 64).astype(np.int64)
    # first pass: sample o averages its window; second pass: each q in that window spreads
    # weight 1/cnt(q) over its own window (difference array, then cumulative sum)
    diff = np.zeros((64, full_n + 1))
    for o, s in enumerate(samples):
        qs = np.arange(lo[s], hi[s])
        val = inv[s] * inv[qs]
        np.add.at(diff[o], lo[qs], val)
        np.add.at(diff[o], hi[qs], -val)
    full = np.cumsum(diff[:, :-1], axis=1)
    if red_n != full_n:
        block = np.minimum(red_n - 1, (q * red_n) // full_n)
        red = np.zeros((64, red_n))
        for o in range(64):
            red[o] = np.bincount(block, weights=full[o], minlength=red_n)
        full = red
    return full.astype(np.float32)


def pdq_dct(luma: np.ndarray, *, full_size: tuple[int, int] | None = None) -> tuple[np.ndarray, int]:
    """Return the 16x16 DCT coefficients and the quality of a float luma image (rows x cols).

    ``full_size`` is the (rows, cols) of the original picture when ``luma`` is a downscaled decode
    of it; the tent filter is then applied as the reference applies it to the full picture.
    """
    rows, cols = luma.shape
    full_rows, full_cols = full_size or (rows, cols)
    a64 = (
        _sample_weights(full_rows, rows)
        @ luma.astype(np.float32, copy=False)
        @ _sample_weights(full_cols, cols).T
    ).astype(np.float64)
    quality = _quality(a64)
    return _DCT @ a64 @ _DCT.T, quality


def _quality(a64: np.ndarray) -> int:
    dv = np.trunc((a64[:-1, :] - a64[1:, :]) * 100 / 255)
    dh = np.trunc((a64[:, :-1] - a64[:, 1:]) * 100 / 255)
    grad = int(np.abs(dv).sum() + np.abs(dh).sum())
    return min(100, grad // 90)


def _bits_to_hex(coeffs: np.ndarray) -> str:
    flat = coeffs.reshape(256)
    median = np.partition(flat, 127)[127]  # the reference's Torben median is the lower median
    bits = flat > median
    return np.packbits(bits[::-1]).tobytes().hex()


def hash_luma(luma: np.ndarray, *, full_size: tuple[int, int] | None = None) -> tuple[str, int]:
    """PDQ hex and quality of a float luma image."""
    coeffs, quality = pdq_dct(luma, full_size=full_size)
    return _bits_to_hex(coeffs), quality


#: variant name -> function of the DCT of the *query* giving the DCT of the picture the query
#: would be if the named edit were undone. Names describe the edit seen in the query relative to
#: the banked picture: ``rot90`` is "the query is the banked picture turned 90° clockwise",
#: ``flip-x`` is "mirrored left-right", ``flip-y`` "mirrored top-bottom", ``transpose`` is a
#: mirror about the main diagonal and ``transverse`` about the anti-diagonal.
_UNDO: dict[str, t.Callable[[np.ndarray], np.ndarray]] = {
    "original": lambda c: c,
    "flip-x": lambda c: c * _MIRROR[None, :],
    "flip-y": lambda c: c * _MIRROR[:, None],
    "rot180": lambda c: c * _MIRROR[:, None] * _MIRROR[None, :],
    "transpose": lambda c: c.T,
    "transverse": lambda c: (c * _MIRROR[:, None] * _MIRROR[None, :]).T,
    # undo a clockwise turn: turn counter-clockwise = transpose, then mirror top-bottom
    "rot90": lambda c: c.T * _MIRROR[:, None],
    "rot270": lambda c: c.T * _MIRROR[None, :],
}
DIHEDRAL_VARIANTS: tuple[str, ...] = tuple(_UNDO)


def dihedral_hashes(coeffs: np.ndarray) -> dict[str, str]:
    """The 8 hashes of the query's orientations, keyed by the edit each one undoes."""
    return {name: _bits_to_hex(undo(coeffs)) for name, undo in _UNDO.items()}


def hex_to_bytes(value: str) -> bytes:
    return bytes.fromhex(value)


_HEX64 = re.compile(r"[0-9a-f]{64}")
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


class PdqSignal(ImageHasher):
    """PDQ perceptual hash of an image, in Meta's 64-hex form."""

    name = "pdq"
    content_kinds = ("image",)
    distance_kind = "hamming"
    default_threshold = 31
    max_threshold = 96
    examples = (
        "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22",
        "0000000000000000000000000000000000000000000000000000000000000000",
        "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    )

    @classmethod
    def validate(cls, value: str) -> str:
        v = value.strip().lower()
        if len(v) != 64:
            raise InvalidSignal(
                f"pdq value must be 64 hex digits, got {len(v)} characters", value=value
            )
        # not int(v, 16): that also takes "0x", "+", "_" and non-ASCII digits
        if not _HEX64.fullmatch(v):
            raise InvalidSignal(f"pdq value must be hexadecimal, got {value!r}", value=value)
        return v

    code_size = 32

    @classmethod
    def to_code(cls, value: str) -> bytes:
        return bytes.fromhex(value)

    @classmethod
    def indexable(cls, signal: Signal) -> bool:
        return signal.quality is None or signal.quality >= LOW_QUALITY

    @classmethod
    def distance(cls, a: str, b: str) -> int:
        x = np.frombuffer(bytes.fromhex(a), np.uint8) ^ np.frombuffer(bytes.fromhex(b), np.uint8)
        return int(_POPCOUNT[x].sum())

    @classmethod
    def hash_image(cls, image: DecodedImage) -> list[Signal]:
        """The trimmed-border hash first (what banks and queries use), then the untrimmed hash
        when trimming changed the picture and the hashes differ."""
        return cls.analyse(image)[0]

    @classmethod
    def query_hashes(cls, image: DecodedImage) -> tuple[dict[str, str], int]:
        """The 8 dihedral hashes of the trimmed picture and its quality, for matching."""
        _, dihedral, quality = cls.analyse(image)
        return dihedral, quality

    @classmethod
    def analyse(cls, image: DecodedImage) -> tuple[list[Signal], dict[str, str], int]:
        """Signals to store, and the query hashes keyed by the variant each one stands for.

        One DCT of the border-trimmed picture gives the canonical hash and its 8 dihedral query
        hashes (``trimmed``, ``trimmed+flip-x``, ... when borders were trimmed; ``original``,
        ``flip-x``, ... otherwise). When borders were trimmed, a second DCT of the whole picture
        adds the untrimmed hash and its 8 variants (plain names): a partner's hash of the same file,
        computed without trimming, must still match. The quality returned is the better of the two.
        """
        coeffs, quality = pdq_dct(image.trimmed_luma(), full_size=image.trimmed_full_size())
        dihedral = dihedral_hashes(coeffs)
        value = dihedral["original"]
        out = [Signal(cls.name, value, quality, "trimmed" if image.was_trimmed else None)]
        if not image.was_trimmed:
            return out, dihedral, quality
        queries = {
            ("trimmed" if name == "original" else f"trimmed+{name}"): h
            for name, h in dihedral.items()
        }
        raw_coeffs, raw_quality = pdq_dct(image.luma, full_size=image.full_size)
        raw = dihedral_hashes(raw_coeffs)
        if raw["original"] != value:
            out.append(Signal(cls.name, raw["original"], raw_quality, "untrimmed"))
            queries.update(raw)
        return out, queries, max(quality, raw_quality)
