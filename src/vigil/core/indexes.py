"""Keeping the in-process indexes equal to the store, incrementally.

Flow on start: for each signal type, read its index file (``<data>/index/<type>.vidx``). The file
records the store it was built from and ``last_seq``, the last change-log row it includes. A file
that is missing, unreadable, of another format version or of another store is *stale*: the index
is rebuilt from the enabled signals in the store and saved. Otherwise the log rows after
``last_seq`` are replayed: that is how a ``vigil bank add`` in one process becomes matchable by the
next ``vigil match`` without a rebuild.

Replay is idempotent: every id touched by the replayed rows is removed, then re-added if its last
operation is ``add``. So the window can start a little before ``last_seq`` (``REPLAY_OVERLAP``),
which covers PostgreSQL sequence values that commit out of order.

In a long-running process (the service, a scan) the core calls :meth:`IndexSet.apply` right after
each committed change, so nothing waits for the next start.
"""

from __future__ import annotations

import logging
import typing as t
from pathlib import Path

import numpy as np
from sqlalchemy import func, select

from vigil.errors import IndexFileError
from vigil.index.base import IndexHeader, SignalIndex, read_index_file, write_index_file
from vigil.index.exact import ExactIndex
from vigil.index.hamming import HammingIndex
from vigil.signals import Signal, SignalType, registry
from vigil.store.db import Store
from vigil.store.models import Entry, IndexLog, SignalRow

__all__ = ["REPLAY_OVERLAP", "ChangeLogFollower", "IndexSet"]

log = logging.getLogger(__name__)

REPLAY_OVERLAP = 1000
#: save the file again once this many log rows had to be replayed on load
SAVE_AFTER = 5000
#: past this many new log rows, rebuild from the store instead of replaying
REBUILD_AFTER = 50_000


class ChangeLogFollower:
    """Replays the store's ``index_log`` into an in-memory index: the part every index kind
    shares (this module's :class:`IndexSet`, the robust tier's and the video frame index).
    Subclasses set ``store`` and ``last_seq``, implement :meth:`apply`, and may narrow
    ``log_types`` to the signal types they hold."""

    store: Store
    last_seq: int
    #: the change-log signal types this index follows; None: every row
    log_types: t.ClassVar[tuple[str, ...] | None] = None

    def apply(self, rows: t.Iterable[t.Any]) -> None:
        raise NotImplementedError  # pragma: no cover

    def catch_up(self) -> int:
        """Replay the log from just before ``last_seq`` (idempotent); returns the new rows."""
        stmt = (
            select(IndexLog.seq, IndexLog.signal_id, IndexLog.signal_type, IndexLog.op)
            .where(IndexLog.seq > self.last_seq - REPLAY_OVERLAP)
            .order_by(IndexLog.seq)
        )
        if self.log_types is not None:
            stmt = stmt.where(IndexLog.signal_type.in_(self.log_types))
        with self.store.read() as s:
            rows = s.execute(stmt).all()
        if not rows:
            return 0
        new = sum(1 for r in rows if r.seq > self.last_seq)
        self.apply(rows)
        self.last_seq = max(self.last_seq, rows[-1].seq)
        return new


def _new_index(st: type[SignalType]) -> SignalIndex:
    if st.distance_kind == "hamming":
        return HammingIndex(st.code_size)
    return ExactIndex(st.code_size)


class IndexSet(ChangeLogFollower):
    """One index per registered signal type, kept in step with the store."""

    def __init__(self, store: Store, index_dir: Path) -> None:
        self.store = store
        self.index_dir = index_dir
        self.indexes: dict[str, SignalIndex] = {}
        self.last_seq = 0
        self.rebuilt: list[str] = []

    # -- loading ---------------------------------------------------------------------------
    def path(self, signal_type: str) -> Path:
        return self.index_dir / f"{signal_type}.vidx"

    def load(self) -> IndexSet:
        self.rebuilt = []
        head = self._head_seq()
        seqs = []
        for st in registry:
            try:
                index, last = self._read(st)
            except IndexFileError as exc:
                if self.path(st.name).exists():
                    log.warning("rebuilding the %s index: %s", st.name, exc.message)
                index, last = self._rebuild(st), head
                self.rebuilt.append(st.name)
            self.indexes[st.name] = index
            seqs.append(last)
        self.last_seq = min(seqs) if seqs else head
        replayed = self.catch_up()
        self.rebuilt = sorted(set(self.rebuilt))
        if self.rebuilt or replayed >= SAVE_AFTER:
            self.save()
        return self

    def _head_seq(self) -> int:
        with self.store.read() as s:
            return int(s.scalar(select(func.max(IndexLog.seq))) or 0)

    def _read(self, st: type[SignalType]) -> tuple[SignalIndex, int]:
        path = self.path(st.name)
        if not path.exists():
            raise IndexFileError(f"{path}: missing")
        header, ids, codes = read_index_file(path)
        if header.get("store_id") != self.store.store_id:
            raise IndexFileError(f"{path}: built from another store")
        if header.get("signal_type") != st.name or header.get("code_size") != st.code_size:
            raise IndexFileError(f"{path}: holds another signal type or code size")
        if int(header["last_seq"]) > self._head_seq():
            raise IndexFileError(f"{path}: ahead of the store's change log")
        index = _new_index(st)
        index.add(ids, codes)
        return index, int(header["last_seq"])

    def _rebuild(self, st: type[SignalType]) -> SignalIndex:
        index = _new_index(st)
        stmt = (
            select(SignalRow.id, SignalRow.value, SignalRow.quality)
            .join(Entry, Entry.id == SignalRow.entry_id)
            .where(SignalRow.type == st.name, Entry.enabled.is_(True))
            .execution_options(yield_per=100_000)
        )
        with self.store.read() as s:
            for part in s.execute(stmt).partitions():
                self._add_rows(st, index, part)
        return index

    @staticmethod
    def _add_rows(st: type[SignalType], index: SignalIndex, rows: t.Sequence[t.Any]) -> None:
        keep = [r for r in rows if st.indexable(Signal(st.name, r.value, r.quality))]
        if keep:
            ids = np.fromiter((r.id for r in keep), np.int64, len(keep))
            codes = np.frombuffer(b"".join(st.to_code(r.value) for r in keep), np.uint8)
            index.add(ids, codes.reshape(len(keep), st.code_size))

    # -- staying current ---------------------------------------------------------------------
    def catch_up(self) -> int:
        """Replay the change log from just before ``last_seq``; returns the rows replayed.

        When far behind (a bulk import by another process), a streaming rebuild from the store is
        much faster than replaying row by row, so that is what happens past ``REBUILD_AFTER``.
        """
        head = self._head_seq()
        if head <= self.last_seq:
            return 0  # the common case: one indexed max() query
        if head - self.last_seq > REBUILD_AFTER:
            for st in registry:
                self.indexes[st.name] = self._rebuild(st)
                self.rebuilt.append(st.name)
            behind, self.last_seq = head - self.last_seq, head
            return behind
        return super().catch_up()

    def apply(self, rows: t.Iterable[t.Any]) -> None:
        """Apply change-log rows (objects with signal_id, signal_type, op), in order."""
        final: dict[str, dict[int, str]] = {}
        for r in rows:
            final.setdefault(r.signal_type, {})[int(r.signal_id)] = r.op
        for type_name, ops in final.items():
            if type_name not in registry or type_name not in self.indexes:
                continue
            st = registry.get(type_name)
            index = self.indexes[type_name]
            index.remove(np.fromiter(ops, np.int64, len(ops)))
            to_add = [i for i, op in ops.items() if op == "add"]
            if not to_add:
                continue
            with self.store.read() as s:
                found: list[t.Any] = []
                for chunk in range(0, len(to_add), 10_000):
                    found += s.execute(
                        select(SignalRow.id, SignalRow.value, SignalRow.quality)
                        .join(Entry, Entry.id == SignalRow.entry_id)
                        .where(
                            SignalRow.id.in_(to_add[chunk : chunk + 10_000]),
                            Entry.enabled.is_(True),
                        )
                    ).all()
            self._add_rows(st, index, found)

    def save(self) -> None:
        for name, index in self.indexes.items():
            st = registry.get(name)
            ids, codes = index.export()
            header: IndexHeader = {
                "signal_type": name,
                "kind": index.kind,
                "code_size": st.code_size,
                "count": len(ids),
                "last_seq": self.last_seq,
                "store_id": self.store.store_id,
            }
            write_index_file(self.path(name), header, ids, codes)

    def sizes(self) -> dict[str, int]:
        return {name: len(index) for name, index in self.indexes.items()}
