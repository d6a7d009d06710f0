"""The review queue: block matches wait here for a human decision.

Flow:

1. :func:`queue_matches` runs inside the transaction that records a submission (the core calls it
   from ``Vigil._record``). Each block-bank hit becomes a :class:`ReviewItem` of the *open case* for
   that bank entry, created on first sight. Fifty re-uploads of one release are therefore one case
   (one decision) with fifty items. For an image, a downscaled thumbnail (at most
   :data:`THUMB_SIDE` px, JPEG) is written under ``<data>/review-media``; the bank keeps no media,
   and :mod:`vigil.core.retention` deletes thumbnails after the retention period.
2. The queue (:func:`list_cases`) is ordered by severity (the entry's ``severity`` label), then by
   the best match confidence, then by age.
3. A reviewer claims a case (:func:`claim`; a claim lapses after :data:`CLAIM_TTL`), looks at the
   labels and evidence first, reveals media item by item (each reveal counts against the
   reviewer's daily exposure cap, :func:`reveal`), and decides (:func:`decide`): confirm, false
   positive or escalate, with a reason code and optional text. A false positive may disable the
   entry and/or add the content's own signals to an allow bank. Each decision stores a statement
   of reasons with the EU DSA fields, is audited, and schedules the matching action rules — all
   in one transaction, so a decision is never half recorded. Two reviewers deciding the same case
   at once: exactly one wins (a conditional update), the other gets a conflict.

Match confidence: 1.0 for an exact hash; for a distance ``d`` under threshold ``T``,
``1 - d / (2 * (T + 1))`` (so 1.0 at distance 0 and just over 0.5 at the threshold).
"""

from __future__ import annotations

import datetime as dt
import typing as t
import uuid
from pathlib import Path

from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.orm import Session

from vigil.core import actions, audit
from vigil.core import banks as bankops
from vigil.errors import Conflict, Forbidden, NotFound, UsageError
from vigil.signals import Signal, registry
from vigil.store.models import Entry, Submission, utcnow
from vigil.store.service_models import Decision, Exposure, ReviewCase, ReviewItem

if t.TYPE_CHECKING:
    from vigil.core.app import ItemResult, Vigil

__all__ = [
    "REASON_CODES",
    "SEVERITY_RANK",
    "VERDICTS",
    "ExposureCapReached",
    "case_detail",
    "claim",
    "confidence",
    "decide",
    "exposure_today",
    "list_cases",
    "queue_depth",
    "queue_matches",
    "reveal",
]

VERDICTS = ("confirm", "false_positive", "escalate")
REASON_CODES: dict[str, tuple[str, ...]] = {
    "confirm": ("known_release", "derivative", "other"),
    "false_positive": ("different_content", "benign_lookalike", "news_or_research", "other"),
    "escalate": ("unsure", "needs_legal", "needs_language", "other"),
}
DECISION_GROUNDS = ("illegal_content", "incompatible_with_terms")
SEVERITY_RANK = {"low": 1, "medium": 2, "high": 3, "critical": 4}
THUMB_SIDE = 320
MEDIA_DIR = "review-media"
CLAIM_TTL = dt.timedelta(minutes=30)


class ExposureCapReached(Forbidden):
    code = "exposure_cap"


def confidence(signal_type: str, distance: int, threshold: int) -> float:
    if registry.get(signal_type).distance_kind == "exact":
        return 1.0
    return round(max(0.0, 1.0 - distance / (2.0 * (threshold + 1))), 4)


def _iso(v: dt.datetime | None) -> str | None:
    return None if v is None else audit._ts(v) + "Z"


def _aware(v: dt.datetime) -> dt.datetime:
    return v if v.tzinfo is not None else v.replace(tzinfo=dt.UTC)


# -- queueing (called by the core while recording a submission) ---------------------------------
def make_thumbnail(src: str, data_dir: Path) -> str | None:
    """A small JPEG of an image file, for review; None if it cannot be made (never raises)."""
    from PIL import Image

    try:
        with Image.open(src) as im:
            # the file was already decoded safely by hashing; draft() keeps large JPEGs cheap
            im.draft("RGB", (THUMB_SIDE * 2, THUMB_SIDE * 2))
            im.seek(0)
            rgb = im.convert("RGB")
            rgb.thumbnail((THUMB_SIDE, THUMB_SIDE))
            rel = f"{MEDIA_DIR}/{uuid.uuid4().hex}.jpg"
            out = data_dir / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            rgb.save(out, "JPEG", quality=70)
            return rel
    except Exception:  # noqa: BLE001 - a thumbnail is a convenience; the match is what matters
        return None


def queue_matches(s: Session, sub: Submission, item: ItemResult, data_dir: Path) -> list[int]:
    """Add one item per block hit to the open case of its entry; returns the case ids touched."""
    if item.outcome is None or not item.outcome.matches:
        return []
    s.flush()  # the submission needs its id
    media: str | None = None
    if item.path and item.hashed is not None and item.hashed.media is not None:
        media = make_thumbnail(item.path, data_dir)
    own = [sig.to_dict() for sig in (item.hashed.signals if item.hashed else [])]
    if not own and item.signal:
        own = [Signal.parse(item.signal).to_dict()]
    source = item.path or item.signal
    if item.path and Path(item.path).resolve().parent.parent == (data_dir / "tmp").resolve():
        source = "upload:" + Path(item.path).name  # the service stages uploads there
    touched: list[int] = []
    for hit in item.outcome.matches:
        if hit.bank_kind != "block":
            continue
        case = s.scalar(select(ReviewCase).where(ReviewCase.entry_id == hit.entry_id,
                                                 ReviewCase.status == "open"))
        conf = confidence(hit.signal_type, hit.distance, hit.threshold)
        if case is None:
            case = ReviewCase(entry_id=hit.entry_id, bank=hit.bank,
                              severity_rank=SEVERITY_RANK.get(str(hit.labels.get("severity")), 0),
                              confidence=conf, status="open", item_count=0)
            s.add(case)
            s.flush()
        case.item_count = (case.item_count or 0) + 1
        case.confidence = max(case.confidence or 0.0, conf)
        case.updated_at = utcnow()
        s.add(ReviewItem(case_id=case.id, submission_id=sub.id, signal_type=hit.signal_type,
                         distance=hit.distance, threshold=hit.threshold, variant=hit.variant,
                         confidence=conf, signals={"signals": own},
                         source=source, media_path=media))
        touched.append(case.id)
    return touched


# -- reading -------------------------------------------------------------------------------------
def queue_depth(s: Session) -> dict[str, int]:
    rows = s.execute(select(ReviewCase.status, func.count()).group_by(ReviewCase.status)).all()
    return {str(k): int(v) for k, v in rows}


def _case_dict(c: ReviewCase, entry: Entry | None) -> dict[str, t.Any]:
    return {
        "id": c.id, "entry_id": c.entry_id, "bank": c.bank, "status": c.status,
        "severity": (entry.labels or {}).get("severity") if entry else None,
        "severity_rank": c.severity_rank, "confidence": c.confidence, "items": c.item_count,
        "labels": dict(entry.labels or {}) if entry else {},
        "entry_enabled": entry.enabled if entry else None,
        "claimed_by": c.claimed_by, "claimed_at": _iso(c.claimed_at),
        "created_at": _iso(c.created_at), "updated_at": _iso(c.updated_at),
    }


def list_cases(s: Session, *, status: str = "open", limit: int = 50, offset: int = 0,
               bank: str | None = None) -> list[dict[str, t.Any]]:
    stmt = (select(ReviewCase, Entry).join(Entry, Entry.id == ReviewCase.entry_id)
            .where(ReviewCase.status == status)
            .order_by(ReviewCase.severity_rank.desc(), ReviewCase.confidence.desc(),
                      ReviewCase.created_at, ReviewCase.id)
            .limit(limit).offset(offset))
    if bank:
        stmt = stmt.where(ReviewCase.bank == bank)
    return [_case_dict(c, e) for c, e in s.execute(stmt).all()]


def item_dict(i: ReviewItem) -> dict[str, t.Any]:
    return {
        "id": i.id, "case_id": i.case_id, "submission_id": i.submission_id,
        "signal_type": i.signal_type, "distance": i.distance, "threshold": i.threshold,
        "variant": i.variant, "confidence": i.confidence, "source": i.source,
        "has_media": i.media_path is not None, "created_at": _iso(i.created_at),
    }


def decision_dict(d: Decision) -> dict[str, t.Any]:
    return {"id": d.id, "case_id": d.case_id, "reviewer": d.reviewer, "verdict": d.verdict,
            "reason_code": d.reason_code, "reason_text": d.reason_text,
            "statement_of_reasons": d.statement, "follow_up": d.follow_up,
            "created_at": _iso(d.created_at)}


def case_detail(s: Session, case_id: int, *, item_limit: int = 200) -> dict[str, t.Any]:
    c = s.get(ReviewCase, case_id)
    if c is None:
        raise NotFound(f"no review case {case_id}", case=case_id)
    entry = s.get(Entry, c.entry_id)
    out = _case_dict(c, entry)
    out["reference"] = entry.reference if entry else None
    out["items_shown"] = [item_dict(i) for i in s.scalars(
        select(ReviewItem).where(ReviewItem.case_id == c.id)
        .order_by(ReviewItem.confidence.desc(), ReviewItem.id).limit(item_limit))]
    out["decisions"] = [decision_dict(d) for d in s.scalars(
        select(Decision).where(Decision.case_id == c.id).order_by(Decision.id))]
    return out


# -- claiming, exposure --------------------------------------------------------------------------
def claim(s: Session, case_id: int, reviewer: str, *, force: bool = False) -> dict[str, t.Any]:
    c = s.get(ReviewCase, case_id)
    if c is None:
        raise NotFound(f"no review case {case_id}", case=case_id)
    if c.status != "open":
        raise Conflict(f"case {case_id} is already {c.status}", case=case_id, status=c.status)
    now = utcnow()
    held = (c.claimed_by and c.claimed_by != reviewer and c.claimed_at is not None
            and now - _aware(c.claimed_at) < CLAIM_TTL)
    if held and not force:
        raise Conflict(f"case {case_id} is claimed by {c.claimed_by}", case=case_id,
                       claimed_by=c.claimed_by)
    c.claimed_by, c.claimed_at = reviewer, now
    s.flush()
    return _case_dict(c, s.get(Entry, c.entry_id))


def _today() -> str:
    return utcnow().date().isoformat()


def exposure_today(s: Session, reviewer: str) -> int:
    return int(s.scalar(select(Exposure.count).where(Exposure.reviewer == reviewer,
                                                     Exposure.day == _today())) or 0)


def reveal(s: Session, item_id: int, reviewer: str, cap: int) -> tuple[ReviewItem, int]:
    """Count one reveal of an item's media for the reviewer; refuse past the daily cap.

    Returns the item and the reviewer's count for today (after this reveal)."""
    item = s.get(ReviewItem, item_id)
    if item is None:
        raise NotFound(f"no review item {item_id}", item=item_id)
    if item.media_path is None:
        raise NotFound(f"review item {item_id} has no media (none kept, or purged)", item=item_id)
    day = _today()
    row = s.scalar(select(Exposure).where(Exposure.reviewer == reviewer, Exposure.day == day))
    if row is None:
        row = Exposure(reviewer=reviewer, day=day, count=0)
        s.add(row)
        s.flush()
    if row.count >= cap:
        raise ExposureCapReached(
            f"daily exposure cap reached ({row.count}/{cap}): media is hidden until tomorrow",
            count=row.count, cap=cap)
    s.execute(update(Exposure).where(Exposure.id == row.id).values(count=Exposure.count + 1))
    s.flush()
    s.refresh(row)
    return item, row.count


# -- deciding ------------------------------------------------------------------------------------
def statement_of_reasons(verdict: str, entry: Entry, bank: str, has_media: bool,
                         ground: str, legal_ground: str, category: str | None,
                         items: int) -> dict[str, t.Any]:
    """The EU DSA art. 17 fields a transparency export needs, for one decision."""
    labels = dict(entry.labels or {})
    return {
        "decision_ground": ground,
        "legal_or_contractual_ground": legal_ground,
        "category": category or "STATEMENT_CATEGORY_VIOLENCE",
        "category_specification": labels.get("category"),
        "decision_visibility": ("DECISION_VISIBILITY_CONTENT_REMOVED" if verdict == "confirm"
                                else None),
        "content_type": "CONTENT_TYPE_IMAGE" if has_media else "CONTENT_TYPE_OTHER",
        "automated_detection": True,  # a hash match put it in the queue
        "automated_decision": False,  # a person decided
        "facts_and_circumstances": (
            f"{items} item(s) matched entry {entry.id} of bank {bank!r} "
            f"(group={labels.get('group')!r}, release={labels.get('release')!r})"),
        "decided_at": audit._ts(utcnow()) + "Z",
    }


def decide(vigil: Vigil, case_id: int, reviewer: str, verdict: str, reason_code: str,
           reason_text: str = "", *, disable_entry: bool = False, allow_bank: str | None = None,
           decision_ground: str | None = None, legal_ground: str = "",
           category: str | None = None) -> dict[str, t.Any]:
    """Record a decision with its statement of reasons, follow-ups, audit row and actions, in one
    transaction (see the module docstring)."""
    if verdict not in VERDICTS:
        raise UsageError(f"verdict must be one of {', '.join(VERDICTS)}, got {verdict!r}")
    if reason_code not in REASON_CODES[verdict]:
        raise UsageError(f"reason code for {verdict} must be one of "
                         f"{', '.join(REASON_CODES[verdict])}, got {reason_code!r}")
    if (disable_entry or allow_bank) and verdict != "false_positive":
        raise UsageError("disabling the entry or adding to an allow bank needs a false_positive")
    ground = decision_ground or ("incompatible_with_terms" if verdict != "false_positive"
                                 else "none")
    if ground not in (*DECISION_GROUNDS, "none"):
        raise UsageError(f"decision ground must be one of {', '.join(DECISION_GROUNDS)}")
    if len(reason_text) > 5000:
        raise UsageError("reason text is longer than 5000 characters")
    index_rows: list[t.Any] = []
    with vigil.store.transaction() as s:
        c = s.get(ReviewCase, case_id)
        if c is None:
            raise NotFound(f"no review case {case_id}", case=case_id)
        # the first write, and a conditional one: of two concurrent decisions exactly one wins
        won = s.execute(update(ReviewCase)
                        .where(ReviewCase.id == case_id, ReviewCase.status == "open")
                        .values(status="decided", updated_at=utcnow()))
        if t.cast(CursorResult[t.Any], won).rowcount != 1:
            raise Conflict(f"case {case_id} was already decided", case=case_id)
        entry = s.get(Entry, c.entry_id)
        assert entry is not None  # FK
        items = s.scalars(select(ReviewItem).where(ReviewItem.case_id == case_id)).all()
        follow: dict[str, t.Any] = {}
        if disable_entry:
            bank = bankops.get_bank(s, c.bank)
            index_rows += bankops.set_enabled(s, bank, entry.id, False)
            follow["disabled_entry"] = entry.id
            audit.append(s, reviewer, "entry.disable", f"entry:{entry.id}",
                         {"bank": c.bank, "via": f"case:{case_id}"})
        if allow_bank:
            allow = bankops.get_bank(s, allow_bank)
            if allow.kind != "allow":
                raise UsageError(f"bank {allow_bank!r} is a {allow.kind} bank, not an allow bank")
            sigs: dict[tuple[str, str], Signal] = {}
            for it in items:
                for d in (it.signals or {}).get("signals", []):
                    sig = Signal(d["type"], d["value"], d.get("quality"), d.get("variant"))
                    sigs.setdefault((sig.type, sig.value), sig)
            if not sigs:
                raise UsageError("the items of this case carry no signals to add to an allow bank")
            added = bankops.add_entries(s, allow, [bankops.EntrySpec(
                list(sigs.values()), {"note": f"false positive of entry {entry.id}"},
                f"case:{case_id}")])
            follow["allow_entry"] = added[0][0]
            index_rows += added[0][1]
            audit.append(s, reviewer, "entry.add", f"entry:{added[0][0]}",
                         {"bank": allow_bank, "via": f"case:{case_id}", "signals": len(sigs)})
        d = Decision(case_id=case_id, reviewer=reviewer, verdict=verdict,
                     reason_code=reason_code, reason_text=reason_text,
                     statement=statement_of_reasons(
                         verdict, entry, c.bank, any(i.media_path for i in items), ground,
                         legal_ground, category, len(items)),
                     follow_up=follow)
        s.add(d)
        s.flush()
        audit.append(s, reviewer, "review.decide", f"case:{case_id}",
                     {"decision": d.id, "verdict": verdict, "reason_code": reason_code,
                      "entry": entry.id, "bank": c.bank, "items": len(items), **follow})
        event = {
            "type": "decision", "id": f"decision:{d.id}", "decision": decision_dict(d),
            "case": {"id": c.id, "bank": c.bank, "entry_id": entry.id, "items": len(items)},
            "labels": dict(entry.labels or {}),
        }
        actions.schedule(s, event, bank=c.bank, labels=dict(entry.labels or {}), decision=verdict)
        out = decision_dict(d)
    vigil._applied(index_rows)
    return out
