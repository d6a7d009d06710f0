"""Matching: signals -> index candidates -> bank thresholds -> allow-bank suppression.

The cascade for one piece of content:

1. exact tiers (md5, sha256): a dict lookup each;
2. PDQ, when the picture's quality is at least ``LOW_QUALITY``: the 8 dihedral hashes of the
   border-trimmed picture (one DCT, sign flips and transposes) in one batched radius search, the
   radius being the largest PDQ threshold any bank uses;
3. each candidate is resolved to its entry and bank, dropped if the entry is disabled or the
   distance is over *that bank's* threshold for the signal type, and reduced to the best hit per
   entry (exact before perceptual, then smallest distance, then the untransformed variant);
4. a hit in an ``allow`` bank suppresses every ``block`` hit for the same content: allow banks hold
   benign look-alikes that must never match;
5. the robust tier (:mod:`vigil.core.robust`: local features, geometric verification), for each
   bank whose ``robust_mode`` is ``always``, or ``on-miss`` (the default) when steps 1-3 found
   nothing in that bank; its hits have the variant ``robust`` (``robust+flip-x`` when found on the
   mirrored picture, ``robust+region`` on a picture embedded in the query), the distance
   ``100 - inliers`` and an ``evidence`` object. An embedded picture is first re-hashed with PDQ:
   a hit so has the signal type ``pdq``, the variant ``pdq+region`` and the region as evidence;
   step 4 then runs again over all hits.

A hit's ``variant`` says under which edit it matched: ``original``, ``trimmed`` (the query had
uniform borders), a dihedral edit (``flip-x``, ``rot90``, ...), or both (``trimmed+rot90``).
"""

from __future__ import annotations

import dataclasses
import typing as t

import numpy as np
from sqlalchemy import select

from vigil.core.banks import effective_thresholds
from vigil.core.indexes import IndexSet
from vigil.core.robust import RobustCandidate, RobustIndex, region_pdq_candidates, robust_mode
from vigil.signals import Signal, registry
from vigil.signals.pdq import LOW_QUALITY
from vigil.signals.robust import OrbSignal
from vigil.store.models import Bank, Entry, SignalRow

__all__ = ["Hit", "MatchOutcome", "Matcher", "Query"]


@dataclasses.dataclass(frozen=True)
class Hit:
    bank: str
    bank_kind: str
    entry_id: int
    signal_type: str
    distance: int
    variant: str
    threshold: int
    labels: dict[str, t.Any]
    reference: str | None = None
    #: why a robust hit matched (inliers, coverage, the matched region in the query); else None
    evidence: dict[str, t.Any] | None = None

    def to_dict(self) -> dict[str, t.Any]:
        out = {
            "bank": self.bank,
            "entry_id": self.entry_id,
            "signal_type": self.signal_type,
            "distance": self.distance,
            "threshold": self.threshold,
            "variant": self.variant,
            "labels": self.labels,
        }
        if self.evidence is not None:
            out["evidence"] = self.evidence
        return out


@dataclasses.dataclass
class MatchOutcome:
    matches: list[Hit]
    allowed: list[Hit]
    suppressed: list[Hit]

    def to_dict(self) -> dict[str, t.Any]:
        return {
            "matches": [h.to_dict() for h in self.matches],
            "allowed": [h.to_dict() for h in self.allowed],
            "suppressed": [h.to_dict() for h in self.suppressed],
        }


@dataclasses.dataclass
class Query:
    """What to look up for one piece of content."""

    signals: list[Signal]
    #: variant name -> PDQ hex, from the picture itself (None for a bare signal); see
    #: PdqSignal.analyse: the 8 dihedral hashes, of the trimmed and of the whole picture
    pdq_variants: dict[str, str] | None = None
    pdq_quality: int | None = None
    trimmed: bool = False
    #: local features of the picture (vigil.signals.robust.RobustAnalysis), for the robust tier
    robust: t.Any = None


@dataclasses.dataclass(frozen=True)
class _Candidate:
    signal_id: int
    signal_type: str
    distance: int
    variant: str


class Matcher:
    def __init__(self, indexes: IndexSet, robust: RobustIndex | None = None) -> None:
        self.indexes = indexes
        self.store = indexes.store
        self.robust = robust
        #: the store's banks version token as last read by the owner (``Vigil.refresh_indexes``
        #: sets it before each match); None: read the banks at every match
        self.banks_token: str | None = None
        self._banks: tuple[str, dict[int, tuple[Bank, dict[str, int]]]] | None = None

    def _bank_thresholds(self) -> dict[int, tuple[Bank, dict[str, int]]]:
        """Each bank with its effective thresholds. Reused while the banks' version token is
        unchanged: every transaction that changes a bank replaces the token
        (:func:`vigil.store.db.bump_banks_version`), so a reused copy is never stale."""
        token = self.banks_token
        if token is not None and self._banks is not None and self._banks[0] == token:
            return self._banks[1]
        with self.store.read() as s:
            banks = s.scalars(select(Bank)).all()
            out = {b.id: (b, effective_thresholds(b)) for b in banks}
        if token is not None:
            self._banks = (token, out)
        return out

    def match(self, query: Query) -> MatchOutcome:
        return self.match_many([query])[0]

    def match_many(self, queries: t.Sequence[Query]) -> list[MatchOutcome]:
        banks = self._bank_thresholds()
        radius = {st.name: max([th[st.name] for _, th in banks.values()] or [0]) for st in registry}
        per_query = [self._candidates(q, radius) for q in queries]
        ids = sorted({c.signal_id for cands in per_query for c in cands})
        info = self._resolve(ids)
        outcomes = [self._decide(cands, info, banks) for cands in per_query]
        pdq_index = self.indexes.indexes.get("pdq")
        # the robust tier also runs for banks of PDQ hashes alone (a partner's hash list): an
        # embedded picture is re-hashed with PDQ
        if self.robust is not None and (len(self.robust) or (pdq_index is not None and len(pdq_index))):
            for i, q in enumerate(queries):
                if q.robust is not None:
                    outcomes[i] = self._robust_tier(q, per_query[i], outcomes[i], info, banks)
        return outcomes

    def _robust_tier(self, q: Query, cands: list[_Candidate], outcome: MatchOutcome,
                     info: dict[int, tuple[t.Any, ...]],
                     banks: dict[int, tuple[Bank, dict[str, int]]]) -> MatchOutcome:
        """Step 5 of the cascade: local features, for the banks whose mode asks for it (``always``,
        or ``on-miss`` when the cheap tiers found nothing in that bank)."""
        if self.robust is None:
            return outcome
        cheap = {h.bank for h in outcome.matches + outcome.allowed + outcome.suppressed}
        eligible = {
            bid for bid, (b, _) in banks.items()
            if (mode := robust_mode(b)) == "always" or (mode == "on-miss" and b.name not in cheap)
        }
        if not eligible:
            return outcome
        limit = max(banks[b][1].get(OrbSignal.name, 0) for b in eligible)
        pdq_limit = max(banks[b][1].get("pdq", 0) for b in eligible)
        found = self.robust.search(
            q.robust.query, q.robust.mirrored, max_distance=limit, regions=q.robust.region_cuts,
            bars=q.robust.bars, region_check=lambda region: self._region_pdq(region, pdq_limit))
        if not found:
            return outcome
        info.update(self._resolve(sorted({c.signal_id for c in found} - set(info))))
        extra = [
            _Candidate(c.signal_id, c.signal_type, c.distance, c.variant)
            for c in found
            if c.signal_id in info and info[c.signal_id][1] in eligible
        ]
        evidence = {c.signal_id: c.evidence for c in found}
        return self._decide(cands + extra, info, banks, evidence)

    def _region_pdq(self, region: t.Any, radius: int) -> list[RobustCandidate]:
        """An embedded region looked up in the PDQ index (:func:`region_pdq_candidates`)."""
        index = self.indexes.indexes.get("pdq")
        if index is None or not len(index):
            return []
        return region_pdq_candidates(region, index.query, radius)

    def _candidates(self, q: Query, radius: dict[str, int]) -> list[_Candidate]:
        out: list[_Candidate] = []
        for sig in q.signals:
            st = registry.get(sig.type)
            index = self.indexes.indexes.get(sig.type)
            if index is None or len(index) == 0:
                continue
            if st.distance_kind == "exact":
                code = np.frombuffer(st.to_code(sig.value), np.uint8)
                out += [_Candidate(i, st.name, d, "original") for i, d in index.query(code, 0)[0]]
            elif sig.type == "pdq" and q.pdq_variants is None:
                if sig.quality is None or sig.quality >= LOW_QUALITY:  # a bare PDQ signal
                    code = np.frombuffer(st.to_code(sig.value), np.uint8)
                    hits = index.query(code, radius[st.name])[0]
                    out += [_Candidate(i, st.name, d, "original") for i, d in hits]
        if q.pdq_variants and (q.pdq_quality or 0) >= LOW_QUALITY:
            index = self.indexes.indexes.get("pdq")
            if index is not None and len(index):
                names = list(q.pdq_variants)
                codes = np.frombuffer(
                    b"".join(bytes.fromhex(q.pdq_variants[n]) for n in names), np.uint8
                ).reshape(len(names), 32)
                # the keys already name the variant (see PdqSignal.analyse)
                for name, hits in zip(names, index.query(codes, radius["pdq"])):
                    out += [_Candidate(i, "pdq", d, name) for i, d in hits]
        return out

    def _resolve(self, ids: list[int]) -> dict[int, tuple[t.Any, ...]]:
        info: dict[int, tuple[t.Any, ...]] = {}
        if not ids:
            return info
        with self.store.read() as s:
            for chunk in range(0, len(ids), 5000):
                rows = s.execute(
                    select(
                        SignalRow.id, Entry.id, Entry.bank_id, Entry.enabled, Entry.labels,
                        Entry.reference,
                    )
                    .join(Entry, Entry.id == SignalRow.entry_id)
                    .where(SignalRow.id.in_(ids[chunk : chunk + 5000]))
                ).all()
                for sid, eid, bank_id, enabled, labels, reference in rows:
                    info[sid] = (eid, bank_id, enabled, labels, reference)
        return info

    @staticmethod
    def _decide(
        cands: list[_Candidate],
        info: dict[int, tuple[t.Any, ...]],
        banks: dict[int, tuple[Bank, dict[str, int]]],
        evidence: dict[int, dict[str, t.Any]] | None = None,
    ) -> MatchOutcome:
        best: dict[int, tuple[tuple[int, int, int], Hit]] = {}
        for c in cands:
            if c.signal_id not in info:
                continue  # deleted under us; the index will catch up
            eid, bank_id, enabled, labels, reference = info[c.signal_id]
            if not enabled or bank_id not in banks:
                continue
            bank, thresholds = banks[bank_id]
            limit = thresholds.get(c.signal_type, 0)
            if c.distance > limit:
                continue
            robust = c.variant.startswith("robust")
            region = "region" in c.variant  # found by the robust tier's region pass
            exact = registry.get(c.signal_type).distance_kind == "exact" and not robust
            rank = (0 if exact else 2 if robust else 1, c.distance,
                    0 if c.variant in ("original", "trimmed") else 1)
            hit = Hit(bank.name, bank.kind, eid, c.signal_type, int(c.distance), c.variant,
                      limit, dict(labels or {}), reference,
                      (evidence or {}).get(c.signal_id) if robust or region else None)
            if eid not in best or rank < best[eid][0]:
                best[eid] = (rank, hit)
        hits = [h for _, h in sorted(best.values(), key=lambda x: (x[0], x[1].entry_id))]
        allowed = [h for h in hits if h.bank_kind == "allow"]
        blocked = [h for h in hits if h.bank_kind == "block"]
        if allowed:
            return MatchOutcome(matches=[], allowed=allowed, suppressed=blocked)
        return MatchOutcome(matches=blocked, allowed=[], suppressed=[])
