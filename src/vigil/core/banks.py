"""Banks and their entries: create, inspect, add, import, export, disable, enable.

Every function that writes takes an open session inside a transaction (see
:meth:`vigil.store.db.Store.transaction`) and appends to the index change log in that same
transaction, so the store and what the indexes will hold can never disagree after a crash.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import re
import signal as _signal
import typing as t

from sqlalchemy import case, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from vigil.core.labels import KNOWN_LABELS, validate_labels
from vigil.core.robust import payload_from_export, robust_mode
from vigil.errors import Conflict, ImportFormatError, InvalidSignal, NotFound, UsageError
from vigil.signals import Signal, registry
from vigil.store.models import Bank, Entry, IndexLog, Meta, SignalRow, utcnow

__all__ = [
    "BANK_KINDS",
    "EntrySpec",
    "add_entries",
    "bank_summary",
    "create_bank",
    "effective_thresholds",
    "export_rows",
    "get_bank",
    "parse_import",
    "parse_thresholds",
    "set_enabled",
]

BANK_KINDS = ("block", "allow")
_BANK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
#: test hook: the importer SIGKILLs its own process after inserting this many entries (before the
#: commit), to prove an interrupted import leaves the bank as it was. Never set in production.
FAULT_ENV = "VIGIL_FAULT_KILL_AFTER_ENTRIES"


@dataclasses.dataclass
class EntrySpec:
    """What one new entry consists of."""

    signals: list[Signal]
    labels: dict[str, str] = dataclasses.field(default_factory=dict)
    reference: str | None = None
    #: local-feature payloads behind ``orb`` signals, by digest (JSONL imports carry them)
    payloads: dict[str, bytes] = dataclasses.field(default_factory=dict)


# -- banks ---------------------------------------------------------------------------------------
def parse_thresholds(items: t.Iterable[str]) -> dict[str, int]:
    """``["pdq=31"]`` -> ``{"pdq": 31}``, checked against each type's allowed range."""
    out: dict[str, int] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep:
            raise UsageError(f"threshold {item!r} must be type=distance, e.g. pdq=31")
        st = registry.get(name.strip().lower())
        try:
            value = int(raw)
        except ValueError:
            raise UsageError(f"threshold for {st.name} must be an integer, got {raw!r}") from None
        if not 0 <= value <= st.max_threshold:
            raise UsageError(
                f"threshold for {st.name} must be between 0 and {st.max_threshold}, got {value}"
            )
        out[st.name] = value
    return out


def effective_thresholds(bank: Bank) -> dict[str, int]:
    return {st.name: int(bank.thresholds.get(st.name, st.default_threshold)) for st in registry}


def create_bank(
    s: Session,
    name: str,
    kind: str = "block",
    thresholds: dict[str, int] | None = None,
    description: str = "",
) -> Bank:
    if not _BANK_NAME.match(name):
        raise UsageError(
            f"bank name {name!r}: use letters, digits, '.', '_' or '-' (up to 128, no spaces)"
        )
    if kind not in BANK_KINDS:
        raise UsageError(f"bank kind must be one of {', '.join(BANK_KINDS)}, got {kind!r}")
    if s.scalar(select(Bank.id).where(Bank.name == name)) is not None:
        raise Conflict(f"bank {name!r} already exists", bank=name)
    bank = Bank(name=name, kind=kind, thresholds=dict(thresholds or {}), description=description)
    s.add(bank)
    try:
        s.flush()
    except IntegrityError as exc:  # a concurrent create won the race
        raise Conflict(f"bank {name!r} already exists", bank=name) from exc
    return bank


def get_bank(s: Session, name: str) -> Bank:
    bank = s.scalar(select(Bank).where(Bank.name == name))
    if bank is None:
        raise NotFound(f"no bank named {name!r}", bank=name)
    return bank


def bank_summary(s: Session, bank: Bank) -> dict[str, t.Any]:
    enabled, disabled = s.execute(
        select(
            func.coalesce(func.sum(case((Entry.enabled.is_(True), 1), else_=0)), 0),
            func.coalesce(func.sum(case((Entry.enabled.is_(False), 1), else_=0)), 0),
        ).where(Entry.bank_id == bank.id)
    ).one()
    by_type = dict(
        s.execute(
            select(SignalRow.type, func.count())
            .join(Entry, Entry.id == SignalRow.entry_id)
            .where(Entry.bank_id == bank.id, Entry.enabled.is_(True))
            .group_by(SignalRow.type)
        ).all()
    )
    return {
        "name": bank.name,
        "kind": bank.kind,
        "description": bank.description,
        "thresholds": effective_thresholds(bank),
        "robust_mode": robust_mode(bank),
        "entries": int(enabled),
        "disabled_entries": int(disabled),
        "signals": {k: int(v) for k, v in sorted(by_type.items())},
        "created_at": bank.created_at.isoformat(),
    }


# -- entries ------------------------------------------------------------------------------------
def add_entries(s: Session, bank: Bank, specs: t.Iterable[EntrySpec]) -> list[tuple[int, list[t.Any]]]:
    """Insert entries with their signals and the index log rows, in the caller's transaction.

    Returns, per entry, its id and the log rows written (for the in-process index to apply).
    Bulk inserts keep a million-row import to seconds.
    """
    fault_after = int(os.environ.get(FAULT_ENV, "0") or 0)
    out: list[tuple[int, list[t.Any]]] = []
    batch: list[EntrySpec] = []

    def flush() -> None:
        if not batch:
            return
        now = utcnow()
        entry_ids = _insert_numbered(
            s,
            Entry,
            [
                {
                    "bank_id": bank.id,
                    "enabled": True,
                    "labels": spec.labels,
                    "reference": spec.reference,
                    "created_at": now,
                    "updated_at": now,
                }
                for spec in batch
            ],
        )
        sig_params = [
            {
                "entry_id": eid,
                "type": sig.type,
                "value": sig.value,
                "quality": sig.quality,
                "variant": sig.variant,
            }
            for eid, spec in zip(entry_ids, batch)
            for sig in spec.signals
        ]
        sig_ids = _insert_numbered(s, SignalRow, sig_params)
        sig_rows = [
            _LogRow(i, p["type"], "add", p["entry_id"]) for i, p in zip(sig_ids, sig_params)
        ]
        s.connection().execute(
            IndexLog.__table__.insert(),
            [
                {"signal_id": r.signal_id, "signal_type": r.signal_type, "op": "add", "created_at": now}
                for r in sig_rows
            ],
        )
        per_entry: dict[int, list[t.Any]] = {eid: [] for eid in entry_ids}
        for r in sig_rows:
            per_entry[r.entry_id].append(r)
        out.extend(per_entry.items())
        batch.clear()
        if fault_after and len(out) >= fault_after:
            os.kill(os.getpid(), _signal.SIGKILL)

    for spec in specs:
        if not spec.signals:
            raise UsageError("an entry needs at least one signal")
        batch.append(spec)
        if len(batch) >= 2000:
            flush()
    flush()
    return out


@dataclasses.dataclass(frozen=True)
class _LogRow:
    signal_id: int
    signal_type: str
    op: str
    entry_id: int = 0


def _insert_numbered(s: Session, model: t.Any, rows: list[dict[str, t.Any]]) -> list[int]:
    """Insert rows and return their ids, in order, with one batched statement.

    PostgreSQL returns the ids from a multi-row ``INSERT ... RETURNING``. SQLite cannot order
    RETURNING rows for a batch, and SQLAlchemy then falls back to one statement per row (measured:
    the whole import time); so there we take the database's write lock first (a no-op update),
    number the rows after the current maximum ourselves, and insert them with executemany. No
    other writer can interleave while we hold the lock.
    """
    if not rows:
        return []
    if s.get_bind().dialect.name == "sqlite":
        s.execute(update(Meta).where(Meta.key == "store_id").values(value=Meta.value))
        start = int(s.scalar(select(func.max(model.id))) or 0)
        ids = list(range(start + 1, start + 1 + len(rows)))
        # Core, not the ORM's bulk path: same SQL, a third of the Python overhead
        s.connection().execute(model.__table__.insert(), [{**r, "id": i} for r, i in zip(rows, ids)])
        return ids
    return list(s.scalars(insert(model).returning(model.id, sort_by_parameter_order=True), rows))


def set_enabled(s: Session, bank: Bank, entry_id: int, enabled: bool) -> list[t.Any]:
    """Disable (tombstone) or re-enable an entry; returns the log rows written."""
    entry = s.get(Entry, entry_id)
    if entry is None or entry.bank_id != bank.id:
        raise NotFound(f"bank {bank.name!r} has no entry {entry_id}", bank=bank.name, entry=entry_id)
    if entry.enabled == enabled:
        return []
    entry.enabled = enabled
    entry.disabled_at = None if enabled else utcnow()
    op = "add" if enabled else "remove"
    rows = [_LogRow(sig.id, sig.type, op) for sig in entry.signals]
    s.add_all(IndexLog(signal_id=r.signal_id, signal_type=r.signal_type, op=op) for r in rows)
    return rows


# -- import / export ----------------------------------------------------------------------------
_CSV_BASE = ("signal_type", "signal_value")
_CSV_META = ("entry", "reference", "quality", "variant", "payload")


def parse_import(text: t.TextIO, fmt: str, default_labels: dict[str, str] | None = None) -> list[EntrySpec]:
    """Parse a whole CSV or JSONL hash list into entries. Any bad row fails the whole import with
    its line number, before anything is written."""
    if fmt == "csv":
        specs = _parse_csv(text)
    elif fmt == "jsonl":
        specs = _parse_jsonl(text)
    else:
        raise UsageError(f"import format must be csv or jsonl, got {fmt!r}")
    if default_labels:
        for spec in specs:
            spec.labels = {**default_labels, **spec.labels}
    return specs


def _signal_from(type_name: str, value: str, line: int, quality: t.Any = None, variant: t.Any = None) -> Signal:
    try:
        st = registry.get(type_name.strip().lower())
        q = int(quality) if quality not in (None, "") else None
        return Signal(st.name, st.validate(value), q, variant or None)
    except InvalidSignal as exc:
        raise ImportFormatError(f"line {line}: {exc.message}", line=line) from exc
    except ValueError:
        raise ImportFormatError(f"line {line}: quality must be an integer, got {quality!r}", line=line) from None


def _parse_csv(text: t.TextIO) -> list[EntrySpec]:
    reader = csv.reader(text)
    try:
        header = next(reader)
    except StopIteration:
        return []
    except csv.Error as exc:
        raise ImportFormatError(f"line 1: {exc}", line=1) from exc
    cols = [c.strip().lower() for c in header]
    if cols[:2] != list(_CSV_BASE):
        if cols and cols[0] in registry:  # a header-less "type,value" list
            reader = csv.reader(io.StringIO(",".join(header) + "\n" + text.read()))
            cols = list(_CSV_BASE)
        else:
            raise ImportFormatError(
                f"line 1: the header must start with signal_type,signal_value, got {header[:2]}",
                line=1,
            )
    grouped: dict[str, EntrySpec] = {}
    specs: list[EntrySpec] = []
    try:
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) > len(cols):
                raise ImportFormatError(
                    f"line {line}: {len(row)} fields, the header has {len(cols)}", line=line
                )
            rec = dict(zip(cols, (c.strip() for c in row)))
            sig = _signal_from(rec["signal_type"], rec.get("signal_value", ""), line,
                               rec.get("quality"), rec.get("variant"))
            labels_raw = {k: v for k, v in rec.items() if k not in _CSV_BASE + _CSV_META}
            try:
                labels = validate_labels(labels_raw)
            except UsageError as exc:
                raise ImportFormatError(f"line {line}: {exc.message}", line=line) from exc
            payloads: dict[str, bytes] = {}
            if rec.get("payload") and sig.type == "orb":
                try:  # the local features behind an orb digest, as JSONL exports carry them
                    payloads[sig.value] = payload_from_export(sig.value, rec["payload"])
                except InvalidSignal as exc:
                    raise ImportFormatError(f"line {line}: {exc.message}", line=line) from exc
            key = rec.get("entry") or ""
            if key and key in grouped:
                grouped[key].signals.append(sig)
                grouped[key].labels.update(labels)
                grouped[key].payloads.update(payloads)
                continue
            spec = EntrySpec([sig], labels, rec.get("reference") or None, payloads)
            if key:
                grouped[key] = spec
            specs.append(spec)
    except csv.Error as exc:
        raise ImportFormatError(f"line {reader.line_num}: {exc}", line=reader.line_num) from exc
    return specs


def _parse_jsonl(text: t.TextIO) -> list[EntrySpec]:
    specs: list[EntrySpec] = []
    for line_no, raw in enumerate(text, start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ImportFormatError(f"line {line_no}: not JSON: {exc.msg}", line=line_no) from None
        if not isinstance(obj, dict):
            raise ImportFormatError(f"line {line_no}: expected a JSON object", line=line_no)
        sigs: list[Signal] = []
        payloads: dict[str, bytes] = {}
        if "signals" in obj:
            if not isinstance(obj["signals"], list):
                raise ImportFormatError(f"line {line_no}: 'signals' must be a list", line=line_no)
            for item in obj["signals"]:
                if isinstance(item, str):
                    name, _, value = item.partition(":")
                    sigs.append(_signal_from(name, value, line_no))
                elif isinstance(item, dict) and "type" in item and "value" in item:
                    sigs.append(_signal_from(str(item["type"]), str(item["value"]), line_no,
                                             item.get("quality"), item.get("variant")))
                    if item.get("payload") is not None and sigs[-1].type == "orb":
                        try:  # the local features behind an orb digest (see vigil.core.robust)
                            payloads[sigs[-1].value] = payload_from_export(sigs[-1].value,
                                                                           item["payload"])
                        except InvalidSignal as exc:
                            raise ImportFormatError(f"line {line_no}: {exc.message}",
                                                    line=line_no) from exc
                else:
                    raise ImportFormatError(
                        f"line {line_no}: each signal must be 'type:value' or "
                        "{\"type\": ..., \"value\": ...}",
                        line=line_no,
                    )
        elif "signal_type" in obj and "signal_value" in obj:
            sigs.append(_signal_from(str(obj["signal_type"]), str(obj["signal_value"]), line_no,
                                     obj.get("quality")))
        elif "signal" in obj:
            name, _, value = str(obj["signal"]).partition(":")
            sigs.append(_signal_from(name, value, line_no))
        if not sigs:
            raise ImportFormatError(f"line {line_no}: no signals in this entry", line=line_no)
        labels = obj.get("labels") or {}
        if not isinstance(labels, dict):
            raise ImportFormatError(f"line {line_no}: 'labels' must be an object", line=line_no)
        try:
            specs.append(EntrySpec(sigs, validate_labels(labels), obj.get("reference"), payloads))
        except UsageError as exc:
            raise ImportFormatError(f"line {line_no}: {exc.message}", line=line_no) from exc
    return specs


def export_rows(s: Session, bank: Bank) -> t.Iterator[tuple[Entry, list[SignalRow]]]:
    """Enabled entries with their signals, in id order, streamed in pages."""
    last = 0
    while True:
        entries = s.scalars(
            select(Entry)
            .where(Entry.bank_id == bank.id, Entry.enabled.is_(True), Entry.id > last)
            .order_by(Entry.id)
            .limit(5000)
        ).all()
        if not entries:
            return
        ids = [e.id for e in entries]
        sigs: dict[int, list[SignalRow]] = {i: [] for i in ids}
        for row in s.scalars(select(SignalRow).where(SignalRow.entry_id.in_(ids)).order_by(SignalRow.id)):
            sigs[row.entry_id].append(row)
        for e in entries:
            yield e, sigs[e.id]
        last = ids[-1]
        s.expunge_all()


def csv_header(extra_labels: t.Iterable[str] = ()) -> list[str]:
    """The CSV export's columns: the signal, its entry, the labels, and last ``payload`` (the
    base64 local features behind an ``orb`` signal, empty for every other type)."""
    return [*_CSV_BASE, "entry", "quality", "variant", "reference", *KNOWN_LABELS,
            *sorted(set(extra_labels) - set(KNOWN_LABELS) - set(_CSV_META)), "payload"]
