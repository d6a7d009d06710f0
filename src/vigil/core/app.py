"""The core facade: one object that the CLI (and later the API) calls for everything.

``Vigil`` owns the store, the indexes (loaded lazily: creating a bank needs no index) and the
settings. Every write goes through one transaction, and once it has committed the in-process
indexes apply the same change-log rows, so a new entry matches, and a disabled one stops
matching, as soon as the call returns.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import os
import time
import typing as t
from pathlib import Path

from sqlalchemy import insert, select

from vigil.config import Settings
from vigil.core import audit, review
from vigil.core import banks as bankops
from vigil.core import video as videoops
from vigil.core.hashing import HashResult, hash_file
from vigil.core.indexes import SAVE_AFTER, IndexSet
from vigil.core.matcher import Matcher, MatchOutcome, Query
from vigil.core.robust import MODES as robust_modes
from vigil.core.robust import RobustIndex, robust_mode, store_payloads
from vigil.errors import UsageError, VigilError
from vigil.signals import Signal
from vigil.store.db import Store, bump_banks_version, sqlite_url
from vigil.store.models import Bank, Entry, Match, Submission, utcnow

__all__ = ["ItemResult", "ScanSummary", "Vigil"]


@dataclasses.dataclass
class ItemResult:
    """The outcome for one item of a batch: a file, or a signal given on its own."""

    path: str | None = None
    signal: str | None = None
    hashed: HashResult | None = None
    outcome: MatchOutcome | None = None
    error: VigilError | None = None
    entry_id: int | None = None

    def to_dict(self) -> dict[str, t.Any]:
        out: dict[str, t.Any] = {"path": self.path} if self.signal is None else {"signal": self.signal}
        out.update(self.outcome.to_dict() if self.outcome else {"matches": [], "allowed": [], "suppressed": []})
        if self.hashed is not None and self.hashed.media_error is not None:
            out["note"] = self.hashed.media_error.message
        out["error"] = self.error.to_dict() if self.error else None
        return out


@dataclasses.dataclass
class ScanSummary:
    files: int = 0
    checked: int = 0
    skipped: int = 0
    matched: int = 0
    allowed: int = 0
    not_images: int = 0
    errors: int = 0

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def _hash_for_pool(args: tuple[str, t.Any]) -> HashResult:
    path, limits = args
    return hash_file(Path(path), limits)


class Vigil:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings.from_env()
        url = self.settings.database_url or sqlite_url(self.settings.data_dir)
        self.store = Store(url)
        self._indexes: IndexSet | None = None
        self._robust: RobustIndex | None = None
        self._video: videoops.VideoIndex | None = None
        self._matcher: Matcher | None = None
        #: the banks' version token read by the last refresh_indexes (see Matcher.banks_token)
        self._banks_token: str | None = None
        #: how long one look at the store's change marks stays good, in seconds; 0 (the
        #: default): look before every match. The service sets a few tens of milliseconds:
        #: under load it matches hundreds of batches a second, and another process's change
        #: then applies within that time. This process's own changes apply at once either way
        #: (entries through ``_applied``, bank settings through ``Store.on_banks_changed``).
        self.refresh_interval_s = 0.0
        self._marks_at = -float("inf")
        self.store.on_banks_changed.append(self._forget_marks)
        #: hooks of the service (vigil.core.audit, vigil.core.review); on by default for the CLI too
        self.audit_changes = True
        self.review_queue = os.environ.get("VIGIL_REVIEW_QUEUE", "1") != "0"

    # -- indexes ---------------------------------------------------------------------------
    @property
    def indexes(self) -> IndexSet:
        if self._indexes is None:
            self._indexes = IndexSet(self.store, self.settings.index_dir).load()
        return self._indexes

    @property
    def robust(self) -> RobustIndex:
        """The local-feature index of the robust tier, loaded on first use like ``indexes``."""
        if self._robust is None:
            self._robust = RobustIndex(self.store, self.settings.index_dir).load()
        return self._robust

    @property
    def video_index(self) -> videoops.VideoIndex:
        """The frame index of banked videos (vigil.core.video), loaded on first use."""
        if self._video is None:
            self._video = videoops.VideoIndex(self.store, self.settings.index_dir).load()
        return self._video

    @property
    def matcher(self) -> Matcher:
        m = self._matcher
        if m is None or m.indexes is not self.indexes or m.robust is not self.robust:
            m = self._matcher = Matcher(self.indexes, self.robust)
        m.banks_token = self._banks_token
        return m

    def _applied(self, rows: t.Sequence[t.Any]) -> None:
        if self._indexes is not None and rows:
            self._indexes.apply(rows)
        if self._robust is not None and rows:
            self._robust.apply(rows)
        if self._video is not None and rows:
            self._video.apply(rows)

    def refresh_indexes(self) -> int:
        """Apply what other processes changed (a `vigil bank add` while a scan or the server
        runs): one query for the change marks (``Store.change_marks``: the change log's head and
        the banks' version token, which the matcher keys its bank settings on), skipped while
        the last look is younger than ``refresh_interval_s``; then a change-log catch-up only for
        the loaded indexes that are behind. Returns the change-log rows applied."""
        loaded = [i for i in (self._indexes, self._robust, self._video) if i is not None]
        if not loaded:
            return 0
        now = time.monotonic()
        if now - self._marks_at < self.refresh_interval_s:
            return 0
        self._marks_at = now
        head, self._banks_token = self.store.change_marks()  # the matcher's cache key
        return sum(idx.catch_up() for idx in loaded if head > idx.last_seq)

    def _forget_marks(self) -> None:
        self._marks_at = -float("inf")

    def close(self) -> None:
        self.store.dispose()

    def _audit(self, s: t.Any, action: str, target: str, details: dict[str, t.Any]) -> None:
        """Append a bank/entry change to the audit log, in the change's own transaction; the
        actor is whoever :func:`vigil.core.audit.acting_as` names (``cli`` by default)."""
        if self.audit_changes:
            audit.append(s, audit.ACTOR.get(), action, target, details)

    # -- banks -----------------------------------------------------------------------------
    def create_bank(self, name: str, kind: str = "block", thresholds: dict[str, int] | None = None,
                    description: str = "") -> dict[str, t.Any]:
        with self.store.transaction() as s:
            bank = bankops.create_bank(s, name, kind, thresholds, description)
            self._audit(s, "bank.create", f"bank:{name}",
                        {"kind": kind, "thresholds": dict(thresholds or {})})
            return bankops.bank_summary(s, bank)

    def list_banks(self) -> list[dict[str, t.Any]]:
        with self.store.read() as s:
            return [bankops.bank_summary(s, b) for b in s.scalars(select(Bank).order_by(Bank.name))]

    def bank_info(self, name: str) -> dict[str, t.Any]:
        with self.store.read() as s:
            return bankops.bank_summary(s, bankops.get_bank(s, name))

    def delete_bank(self, name: str) -> dict[str, t.Any]:
        """Delete a bank with its entries. Refused (Conflict) once any of its entries matched
        something: decisions and matches must stay explainable; disable the entries instead."""
        from sqlalchemy import delete as sql_delete
        from sqlalchemy.exc import IntegrityError

        from vigil.errors import Conflict
        from vigil.store.models import IndexLog, SignalRow

        try:
            with self.store.transaction() as s:
                bank = bankops.get_bank(s, name)
                entry_ids = select(Entry.id).where(Entry.bank_id == bank.id)
                if s.scalar(select(Match.id).where(Match.entry_id.in_(entry_ids)).limit(1)):
                    raise Conflict(f"bank {name!r} has entries that matched content; disable "
                                   "its entries instead of deleting it", bank=name)
                sigs = s.execute(select(SignalRow.id, SignalRow.type)
                                 .where(SignalRow.entry_id.in_(entry_ids))).all()
                rows = [bankops._LogRow(i, st, "remove") for i, st in sigs]
                if rows:
                    s.add_all(IndexLog(signal_id=r.signal_id, signal_type=r.signal_type,
                                       op="remove") for r in rows)
                s.execute(sql_delete(Bank).where(Bank.id == bank.id))
                bump_banks_version(s)  # a Core delete: the ORM's flush hook does not see it
                self._audit(s, "bank.delete", f"bank:{name}", {"signals": len(rows)})
        except IntegrityError as exc:
            raise Conflict(f"bank {name!r} is still referenced and cannot be deleted",
                           bank=name) from exc
        self._applied(rows)
        return {"bank": name, "deleted": True}

    def set_thresholds(self, name: str, thresholds: dict[str, int]) -> dict[str, t.Any]:
        with self.store.transaction() as s:
            bank = bankops.get_bank(s, name)
            bank.thresholds = {**bank.thresholds, **thresholds}
            bank.updated_at = utcnow()
            s.flush()
            self._audit(s, "bank.thresholds", f"bank:{name}", {"thresholds": dict(thresholds)})
            return bankops.bank_summary(s, bank)

    def set_robust_mode(self, name: str, mode: str | None) -> dict[str, t.Any]:
        """Set a bank's robust tier: always, on-miss or off (None: back to the default)."""
        if mode is not None and mode not in robust_modes:
            raise UsageError(f"robust mode must be one of {', '.join(robust_modes)}, got {mode!r}")
        with self.store.transaction() as s:
            bank = bankops.get_bank(s, name)
            bank.robust_mode = mode
            bank.updated_at = utcnow()
            s.flush()
            return {**bankops.bank_summary(s, bank), "robust_mode": robust_mode(bank)}

    def add_entries(self, bank_name: str, specs: t.Sequence[bankops.EntrySpec],
                    payloads: t.Mapping[str, bytes] | None = None) -> list[int]:
        """Add entries in one transaction; all or nothing. ``payloads`` are the local-feature
        payloads behind ``orb`` signals, keyed by digest (stored in the same transaction)."""
        with self.store.transaction() as s:
            bank = bankops.get_bank(s, bank_name)
            store_payloads(s, payloads or {})
            added = bankops.add_entries(s, bank, specs)
            if added:
                self._audit(s, "entry.add", f"bank:{bank_name}",
                            {"entries": len(added), "first": added[0][0], "last": added[-1][0]})
        self._applied([r for _, rows in added for r in rows])
        return [eid for eid, _ in added]

    def add_files(self, bank_name: str, paths: t.Sequence[Path], labels: dict[str, str],
                  progress: t.Callable[[], None] | None = None,
                  fraction: t.Callable[[float], None] | None = None) -> t.Iterator[ItemResult]:
        """Hash each file and add it as one entry; a file that fails is reported, the rest go on.
        ``fraction`` hears how far a long (video) file's hashing is."""
        with self.store.read() as s:
            bankops.get_bank(s, bank_name)  # fail early on an unknown bank
        for path in paths:
            hr = hash_file(path, self.settings.limits, progress=fraction)
            item = ItemResult(path=str(path), hashed=hr, error=hr.error)
            if hr.ok and hr.video is not None:  # a video: its frame signals, no media
                try:
                    item.entry_id = self.add_video(bank_name, hr.video, list(hr.signals), labels,
                                                   path.name)
                except VigilError as exc:
                    item.error = exc
            elif hr.ok:
                ref = path.name
                sigs, payloads = list(hr.signals), {}
                if hr.robust is not None:  # bank the local features too (see HashResult.robust)
                    sigs.append(hr.robust.signal)
                    payloads[hr.robust.signal.value] = hr.robust.payload
                try:
                    (item.entry_id,) = self.add_entries(
                        bank_name, [bankops.EntrySpec(sigs, labels, ref)], payloads
                    )
                except VigilError as exc:
                    item.error = exc
            if progress:
                progress()
            yield item

    def add_video(self, bank_name: str, video: t.Any, signals: list[Signal],
                  labels: dict[str, t.Any], reference: str | None) -> int:
        """Add one video entry (frame signals and, if any, byte-hash signals) in one transaction."""
        with self.store.transaction() as s:
            bank = bankops.get_bank(s, bank_name)
            eid, rows = videoops.add_video_entry(s, bank, signals, labels, reference, video)
            self._audit(s, "entry.add", f"bank:{bank_name}",
                        {"entries": 1, "first": eid, "last": eid, "video_frames": len(video)})
        self._applied(rows)
        return eid

    def import_file(self, bank_name: str, path: Path, fmt: str,
                    labels: dict[str, str] | None = None) -> int:
        """Import a CSV/JSONL hash list: parsed whole, then written in one transaction. Format
        ``vpdq``: one video's frame hashes in Meta's vPDQ text form, as one entry."""
        if fmt == "vpdq":
            from vigil.signals.vpdq import VideoSignals

            try:
                text = path.read_text(encoding="utf-8-sig")
            except OSError as exc:
                raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from exc
            except UnicodeDecodeError as exc:
                raise UsageError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
            self.add_video(bank_name, VideoSignals.from_vpdq(text), [], dict(labels or {}),
                           path.name)
            return 1
        try:
            with path.open(newline="", encoding="utf-8-sig") as fh:
                specs = bankops.parse_import(fh, fmt, labels)
        except OSError as exc:
            raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:
            raise UsageError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
        if not specs:
            return 0
        payloads = {d: b for spec in specs for d, b in spec.payloads.items()}
        added = len(self.add_entries(bank_name, specs, payloads))
        if added >= SAVE_AFTER:
            # bring the index file up to date now, so the next process loads it instead of
            # replaying (or rebuilding for) the whole import
            self.indexes.save()
        return added

    def export(self, bank_name: str) -> t.Iterator[tuple[Entry, list[t.Any]]]:
        with self.store.read() as s:
            bank = bankops.get_bank(s, bank_name)
            yield from bankops.export_rows(s, bank)

    def set_enabled(self, bank_name: str, entry_id: int, enabled: bool) -> dict[str, t.Any]:
        with self.store.transaction() as s:
            bank = bankops.get_bank(s, bank_name)
            current = s.get(Entry, entry_id)
            was = current.enabled if current is not None else None
            rows = bankops.set_enabled(s, bank, entry_id, enabled)
            if was is not None and was != enabled:  # a video entry's frames follow its state
                rows = rows + videoops.log_toggle(s, entry_id, enabled)
            if rows:
                self._audit(s, "entry.enable" if enabled else "entry.disable",
                            f"entry:{entry_id}", {"bank": bank_name})
        self._applied(rows)
        return {"bank": bank_name, "entry_id": entry_id, "enabled": enabled, "changed": bool(rows)}

    def entry(self, entry_id: int) -> dict[str, t.Any]:
        with self.store.read() as s:
            e = s.get(Entry, entry_id)
            if e is None:
                raise bankops.NotFound(f"no entry {entry_id}", entry=entry_id)
            return {
                "entry_id": e.id, "bank": e.bank.name, "enabled": e.enabled, "labels": e.labels,
                "reference": e.reference,
                "signals": [Signal(r.type, r.value, r.quality, r.variant).to_dict() for r in e.signals],
            }

    # -- matching --------------------------------------------------------------------------
    def query_for(self, hr: HashResult) -> Query:
        return Query(hr.signals, hr.pdq_query, hr.pdq_quality, hr.trimmed, hr.robust)

    def match_file(self, path: Path, *, record: bool = True,
                   fraction: t.Callable[[float], None] | None = None) -> ItemResult:
        hr = hash_file(path, self.settings.limits, progress=fraction)
        return self._finish_files([hr], record=record, keys=None)[0]

    def match_signals(self, signals: t.Sequence[Signal], *, record: bool = True) -> list[ItemResult]:
        self.refresh_indexes()
        outcomes = self.matcher.match_many([Query([sig]) for sig in signals])
        items = [ItemResult(signal=str(sig), outcome=o) for sig, o in zip(signals, outcomes)]
        if record:
            # Most looked-up signals match nothing: their submission rows go in as one
            # executemany, and without an ORM session when the whole batch missed; the unit of
            # work was the largest single item in a profile of the service under lookup load.
            # Hits take the full path (matches, review queue).
            plain: list[dict[str, t.Any]] = []
            hits: list[tuple[Signal, ItemResult]] = []
            now = utcnow()
            for sig, item in zip(signals, items):
                o = item.outcome
                if o is not None and not (o.matches or o.allowed) and item.error is None:
                    plain.append({"signals": {"signals": [sig.to_dict()]}, "seen_at": now})
                else:
                    hits.append((sig, item))
            if hits:
                with self.store.transaction() as s:
                    for sig, item in hits:
                        self._record(s, item, {"signals": [sig.to_dict()]})
                    if plain:
                        s.execute(insert(Submission), plain)
            elif plain:
                self.store.execute_insert(insert(Submission), plain)
        return items

    def _finish_files(self, results: t.Sequence[HashResult], *, record: bool,
                      keys: t.Sequence[tuple[str, int, int]] | None) -> list[ItemResult]:
        ok = [hr for hr in results if hr.ok]
        self.refresh_indexes()
        outcomes = dict(zip((id(hr) for hr in ok), self.matcher.match_many([self.query_for(h) for h in ok])))
        for hr in ok:  # videos: frame hits -> aligned segments (vigil.core.video)
            if hr.video is not None:
                outcomes[id(hr)] = videoops.merge_outcome(
                    outcomes.get(id(hr)), videoops.match_video(self.video_index, hr.video))
        items = [
            ItemResult(path=hr.path, hashed=hr, outcome=outcomes.get(id(hr)), error=hr.error)
            for hr in results
        ]
        if record:
            with self.store.transaction() as s:
                for i, item in enumerate(items):
                    hr = item.hashed
                    assert hr is not None
                    key = keys[i] if keys else None
                    self._record(s, item, {"signals": [x.to_dict() for x in hr.signals]}, key)
        return items

    def match_hashed(self, hr: HashResult, *, record: bool = True) -> ItemResult:
        """Match content hashed already (the service hashes uploads outside its index lock)."""
        return self._finish_files([hr], record=record, keys=None)[0]

    def _record(self, s: t.Any, item: ItemResult, signals: dict[str, t.Any],
                key: tuple[str, int, int] | None = None) -> None:
        sub = None
        if key is not None:
            sub = s.scalar(select(Submission).where(Submission.scan_key == key[0]))
            if sub is not None:
                sub.matches.clear()
        if sub is None:
            sub = Submission(scan_key=key[0] if key else None)
            s.add(sub)
        sub.size, sub.mtime_ns = (key[1], key[2]) if key else (None, None)
        sub.signals = signals
        sub.error = item.error.to_dict() if item.error else None
        sub.seen_at = utcnow()
        if item.outcome:
            for h in item.outcome.matches + item.outcome.allowed:
                m = Match(entry_id=h.entry_id, signal_type=h.signal_type,
                          distance=h.distance, variant=h.variant)
                sub.matches.append(m)
                s.add_all(videoops.segment_rows(m, h))  # a video hit's matched segments
        if self.review_queue and item.outcome and item.outcome.matches:
            review.queue_matches(s, sub, item, self.settings.data_dir)

    # -- scanning --------------------------------------------------------------------------
    def scan(self, root: Path, *, workers: int = 1, rescan: bool = False,
             on_total: t.Callable[[int], None] | None = None,
             on_item: t.Callable[[ItemResult], None] | None = None,
             batch_size: int = 64) -> ScanSummary:
        """Check every file under ``root``; resumable: files already checked with the same size and
        modification time are skipped unless ``rescan``. Results are committed batch by batch, so
        an interrupted scan loses at most one batch of work."""
        if not root.is_dir():
            raise UsageError(f"{root}: not a directory")
        files = sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())
        summary = ScanSummary(files=len(files))
        known: dict[str, tuple[int | None, int | None]] = {}
        if not rescan:
            with self.store.read() as s:
                for scan_key, size, mtime in s.execute(
                    select(Submission.scan_key, Submission.size, Submission.mtime_ns).where(
                        Submission.scan_key.is_not(None)
                    )
                ):
                    known[str(scan_key)] = (size, mtime)
        todo: list[tuple[str, int, int]] = []
        for p in files:
            st = p.stat()
            key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
            if known.get(key[0]) == (key[1], key[2]):
                summary.skipped += 1
            else:
                todo.append(key)
        if on_total:
            on_total(len(todo))
        _ = self.indexes  # load before the workers start, not in the middle of the first batch
        workers = max(1, workers)
        pool = cf.ProcessPoolExecutor(workers) if workers > 1 else None
        try:
            for start in range(0, len(todo), batch_size):
                batch = todo[start : start + batch_size]
                args = [(k[0], self.settings.limits) for k in batch]
                hashed = list(pool.map(_hash_for_pool, args, chunksize=4)) if pool else [
                    _hash_for_pool(a) for a in args
                ]
                for item in self._finish_files(hashed, record=True, keys=batch):
                    summary.checked += 1
                    if item.error:
                        summary.errors += 1
                    elif item.hashed and item.hashed.media_error:
                        summary.not_images += 1
                    if item.outcome and item.outcome.matches:
                        summary.matched += 1
                    if item.outcome and item.outcome.allowed:
                        summary.allowed += 1
                    if on_item:
                        on_item(item)
        finally:
            if pool:
                pool.shutdown(cancel_futures=True)
        return summary


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))
