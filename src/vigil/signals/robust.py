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
    "find_embedded",
    "pack_payload",
    "unpack_payload",
]

MAX_SIDE = 640
#: small pictures are enlarged to this long side: FAST finds more keypoints on a picture embedded
#: small in another (picture-in-picture) when the query is enlarged to 640 first
MIN_SIDE = 640
QUERY_FEATURES = 1000
#: keypoints the mirrored query re-describes (see RobustAnalysis.mirrored)
MIRROR_FEATURES = 400
#: keypoints of an embedded region cut out of a query (see RobustAnalysis.regions): the
#: REGION_FEATURES spread over it (spread_order) of the REGION_DETECT strongest
REGION_FEATURES = 400
REGION_DETECT = 800
#: long side an embedded region is described at
REGION_SIDE = 640
REGION_MIN_SIDE = 480
#: FAST corner threshold of ORB (grey levels): a low one finds corners in blurred and
#: low-contrast pictures, which the query's own features must
FAST_THRESHOLD = 12
#: ...but an embedded region is cut out at full resolution, where its corners are sharp: a higher
#: threshold there skips weak corners that ORB would score and then drop. Measured side by side
#: (docs/robustness.md): the same embedded pictures found, ~10% less CPU per negative query
REGION_FAST = 25
#: a region is re-hashed with PDQ at this square size (see Region.pdq)
REGION_PDQ_SIDE = 256
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
    #: where this picture's (0, 0) lies in the query's coordinates (a region cut out of it)
    origin: tuple[float, float] = (0.0, 0.0)
    #: the keypoints' (x, y, size, angle, response, octave), query side only: the mirrored query
    #: re-describes them (plain numbers, not cv2.KeyPoint: results are pickled between processes)
    keypoints: np.ndarray | None = dataclasses.field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.xy)


def _orb(n: int, fast: int | None = None) -> t.Any:
    import cv2

    return cv2.ORB_create(  # type: ignore[attr-defined]
        nfeatures=n, scaleFactor=1.2, nlevels=8, edgeThreshold=19, patchSize=19,
        fastThreshold=FAST_THRESHOLD if fast is None else fast)


def prepare_luma(luma: np.ndarray, side: int | None = None) -> tuple[np.ndarray, float]:
    """uint8 grey at a long side within [MIN_SIDE, MAX_SIDE] (or exactly ``side``); and the
    factor back to ``luma``."""
    import cv2

    rows, cols = luma.shape
    long = max(rows, cols)
    target = side or min(MAX_SIDE, max(MIN_SIDE, long))
    f = target / long
    grey = np.clip(luma, 0, 255).astype(np.uint8)
    if abs(f - 1.0) > 1e-3:
        size = (max(1, round(cols * f)), max(1, round(rows * f)))
        grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
    return grey, 1.0 / f


def extract_features(grey: np.ndarray, n: int = QUERY_FEATURES, scale: float = 1.0,
                     fast: int | None = None) -> LocalFeatures:
    """ORB keypoints and descriptors of a uint8 grey picture, strongest first; ``fast``: the
    FAST corner threshold (grey levels, default ``FAST_THRESHOLD``)."""
    import cv2

    try:
        kps, desc = _orb(n, fast).detectAndCompute(grey, None)
    except cv2.error as exc:  # a degenerate picture (e.g. 1 px high) is a media problem
        raise MediaError(f"cannot compute local features: {exc}") from exc
    if desc is None or not kps:
        return LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8),
                             grey.shape[:2], scale)
    return _features(kps, desc, grey.shape[:2], scale)


def _features(kps: t.Sequence[t.Any], desc: np.ndarray, size: tuple[int, int],
              scale: float) -> LocalFeatures:
    # one pass over the OpenCV objects (each attribute read is a Python call), then arrays
    kp = np.array([(k.pt[0], k.pt[1], k.size, k.angle, k.response, k.octave) for k in kps],
                  np.float64).reshape(-1, 6)
    order = np.argsort(-kp[:, 4], kind="stable")
    kp = kp[order]
    xy = kp[:, :2].astype(np.float32)
    octave = kp[:, 5].astype(np.int16)
    return LocalFeatures(xy, np.ascontiguousarray(desc[order]), size, scale, octave, keypoints=kp)


def mirror_features(grey: np.ndarray, f: LocalFeatures) -> LocalFeatures:
    """The features of the mirrored picture ``grey[:, ::-1]``, from ``f`` (the picture's own).

    FAST corners and the Harris score are mirror-symmetric, so the mirrored picture has the same
    keypoints mirrored (x -> w - 1 - x, orientation -> 180 - orientation); only the descriptors
    must be computed again (BRIEF's sampling pattern is not symmetric). Describing known keypoints
    costs about half of detecting them anew. Falls back to a fresh detection when ``f`` does not
    carry its OpenCV keypoints (features read back from a payload)."""
    import cv2

    mirrored = np.ascontiguousarray(grey[:, ::-1])
    if f.keypoints is None:
        return extract_features(mirrored, max(len(f), 1), f.scale)
    w = grey.shape[1]
    # (from Python floats: numpy scalars as arguments cost twice as much)
    mk = [cv2.KeyPoint(w - 1 - x, y, sz, (180.0 - ang) % 360.0, resp, int(octv))
          for x, y, sz, ang, resp, octv in f.keypoints.tolist()]
    try:
        kps, desc = _orb(max(len(mk), 1)).compute(mirrored, mk)
    except cv2.error as exc:
        raise MediaError(f"cannot compute local features: {exc}") from exc
    if desc is None or not kps:
        return LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8),
                             grey.shape[:2], f.scale)
    return _features(kps, desc, grey.shape[:2], f.scale)


def spread_order(f: LocalFeatures, k: int) -> np.ndarray:
    """Indices of ``k`` keypoints of ``f`` (strongest first), taken round-robin from a 4x4 grid of
    cells and three pyramid-level bands, strongest first in each, in ascending index order."""
    if len(f) <= k:
        return np.arange(len(f))
    rows, cols = f.size
    cell = (np.minimum(3, (f.xy[:, 1] * 4 // max(rows, 1)).astype(int)) * 4
            + np.minimum(3, (f.xy[:, 0] * 4 // max(cols, 1)).astype(int)))
    if f.octave is not None:
        # fine levels dominate by count; coarse ones are what survives a strong downscale
        # (picture-in-picture), so they get cells of their own
        cell = cell + 16 * np.minimum(2, f.octave.astype(int) // 2)
    # rank within its cell, in f's order (strongest first): a stable sort by cell keeps that order
    by_cell = np.argsort(cell, kind="stable")
    sc = cell[by_cell]
    start = np.concatenate([[0], np.nonzero(sc[1:] != sc[:-1])[0] + 1])
    first = np.repeat(start, np.diff(np.concatenate([start, [len(sc)]])))
    rank = np.empty(len(f), np.int64)
    rank[by_cell] = np.arange(len(f)) - first
    keep = np.lexsort((np.arange(len(f)), rank))[:k]
    keep.sort()
    return keep


def take(f: LocalFeatures, keep: np.ndarray) -> LocalFeatures:
    """The keypoints ``keep`` (indices) of ``f``, everything else as it is."""
    return dataclasses.replace(f, xy=f.xy[keep], desc=f.desc[keep],
                               octave=None if f.octave is None else f.octave[keep],
                               keypoints=None if f.keypoints is None else f.keypoints[keep])


def select_for_bank(f: LocalFeatures, k: int = BANK_FEATURES) -> LocalFeatures:
    """The ``k`` strongest keypoints, taken round-robin from a 4x4 grid of cells (strongest first
    in each), so every part of the picture keeps some: coverage needs them spread out."""
    if len(f) <= k:
        return f
    keep = spread_order(f, k)
    return LocalFeatures(f.xy[keep], f.desc[keep], f.size, f.scale,
                         f.octave[keep] if f.octave is not None else None)


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


# -- embedded pictures (picture-in-picture, screenshots, screen recordings) ----------------------
#: a strong edge's gradient (3x3 Sobel, grey levels): find_bars' threshold, and the lower of
#: Canny's two in find_embedded (the upper is twice it)
EDGE_GRADIENT = 24
#: an edge pixel counts for a horizontal side when its vertical gradient is this many times its
#: horizontal one (and the other way round)
EDGE_ORIENT = 1.5
#: a side of a candidate rectangle counts when this share of it lies on an edge (none of them
#: may lie below the weak share)
SIDE_COVER = 0.6
WEAK_SIDE_COVER = 0.35
MAX_LINES = 16
THIN_LINES = 4
#: rectangles rank by the mean cover of their sides inside the picture, plus this for each such
#: side, plus AREA_WEIGHT times their share of the picture
SIDE_WEIGHT = 0.05
AREA_WEIGHT = 0.25
MAX_REGIONS = 3
#: rectangles smaller than this share of the picture are not searched (a picture embedded at
#: less than ~25% of the width)...
MIN_REGION_AREA = 0.06
#: ...and the last of the MAX_REGIONS only when it covers this much (a picture embedded at ~35%
#: of the width or more): each region searched costs a negative ~8 ms
LAST_REGION_AREA = 0.10


def _edge_lines(counts: np.ndarray, thin: np.ndarray | None = None) -> list[int]:
    """Positions of the strongest straight edges: local maxima of the per-line count of edge
    pixels inside long runs, at least 5 px apart: the ``MAX_LINES`` strongest, then up to
    ``THIN_LINES`` more by ``thin`` (the count of those pixels with no edge a few lines away on
    either side). A band of texture (grass, water, a brick wall) makes a strong peak every few
    pixels and takes the first slots; the lone edge of an embedded picture is thin."""
    keep: list[int] = []
    for score, limit in ((counts, MAX_LINES), (thin, MAX_LINES + THIN_LINES)):
        if score is None:
            continue
        c = score.astype(np.float32)
        peak = (c >= np.maximum(np.roll(c, 1), np.roll(c, -1))) & (c > 0)
        peak[[0, -1]] = False
        idx = np.nonzero(peak)[0]
        for i in idx[np.argsort(-c[idx], kind="stable")].tolist():
            if len(keep) >= limit:
                break
            if all(abs(i - k) > 4 for k in keep):
                keep.append(i)
    return sorted(keep)


def _as_uint8(grey: np.ndarray) -> np.ndarray:
    return grey if grey.dtype == np.uint8 else np.clip(grey, 0, 255).astype(np.uint8)


def _strong_gradient(grey: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """1 where the Sobel derivative of ``grey`` (uint8) exceeds ``EDGE_GRADIENT`` in magnitude,
    else 0 (uint8). In OpenCV throughout: the same as numpy's abs and compare, without the
    int16 copies."""
    import cv2

    mag = cv2.convertScaleAbs(cv2.Sobel(grey, cv2.CV_16S, dx, dy, ksize=3))
    return cv2.threshold(mag, EDGE_GRADIENT, 1, cv2.THRESH_BINARY)[1]


def _line_edges(grey: np.ndarray) -> tuple[t.Any, t.Any]:
    """Horizontal and vertical edge pixels of ``grey`` (uint8): Canny's edges (thin, one pixel
    across, hysteresis ``EDGE_GRADIENT`` to twice it) whose gradient is mostly vertical (at least
    ``EDGE_ORIENT`` times the horizontal) for the first map, mostly horizontal for the second;
    each widened to 3 pixels across, as a straight side may step by a pixel. 0/1 uint8 maps.

    Thresholded gradient magnitude, used before, marks most of a textured picture as edge (over
    half of a lawn's pixels; see the tests), so grass or a star field beside an embedded picture
    made rows of
    edges as long as the picture's own sides. Canny keeps one pixel per edge, where the
    gradient peaks across it, and an edge pixel counts for one direction only; a texture's
    edges then seldom line up over a side's length. With the ranking below, on the 480
    embedded pictures of four benchmark samples the true rectangle is searched for 425 rather
    than 334, and a negative query searches 1.5 rectangles rather than 2.1
    (benchmarks/embedded_proposals.py, docs/robustness.md "Round 6")."""
    import cv2

    gx = cv2.Sobel(grey, cv2.CV_16S, 1, 0, ksize=3)
    gy = cv2.Sobel(grey, cv2.CV_16S, 0, 1, ksize=3)
    edge = cv2.Canny(gx, gy, EDGE_GRADIENT, 2 * EDGE_GRADIENT)
    ax, ay = np.abs(gx), np.abs(gy)  # int16: a 3x3 Sobel of uint8 is at most 1020
    orient: t.Any = EDGE_ORIENT  # a scalar, which OpenCV's stubs do not list
    horizontal = cv2.compare(ay, cv2.multiply(ax, orient), cv2.CMP_GT)
    vertical = cv2.compare(ax, cv2.multiply(ay, orient), cv2.CMP_GT)
    ey = cv2.bitwise_and(edge, horizontal)
    ex = cv2.bitwise_and(edge, vertical)
    ey = cv2.threshold(cv2.dilate(ey, np.ones((3, 1), np.uint8)), 0, 1, cv2.THRESH_BINARY)[1]
    ex = cv2.threshold(cv2.dilate(ex, np.ones((1, 3), np.uint8)), 0, 1, cv2.THRESH_BINARY)[1]
    return ey, ex


def find_embedded(grey: np.ndarray, limit: int = MAX_REGIONS,
                  min_area: float = 0.0) -> list[tuple[int, int, int, int]]:
    """Rectangles (x0, y0, x1, y1) of ``grey`` that look like a picture embedded in another one.

    A pasted picture, a screenshot or a screen recording shows its reference inside straight
    axis-aligned edges: long rows (columns) of horizontal (vertical) edge pixels
    (:func:`_line_edges`). The strongest such lines, plus the picture's own borders, are combined
    into rectangles; one is kept when its interior sides lie on edges (at least two of them for
    ``SIDE_COVER`` of their length, opposite or three sides; none below ``WEAK_SIDE_COVER``), it
    covers 2-80% of the picture and each side spans 15% of the picture's, and at least
    ``min_area`` of it. The best ``limit`` (best mean cover of the interior sides, then more of
    them, then larger), overlapping ones dropped. Every pair of horizontal lines is scored in one
    array operation (the loop over pairs it replaced cost ~5x as much)."""
    import cv2

    h, w = grey.shape[:2]
    if h < 32 or w < 32:
        return []
    grey = _as_uint8(grey)
    ey: t.Any
    ex: t.Any
    ey, ex = _line_edges(grey)
    # A side is one long straight run of edge pixels; texture is many short ones, and in texture
    # nearly every pixel is an edge. So only pixels inside runs of 12% of the picture (small gaps
    # bridged; a morphological opening keeps such runs whole) count, for finding lines and for
    # scoring the sides; a line may wander by a pixel.
    ey = cv2.morphologyEx(cv2.morphologyEx(ey, cv2.MORPH_CLOSE, np.ones((1, 7), np.uint8)),
                          cv2.MORPH_OPEN, np.ones((1, max(8, int(0.12 * w))), np.uint8))
    ex = cv2.morphologyEx(cv2.morphologyEx(ex, cv2.MORPH_CLOSE, np.ones((7, 1), np.uint8)),
                          cv2.MORPH_OPEN, np.ones((max(8, int(0.12 * h)), 1), np.uint8))
    run_y = ey
    ey = cv2.dilate(ey, np.ones((3, 1), np.uint8))
    ex = cv2.dilate(ex, np.ones((1, 3), np.uint8))
    # prefix sums along each row of ey and down each column of ex, from OpenCV's integral
    # images (several times faster than numpy's cumsum here): ch[y, x] = ey[y, :x].sum()
    iy = cv2.integral(ey)
    ch = iy[1:] - iy[:-1]
    ix = cv2.integral(ex)
    cv = ix[:, 1:] - ix[:, :-1]
    # thin: edge pixels with none 3 lines above and 3 below (texture has them on both sides)
    near = np.zeros_like(run_y)
    near[3:] |= run_y[:-3]
    near[:-3] |= run_y[3:]
    thin = (run_y & (1 - near)).sum(1)
    hs = sorted([(y, True) for y in _edge_lines(run_y.sum(1), thin)] + [(0, False), (h - 1, False)])
    # For each pair of horizontal lines, the columns whose edge runs cover the band between them
    # are the candidate left/right sides (a busy background has longer vertical edges elsewhere,
    # so the strongest columns of the whole picture would miss them); then every rectangle of
    # those is scored at once.
    hy = np.array([y for y, _ in hs])
    hr = np.array([r for _, r in hs])
    i0, i1 = np.triu_indices(len(hy), 1)
    sel = hy[i1] - hy[i0] >= 0.15 * h
    i0, i1 = i0[sel], i1[sel]
    if not len(i0):
        return []
    # All pairs at once (a loop over ~150 pairs of small array operations cost ~20 ms a picture):
    # rows are pairs, columns the picture's columns.
    y0s, y1s = hy[i0], hy[i1]
    col = (cv[y1s] - cv[y0s]) / (y1s - y0s)[:, None]
    peak = (col >= SIDE_COVER) & (col >= np.maximum(np.roll(col, 1, 1), np.roll(col, -1, 1)))
    peak[:, [0, -1]] = False
    # each pair's MAX_LINES best columns (ties: leftmost first), then in left-to-right order
    # between the picture's own sides 0 and w - 1; unused slots sort last and never pair
    # (a partial sort: the MAX_LINES best of each row, then those in order; ties go to the
    # leftmost column: covers are multiples of 1/h, far above the 1e-9 per column added)
    keyed = np.where(peak, np.arange(w) * 1e-9 - col, np.inf)
    if w > MAX_LINES:
        part = np.argpartition(keyed, MAX_LINES, axis=1)[:, :MAX_LINES]
        best = np.take_along_axis(part, np.argsort(np.take_along_axis(keyed, part, 1), axis=1), 1)
    else:
        best = np.argsort(keyed, axis=1, kind="stable")
    used = np.take_along_axis(peak, best, 1)
    far = w + 1000
    vx = np.sort(np.concatenate([np.zeros((len(i0), 1), np.int64), np.where(used, best, far),
                                 np.full((len(i0), 1), w - 1)], 1), axis=1)
    vr = (vx > 0) & (vx < w - 1)
    j0, j1 = np.triu_indices(vx.shape[1], 1)
    x0, x1 = vx[:, j0], vx[:, j1]  # (pairs, combinations)
    okv = (x1 < far) & (x1 - x0 >= 0.15 * w)
    pi, ci = np.nonzero(okv)  # row-major: pair order, then combination order
    if not len(pi):
        return []
    x0, x1 = x0[pi, ci], x1[pi, ci]
    y0, y1 = y0s[pi], y1s[pi]
    cover = np.stack([(ch[y0, x1] - ch[y0, x0]) / (x1 - x0), (ch[y1, x1] - ch[y1, x0]) / (x1 - x0),
                      col[pi, x0], col[pi, x1]])
    real = np.stack([hr[i0][pi], hr[i1][pi], vr[pi, j0[ci]], vr[pi, j1[ci]]])
    strong = real & (cover >= SIDE_COVER)
    area = (x1 - x0) * (y1 - y0) / (w * h)
    ok = (strong.sum(0) >= 3) | (strong[0] & strong[1]) | (strong[2] & strong[3])
    ok &= ~(real & (cover < WEAK_SIDE_COVER)).any(0)
    # a small rectangle is most often a window, a sign or a panel of the picture itself, and the
    # region pass costs ~8 ms a rectangle: one under min_area is not a candidate at all (when
    # they were dropped after ranking instead, windows took the slots of embedded pictures)
    ok &= (area >= max(0.02, min_area)) & (area <= 0.8)
    # best-covered sides first: the mean cover of the sides inside the picture, a little for
    # each such side, and among equals the larger (an inner line of the embedded picture makes
    # smaller rectangles that look as good). A mean, not a sum: four middling sides that a
    # texture lines up (a star field, a lawn) outranked the two perfect edges of an app's
    # chrome when every side added its cover (see the tests, and docs/robustness.md "Round 6")
    score = (np.where(real, cover, 0).sum(0) / np.maximum(real.sum(0), 1)
             + SIDE_WEIGHT * real.sum(0) + AREA_WEIGHT * area)
    idx = np.nonzero(ok)[0]
    idx = idx[np.argsort(-score[idx], kind="stable")]
    # greedy, best first: a rectangle is kept unless it overlaps a kept one (IoU >= 0.6); each
    # kept one strikes its overlaps from the rest in one array operation
    bx = np.stack([x0[idx], y0[idx], x1[idx], y1[idx]], 1).astype(np.int64)
    barea = (bx[:, 2] - bx[:, 0]) * (bx[:, 3] - bx[:, 1])
    alive = np.ones(len(bx), bool)
    keep: list[tuple[int, int, int, int]] = []
    while len(keep) < limit and alive.any():
        k = int(np.argmax(alive))
        r = bx[k]
        keep.append((int(r[0]), int(r[1]), int(r[2]), int(r[3])))
        iw = np.clip(np.minimum(bx[:, 2], r[2]) - np.maximum(bx[:, 0], r[0]), 0, None)
        ih = np.clip(np.minimum(bx[:, 3], r[3]) - np.maximum(bx[:, 1], r[1]), 0, None)
        inter = iw * ih
        union = barea + barea[k] - inter
        alive &= ~(inter >= 0.6 * np.where(union > 0, union, 1))
        alive[k] = False
    return keep


#: a caption bar or banner: a straight edge across this share of the picture's width (height)...
BAR_SPAN = 0.6
#: ...with at most this share of the picture on its far side, most of it within this many grey
#: levels of one value
MAX_BAR = 0.35
BAR_FLAT = 8


def find_bars(grey: np.ndarray) -> list[tuple[int, int, int, int]]:
    """The part of ``grey`` left visible by each caption bar or banner it seems to carry: a
    straight edge across at least ``BAR_SPAN`` of the picture, parallel to a side and at most
    ``MAX_BAR`` of the picture away from it, with at least half of the band beyond it within
    ``BAR_FLAT`` grey levels of its median (a solid bar with text on it), is read as the edge
    of a bar laid over that side.
    Returns boxes (x0, y0, x1, y1) of the picture on the other side of each such edge (the
    strongest one per side, at most four), for verification to measure coverage against what a
    bar did not hide (see :func:`vigil.core.robust.verify`). ~3 ms at 640 px."""
    import cv2

    h, w = grey.shape[:2]
    if h < 32 or w < 32:
        return []
    grey = _as_uint8(grey)
    out = []
    for axis, n, along in ((0, h, w), (1, w, h)):
        grad = _strong_gradient(grey, 0, 1) if axis == 0 else _strong_gradient(grey, 1, 0)
        # an edge may wander by a pixel; where the picture meets the bar in the bar's own colour
        # there is no edge, so the span asked for is well under the whole width
        wander = (3, 1) if axis == 0 else (1, 3)
        span = cv2.dilate(grad, np.ones(wander, np.uint8)).sum(axis=1 - axis) / along
        lo = max(2, int(0.03 * n))
        for first, last, keep_after in ((lo, int(MAX_BAR * n), True),
                                        (int((1 - MAX_BAR) * n), n - lo, False)):
            seg = span[first:last]
            # the strongest such edge whose far side is a bar: mostly one flat colour (text
            # aside), which a band of a photo is not
            for i in np.argsort(-seg, kind="stable")[:3].tolist():
                if seg[i] < BAR_SPAN:
                    break
                at = first + i
                far = (slice(0, max(1, at - 2)) if keep_after else slice(min(n - 1, at + 3), n))
                band = grey[far] if axis == 0 else grey[:, far]
                if np.mean(np.abs(band.astype(np.int16) - int(np.median(band))) <= BAR_FLAT) < 0.5:
                    continue
                box = (at, n) if keep_after else (0, at)
                out.append((0, box[0], w, box[1]) if axis == 0 else (box[0], 0, box[1], h))
                break
    return out


def full_resolution_luma(source: bytes) -> np.ndarray | None:
    """The trimmed luma plane of ``source`` decoded at full resolution (no JPEG scaled decode):
    the detail a picture embedded at 40% of another needs. None if it cannot be decoded."""
    import io

    from PIL import Image

    from vigil.errors import VigilError
    from vigil.media.image import ImageLimits, _decode_opened

    try:
        img = Image.open(io.BytesIO(source))
        if img.format == "JPEG" and img.mode in ("RGB", "YCbCr", "L"):
            # the luma channel only, at full size: libjpeg skips chroma and colour conversion
            # (~3x faster than decoding RGB and converting; the luma differs by rounding)
            img.draft("L", img.size)
        return _decode_opened(img, ImageLimits(), "<query>", scaled=False).trimmed_luma()
    except (VigilError, OSError, ValueError, SyntaxError):
        return None


class Region:
    """A picture embedded in a query (picture-in-picture, a screenshot, a screen recording), cut
    out of it: described on demand with local features (:meth:`features`) and re-hashed with PDQ
    (:meth:`pdq`), so that a region that is the banked picture nearly whole matches as PDQ does,
    before any local-feature search."""

    def __init__(self, box: tuple[float, float, float, float], luma: np.ndarray,
                 scale: float) -> None:
        #: (x0, y0, x1, y1) in the query's (decoded luma) pixel coordinates
        self.box = box
        self.luma = luma
        #: query pixels per pixel of ``luma``
        self.scale = scale
        self._features: LocalFeatures | None = None

    @property
    def quad(self) -> list[list[float]]:
        """The box as the four corners robust evidence uses for a region."""
        x0, y0, x1, y1 = (round(v, 1) for v in self.box)
        return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]

    def features(self) -> LocalFeatures:
        if self._features is None:
            crop = self.luma
            grey, s = prepare_luma(crop, min(REGION_SIDE, max(REGION_MIN_SIDE, max(crop.shape[:2]))))
            # the strongest corners of a cut-out that is not exactly the picture are often on
            # what surrounds it (a lawn, an app's text), and a plain picture (a seascape, a
            # tool on a table) then kept few of the 400: taken spread over the cut-out, they
            # found 4 more phone recordings and picture-in-picture + JPEG queries in three
            # samples, at 1.01-1.03x the cost of a negative (robust_versions.py against 7e70308)
            f = extract_features(grey, REGION_DETECT, s * self.scale, REGION_FAST)
            if len(f) > REGION_FEATURES:
                f = take(f, spread_order(f, REGION_FEATURES))
            self._features = dataclasses.replace(f, origin=(self.box[0], self.box[1]))
        return self._features

    def pdq(self) -> tuple[dict[str, str], int]:
        """The region's 8 dihedral PDQ query hashes (keyed like PdqSignal.analyse's untrimmed
        ones) and its quality. The region is first resized to ``REGION_PDQ_SIDE`` square (area
        averaging), then filtered as the reference filters a picture 4x that size: PDQ's filter
        weights are computed once per picture size, and a cut-out has a new size every time
        (~2 ms a size). Against PDQ of the same pixels, on 80 corpus pictures: 6 bits apart
        (median), 16 (p90), 22 at most; without the 4x the filter is too narrow for the size
        and the median is 20 bits."""
        import cv2

        from vigil.signals.pdq import dihedral_hashes, pdq_dct

        side = REGION_PDQ_SIDE
        small = cv2.resize(self.luma.astype(np.float32, copy=False), (side, side),
                           interpolation=cv2.INTER_AREA)
        coeffs, quality = pdq_dct(small, full_size=(4 * side, 4 * side))
        return dihedral_hashes(coeffs), quality


@dataclasses.dataclass(frozen=True)
class RobustAnalysis:
    """What one decode gives: the signal to bank, its payload, and the query features."""

    signal: Signal
    payload: bytes
    query: LocalFeatures
    #: the query features of the mirrored picture, computed on demand (see :meth:`mirrored`)
    grey: np.ndarray
    #: the file's bytes, for a full-resolution decode of embedded regions (see :meth:`regions`)
    source: bytes | None = dataclasses.field(default=None, repr=False)
    #: the trimmed luma the features were computed from (the decoder's, maybe downscaled)
    luma_size: tuple[int, int] | None = None

    def bars(self) -> list[tuple[int, int, int, int]]:
        """What caption bars or banners leave visible (:func:`find_bars`), in the query
        features' coordinates."""
        return find_bars(self.grey)

    def mirrored(self) -> LocalFeatures:
        """The mirrored picture's features: ``MIRROR_FEATURES`` of the query's keypoints, spread
        over the picture like the voters (:func:`spread_order`), re-described mirrored."""
        q = self.query
        if len(q) > MIRROR_FEATURES and q.keypoints is not None:
            q = take(q, spread_order(q, MIRROR_FEATURES))
        return mirror_features(self.grey, q)

    def rectangles(self) -> list[tuple[int, int, int, int]]:
        """:func:`find_embedded`'s rectangles that the region pass searches (at least
        ``MIN_REGION_AREA``, at most ``MAX_REGIONS``, the last of them only when it covers
        ``LAST_REGION_AREA``), in the features' picture's coordinates.
        (Looking for them at half the size costs no less, measured: more rectangles come out,
        and it found 7 fewer of 200 embedded pictures.)"""
        rects = find_embedded(self.grey, MAX_REGIONS, min_area=MIN_REGION_AREA)
        if len(rects) == MAX_REGIONS > 1:
            x0, y0, x1, y1 = rects[-1]
            if (x1 - x0) * (y1 - y0) < LAST_REGION_AREA * self.grey.shape[0] * self.grey.shape[1]:
                rects.pop()
        return rects

    def region_cuts(self) -> t.Iterator[Region]:
        """Each embedded picture :func:`find_embedded` sees, cut out of the full-resolution
        decode (else out of the decoder's luma), best first. Lazy: the full-resolution decode
        happens only when a rectangle was found. Rectangles under ``MIN_REGION_AREA`` of the
        picture are not searched (a picture embedded at less than ~25% of the width is not
        found by this pass)."""
        rects = self.rectangles()
        if not rects:
            return
        base = full_resolution_luma(self.source) if self.source is not None else None
        gh, gw = self.grey.shape[:2]
        lh, lw = self.luma_size or (round(gh * self.query.scale), round(gw * self.query.scale))
        if base is None or abs(base.shape[0] / base.shape[1] - gh / gw) > 0.02:
            base = cv2_resize(self.grey, (lw, lh))
        bh, bw = base.shape[:2]
        for x0, y0, x1, y1 in rects:
            crop = base[round(y0 * bh / gh): round(y1 * bh / gh), round(x0 * bw / gw): round(x1 * bw / gw)]
            if min(crop.shape[:2]) < 16:
                continue
            yield Region((x0 * lw / gw, y0 * lh / gh, x1 * lw / gw, y1 * lh / gh), crop, lw / bw)

    def regions(self) -> t.Iterator[LocalFeatures]:
        """The local features of each of :meth:`region_cuts`, described at their own size
        between ``REGION_MIN_SIDE`` and ``REGION_SIDE``, with ``origin`` and ``scale`` mapping
        them back into the query's coordinates."""
        for region in self.region_cuts():
            yield region.features()

    @property
    def banked(self) -> LocalFeatures:
        return unpack_payload(self.payload)


def cv2_resize(grey: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    return cv2.resize(grey, size, interpolation=cv2.INTER_LINEAR)


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
    def analyse(cls, image: DecodedImage, source: bytes | None = None) -> RobustAnalysis:
        """``source``: the file's bytes, kept so that a query's embedded regions can be cut out
        of a full-resolution decode (the decoder's luma may be a JPEG scaled decode)."""
        luma = image.trimmed_luma()
        grey, scale = prepare_luma(luma)
        query = extract_features(grey, QUERY_FEATURES, scale)
        payload = pack_payload(select_for_bank(query))
        sig = Signal(cls.name, payload_digest(payload), min(len(query), BANK_FEATURES))
        return RobustAnalysis(sig, payload, query, grey, source, luma.shape[:2])

    @classmethod
    def hash_image(cls, image: DecodedImage) -> list[Signal]:
        return [cls.analyse(image).signal]
