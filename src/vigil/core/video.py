"""Video matching with localisation: frame hits -> temporal alignment -> matched segments.

Banking. A video entry is an :class:`~vigil.store.models.Entry` (with the file's byte hashes as
its signals) plus its frame signals packed into one ``video_signals`` row. Adding, disabling and
enabling append ``index_log`` rows with ``signal_type = "video"`` whose ``signal_id`` is the entry
id, in the same transaction as the change.

The index. :class:`VideoIndex` holds the PDQ codes of every good-quality frame of every enabled
video entry in one FAISS binary index (exact Hamming search), under ids ``entry_id << 20 |
frame position``. It follows the store exactly as :class:`~vigil.core.indexes.IndexSet` does: a
versioned file ``<index>/video-frames.vidx`` records the change-log position it includes; a
missing, unreadable or foreign file is rebuilt from the store; later log rows are replayed; and in
a long-running process :meth:`VideoIndex.apply` runs right after each committed change. Matching
also re-checks each candidate entry in the store, so a disabled entry stops matching as soon as
the disabling call returns even in a process whose index has not seen it yet.

Matching one query video:

1. frame hits: each query frame (sampled 4/s, see :mod:`vigil.media.video`) of quality >=
   ``MIN_QUALITY``, and its mirror image (a flipped re-upload), is searched within the largest
   frame threshold any bank uses (default 60 bits: looser than PDQ's 31 for one picture,
   because a video match needs many frames in temporal order, see 3-4);
   Its crop-code grid (see :mod:`vigil.signals.vpdq`) is searched too, within ``CROP_RADIUS``
   of the banked centre-box codes; a crop hit counts only for a (query frame, video) pair that
   frame PDQ found nothing for (a cropped re-upload), and a video found mostly that way is
   reported with variant ``video+crop``. Of a query frame's hits on one video, only those
   within ``RELATIVE_KEEP`` bits of its best one vote (slow footage is near every frame);
2. generic frames are dropped: a query frame that is close to frames of more than
   ``COMMON_ENTRIES`` different videos is a black frame, a title card or a test pattern, not
   evidence for any one of them (low-quality frames never take part at all);
3. per candidate video and orientation, Hough voting over (speed, offset): every hit votes, for
   each speed of a grid from 0.7 to 1.6, for the offset ``b = t_ref - speed * t_query``; the
   (speed, offset) cell backed by the most distinct query frames wins; its inliers are refitted
   by least squares, split where the query has a gap of more than ``MAX_GAP`` seconds, and
   removed before voting again (a compilation can hold several excerpts of one video);
4. a segment (grown first as in 5) is reported when it lasts at least the bank's
   ``min_seconds`` (default 3) or covers at least its ``min_share`` of the reference, *and*
   its matched reference frames are not one picture (80% of them within ``MIN_VARIATION`` bits
   of one frame): a static card shared by two unrelated videos never matches on its own,
   however long it is shown, unless each query frame is clearly closest to the reference
   frame at its own aligned moment (slow footage such as a tree in the wind, where a held card
   is equally close to all of its frames; ``_time_specific``). Of segments sharing most of
   their query time, the one with more frames is kept;
5. guided extension: the segment grows frame by frame at both ends while the next query frame
   is within ``EXTEND_THRESHOLD`` bits of the reference frames the line predicts for it (a
   logo, a crop or a letterbox can push single frames past the search threshold; next to an
   established alignment a looser test is safe);
6. boundaries: a segment starts at its first matched query frame when that frame begins a shot
   (a scene cut is exact to the frame), else halfway between it and the previous sampled frame;
   likewise at the end. The reference times follow from the fitted line, with each matched
   frame's reference time refined by a distance-weighted mean over the reference frames close to
   the line (sub-second precision from a reference sampled once a second).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import typing as t
from pathlib import Path

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from vigil.core import banks as bankops
from vigil.core.indexes import ChangeLogFollower
from vigil.core.matcher import Hit, MatchOutcome
from vigil.errors import IndexFileError, NotFound, UsageError
from vigil.index.base import IndexHeader, read_index_file, write_index_file
from vigil.index.hamming import HammingIndex
from vigil.signals import Signal
from vigil.signals.vpdq import CROP_BYTES, VideoSignals
from vigil.store.db import Store
from vigil.store.models import Bank, Entry, IndexLog, SignalRow, utcnow
from vigil.store.video_models import VideoBankSettings, VideoSegmentRow, VideoSignalsRow

__all__ = [
    "LOG_TYPE",
    "Segment",
    "VideoHit",
    "VideoIndex",
    "VideoSettings",
    "add_video_entry",
    "get_settings",
    "log_toggle",
    "match_video",
    "merge_outcome",
    "segment_rows",
    "set_settings",
]

log = logging.getLogger(__name__)

LOG_TYPE = "video"
#: a video hit is a run of PDQ frame matches: it is reported as signal type ``pdq`` with variant
#: ``video`` (``video+flip-x`` for a mirrored re-upload), so everything that reads hits (review,
#: confidence, statistics) treats it with PDQ's distance semantics
SIGNAL_TYPE = "pdq"
INDEX_NAME = "video-frames"
CROP_INDEX_NAME = "video-crops"
_POS_BITS = 20
_POS_MASK = (1 << _POS_BITS) - 1
MAX_FRAMES = 1 << _POS_BITS

#: frames below this PDQ quality (flat, dark, blurred) are never indexed or queried
MIN_QUALITY = 50
#: a query frame close to frames of more than this many videos is generic (black, title card)
COMMON_ENTRIES = 3
#: frames this close count as one picture; a segment whose matched reference frames are one
#: picture for STATIC_SHARE of them is a static card, not evidence (see _one_picture)
MIN_VARIATION = 12
STATIC_SHARE = 0.8
#: ...unless its query frames are closer to the reference frame at their own aligned time than
#: to the segment's other frames by this many bits (median; see _time_specific)
SPECIFIC_MARGIN = 6
#: a query frame's hits on one video further than this from its best hit there do not vote
RELATIVE_KEEP = 10
#: fewest matched query frames for a segment, whatever its duration
MIN_FRAMES = 3
#: a query gap (seconds without a matched frame) longer than this splits a segment
MAX_GAP = 3.5
#: speeds tried by the Hough vote (reference seconds per query second)
SPEEDS = np.round(np.arange(0.70, 1.601, 0.05), 3)
_SPEED_ORDER = sorted(SPEEDS.tolist(), key=lambda sp: (abs(sp - 1.0), sp))
#: offset bin width of the vote, and the inlier tolerance around the fitted line (seconds)
BIN = 1.0
TOLERANCE = 1.25
#: once a segment is established, a neighbouring query frame joins it when it is this close to
#: the reference frames the fitted line predicts for it (guided matching: far looser than a
#: search threshold, still far from the ~128 bits of unrelated pictures)
EXTEND_THRESHOLD = 76
#: guided extension over low-quality frames: a frame of quality >= LOW_QUALITY_FLOOR joins when
#: this close to the reference frame at its aligned moment (+-0.6 s; stricter than
#: EXTEND_THRESHOLD because flat pictures are closer to each other by chance)
LOW_QUALITY_FLOOR = 10
LOW_EXTEND_THRESHOLD = 40
#: segments on one line separated by at most this (or a quarter of their span) are joined
MERGE_GAP = 6.0
#: a query box's 64-bit crop code hits a banked frame's centre-box code within this many bits
#: (corpus: the right frame under a 10% crop 4 median, 6-10 p90; the nearest frame of any
#: other video over all 225 boxes 10 at the least, 14 typically)
CROP_RADIUS = 8
#: guided extension with crop codes (next to an established alignment, as EXTEND_THRESHOLD)
CROP_EXTEND = 10
#: a crop-code distance is reported on PDQ's 256-bit scale (x4) so one segment's distances
#: read alike whichever code found its frames
CROP_SCALE = 4


@dataclasses.dataclass(frozen=True)
class VideoSettings:
    """Per-bank video settings (``video_bank_settings``; defaults when a bank has no row)."""

    min_seconds: float = 3.0
    min_share: float | None = None
    frame_threshold: int = 60

    def to_dict(self) -> dict[str, t.Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Segment:
    query_start: float
    query_end: float
    ref_start: float
    ref_end: float
    score: float
    frames: int
    speed: float = 1.0

    def to_dict(self) -> dict[str, t.Any]:
        return {
            "query_start": round(self.query_start, 2),
            "query_end": round(self.query_end, 2),
            "ref_start": round(self.ref_start, 2),
            "ref_end": round(self.ref_end, 2),
            "score": round(self.score, 3),
            "frames": self.frames,
            "speed": round(self.speed, 3),
        }


@dataclasses.dataclass(frozen=True)
class VideoHit(Hit):
    """A match of a query video against a banked video, with where it matched."""

    segments: tuple[Segment, ...] = ()

    def to_dict(self) -> dict[str, t.Any]:
        out = super().to_dict()
        out["segments"] = [s.to_dict() for s in self.segments]
        return out


_LogRow = bankops._LogRow  # one change-log row shape for every index


# -- settings -------------------------------------------------------------------------------------
def get_settings(s: Session) -> dict[int, VideoSettings]:
    return {
        r.bank_id: VideoSettings(r.min_seconds, r.min_share, r.frame_threshold)
        for r in s.scalars(select(VideoBankSettings))
    }


def set_settings(s: Session, bank_name: str, *, min_seconds: float | None = None,
                 min_share: float | None = None, frame_threshold: int | None = None,
                 clear_share: bool = False) -> VideoSettings:
    bank = bankops.get_bank(s, bank_name)
    row = s.get(VideoBankSettings, bank.id)
    cur = VideoSettings() if row is None else VideoSettings(row.min_seconds, row.min_share,
                                                            row.frame_threshold)
    new = VideoSettings(
        min_seconds=cur.min_seconds if min_seconds is None else float(min_seconds),
        min_share=None if clear_share else (
            cur.min_share if min_share is None else float(min_share)),
        frame_threshold=cur.frame_threshold if frame_threshold is None else int(frame_threshold),
    )
    if not 0 < new.min_seconds <= 3600:
        raise UsageError(f"min_seconds must be in (0, 3600], got {new.min_seconds}")
    if new.min_share is not None and not 0 < new.min_share <= 1:
        raise UsageError(f"min_share must be in (0, 1], got {new.min_share}")
    if not 0 <= new.frame_threshold <= 96:
        raise UsageError(f"frame_threshold must be between 0 and 96, got {new.frame_threshold}")
    if row is None:
        s.add(VideoBankSettings(bank_id=bank.id, **new.to_dict()))
    else:
        row.min_seconds, row.min_share, row.frame_threshold = (new.min_seconds, new.min_share,
                                                               new.frame_threshold)
    bank.updated_at = utcnow()
    return new


# -- banking --------------------------------------------------------------------------------------
def add_video_entry(s: Session, bank: Bank, signals: t.Sequence[Signal], labels: dict[str, t.Any],
                    reference: str | None, video: VideoSignals) -> tuple[int, list[t.Any]]:
    """Insert one video entry (its byte-hash signals, if any, and its frame signals) with the
    index log rows, in the caller's transaction. Returns the entry id and the log rows."""
    video = video.thin()  # what a bank keeps: ~1 frame/s plus scene changes
    if len(video) == 0:
        raise UsageError("a video entry needs at least one frame signal")
    if len(video) > MAX_FRAMES:
        raise UsageError(f"a video entry holds at most {MAX_FRAMES} frame signals")
    rows: list[t.Any] = []
    if signals:
        spec = bankops.EntrySpec(list(signals), dict(labels), reference)
        ((eid, rows),) = bankops.add_entries(s, bank, [spec])
    else:  # e.g. imported vPDQ hashes: the frames are the only signal
        now = utcnow()
        entry = Entry(bank_id=bank.id, enabled=True, labels=dict(labels), reference=reference,
                      created_at=now, updated_at=now)
        s.add(entry)
        s.flush()
        eid = entry.id
    s.add(VideoSignalsRow(entry_id=eid, frame_count=len(video), duration=video.duration,
                          data=video.pack()))
    s.add(IndexLog(signal_id=eid, signal_type=LOG_TYPE, op="add"))
    return eid, [*rows, _LogRow(eid, LOG_TYPE, "add")]


def log_toggle(s: Session, entry_id: int, enabled: bool) -> list[t.Any]:
    """Log rows for the video frames of an entry that was just disabled or enabled."""
    if s.get(VideoSignalsRow, entry_id) is None:
        return []
    op = "add" if enabled else "remove"
    s.add(IndexLog(signal_id=entry_id, signal_type=LOG_TYPE, op=op))
    return [_LogRow(entry_id, LOG_TYPE, op)]


def segment_rows(match: t.Any, hit: Hit) -> list[VideoSegmentRow]:
    """Rows recording a video hit's segments under its Match row."""
    if not isinstance(hit, VideoHit):
        return []
    return [
        VideoSegmentRow(match=match, query_start=sg.query_start, query_end=sg.query_end,
                        ref_start=sg.ref_start, ref_end=sg.ref_end, score=sg.score,
                        frames=sg.frames)
        for sg in hit.segments
    ]


# -- the index ------------------------------------------------------------------------------------
class VideoIndex(ChangeLogFollower):
    """The frame index of all enabled video entries, kept in step with the store."""

    def __init__(self, store: Store, index_dir: Path) -> None:
        self.store = store
        self.index_dir = index_dir
        self.index = HammingIndex(32)
        #: crop codes of the same frames (those that have one), under the same ids
        self.crops = HammingIndex(CROP_BYTES)
        #: entry id -> the frame positions it has in the index (to remove them again)
        self.positions: dict[int, np.ndarray] = {}
        self.crop_positions: dict[int, np.ndarray] = {}
        self.last_seq = 0
        self.rebuilt = False

    @property
    def path(self) -> Path:
        return self.index_dir / f"{INDEX_NAME}.vidx"

    @property
    def crop_path(self) -> Path:
        return self.index_dir / f"{CROP_INDEX_NAME}.vidx"

    def __len__(self) -> int:
        return len(self.index)

    def load(self) -> VideoIndex:
        head = self._head_seq()
        try:
            self._read()
            self.rebuilt = False
        except IndexFileError as exc:
            if self.path.exists():
                log.warning("rebuilding the video frame index: %s", exc.message)
            self._rebuild()
            self.last_seq = head
            self.rebuilt = True
        self.catch_up()
        if self.rebuilt:
            self.save()
        return self

    def _head_seq(self) -> int:
        with self.store.read() as s:
            return int(s.scalar(select(func.max(IndexLog.seq))) or 0)

    def _read(self) -> None:
        if not self.path.exists():
            raise IndexFileError(f"{self.path}: missing")
        if not self.crop_path.exists():
            raise IndexFileError(f"{self.crop_path}: missing")
        header, ids, codes = read_index_file(self.path)
        cheader, cids, ccodes = read_index_file(self.crop_path)
        for path, head, name, size in ((self.path, header, INDEX_NAME, 32),
                                       (self.crop_path, cheader, CROP_INDEX_NAME, CROP_BYTES)):
            if head.get("store_id") != self.store.store_id:
                raise IndexFileError(f"{path}: built from another store")
            if head.get("signal_type") != name or head.get("code_size") != size:
                raise IndexFileError(f"{path}: holds another index")
        if int(header["last_seq"]) > self._head_seq():
            raise IndexFileError(f"{self.path}: ahead of the store's change log")
        if int(cheader["last_seq"]) != int(header["last_seq"]):
            raise IndexFileError(f"{self.crop_path}: not in step with {self.path.name}")
        self.index = HammingIndex(32)
        self.index.add(ids, codes)
        self.crops = HammingIndex(CROP_BYTES)
        self.crops.add(cids, ccodes)
        self.positions = _by_entry(ids)
        self.crop_positions = _by_entry(cids)
        self.last_seq = int(header["last_seq"])

    def _rebuild(self) -> None:
        self.index = HammingIndex(32)
        self.crops = HammingIndex(CROP_BYTES)
        self.positions = {}
        self.crop_positions = {}
        stmt = (
            select(VideoSignalsRow.entry_id, VideoSignalsRow.data)
            .join(Entry, Entry.id == VideoSignalsRow.entry_id)
            .where(Entry.enabled.is_(True))
            .execution_options(yield_per=1000)
        )
        with self.store.read() as s:
            for eid, data in s.execute(stmt):
                self._add(int(eid), VideoSignals.unpack(data))

    def _add(self, eid: int, video: VideoSignals) -> None:
        keep = np.flatnonzero(video.quality >= MIN_QUALITY)
        ids = (np.int64(eid) << _POS_BITS) | keep.astype(np.int64)
        if len(keep):
            self.index.add(ids, video.codes[keep])
        self.positions[eid] = keep.astype(np.int64)
        if video.crops is not None:
            if len(keep):
                self.crops.add(ids, video.crops[keep])
            self.crop_positions[eid] = keep.astype(np.int64)

    def _remove(self, eid: int) -> None:
        pos = self.positions.pop(eid, None)
        if pos is not None and len(pos):
            self.index.remove((np.int64(eid) << _POS_BITS) | pos)
        pos = self.crop_positions.pop(eid, None)
        if pos is not None and len(pos):
            self.crops.remove((np.int64(eid) << _POS_BITS) | pos)


    def apply(self, rows: t.Iterable[t.Any]) -> None:
        """Apply change-log rows. ``video`` rows name entries directly; any other row names a
        signal, whose entry is re-synchronised too when it is a video entry (so a disable that
        only logged the entry's byte hashes still takes its frames out)."""
        entries: set[int] = set()
        signal_ids: list[int] = []
        for r in rows:
            if r.signal_type == LOG_TYPE:
                entries.add(int(r.signal_id))
            else:
                signal_ids.append(int(r.signal_id))
        with self.store.read() as s:
            for chunk in range(0, len(signal_ids), 10_000):
                entries.update(s.scalars(
                    select(SignalRow.entry_id)
                    .join(VideoSignalsRow, VideoSignalsRow.entry_id == SignalRow.entry_id)
                    .where(SignalRow.id.in_(signal_ids[chunk : chunk + 10_000]))
                ).all())
            if not entries:
                return
            ids = sorted(entries)
            found: dict[int, bytes] = {}
            for chunk in range(0, len(ids), 1000):
                found.update((int(eid), data) for eid, data in s.execute(
                    select(VideoSignalsRow.entry_id, VideoSignalsRow.data)
                    .join(Entry, Entry.id == VideoSignalsRow.entry_id)
                    .where(VideoSignalsRow.entry_id.in_(ids[chunk : chunk + 1000]),
                           Entry.enabled.is_(True))
                ).all())
        for eid in ids:
            self._remove(eid)
            if eid in found:
                self._add(eid, VideoSignals.unpack(found[eid]))

    def save(self) -> None:
        # the crop file first: a crash between the two leaves the frame file older, and a
        # crop file whose position differs from the frame file's makes the next load rebuild
        for path, index, name, size in ((self.crop_path, self.crops, CROP_INDEX_NAME, CROP_BYTES),
                                        (self.path, self.index, INDEX_NAME, 32)):
            ids, codes = index.export()
            header: IndexHeader = {
                "signal_type": name,
                "kind": "hamming",
                "code_size": size,
                "count": len(ids),
                "last_seq": self.last_seq,
                "store_id": self.store.store_id,
            }
            write_index_file(path, header, ids, codes)


def _by_entry(ids: np.ndarray) -> dict[int, np.ndarray]:
    """Index ids grouped by entry: entry id -> frame positions."""
    out: dict[int, np.ndarray] = {}
    if len(ids):
        eids = ids >> _POS_BITS
        order = np.argsort(eids, kind="stable")
        uniq, starts = np.unique(eids[order], return_index=True)
        for eid, part in zip(uniq.tolist(), np.split(ids[order] & _POS_MASK, starts[1:])):
            out[int(eid)] = part
    return out


# -- matching -------------------------------------------------------------------------------------
@dataclasses.dataclass
class _Ref:
    entry_id: int
    bank: Bank
    labels: dict[str, t.Any]
    reference: str | None
    video: VideoSignals
    settings: VideoSettings


def match_video(vindex: VideoIndex, query: VideoSignals) -> list[VideoHit]:
    """Every banked video that ``query`` contains a segment of, best first; allow banks are
    not applied here (see :func:`merge_outcome`)."""
    if len(vindex) == 0 or len(query) == 0:
        return []
    store = vindex.store
    with store.read() as s:
        settings = get_settings(s)
        banks = {b.id: b for b in s.scalars(select(Bank))}
    if not banks:
        return []
    radius = max(settings.get(b, VideoSettings()).frame_threshold for b in banks)
    good = np.flatnonzero(query.quality >= MIN_QUALITY)
    if not len(good):
        return []
    variants: list[tuple[str, np.ndarray]] = [("original", query.codes[good])]
    if query.mirrored is not None:
        variants.append(("flip-x", query.mirrored[good]))
    # hits per variant: arrays of (query position, entry, ref position, distance)
    raw: dict[str, np.ndarray] = {}
    #: (query frame << 32 | entry) pairs placed by crop codes alone (see _crop_hits)
    crop_keys = np.zeros(0, np.int64)
    for name, codes in variants:
        parts = []
        for qi, hits in zip(good.tolist(), vindex.index.query(codes, radius)):
            if hits:
                arr = np.array(hits, np.int64)
                parts.append(np.column_stack([np.full(len(arr), qi), arr[:, 0] >> _POS_BITS,
                                              arr[:, 0] & _POS_MASK, arr[:, 1]]))
        if name == "original" and query.crop_grid is not None and len(vindex.crops):
            crop = _crop_hits(vindex, query, good)
            if crop:
                # crop codes stand in only where frame PDQ found nothing on that video: they
                # are coarse (64 bits of low frequencies), so next to PDQ hits they add votes
                # for every moment of a slowly changing shot, not information
                arr = np.concatenate(crop)
                if parts:
                    pdq = np.concatenate(parts)
                    have = np.unique(pdq[:, 0] * (1 << 32) + pdq[:, 1])
                    arr = arr[~np.isin(arr[:, 0] * (1 << 32) + arr[:, 1], have)]
                crop_keys = np.unique(arr[:, 0] * (1 << 32) + arr[:, 1])
                parts.append(arr)
        if parts:
            arr = np.concatenate(parts)
            # one row per (query frame, entry, reference frame): the closer of the two codes
            arr = arr[np.lexsort((arr[:, 3], arr[:, 2], arr[:, 1], arr[:, 0]))]
            first = np.ones(len(arr), bool)
            first[1:] = (np.diff(arr[:, :3], axis=0) != 0).any(axis=1)
            raw[name] = arr[first]
    if not raw:
        return []
    # generic frames: close to frames of many different videos, in either orientation
    spread: dict[int, set[int]] = {}
    for arr in raw.values():
        for qi, eid in arr[:, :2].tolist():
            spread.setdefault(qi, set()).add(eid)
    generic = {qi for qi, eids in spread.items() if len(eids) > COMMON_ENTRIES}
    candidates = sorted({int(e) for arr in raw.values() for e in arr[:, 1]})
    refs = _load_refs(store, candidates, banks, settings)
    _forget_deleted(vindex, [e for e in candidates if e not in refs])
    out: list[VideoHit] = []
    for name, arr in raw.items():
        if generic:
            arr = arr[~np.isin(arr[:, 0], list(generic))]
        for eid in np.unique(arr[:, 1]).tolist():
            ref = refs.get(int(eid))
            if ref is None:
                continue  # disabled, deleted, or its bank is gone
            sub = arr[arr[:, 1] == eid]
            sub = sub[sub[:, 3] <= ref.settings.frame_threshold]
            sub = _closest(sub)
            if len(sub) < MIN_FRAMES:
                continue
            qcodes = query.codes if name == "original" else t.cast(np.ndarray, query.mirrored)
            segments, dists = _align(query, qcodes, ref, sub)
            if not segments:
                continue
            # honest variant: "video+crop" when most matched frames were placed by crop codes
            # (the distances are then crop-code bits x CROP_SCALE, not frame PDQ bits)
            by_crop = name == "original" and len(crop_keys) and float(np.mean(np.isin(
                np.unique(sub[:, 0] * (1 << 32) + sub[:, 1]), crop_keys))) > 0.5
            out.append(VideoHit(
                bank=ref.bank.name, bank_kind=ref.bank.kind, entry_id=ref.entry_id,
                signal_type=SIGNAL_TYPE, distance=int(np.median(dists)),
                variant=("video+crop" if by_crop else "video") if name == "original"
                else f"video+{name}",
                threshold=ref.settings.frame_threshold, labels=dict(ref.labels or {}),
                reference=ref.reference, segments=tuple(segments),
            ))
    # one hit per entry: the orientation that explains more of the query
    best: dict[int, VideoHit] = {}
    for h in out:
        cover = sum(sg.query_end - sg.query_start for sg in h.segments)
        cur = best.get(h.entry_id)
        if cur is None or cover > sum(sg.query_end - sg.query_start for sg in cur.segments):
            best[h.entry_id] = h
    return sorted(best.values(), key=lambda h: (-max(sg.score for sg in h.segments), h.entry_id))


def _crop_hits(vindex: VideoIndex, query: VideoSignals, good: np.ndarray) -> list[np.ndarray]:
    """Hits of the query's crop-code grid (every box of every good frame) on the banked
    centre-box codes, as (query position, entry, ref position, distance on PDQ's scale) rows."""
    grid = t.cast(np.ndarray, query.crop_grid)
    boxes = grid.shape[1]
    found = vindex.crops.query(grid[good].reshape(-1, CROP_BYTES), CROP_RADIUS)
    parts = []
    for k, hits in enumerate(found):
        if hits:
            arr = np.array(hits, np.int64)
            parts.append(np.column_stack([
                np.full(len(arr), good[k // boxes]), arr[:, 0] >> _POS_BITS,
                arr[:, 0] & _POS_MASK, arr[:, 1] * CROP_SCALE]))
    return parts


def _load_refs(store: Store, ids: list[int], banks: dict[int, Bank],
               settings: dict[int, VideoSettings]) -> dict[int, _Ref]:
    refs: dict[int, _Ref] = {}
    with store.read() as s:
        for chunk in range(0, len(ids), 1000):
            for eid, bank_id, labels, reference, data in s.execute(
                select(Entry.id, Entry.bank_id, Entry.labels, Entry.reference, VideoSignalsRow.data)
                .join(VideoSignalsRow, VideoSignalsRow.entry_id == Entry.id)
                .where(Entry.id.in_(ids[chunk : chunk + 1000]), Entry.enabled.is_(True))
            ):
                if bank_id in banks:
                    refs[int(eid)] = _Ref(int(eid), banks[bank_id], labels, reference,
                                          VideoSignals.unpack(data),
                                          settings.get(bank_id, VideoSettings()))
    return refs


def _forget_deleted(vindex: VideoIndex, ids: list[int]) -> None:
    """Drop from the index the frames of entries that no longer exist at all (a deleted bank
    logs only its entries' signal rows, which are gone by the time the log is replayed)."""
    if not ids:
        return
    with vindex.store.read() as s:
        alive = set(s.scalars(select(VideoSignalsRow.entry_id)
                              .where(VideoSignalsRow.entry_id.in_(ids))).all())
    for eid in ids:
        if eid not in alive:
            vindex._remove(eid)


_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _one_picture(codes: np.ndarray) -> bool:
    """Whether matched reference frames are (nearly) all one picture: the largest group of
    frames within MIN_VARIATION bits of each other holds at least STATIC_SHARE of them. A held
    title card or logo is; a shot with any camera or subject motion is not. (One odd frame, e.g.
    the encoder's first frame after black, does not make a card "move".)"""
    if len(codes) < 2:
        return True
    d = _POPCOUNT[codes[:, None, :] ^ codes[None, :, :]].sum(axis=2)
    largest = int((d <= MIN_VARIATION).sum(axis=1).max())
    return largest >= STATIC_SHARE * len(codes)


def _closest(hits: np.ndarray) -> np.ndarray:
    """Keep, per query frame, only its hits within RELATIVE_KEEP bits of its best one. Slow
    footage (a tree in the wind) is within the search radius of *every* frame of its video, so
    without this each query frame votes for every offset and the vote finds a wrong line; the
    frame at the right moment is clearly the closest (2-12 bits against 14-24 on the corpus)."""
    if not len(hits):
        return hits
    qi = hits[:, 0]
    order = np.argsort(qi, kind="stable")
    h = hits[order]
    _, start = np.unique(h[:, 0], return_index=True)
    best = np.minimum.reduceat(h[:, 3], start)
    per = np.repeat(best, np.diff(np.append(start, len(h))))
    return h[h[:, 3] <= per + RELATIVE_KEEP]


def _time_specific(query: VideoSignals, ref: _Ref, run: np.ndarray, speed: float,
                   offset: float) -> bool:
    """Whether the query frames of a near-static segment match the reference frame *at their
    aligned time* clearly better than the segment's other reference frames. Slow footage (a
    tree in the wind, a slow zoom) passes: its frames drift by a few bits a second and each
    query frame is closest to its own moment. A held card does not: every frame of it is the
    same picture, so the aligned frame is no closer than any other (encoder noise only)."""
    rts = ref.video.timestamps
    rc = ref.video.codes
    lo, hi = speed * query.timestamps[run[0]] + offset, speed * query.timestamps[run[-1]] + offset
    span = np.flatnonzero((rts >= lo - TOLERANCE) & (rts <= hi + TOLERANCE))
    margins = []
    for i in run.tolist():
        if query.quality[i] < MIN_QUALITY:
            continue
        r = speed * query.timestamps[i] + offset
        dt = np.abs(rts[span] - r)
        own, other = span[dt <= 0.6], span[dt >= 2.0]
        if not len(own) or not len(other):
            continue
        d_own = int(_POPCOUNT[query.codes[i][None, :] ^ rc[own]].sum(axis=1).min())
        d_other = float(np.median(_POPCOUNT[query.codes[i][None, :] ^ rc[other]].sum(axis=1)))
        margins.append(d_other - d_own)
    if len(margins) < MIN_FRAMES:
        return False
    m = np.array(margins)
    return bool(np.median(m) >= SPECIFIC_MARGIN and (m >= SPECIFIC_MARGIN / 2).mean() >= 0.6)


def _align(query: VideoSignals, qcodes: np.ndarray, ref: _Ref,
           hits: np.ndarray) -> tuple[list[Segment], list[int]]:
    """Hough voting over (speed, offset), repeated while a cell has enough support."""
    tq_all = query.timestamps
    tr_all = ref.video.timestamps
    qi, ri, dist = hits[:, 0], hits[:, 2], hits[:, 3].astype(np.float64)
    tq, tr = tq_all[qi], tr_all[ri]
    alive = np.ones(len(hits), bool)
    segments: list[Segment] = []
    dists: list[int] = []
    thr = ref.settings.frame_threshold
    for _ in range(8):
        idx = np.flatnonzero(alive)
        if len(np.unique(qi[idx])) < MIN_FRAMES:
            break
        best = (0, 1.0, 0.0)
        for speed in _SPEED_ORDER:  # a tie goes to the speed nearest 1 (an unedited pace)
            b = tr[idx] - speed * tq[idx]
            for shift in (0.0, 0.5):
                cells = np.floor(b / BIN + shift).astype(np.int64)
                key = cells * (1 << 24) + qi[idx]
                uniq_cells = np.unique(key) >> 24  # one vote per query frame per cell
                vals, counts = np.unique(uniq_cells, return_counts=True)
                k = int(np.argmax(counts))
                if counts[k] > best[0]:
                    best = (int(counts[k]), float(speed), (vals[k] + 0.5 - shift) * BIN)
        votes, speed, offset = best
        if votes < MIN_FRAMES:
            break
        # inliers and a least-squares refit of the line
        for _refit in range(2):
            res = tr[idx] - (speed * tq[idx] + offset)
            near = idx[np.abs(res) <= TOLERANCE]
            if len(np.unique(qi[near])) < MIN_FRAMES:
                break
            per_q = _per_query_time(qi[near], tq[near], tr[near], dist[near], thr)
            qt, rt = per_q[:, 0], per_q[:, 1]
            if qt.max() - qt.min() >= 4.0 and len(qt) >= 4:
                s_fit, b_fit = np.polyfit(qt, rt, 1)
                if 0.6 <= s_fit <= 1.7:
                    speed, offset = float(s_fit), float(b_fit)
                    continue
            if qt.max() - qt.min() < 4.0:
                speed = 1.0  # under 4 s of evidence the speed is not measurable: assume none
            offset = float(np.median(rt - speed * qt))
        if abs(speed - 1.0) < 0.06:  # sampling jitter on a short segment, not a speed change
            speed = 1.0
            per_q = _per_query_time(qi[near], tq[near], tr[near], dist[near], thr)
            offset = float(np.median(per_q[:, 1] - per_q[:, 0]))
        res = tr[idx] - (speed * tq[idx] + offset)
        near = idx[np.abs(res) <= TOLERANCE]
        alive[near] = False
        # also retire every hit of these query frames to this entry: one role per query frame
        alive &= ~np.isin(qi, np.unique(qi[near]))
        if len(np.unique(qi[near])) < MIN_FRAMES:
            continue
        for run in _runs(np.unique(qi[near]), tq_all):
            run = _extend(query, qcodes, ref, run, speed, offset)
            seg = _segment(query, ref, run, near, qi, ri, dist, speed, offset)
            if seg is not None:
                segments.append(seg)
                dists += [int(d) for d in dist[near][np.isin(qi[near], run)]]
    return _merge(sorted(_drop_overlaps(segments), key=lambda sg: sg.query_start)), dists


def _drop_overlaps(segments: list[Segment]) -> list[Segment]:
    """One moment of the query shows one moment of the reference: of segments that share most
    of their query time (a second, weaker line through a slowly changing shot, which loose
    extension can stretch over the first), keep the one with more matched frames."""
    kept: list[Segment] = []
    for sg in sorted(segments, key=lambda x: (-x.frames, -x.score)):
        length = max(sg.query_end - sg.query_start, 1e-6)
        shared = sum(max(0.0, min(sg.query_end, k.query_end) - max(sg.query_start, k.query_start))
                     for k in kept)
        if shared <= 0.5 * length:
            kept.append(sg)
    return kept


def _merge(segments: list[Segment]) -> list[Segment]:
    """Join consecutive segments that lie on one line (same speed, same offset): they are one
    stretch of the reference whose middle had frames too dark, too faded or too edited to
    match. Joined only across a gap of at most MERGE_GAP seconds or a quarter of the joined
    length, so an insertion of other material between two parts stays visible."""
    out: list[Segment] = []
    for sg in segments:
        if out:
            prev = out[-1]
            gap = sg.query_start - prev.query_end
            predicted = prev.ref_start + sg.speed * (sg.query_start - prev.query_start)
            same_line = (abs(sg.speed - prev.speed) <= 0.06
                         and abs(predicted - sg.ref_start) <= 2 * TOLERANCE)
            span = sg.query_end - prev.query_start
            if same_line and gap <= max(MERGE_GAP, 0.25 * span):
                n = prev.frames + sg.frames
                # the later-starting one may end first (it lies inside the other): keep the end
                # that is later, never shorten the joined segment
                last = sg if sg.query_end >= prev.query_end else prev
                out[-1] = Segment(prev.query_start, last.query_end, prev.ref_start, last.ref_end,
                                  round((prev.score * prev.frames + sg.score * sg.frames) / n, 4),
                                  n, prev.speed)
                continue
        out.append(sg)
    return out


def _per_query_time(qi: np.ndarray, tq: np.ndarray, tr: np.ndarray, dist: np.ndarray,
                    thr: int) -> np.ndarray:
    """(query time, distance-weighted reference time) per query frame."""
    out = []
    for q in np.unique(qi):
        m = qi == q
        w = (thr + 1.0 - dist[m]) ** 2
        out.append((tq[m][0], float((tr[m] * w).sum() / w.sum())))
    return np.array(out)


def _runs(positions: np.ndarray, tq_all: np.ndarray) -> list[np.ndarray]:
    """Split sorted query positions where the query time jumps by more than MAX_GAP."""
    positions = np.sort(positions)
    times = tq_all[positions]
    cuts = np.flatnonzero(np.diff(times) > MAX_GAP) + 1
    return np.split(positions, cuts)


def _extend(query: VideoSignals, qcodes: np.ndarray, ref: _Ref, run: np.ndarray, speed: float,
            offset: float) -> np.ndarray:
    """Grow a run of matched query frames backwards and forwards while the next query frame is
    within EXTEND_THRESHOLD of a reference frame near where the line puts it. A low-quality
    frame (a dark, flat or blurred picture, never searched) joins too when it is within
    LOW_EXTEND_THRESHOLD of the reference frame at its aligned moment: next to an established
    alignment, a run of such frames is confirmed one by one (the corpus' dark nature slide has
    quality 22 on both sides and is 6-26 bits from its original). A frame too flat for even
    that (quality under LOW_QUALITY_FLOOR), or one that fails the test (a dissolve between two
    shots), may be stepped over once, not more; frames stepped over do not join the run."""
    ts, rts = query.timestamps, ref.video.timestamps
    n = len(ts)
    grid = query.crop_grid

    def ok(i: int) -> bool:
        r = speed * ts[i] + offset
        if query.quality[i] < MIN_QUALITY:
            near = np.flatnonzero(np.abs(rts - r) <= 0.6)
            d = _POPCOUNT[qcodes[i][None, :] ^ ref.video.codes[near]].sum(axis=1)
            return bool(len(near)) and int(d.min()) <= LOW_EXTEND_THRESHOLD
        near = np.flatnonzero(np.abs(rts - r) <= TOLERANCE)
        if not len(near):
            return False
        d = _POPCOUNT[qcodes[i][None, :] ^ ref.video.codes[near]].sum(axis=1)
        if int(d.min()) <= EXTEND_THRESHOLD:
            return True
        if grid is None or ref.video.crops is None or qcodes is not query.codes:
            return False
        dc = _POPCOUNT[grid[i][:, None, :] ^ ref.video.crops[near][None, :, :]].sum(axis=2)
        return int(dc.min()) <= CROP_EXTEND

    out = set(run.tolist())
    for step, start in ((-1, int(run[0]) - 1), (1, int(run[-1]) + 1)):
        i, skipped = start, 0
        while 0 <= i < n:
            if query.quality[i] >= LOW_QUALITY_FLOOR and ok(i):
                out.add(i)
                skipped = 0
            else:  # one frame may be stepped over (a flat frame, a dissolve between shots)
                skipped += 1
                if skipped > 1:
                    break
            i += step
    return np.array(sorted(out), np.int64)


def _segment(query: VideoSignals, ref: _Ref, run: np.ndarray, near: np.ndarray, qi: np.ndarray,
             ri: np.ndarray, dist: np.ndarray, speed: float, offset: float) -> Segment | None:
    if len(run) < MIN_FRAMES:
        return None
    ts = query.timestamps
    cuts = query.scene_cut if query.scene_cut is not None else np.zeros(len(ts), bool)
    n = len(ts)
    i0, i1 = int(run[0]), int(run[-1])
    q_start = float(ts[i0]) if (cuts[i0] or i0 == 0) else float(ts[i0 - 1] + ts[i0]) / 2
    if i1 + 1 < n:
        q_end = float(ts[i1 + 1]) if cuts[i1 + 1] else float(ts[i1] + ts[i1 + 1]) / 2
    else:
        q_end = float(query.duration)
    ref_dur = float(ref.video.duration)
    r_start = min(max(0.0, speed * q_start + offset), ref_dur)
    r_end = min(max(0.0, speed * q_end + offset), ref_dur)
    duration = q_end - q_start
    share = (r_end - r_start) / ref_dur if ref_dur > 0 else 0.0
    st = ref.settings
    if duration < st.min_seconds and not (st.min_share is not None and share >= st.min_share):
        return None
    sel = near[np.isin(qi[near], run)]
    if (_one_picture(ref.video.codes[np.unique(ri[sel])])
            and not _time_specific(query, ref, run, speed, offset)):
        return None  # one static picture (a card, a logo on black): not evidence of this video
    usable = np.flatnonzero((ts >= q_start - 1e-6) & (ts <= q_end + 1e-6)
                            & (query.quality >= MIN_QUALITY))
    coverage = len(run) / max(1, len(usable))
    closeness = 1.0 - float(np.mean(dist[sel])) / 128.0
    return Segment(q_start, q_end, r_start, r_end, round(min(1.0, coverage) * closeness, 4),
                   len(run), speed)


def merge_outcome(base: MatchOutcome | None, hits: t.Sequence[VideoHit]) -> MatchOutcome:
    """Add video hits to the outcome of the other signals of the same file. An entry already
    matched exactly (same file bytes) keeps its exact hit; allow banks suppress as usual."""
    matches = list(base.matches) if base else []
    allowed = list(base.allowed) if base else []
    suppressed = list(base.suppressed) if base else []
    have = {h.entry_id for h in matches + allowed + suppressed}
    for h in hits:
        if h.entry_id in have:
            # the same entry matched exactly: keep one hit, but give it the segments
            for lst in (matches, allowed, suppressed):
                for i, old in enumerate(lst):
                    if old.entry_id == h.entry_id and not isinstance(old, VideoHit):
                        lst[i] = VideoHit(**{**dataclasses.asdict(old), "labels": old.labels},
                                          segments=h.segments)
            continue
        (allowed if h.bank_kind == "allow" else matches).append(h)
    if allowed:
        return MatchOutcome(matches=[], allowed=allowed, suppressed=suppressed + matches)
    return MatchOutcome(matches=matches, allowed=[], suppressed=suppressed)


def bank_video_settings(store: Store, bank_name: str) -> VideoSettings:
    with store.read() as s:
        bank = bankops.get_bank(s, bank_name)
        return get_settings(s).get(bank.id, VideoSettings())


def entry_video(store: Store, entry_id: int) -> VideoSignals:
    with store.read() as s:
        row = s.get(VideoSignalsRow, entry_id)
        if row is None:
            raise NotFound(f"entry {entry_id} has no video frame signals", entry=entry_id)
        return VideoSignals.unpack(row.data)


def export_videos(store: Store, bank_name: str) -> t.Iterator[tuple[Entry, VideoSignals]]:
    """Every enabled video entry of a bank with its stored frame signals, for export in the
    vPDQ text form (:meth:`VideoSignals.to_vpdq`; the crop codes have no vPDQ field and stay
    behind: an exported entry re-imported matches as vPDQ hashes do, crops excepted)."""
    with store.read() as s:
        bank = bankops.get_bank(s, bank_name)
        stmt = (
            select(Entry, VideoSignalsRow.data)
            .join(VideoSignalsRow, VideoSignalsRow.entry_id == Entry.id)
            .where(Entry.bank_id == bank.id, Entry.enabled.is_(True))
            .order_by(Entry.id)
            .execution_options(yield_per=100)
        )
        for entry, data in s.execute(stmt):
            yield entry, VideoSignals.unpack(data)


def export_vpdq_dir(store: Store, bank_name: str, out_dir: Path) -> list[dict[str, t.Any]]:
    """Write each enabled video entry of a bank as ``<out_dir>/entry-<id>.vpdq.txt`` (Meta's
    vPDQ text form: ``frame_number,pdq_hex,quality,timestamp`` per line, nothing else, so
    Meta's tools read it), plus ``manifest.jsonl`` naming each file's entry, reference and
    labels (which the vPDQ form has no place for). Returns the manifest rows."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{out_dir}: cannot create: {exc.strerror or exc}") from exc
    rows: list[dict[str, t.Any]] = []
    try:
        for entry, video in export_videos(store, bank_name):
            name = f"entry-{entry.id}.vpdq.txt"
            (out_dir / name).write_text(video.to_vpdq(), encoding="utf-8")
            rows.append({"file": name, "entry_id": entry.id, "reference": entry.reference,
                         "labels": entry.labels or {}, "frames": len(video),
                         "duration": round(video.duration, 3)})
        with (out_dir / "manifest.jsonl").open("w", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    except OSError as exc:
        raise UsageError(f"{out_dir}: cannot write: {exc.strerror or exc}") from exc
    return rows
