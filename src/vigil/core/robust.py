"""The robust tier: local-feature retrieval, then geometric verification, for what PDQ missed.

Flow for one query picture (its ORB features come from :mod:`vigil.signals.robust`):

1. **retrieve**: the query's descriptors vote, through :class:`~vigil.index.local.LocalFeatureIndex`,
   for the banked ``orb`` signals whose descriptors are nearest; the ``CANDIDATES`` ids go on: the
   one with most votes, and the one with most *distinctive* votes (nearest by a clear margin: a
   picture embedded small in another one, which banked pictures of common texture outvote);
2. **verify** each candidate (:func:`verify`): descriptor matches with Lowe's ratio test, then a
   RANSAC homography from the reference into the query. The transform must be plausible (no
   mirror, bounded scale and shear, a convex projected outline), and the inliers must *cover* at
   least ``MIN_COVERAGE`` of the reference's area (the convex hull of the inlier keypoints): a
   logo, a flag or a caption shared by two different pictures gives many inliers in a small area
   and is rejected here. The score is the inlier count; the distance reported is
   ``100 - min(inliers, 100)`` so that, as for every signal type, smaller is closer and a bank's
   threshold is an upper bound (``orb=85`` requires 15 inliers);
3. **mirror**: if nothing verified, the mirrored query is tried the same way (ORB descriptors are
   not mirror-invariant); a hit found so has the variant ``robust+flip-x``;
4. **evidence**: inliers, covered share of the reference, retrieval votes, and the reference's
   outline projected into the query (a quadrilateral in the query's pixel coordinates: where the
   embedded picture is, for a picture-in-picture or a screenshot).

:class:`RobustIndex` keeps the feature index equal to the store exactly as
:class:`~vigil.core.indexes.IndexSet` does for the other types: a versioned file with the
``last_seq`` it includes, rebuilt when stale, and the change-log rows of type ``orb`` replayed
(on load, and right after every committed change in this process).
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import typing as t
from pathlib import Path

import numpy as np
from sqlalchemy import func, select

from vigil.core.indexes import ChangeLogFollower
from vigil.errors import IndexFileError, InvalidSignal
from vigil.index.local import LocalFeatureIndex, read_local_index, write_local_index
from vigil.signals.robust import (
    LocalFeatures,
    OrbSignal,
    Region,
    payload_digest,
    spread_order,
    unpack_payload,
)
from vigil.store.db import Store
from vigil.store.models import Entry, IndexLog, SignalRow
from vigil.store.robust_models import RobustPayload

__all__ = [
    "MODES",
    "RobustCandidate",
    "RobustIndex",
    "draw_explanation",
    "draw_region",
    "export_signal_dicts",
    "import_payloads",
    "load_payloads",
    "payload_from_export",
    "region_pdq_candidates",
    "robust_mode",
    "store_payloads",
    "verify",
]

log = logging.getLogger(__name__)

MODES = ("always", "on-miss", "off")
DEFAULT_MODE = "on-miss"
#: candidates verified per pass: the leader by plain votes and the leader by distinctive votes
#: (LocalFeatureIndex.vote; each verification is ~0.5 ms). Measured side by side
#: (docs/robustness.md): with the distinctive slot, 2 candidates and 200 voters found what 3 and
#: 300 did, at 10% less CPU per negative in the benchmark's bank and 24% less among 10k pictures
CANDIDATES = 2
#: descriptors that vote, spread over the picture (see vote_codes); retrieval cost is linear in it
VOTE_FEATURES = 200
VOTE_SPREAD = True
VOTE_SHARE = 0.25
#: voters of an embedded region (its 400 features describe less than a whole picture does);
#: measured side by side, 150 found the same pictures as 200 at ~0.4 ms less a region
REGION_VOTERS = 150
#: of the CANDIDATES, how many go to the leaders by distinctive votes
DISTINCTIVE = 1
RATIO = 0.8
RANSAC_PX = 6.0
MIN_INLIERS = 8  # below this no result is reported at all; banks decide with their threshold
MIN_COVERAGE = 0.3
SAVE_AFTER = 1000
CACHE = 4096


def robust_mode(bank: t.Any) -> str:
    """A bank's robust mode: its own setting, else the default (on-miss, for every kind)."""
    mode = getattr(bank, "robust_mode", None)
    return mode if mode in MODES else DEFAULT_MODE


@dataclasses.dataclass(frozen=True)
class Verified:
    inliers: int
    coverage: float
    #: reference corners projected into the query, in the query's source pixels (4 x [x, y])
    quad: list[list[float]]
    homography: np.ndarray
    #: (reference xy, query xy) of each inlier, in each picture's feature coordinates
    pairs: tuple[np.ndarray, np.ndarray]

    @property
    def distance(self) -> int:
        return 100 - min(self.inliers, 100)


@dataclasses.dataclass(frozen=True)
class RobustCandidate:
    signal_id: int
    distance: int
    variant: str
    evidence: dict[str, t.Any]
    #: ``orb``; ``pdq`` for an embedded region matched by its PDQ hash (variant ``pdq+region``)
    signal_type: str = "orb"


def _hull_area(pts: np.ndarray) -> float:
    import cv2

    if len(pts) < 3:
        return 0.0
    return float(cv2.contourArea(cv2.convexHull(pts.astype(np.float32))))


def _plausible(h: np.ndarray, quad: np.ndarray) -> bool:
    import cv2

    if not np.all(np.isfinite(h)):
        return False
    a = h[:2, :2] / h[2, 2]
    det = float(np.linalg.det(a))
    if det <= 0:  # a mirror: the mirrored query is tried on its own
        return False
    if not 0.01 < det < 100:  # area scale between 1/100 and 100
        return False
    sv = np.linalg.svd(a, compute_uv=False)
    if sv[1] <= 0 or sv[0] / sv[1] > 4:  # strong shear or anisotropic squash
        return False
    if abs(h[2, 0]) + abs(h[2, 1]) > 0.004 * abs(h[2, 2]):  # strong perspective
        return False
    return bool(cv2.isContourConvex(quad.astype(np.float32).reshape(-1, 1, 2)))


def query_codes(desc: np.ndarray) -> t.Any:
    """A FAISS flat index over a query's descriptors: built once per pass, then every candidate's
    reference descriptors are looked up in it (see :func:`ratio_matches`)."""
    import faiss

    flat = faiss.IndexBinaryFlat(desc.shape[1] * 8 if desc.ndim == 2 else 256)
    if len(desc):
        flat.add(np.ascontiguousarray(desc, np.uint8))
    return flat


def ratio_matches(qdesc: np.ndarray, rdesc: np.ndarray, qindex: t.Any = None,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Descriptor matches (query index, reference index) that pass Lowe's ratio test: for each
    reference descriptor its nearest query descriptor, kept when clearly nearer than the second
    nearest; then one reference keypoint per query keypoint (the closest), so repeated texture
    cannot inflate the count.

    The reference's 256 descriptors are looked up among the query's 1000 in a FAISS binary flat
    index (``qindex``, built once per pass by :func:`query_codes`, else here): a quarter of the
    searches of the opposite direction, ~3x faster, and ~3x faster again than OpenCV's
    brute-force matcher; the ratio test and the one-per-keypoint rule are array operations."""
    if len(rdesc) < 1 or len(qdesc) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    flat = qindex if qindex is not None else query_codes(qdesc)
    dist, idx = flat.search(np.ascontiguousarray(rdesc, np.uint8), 2)
    ok = (idx[:, 1] >= 0) & (dist[:, 0] < RATIO * dist[:, 1])
    ri = np.nonzero(ok)[0]
    qi = idx[ri, 0].astype(np.int64)
    d0 = dist[ri, 0]
    # per query keypoint keep the closest reference keypoint (lowest distance, then lowest index)
    order = np.lexsort((ri, d0, qi))
    first = np.ones(len(order), bool)
    first[1:] = qi[order][1:] != qi[order][:-1]
    keep = np.sort(order[first])
    return qi[keep], ri[keep].astype(np.int64)


def verify(query: LocalFeatures, ref: LocalFeatures, *, min_coverage: float = MIN_COVERAGE,
           min_inliers: int = MIN_INLIERS, qindex: t.Any = None,
           visible: t.Callable[[], t.Sequence[tuple[int, int, int, int]]] | None = None,
           ) -> Verified | None:
    """Geometric verification of ``ref`` (a banked payload) inside ``query``; None if it fails.
    ``min_inliers``: fewer ratio-test matches (hence inliers) than this is a failure before any
    RANSAC (the caller's threshold: a search for 15 inliers need not fit 9 matches)."""
    import cv2

    min_inliers = max(MIN_INLIERS, min_inliers)
    if len(query) < 4 or len(ref) < 4:
        return None
    qi, ri = ratio_matches(query.desc, ref.desc, qindex)
    if len(qi) < min_inliers:
        return None
    src = ref.xy[ri]
    dst = query.xy[qi]
    try:
        # RANSAC over a similarity first: 2-point samples need few iterations even when most
        # matches are wrong (the usual case for a candidate that is not the picture), where a
        # homography's 4-point RANSAC would run to its iteration cap. The homography is then fit
        # on the similarity's inliers, where nearly every match is right.
        sim, smask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC,
                                                 ransacReprojThreshold=RANSAC_PX * 1.5,
                                                 maxIters=400, confidence=0.99)
        if sim is None or smask is None or int(smask.sum()) < min_inliers:
            return None
        keep = smask.ravel().astype(bool)
        h, mask = cv2.findHomography(src[keep], dst[keep], cv2.RANSAC, RANSAC_PX, maxIters=200,
                                     confidence=0.995)
    except cv2.error:
        return None
    if h is None or mask is None:
        return None
    src, dst = src[keep], dst[keep]
    inl = mask.ravel().astype(bool)
    n = int(inl.sum())
    if n < min_inliers:
        return None
    rows, cols = ref.size
    corners = np.array([[0, 0], [cols, 0], [cols, rows], [0, rows]], np.float32).reshape(-1, 1, 2)
    quad = cv2.perspectiveTransform(corners, h).reshape(4, 2)
    if not _plausible(h, quad):
        return None
    # Coverage is measured against the hull of all the reference's keypoints, not its frame: an
    # object on a plain background has keypoints only on the object, and that is all of it.
    ref_hull = _hull_area(ref.xy)
    covered = _hull_area(src[inl])
    coverage = covered / max(ref_hull, 0.05 * rows * cols, 1.0)
    if coverage < min_coverage and visible is not None:
        coverage = max(coverage, _visible_coverage(covered, ref, h, ref_hull, visible()))
    if coverage < min_coverage:
        return None
    quad = quad * query.scale + np.asarray(query.origin, np.float32)
    return Verified(n, round(coverage, 3), quad.round(1).tolist(), h,
                    (src[inl], dst[inl]))


def _visible_coverage(covered: float, ref: LocalFeatures, h: np.ndarray, ref_hull: float,
                      boxes: t.Sequence[tuple[int, int, int, int]]) -> float:
    """Coverage measured against the part of the reference a caption bar or banner left
    visible: the hull of the reference keypoints that ``h`` maps into one of ``boxes`` (query
    feature coordinates, see :func:`vigil.signals.robust.find_bars`). A bar hides at most
    ``MAX_BAR`` of the picture, so the denominator never drops below ``1 - MAX_BAR`` of the whole
    hull: a logo's few inliers cannot be excused by a bar."""
    import cv2

    from vigil.signals.robust import MAX_BAR

    if not boxes or len(ref) < 3:
        return 0.0
    rows, cols = ref.size
    floor = max((1 - MAX_BAR) * ref_hull, 0.05 * rows * cols, 1.0)
    proj = cv2.perspectiveTransform(ref.xy.reshape(-1, 1, 2).astype(np.float32), h).reshape(-1, 2)
    best = 0.0
    for x0, y0, x1, y1 in boxes:
        inside = ((proj[:, 0] >= x0) & (proj[:, 0] < x1) & (proj[:, 1] >= y0) & (proj[:, 1] < y1))
        best = max(best, covered / max(_hull_area(ref.xy[inside]), floor))
    return best


def region_pdq_candidates(
    region: Region, lookup: t.Callable[[np.ndarray, int], t.Sequence[t.Iterable[tuple[int, int]]]],
    radius: int,
) -> list[RobustCandidate]:
    """An embedded region looked up by its PDQ hashes in all 8 orientations: ``lookup(codes,
    radius)`` gives, for each row of ``codes`` (8 x 32 bytes), the (signal id, distance) of the
    banked PDQ hashes within ``radius``. Hits have the signal type ``pdq``, the variant
    ``pdq+region`` (``pdq+region+flip-x``, ...: the orientation that matched best) and, as
    evidence, the region in the query and the distance. A region too flat for PDQ (quality under
    LOW_QUALITY) finds nothing."""
    from vigil.signals.pdq import LOW_QUALITY

    hashes, quality = region.pdq()
    if quality < LOW_QUALITY or radius <= 0:
        return []
    names = list(hashes)
    codes = np.frombuffer(b"".join(bytes.fromhex(hashes[n]) for n in names),
                          np.uint8).reshape(len(names), 32)
    best: dict[int, tuple[int, str]] = {}
    for name, hits in zip(names, lookup(codes, radius)):
        for sid, d in hits:
            if sid not in best or d < best[sid][0]:
                best[int(sid)] = (int(d), name)
    return [RobustCandidate(sid, d, "pdq+region" + ("" if name == "original" else f"+{name}"),
                            {"region": region.quad, "pdq_distance": d}, "pdq")
            for sid, (d, name) in best.items()]


def _evidence(v: Verified) -> dict[str, t.Any]:
    return {"inliers": v.inliers, "coverage": v.coverage, "region": v.quad}


# -- payloads in the store ---------------------------------------------------------------------
def store_payloads(s: t.Any, payloads: t.Mapping[str, bytes]) -> None:
    """Insert payloads not yet stored (content-addressed: the same payload is stored once)."""
    if not payloads:
        return
    have = set(s.scalars(select(RobustPayload.digest).where(RobustPayload.digest.in_(list(payloads)))))
    for digest, data in payloads.items():
        if digest not in have:
            if payload_digest(data) != digest:
                raise InvalidSignal(f"orb payload does not match its digest {digest}")
            s.add(RobustPayload(digest=digest, data=data))
    s.flush()


def import_payloads(s: t.Any, blobs: t.Iterable[bytes]) -> int:
    """Store payloads received from a partner (each checked by unpacking); returns how many."""
    todo = {}
    for b in blobs:
        unpack_payload(b)
        todo[payload_digest(b)] = b
    store_payloads(s, todo)
    return len(todo)


def load_payloads(s: t.Any, digests: t.Iterable[str]) -> dict[str, bytes]:
    """The stored payloads among ``digests`` (those not stored are simply absent)."""
    want = sorted(set(digests))
    if not want:
        return {}
    rows = s.execute(select(RobustPayload.digest, RobustPayload.data)
                     .where(RobustPayload.digest.in_(want)))
    return {r.digest: bytes(r.data) for r in rows}


def export_signal_dicts(store: Store, rows: t.Sequence[t.Any]) -> list[dict[str, t.Any]]:
    """Signal rows as JSONL export objects; an ``orb`` row also carries its payload, base64, under
    ``payload``, so that an importer can match with it (see :func:`payload_from_export`)."""
    import base64

    from vigil.signals import Signal

    orb = [r.value for r in rows if r.type == OrbSignal.name]
    payloads: dict[str, bytes] = {}
    if orb:
        with store.read() as s:
            payloads = load_payloads(s, orb)
    out = []
    for r in rows:
        d = Signal(r.type, r.value, r.quality, r.variant).to_dict()
        if r.type == OrbSignal.name and r.value in payloads:
            d["payload"] = base64.b64encode(payloads[r.value]).decode("ascii")
        out.append(d)
    return out


def payload_from_export(value: str, encoded: t.Any) -> bytes:
    """Decode and check an exported ``payload`` (base64 of a VORB payload whose BLAKE2b-128 is
    the signal's ``value``); raises InvalidSignal when it is not one."""
    import base64
    import binascii

    if not isinstance(encoded, str):
        raise InvalidSignal("orb payload must be a base64 string")
    try:
        data = base64.b64decode(encoded.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise InvalidSignal("orb payload is not valid base64") from exc
    unpack_payload(data)
    if payload_digest(data) != value:
        raise InvalidSignal(f"orb payload does not match its digest {value}")
    return data


class RobustIndex(ChangeLogFollower):
    """The feature index of every enabled, indexable ``orb`` signal, kept in step with the store."""

    log_types = (OrbSignal.name,)

    def __init__(self, store: Store, index_dir: Path) -> None:
        self.store = store
        self.path = index_dir / "orb.local.vlfx"
        self.index = LocalFeatureIndex()
        self.last_seq = 0
        self.rebuilt = False
        self._cache: collections.OrderedDict[int, LocalFeatures] = collections.OrderedDict()

    # -- loading and staying current ---------------------------------------------------------
    def _head_seq(self) -> int:
        with self.store.read() as s:
            return int(s.scalar(select(func.max(IndexLog.seq))) or 0)

    def load(self) -> RobustIndex:
        head = self._head_seq()
        self.rebuilt = False
        try:
            if not self.path.exists():
                raise IndexFileError(f"{self.path}: missing")
            header, index = read_local_index(self.path)
            if header.get("store_id") != self.store.store_id:
                raise IndexFileError(f"{self.path}: built from another store")
            if int(header["last_seq"]) > head:
                raise IndexFileError(f"{self.path}: ahead of the store's change log")
            self.index, self.last_seq = index, int(header["last_seq"])
        except IndexFileError as exc:
            if self.path.exists():
                log.warning("rebuilding the orb index: %s", exc.message)
            self.index, self.last_seq, self.rebuilt = LocalFeatureIndex(), head, True
            self._add_ids(None)
        replayed = self.catch_up()
        if self.rebuilt or replayed >= SAVE_AFTER:
            self.save()
        return self

    def _rows(self, s: t.Any, ids: list[int] | None) -> t.Any:
        stmt = (
            select(SignalRow.id, SignalRow.quality, RobustPayload.data)
            .join(Entry, Entry.id == SignalRow.entry_id)
            .join(RobustPayload, RobustPayload.digest == SignalRow.value)
            .where(SignalRow.type == OrbSignal.name, Entry.enabled.is_(True))
        )
        if ids is not None:
            stmt = stmt.where(SignalRow.id.in_(ids))
        return s.execute(stmt.execution_options(yield_per=5000))

    def _add_ids(self, ids: list[int] | None) -> None:
        chunks = [None] if ids is None else [ids[i : i + 5000] for i in range(0, len(ids), 5000)]
        with self.store.read() as s:
            for chunk in chunks:
                for part in self._rows(s, chunk).partitions():
                    self._add_payloads([(r.id, r.quality, r.data) for r in part])

    def _add_payloads(self, rows: t.Sequence[tuple[int, int | None, bytes]]) -> None:
        id_parts, code_parts = [], []
        for sid, _quality, data in rows:
            f = unpack_payload(data)
            if len(f) < 1 or not OrbSignal.indexable(_sig(len(f))):
                continue
            id_parts.append(np.full(len(f), sid, np.int64))
            code_parts.append(f.desc)
        if id_parts:
            self.index.add(np.concatenate(id_parts), np.concatenate(code_parts))


    def apply(self, rows: t.Iterable[t.Any]) -> None:
        """Apply change-log rows (signal_id, signal_type, op), in order; others types ignored."""
        ops: dict[int, str] = {}
        for r in rows:
            if r.signal_type == OrbSignal.name:
                ops[int(r.signal_id)] = r.op
        if not ops:
            return
        self.index.remove(np.fromiter(ops, np.int64, len(ops)))
        for sid in ops:
            self._cache.pop(sid, None)
        self._add_ids([i for i, op in ops.items() if op == "add"])

    def save(self) -> None:
        write_local_index(self.path, {"signal_type": OrbSignal.name, "kind": self.index.kind,
                                      "last_seq": self.last_seq, "store_id": self.store.store_id},
                          self.index)

    def __len__(self) -> int:
        return len(self.index)

    # -- matching --------------------------------------------------------------------------
    def payloads(self, ids: t.Sequence[int]) -> dict[int, LocalFeatures]:
        out: dict[int, LocalFeatures] = {}
        missing = []
        for i in ids:
            if i in self._cache:
                self._cache.move_to_end(i)
                out[i] = self._cache[i]
            else:
                missing.append(i)
        if missing:
            with self.store.read() as s:
                for r in self._rows(s, missing):
                    out[r.id] = self._cache[r.id] = unpack_payload(r.data)
            while len(self._cache) > CACHE:
                self._cache.popitem(last=False)
        return out

    def search(self, query: LocalFeatures, mirrored: t.Callable[[], LocalFeatures] | None = None,
               *, max_distance: int = 100,
               regions: t.Callable[[], t.Iterable[Region]] | None = None,
               bars: t.Callable[[], t.Sequence[tuple[int, int, int, int]]] | None = None,
               region_check: t.Callable[[t.Any], list[RobustCandidate]] | None = None,
               ) -> list[RobustCandidate]:
        """Verified candidates for one query. Passes, each only when the ones before verified
        nothing within ``max_distance``: the picture; the mirrored picture; then each embedded
        picture the query seems to hold (``regions``: picture-in-picture, screenshots, screen
        recordings; ``RobustAnalysis.region_cuts``), each first given to ``region_check`` when
        there is one (the matcher looks up its PDQ hash: :func:`region_pdq_candidates`), then
        described at full size and searched, variant ``robust+region``."""
        visible = _once(bars) if bars is not None else None
        found = self._search_one(query, "robust", max_distance, visible)
        if not found and mirrored is not None and len(self):
            m = mirrored()
            flipped = None
            if visible is not None:
                w = m.size[1]
                flipped = _once(lambda: [(w - x1, y0, w - x0, y1) for x0, y0, x1, y1 in visible()])
            found = self._search_one(m, "robust+flip-x", max_distance, flipped)
        if not found and regions is not None and (len(self) or region_check is not None):
            for region in regions():
                # a region cut out whole is first re-hashed (PDQ, ~0.5 ms; the caller looks it
                # up): local features (~10 ms) only when that finds nothing
                if region_check is not None:
                    found = region_check(region)
                    if found:
                        break
                found = self._search_one(region.features(), "robust+region", max_distance)
                if found:
                    break
        return found

    def _search_one(self, q: LocalFeatures, variant: str, max_distance: int,
                    visible: t.Callable[[], t.Sequence[tuple[int, int, int, int]]] | None = None,
                    ) -> list[RobustCandidate]:
        if len(q) < 4:
            return []
        # retrieval cost grows with the query's descriptors times the bank's: VOTE_FEATURES of
        # them, spread over the picture, find the candidates; all of them verify
        # candidates far behind the leader are chance agreement (verifying one costs ~0.5 ms);
        # one slot goes to the leader by distinctive votes (an embedded picture's)
        voters = REGION_VOTERS if variant == "robust+region" else VOTE_FEATURES
        votes = self.index.vote(vote_codes(q, voters), top=CANDIDATES, share=VOTE_SHARE,
                                distinctive=DISTINCTIVE)
        if not votes:
            return []
        refs = self.payloads([i for i, _ in votes])
        qindex = query_codes(q.desc)
        out = []
        for sid, nv in votes:
            ref = refs.get(sid)
            if ref is None:
                continue
            v = verify(q, ref, min_inliers=100 - max_distance, qindex=qindex, visible=visible)
            if v is not None and v.distance <= max_distance:
                ev = {**_evidence(v), "votes": nv}
                if variant.endswith("flip-x"):  # the region is in the mirrored query: map back
                    w = q.size[1] * q.scale + q.origin[0]
                    ev["region"] = [[round(w - x, 1), y] for x, y in ev["region"]]
                out.append(RobustCandidate(sid, v.distance, variant, ev))
        return out


def _once(fn: t.Callable[[], t.Any]) -> t.Callable[[], t.Any]:
    """``fn``, computed on the first call only (bars are looked for only when a candidate
    verifies with too little coverage, which is rare)."""
    box: list[t.Any] = []

    def get() -> t.Any:
        if not box:
            box.append(fn())
        return box[0]
    return get


def vote_codes(q: LocalFeatures, n: int | None = None) -> np.ndarray:
    """The ``n`` (default ``VOTE_FEATURES``) descriptors of ``q`` that vote: spread over the
    picture (round-robin over a 4x4 grid and pyramid bands, as banked payloads are chosen), not
    merely the strongest.
    A caption's text or a border's edge makes many of the strongest keypoints; taking the
    strongest alone left the picture itself with too few votes to reach the candidates."""
    n = VOTE_FEATURES if n is None else n
    if not VOTE_SPREAD or len(q) <= n:
        return q.desc[:n]
    return q.desc[spread_order(q, n)]


def _sig(n: int) -> t.Any:
    from vigil.signals import Signal

    return Signal(OrbSignal.name, "0" * 32, n)


# -- explanation drawing -------------------------------------------------------------------------
def _canvas(query_grey: np.ndarray, ref_size: tuple[int, int],
            ref_grey: np.ndarray | None = None) -> np.ndarray:
    """The reference (its keypoint frame: banks hold no media) left, the query right."""
    import cv2

    qh, qw = query_grey.shape[:2]
    rh, rw = ref_size
    left = ref_grey if ref_grey is not None else np.full((rh, rw), 235, np.uint8)
    left = cv2.resize(left, (rw, rh)) if left.shape[:2] != (rh, rw) else left
    canvas = np.full((max(qh, rh), rw + 10 + qw, 3), 255, np.uint8)
    canvas[:rh, :rw] = cv2.cvtColor(left, cv2.COLOR_GRAY2BGR)
    canvas[:qh, rw + 10 :] = cv2.cvtColor(np.ascontiguousarray(query_grey), cv2.COLOR_GRAY2BGR)
    cv2.rectangle(canvas, (0, 0), (rw - 1, rh - 1), (0, 160, 0), 2)
    return canvas


def _write(canvas: np.ndarray, text: str, out: Path) -> None:
    import cv2

    cv2.putText(canvas, text, (8, canvas.shape[0] - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                (0, 0, 255), 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), canvas):
        raise OSError(f"{out}: cannot write the overlay")


def draw_explanation(query_grey: np.ndarray, query: LocalFeatures, ref: LocalFeatures,
                     out: Path, ref_grey: np.ndarray | None = None,
                     canvas_scale: float | None = None) -> Verified | None:
    """Draw the matched region (the reference's outline in the query) and the inlier
    correspondences into a PNG at ``out``; returns the verification, None when it fails.

    ``query`` may be a region cut out of the picture ``query_grey`` shows (its ``origin`` and
    ``scale`` map it into the query's pixels): ``canvas_scale`` is then the query pixels per
    pixel of ``query_grey`` (by default ``query.scale``, the whole picture's own features)."""
    import cv2

    v = verify(query, ref)
    if v is None:
        return None
    cs = canvas_scale or query.scale
    rw = ref.size[1]
    canvas = _canvas(query_grey, ref.size, ref_grey)
    quad = (np.array(v.quad, np.float32) / cs + [rw + 10, 0]).astype(np.int32)
    cv2.polylines(canvas, [quad.reshape(-1, 1, 2)], True, (0, 0, 255), 2)
    src, dst = v.pairs
    dst = (dst * query.scale + np.asarray(query.origin, np.float32)) / cs
    for (x0, y0), (x1, y1) in zip(src[:80], dst[:80]):
        p0 = (int(x0), int(y0))
        p1 = (int(x1) + rw + 10, int(y1))
        cv2.line(canvas, p0, p1, (0, 200, 255), 1)
        cv2.circle(canvas, p0, 2, (0, 160, 0), -1)
        cv2.circle(canvas, p1, 2, (0, 0, 255), -1)
    _write(canvas, f"inliers {v.inliers}  coverage {v.coverage:.2f}", out)
    return v


def draw_region(query_grey: np.ndarray, quad: t.Sequence[t.Sequence[float]], canvas_scale: float,
                text: str, out: Path) -> None:
    """Draw an embedded region matched by its PDQ hash: the region outlined in the query (no
    correspondences: PDQ compares the whole region)."""
    import cv2

    canvas = _canvas(query_grey, (64, 64))
    pts = (np.array(quad, np.float32) / canvas_scale + [74, 0]).astype(np.int32)
    cv2.polylines(canvas, [pts.reshape(-1, 1, 2)], True, (0, 0, 255), 2)
    _write(canvas, text, out)


def explain_file(vigil: t.Any, path: Path, out: Path) -> dict[str, t.Any]:
    """Match ``path`` (not recorded) and draw why its best hit matched into ``out`` (PNG):
    the reference's keypoints (banks hold no media, so the reference is drawn as its keypoint
    frame), the matched region in the query and the inlier correspondences — found on the
    picture, its mirror or a picture embedded in it; for an embedded picture matched by its PDQ
    hash, the region. Returns the match result with an ``explained`` object (entry, variant,
    inliers and coverage or the PDQ distance, overlay path) or, when no hit has local features
    that verify or a region, ``explained: null``."""
    from vigil.core.hashing import hash_file
    from vigil.errors import MediaError

    item = vigil.match_file(path, record=False)
    result = item.to_dict()
    result["explained"] = None
    hits = item.outcome.matches + item.outcome.allowed if item.outcome else []
    hr = hash_file(path, vigil.settings.limits)
    if hr.error:
        raise hr.error
    if hr.robust is None:
        raise MediaError(f"{path}: no local features (not an image, or too small)", path=str(path))
    ra = hr.robust
    robust = vigil.robust
    grey = np.ascontiguousarray(ra.grey)
    for hit in hits:
        base = {"entry_id": hit.entry_id, "bank": hit.bank, "variant": hit.variant,
                "overlay": str(out)}
        if hit.variant.startswith("pdq+region") and hit.evidence:
            draw_region(grey, hit.evidence["region"], ra.query.scale,
                        f"{hit.variant}  PDQ distance {hit.distance}", out)
            result["explained"] = {**base, "distance": hit.distance, "inliers": None,
                                   "coverage": None}
            return result
        with vigil.store.read() as s:
            sid = s.scalar(select(SignalRow.id).where(SignalRow.entry_id == hit.entry_id,
                                                     SignalRow.type == OrbSignal.name))
        ref = robust.payloads([sid]).get(sid) if sid is not None else None
        if ref is None:
            continue
        # lazily, in the search's order: the regions (a full-resolution decode) only if needed
        tries = itertools.chain(
            [("robust", lambda: ra.query, grey),
             ("robust+flip-x", ra.mirrored, np.ascontiguousarray(grey[:, ::-1]))],
            (("robust+region", r.features, grey) for r in ra.region_cuts()))
        for name, feats, canvas_grey in tries:
            v = draw_explanation(canvas_grey, feats(), ref, out, canvas_scale=ra.query.scale)
            if v is not None:
                result["explained"] = {**base, "variant": name, "inliers": v.inliers,
                                       "coverage": v.coverage}
                return result
    return result
