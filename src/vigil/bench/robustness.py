"""``vigil bench robustness``: how well each matcher tier survives evasive edits, at what cost.

A staged pipeline; each stage reads the previous stage's files under ``OUT`` and writes its own,
so any stage can be re-run alone (``--stage metrics`` re-plots without matching again):

1. ``references`` → ``references.json``: a seeded sample of the corpus images is banked; every
   other corpus image is a negative (never banked). One member of each hard-negative group (other
   photos of the same landmark or object, see the corpus README) is a reference and the others
   negatives. ``LOGO_REFS`` negatives-pool pictures carrying an overlay logo are banked too, to
   test that different pictures sharing only that logo never match.
2. ``queries`` → ``queries/*.jpg|webp`` and ``queries.jsonl``: every reference under every edit
   of :data:`vigil.bench.edits.EDITS` (positives); every negative under every edit (negatives;
   picture-in-picture negatives embed a negative into another negative); other pictures carrying
   the banked logos (``logo`` negatives).
3. ``signals`` → ``store/`` (a Vigil data dir with the references banked through
   :meth:`Vigil.add_files`: md5, sha256, PDQ and the ``orb`` local features) and
   ``signals.jsonl`` (each query's 8 dihedral PDQ hashes and quality).
4. ``matches`` → ``matches.jsonl``: per query and tier, the score of the expected reference and
   the best score of any other reference: PDQ distance (all 8 orientations, trimmed borders, as
   the matcher does), robust inliers (the real :class:`~vigil.core.robust.RobustIndex`, mirrored
   query included), and the robust tier's time (feature extraction + retrieval + verification,
   one thread).
5. ``metrics`` → ``metrics.json``, ``table.md``, ``roc.png``, ``det.png``: per (tier, family,
   strength) recall at the threshold that gives <= 1e-4 false matches per query, recall and false
   matches per query at the shipped defaults; ``pdq`` alone, ``robust`` alone, and ``vigil`` (the
   cascade: PDQ at its default, then the robust tier on a miss).
6. ``scale`` → ``scale.json``: index bytes per banked picture and robust query time at 1k, 10k
   (and 100k in the full run) banked pictures; the banks beyond the real references are filled
   with synthetic entries made from real corpus features with 10% of their bits flipped.

A "false match" is a query matching any reference other than its own (for a negative: any
reference at all); it is counted once per query.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import time
import typing as t
from pathlib import Path

import numpy as np

__all__ = ["STAGES", "Config", "run"]

STAGES = ("references", "queries", "signals", "matches", "metrics", "scale")
CORPUS = Path(os.environ.get("VIGIL_CORPUS", Path(__file__).resolve().parents[4] / "shared" / "corpus"))
HARD_GROUPS = (
    r"tajmahal", r"eiffel", r"rushmore", r"liberty", r"opera", r"hammer\d", r"measuringtape",
    r"^new_wave", r"^pool", r"^skagen", r"^spiff", r"^m(3|13|15-vasey)\.",
)
PDQ_DEFAULT = 31
ROBUST_DEFAULT = 15  # inliers; the orb type's default threshold 85 = 100 - 15
TARGET_FPR = 1e-4


@dataclasses.dataclass
class Config:
    out: Path
    quick: bool = False
    seed: int = 20240501
    corpus: Path = CORPUS
    workers: int = 1
    #: the sizes below default by mode (full / --quick); tests shrink them further
    n_refs: int = 0
    #: negative pictures queried (None: all the other corpus images)
    n_neg_images: int | None = 0
    #: edits applied to each negative picture (None: every edit)
    neg_edits_per_image: int | None = 0
    logo_refs: int = 0
    logo_queries_per_logo: int = 0
    scale_sizes: tuple[int, ...] = ()
    #: only edits whose family is listed (empty: all)
    families: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        q = self.quick
        self.n_refs = self.n_refs or (12 if q else 90)
        if self.n_neg_images == 0:
            self.n_neg_images = 24 if q else None
        if self.neg_edits_per_image == 0:
            self.neg_edits_per_image = 8 if q else None
        self.logo_refs = self.logo_refs or (3 if q else 12)
        self.logo_queries_per_logo = self.logo_queries_per_logo or (4 if q else 12)
        self.scale_sizes = self.scale_sizes or ((1000,) if q else (1000, 10_000, 100_000))

    def edits(self) -> list[t.Any]:
        from vigil.bench.edits import EDITS

        return [e for e in EDITS if not self.families or e.family in self.families]


def _write_json(path: Path, obj: t.Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _read_jsonl(path: Path) -> list[dict[str, t.Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _write_jsonl(path: Path, rows: t.Iterable[dict[str, t.Any]]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as fh:
        for r in rows:
            fh.write(json.dumps(r, sort_keys=True) + "\n")
    os.replace(tmp, path)


# -- 1. references ---------------------------------------------------------------------------------
def stage_references(cfg: Config) -> dict[str, t.Any]:
    images = sorted(str(p) for p in (cfg.corpus / "images").rglob("*.jpg"))
    overlays = sorted(str(p) for p in (cfg.corpus / "overlays").glob("*.png"))
    if len(images) < 40 or not overlays:
        from vigil.errors import UsageError

        raise UsageError(f"{cfg.corpus}: expected the media corpus (images/, overlays/) there; "
                         "set VIGIL_CORPUS")
    rng = random.Random(cfg.seed)
    groups: list[list[str]] = []
    for pat in HARD_GROUPS:
        members = [p for p in images if re.search(pat, Path(p).name, re.IGNORECASE)]
        if len(members) >= 2:
            groups.append(members)
    hard_refs = [g[0] for g in groups]
    hard_negs = {p for g in groups for p in g[1:]}
    rest = [p for p in images if p not in hard_negs and p not in hard_refs]
    rng.shuffle(rest)
    n_hard = 3 if cfg.quick else len(hard_refs)
    refs = hard_refs[:n_hard] + rest[: cfg.n_refs - n_hard]
    negatives = [p for p in images if p not in refs]
    # pictures used as logo carriers are negatives too: the logo is the only thing they share
    logo_base = negatives[: cfg.logo_refs]
    if cfg.n_neg_images is not None:
        keep_hard = [p for p in negatives if p in hard_negs][:6]
        others = [p for p in negatives if p not in hard_negs]
        rng.shuffle(others)
        negatives = sorted(set(keep_hard + others[: cfg.n_neg_images - len(keep_hard)] + logo_base))
    obj = {
        "references": refs,
        "negatives": negatives,
        "hard_negatives": sorted(hard_negs & set(negatives)),
        "hard_groups": [[Path(p).name for p in g] for g in groups],
        "overlays": overlays,
        "logo_base": logo_base,
        "seed": cfg.seed,
        "quick": cfg.quick,
    }
    _write_json(cfg.out / "references.json", obj)
    return obj


# -- 2. queries ------------------------------------------------------------------------------------
def _query_jobs(cfg: Config, refs: dict[str, t.Any]) -> list[dict[str, t.Any]]:
    edits_all = cfg.edits()
    jobs: list[dict[str, t.Any]] = []
    rng = random.Random(cfg.seed + 1)
    for ri, p in enumerate(refs["references"]):
        for e in edits_all:
            jobs.append({"kind": "pos", "src": p, "ref": ri, "family": e.family,
                         "strength": e.strength, "moderate": e.moderate})
    hard = set(refs["hard_negatives"])
    for p in refs["negatives"]:
        if p in refs["logo_base"]:
            continue  # banked with a logo: see the logo queries below
        edits = list(edits_all)
        if cfg.neg_edits_per_image is not None:
            edits = rng.sample(edits, min(len(edits), cfg.neg_edits_per_image))
        for e in edits:
            jobs.append({"kind": "hard" if p in hard else "neg", "src": p, "ref": None,
                         "family": e.family, "strength": e.strength, "moderate": e.moderate})
    # logo carriers: banked picture i carries overlay i; queries are other negatives with overlay i
    negs = [p for p in refs["negatives"] if p not in refs["logo_base"]]
    for li in range(len(refs["logo_base"])):
        for k in range(cfg.logo_queries_per_logo):
            src = negs[(li * 7 + k * 3) % len(negs)]
            jobs.append({"kind": "logo", "src": src, "ref": None, "family": "logo-pair",
                         "strength": f"overlay-{li}", "moderate": True, "logo": li})
    for i, j in enumerate(jobs):
        j["id"] = i
    return jobs


def _logo_picture(src: str, overlay: str, seed: int) -> t.Any:
    from PIL import Image

    from vigil.bench.edits import _paste_overlay

    with Image.open(src) as im, Image.open(overlay) as ov:
        return _paste_overlay(im.convert("RGB"), ov.convert("RGBA"), 0.2,
                              np.random.default_rng(seed))


def _make_query(args: tuple[dict[str, t.Any], dict[str, t.Any], str, int]) -> dict[str, t.Any]:
    from PIL import Image

    from vigil.bench.edits import EDITS, Ctx, apply, encode

    job, refs, qdir, seed = args
    by_key = {e.key: e for e in EDITS}
    rng = np.random.default_rng([seed, job["id"]])
    if job["kind"] == "logo":
        img = _logo_picture(job["src"], refs["overlays"][job["logo"]], seed + 1000 + job["id"])
        codec = ("JPEG", 90)
    else:
        edit = by_key[f"{job['family']}/{job['strength']}"]
        # backgrounds for picture-in-picture: negatives only, never the picture itself
        bgs = [Path(p) for p in refs["negatives"] if p != job["src"] and p not in refs["logo_base"]]
        ctx = Ctx(bgs, [Path(p) for p in refs["overlays"]])
        with Image.open(job["src"]) as im:
            img = apply(edit, im, rng, ctx)
        codec = edit.codec
    ext = "webp" if codec[0] == "WEBP" else "jpg"
    path = Path(qdir) / f"{job['id']:06d}.{ext}"
    path.write_bytes(encode(img, codec))
    return {**job, "path": str(path)}


def _pool_map(fn: t.Callable[[t.Any], t.Any], items: list[t.Any], workers: int,
              init: t.Callable[..., None] | None = None, initargs: tuple[t.Any, ...] = (),
              spawn: bool = False) -> list[t.Any]:
    """Map in ``workers`` fresh processes (or in this one). Costs are measured in workers
    (``spawn``), which start with one BLAS/OpenMP thread: a per-core figure must not count idle
    threads spinning."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    if workers <= 1 and not spawn:
        if init:
            init(*initargs)
        return [fn(x) for x in items]
    import concurrent.futures as cf
    import multiprocessing as mp

    with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=init,
                                initargs=initargs) as pool:
        return list(pool.map(fn, items, chunksize=16))


def stage_queries(cfg: Config) -> list[dict[str, t.Any]]:
    refs = json.loads((cfg.out / "references.json").read_text())
    qdir = cfg.out / "queries"
    qdir.mkdir(parents=True, exist_ok=True)
    jobs = _query_jobs(cfg, refs)
    rows = _pool_map(_make_query, [(j, refs, str(qdir), cfg.seed) for j in jobs], cfg.workers)
    # the banked logo carriers
    ldir = cfg.out / "logo_refs"
    ldir.mkdir(exist_ok=True)
    for li, src in enumerate(refs["logo_base"]):
        _logo_picture(src, refs["overlays"][li], cfg.seed + li).save(ldir / f"logo-{li:02d}.jpg",
                                                                     quality=90)
    _write_jsonl(cfg.out / "queries.jsonl", rows)
    return rows


# -- 3. signals ------------------------------------------------------------------------------------
def _vigil(cfg: Config) -> t.Any:
    from vigil.config import Settings
    from vigil.core.app import Vigil

    return Vigil(Settings(data_dir=cfg.out / "store"))


def _query_signals(path: str) -> dict[str, t.Any]:
    """The PDQ tier's signals of a query (its local features are computed, and timed, by the
    matches stage: storing 36 KB of them per query would outweigh the queries themselves)."""
    from vigil.media.image import decode_image
    from vigil.signals.pdq import PdqSignal

    try:
        _, dihedral, quality = PdqSignal.analyse(decode_image(Path(path)))
    except Exception as exc:  # noqa: BLE001 - reported per query
        return {"pdq": None, "pdq_quality": None, "error": str(exc)}
    return {"pdq": dihedral, "pdq_quality": quality, "error": None}


def stage_signals(cfg: Config) -> None:
    import shutil

    refs = json.loads((cfg.out / "references.json").read_text())
    shutil.rmtree(cfg.out / "store", ignore_errors=True)
    v = _vigil(cfg)
    try:
        v.create_bank("bench")
        paths = [Path(p) for p in refs["references"]]
        paths += sorted((cfg.out / "logo_refs").glob("*.jpg"))
        entries = {}
        for i, item in enumerate(v.add_files("bench", paths, {})):
            if item.error:
                raise RuntimeError(f"{item.path}: {item.error.message}")
            entries[str(item.entry_id)] = i  # reference index; logo carriers follow the refs
        v.robust.save()  # build the feature index once, here
        bytes_per_ref = Path(v.robust.path).stat().st_size / max(1, len(paths))
    finally:
        v.close()
    queries = _read_jsonl(cfg.out / "queries.jsonl")
    sigs = _pool_map(_query_signals, [q["path"] for q in queries], cfg.workers)
    _write_jsonl(cfg.out / "signals.jsonl", ({"id": q["id"], **s} for q, s in zip(queries, sigs)))
    _write_json(cfg.out / "bank.json", {"entries": entries, "n_banked": len(paths),
                                        "index_file_bytes_per_picture": bytes_per_ref})


# -- 4. matches ------------------------------------------------------------------------------------
_W: dict[str, t.Any] = {}


def _match_init(out: str) -> None:
    import cv2
    import faiss

    cv2.setNumThreads(1)
    faiss.omp_set_num_threads(1)
    from sqlalchemy import select

    from vigil.store.models import Entry, SignalRow

    cfg = Config(Path(out))
    v = _vigil(cfg)
    bank = json.loads((cfg.out / "bank.json").read_text())
    ent = {int(k): int(x) for k, x in bank["entries"].items()}
    with v.store.read() as s:
        rows = s.execute(select(SignalRow.id, SignalRow.entry_id, SignalRow.type, SignalRow.value,
                                SignalRow.quality).join(Entry)).all()
    sig_ref = {r.id: ent[r.entry_id] for r in rows if r.entry_id in ent}
    pdq = [(ent[r.entry_id], bytes.fromhex(r.value)) for r in rows
           if r.type == "pdq" and r.entry_id in ent and (r.quality or 0) >= 50]
    pdq_sid = [r.id for r in rows if r.type == "pdq" and r.entry_id in ent and (r.quality or 0) >= 50]
    _W.update(v=v, robust=v.robust, sig_ref=sig_ref, pdq_sid=np.array(pdq_sid, np.int64),
              pdq_ref=np.array([p[0] for p in pdq], np.int64),
              pdq_codes=np.frombuffer(b"".join(p[1] for p in pdq), np.uint8).reshape(-1, 32))


_POP = np.array([i.bit_count() for i in range(256)], np.uint8)


def _region_pdq(region: t.Any) -> list[t.Any]:
    """The matcher's PDQ look-up of an embedded region (``Matcher._region_pdq``), against the
    bench's banked PDQ hashes at PDQ's default threshold."""
    from vigil.core.robust import region_pdq_candidates

    def lookup(codes: np.ndarray, radius: int) -> list[list[tuple[int, int]]]:
        d = _POP[codes[:, None, :] ^ _W["pdq_codes"][None, :, :]].sum(-1)
        return [[(int(_W["pdq_sid"][i]), int(row[i])) for i in np.nonzero(row <= radius)[0]]
                for row in d]

    return region_pdq_candidates(region, lookup, PDQ_DEFAULT)


def _match_one(q: dict[str, t.Any]) -> dict[str, t.Any]:
    from vigil.media.image import decode_image
    from vigil.signals.pdq import LOW_QUALITY, PdqSignal
    from vigil.signals.robust import OrbSignal

    ref = q["ref"]
    out: dict[str, t.Any] = {"id": q["id"]}
    try:
        data = Path(q["path"]).read_bytes()
        decoded = decode_image(data)
    except Exception as exc:  # noqa: BLE001 - a query that fails to decode is reported, not fatal
        return {**out, "error": str(exc)}
    t0 = time.thread_time()
    _, dihedral, quality = PdqSignal.analyse(decoded)
    t1 = time.thread_time()
    best_ok, best_wrong = 999, 999
    if quality >= LOW_QUALITY and len(_W["pdq_codes"]):
        codes = np.frombuffer(b"".join(bytes.fromhex(h) for h in dihedral.values()),
                              np.uint8).reshape(-1, 32)
        d = _POP[codes[:, None, :] ^ _W["pdq_codes"][None, :, :]].sum(-1).min(0)
        own = _W["pdq_ref"] == (-1 if ref is None else ref)
        if own.any():
            best_ok = int(d[own].min())
        if (~own).any():
            best_wrong = int(d[~own].min())
    t2, w2 = time.thread_time(), time.perf_counter()
    ra = OrbSignal.analyse(decoded, source=data)
    # max_distance: the shipped default (15 inliers), as the matcher asks for it: a later pass
    # runs only when the earlier ones found nothing at the default; embedded regions are first
    # re-hashed with PDQ and looked up at PDQ's default, as the matcher does
    found = _W["robust"].search(ra.query, ra.mirrored, max_distance=100 - ROBUST_DEFAULT,
                                regions=ra.region_cuts, bars=ra.bars, region_check=_region_pdq)
    t3, w3 = time.thread_time(), time.perf_counter()
    rob_ok = rob_wrong = 0
    reg_ok = reg_wrong = 999
    variant = None
    for c in found:
        r = _W["sig_ref"].get(c.signal_id)
        mine = ref is not None and r == ref
        if c.signal_type == "pdq":  # an embedded region matched by its PDQ hash
            if mine:
                reg_ok, variant = min(reg_ok, c.distance), "pdq+region"
            else:
                reg_wrong = min(reg_wrong, c.distance)
            continue
        inl = int(c.evidence["inliers"])
        if mine:
            if inl > rob_ok:
                rob_ok, variant = inl, c.variant
        else:
            rob_wrong = max(rob_wrong, inl)
    return {**out, "pdq_ok": best_ok, "pdq_wrong": best_wrong, "rob_ok": rob_ok,
            "rob_wrong": rob_wrong, "region_pdq_ok": reg_ok, "region_pdq_wrong": reg_wrong,
            "rob_variant": variant, "pdq_ms": round((t1 - t0) * 1e3, 2),
            "robust_ms": round((t3 - t2) * 1e3, 2), "robust_wall_ms": round((w3 - w2) * 1e3, 2),
            "keypoints": len(ra.query)}


def machine_probe(repeat: int = 15) -> float:
    """Median ms of one fixed piece of the robust tier's work, ORB's 1000 keypoints of a synthetic
    640x480 picture, on one thread of this process: how fast the machine is at the moment. On a
    shared machine the same code's medians move with other tenants' load (by half within one
    day, measured); the matches stage records this before and after, so that runs can be told
    apart from a slower machine."""
    import cv2

    from vigil.signals.robust import extract_features

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        rng = np.random.default_rng(0)
        grey = cv2.GaussianBlur(rng.integers(0, 256, (480, 640)).astype(np.uint8), (0, 0), 2.0)
        lo, hi = int(grey.min()), int(grey.max())  # stretched to 0-255
        grey = np.round((grey - lo) * (255.0 / max(1, hi - lo))).astype(np.uint8)
        took = []
        for _ in range(repeat):
            t0 = time.thread_time()
            extract_features(grey)
            took.append((time.thread_time() - t0) * 1e3)
    finally:
        cv2.setNumThreads(threads)
    return round(float(np.median(took)), 2)


def stage_matches(cfg: Config) -> None:
    queries = _read_jsonl(cfg.out / "queries.jsonl")
    before = machine_probe()
    rows = _pool_map(_match_one, queries, cfg.workers, _match_init, (str(cfg.out),), spawn=True)
    _write_jsonl(cfg.out / "matches.jsonl", rows)
    _write_json(cfg.out / "probe.json", {"before_ms": before, "after_ms": machine_probe()})


# -- 5. metrics ------------------------------------------------------------------------------------
def _decisions(tier: str, m: dict[str, t.Any], thr: float) -> tuple[bool, bool]:
    """(matched its own reference, matched another one) for one query at threshold ``thr``
    (a PDQ distance for ``pdq``, a minimum inlier count for ``robust`` and ``vigil``)."""
    if "error" in m:
        return False, False
    if tier == "pdq":
        return m["pdq_ok"] <= thr, m["pdq_wrong"] <= thr
    # the robust tier's hits: inliers at the threshold swept, or an embedded region whose PDQ
    # hash matched (at PDQ's default: that look-up has no inlier count to sweep)
    rob = (m["rob_ok"] >= thr or m.get("region_pdq_ok", 999) <= PDQ_DEFAULT,
           m["rob_wrong"] >= thr or m.get("region_pdq_wrong", 999) <= PDQ_DEFAULT)
    if tier == "robust":
        return rob
    # vigil: PDQ at its default; on a miss (nothing within it), the robust tier
    ok, wrong = m["pdq_ok"] <= PDQ_DEFAULT, m["pdq_wrong"] <= PDQ_DEFAULT
    if ok or wrong:
        return ok, wrong
    return rob


TIERS = {"pdq": (range(97), PDQ_DEFAULT), "robust": (range(100, 7, -1), ROBUST_DEFAULT),
         "vigil": (range(100, 7, -1), ROBUST_DEFAULT)}


def stage_metrics(cfg: Config) -> dict[str, t.Any]:
    queries = {q["id"]: q for q in _read_jsonl(cfg.out / "queries.jsonl")}
    matches = _read_jsonl(cfg.out / "matches.jsonl")
    n = len(matches)
    pos = [m for m in matches if queries[m["id"]]["kind"] == "pos"]
    result: dict[str, t.Any] = {"queries": n, "positives": len(pos),
                                "negatives": n - len(pos), "tiers": {}, "groups": {}}
    curves: dict[str, list[tuple[float, float]]] = {}
    for tier, (sweep, default) in TIERS.items():
        pts = []
        chosen = None
        for thr in sweep:  # from strict to loose
            dec = [_decisions(tier, m, thr) for m in matches]
            fpq = sum(w for _, w in dec) / n
            rec = sum(dec[i][0] for i, m in enumerate(matches) if queries[m["id"]]["kind"] == "pos") / max(1, len(pos))
            pts.append((fpq, rec))
            if fpq <= TARGET_FPR:
                chosen = thr
        curves[tier] = pts
        at_default = [_decisions(tier, m, default) for m in matches]
        result["tiers"][tier] = {
            "default_threshold": default,
            "threshold_at_target": chosen,
            "false_matches_per_query_at_default": sum(w for _, w in at_default) / n,
            "false_matches_at_default": int(sum(w for _, w in at_default)),
            "recall_at_default": sum(at_default[i][0] for i, m in enumerate(matches)
                                     if queries[m["id"]]["kind"] == "pos") / max(1, len(pos)),
        }
        at_target = [_decisions(tier, m, chosen) if chosen is not None else (False, False)
                     for m in matches]
        for i, m in enumerate(matches):
            q = queries[m["id"]]
            g = result["groups"].setdefault(f"{q['family']}/{q['strength']}", {
                "family": q["family"], "strength": q["strength"], "moderate": q["moderate"],
                "positives": 0, "queries": 0})
            if tier == "pdq":
                g["queries"] += 1
                g["positives"] += q["kind"] == "pos"
            for label, dec in (("target", at_target[i]), ("default", at_default[i])):
                key = f"{tier}_{label}"
                g.setdefault(key + "_hits", 0)
                g.setdefault(key + "_false", 0)
                g[key + "_hits"] += bool(dec[0] and q["kind"] == "pos")
                g[key + "_false"] += bool(dec[1])
    for g in result["groups"].values():
        for tier in TIERS:
            for label in ("target", "default"):
                key = f"{tier}_{label}"
                g[f"{key}_recall"] = (g[f"{key}_hits"] / g["positives"]) if g["positives"] else None
                g[f"{key}_fpq"] = g[f"{key}_false"] / max(1, g["queries"])
    neg_kinds = {}
    for kind in ("neg", "hard", "logo"):
        ms = [m for m in matches if queries[m["id"]]["kind"] == kind]
        neg_kinds[kind] = {"queries": len(ms), **{
            tier: int(sum(_decisions(tier, m, TIERS[tier][1])[1] for m in ms)) for tier in TIERS}}
    result["negatives_by_kind_false_at_default"] = neg_kinds
    times = [m["robust_ms"] for m in matches if "robust_ms" in m]
    result["robust_ms_median"] = float(np.median(times)) if times else None
    result["robust_ms_p90"] = float(np.percentile(times, 90)) if times else None
    result["robust_ms_p95"] = float(np.percentile(times, 95)) if times else None
    # the cost differs by kind: a negative pays every pass (picture, mirror, embedded regions)
    for kind, sel in (("positives", lambda q: q["kind"] == "pos"),
                      ("negatives", lambda q: q["kind"] != "pos")):
        ts = [m["robust_ms"] for m in matches if "robust_ms" in m and sel(queries[m["id"]])]
        result[f"robust_ms_median_{kind}"] = float(np.median(ts)) if ts else None
        result[f"robust_ms_p90_{kind}"] = float(np.percentile(ts, 90)) if ts else None
    # which pass found the positives the robust tier found
    variants: dict[str, int] = {}
    for m in matches:
        if m.get("rob_variant") and (m.get("rob_ok", 0) >= ROBUST_DEFAULT
                                     or m.get("region_pdq_ok", 999) <= PDQ_DEFAULT):
            variants[m["rob_variant"]] = variants.get(m["rob_variant"], 0) + 1
    result["robust_hits_by_pass"] = variants
    probe = cfg.out / "probe.json"  # the machine's speed around the matches stage (machine_probe)
    result["machine_probe_ms"] = json.loads(probe.read_text()) if probe.exists() else None
    result["pdq_ms_median"] = float(np.median([m["pdq_ms"] for m in matches if "pdq_ms" in m] or [0]))
    bank = json.loads((cfg.out / "bank.json").read_text())
    result["index_file_bytes_per_picture"] = bank["index_file_bytes_per_picture"]
    summary = _summary(result)
    result["summary"] = summary
    _write_json(cfg.out / "metrics.json", result)
    (cfg.out / "table.md").write_text(_table(result))
    _plots(cfg.out, curves)
    return result


def _summary(r: dict[str, t.Any]) -> dict[str, t.Any]:
    out: dict[str, t.Any] = {}
    for tier in TIERS:
        for label in ("target", "default"):
            key = f"{tier}_{label}_recall"
            single = [g[key] for g in r["groups"].values()
                      if g["moderate"] and g["positives"] and g["family"] != "combo"]
            combo = [g[key] for g in r["groups"].values()
                     if g["moderate"] and g["positives"] and g["family"] == "combo"]
            out[f"{tier}_{label}_min_single_moderate"] = min(single) if single else None
            out[f"{tier}_{label}_min_combo_moderate"] = min(combo) if combo else None
    return out


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def _table(r: dict[str, t.Any]) -> str:
    tt = r["tiers"]
    lines = [
        (f"Queries: {r['queries']} ({r['positives']} positives, {r['negatives']} negatives). "
         f"Thresholds at <= 1e-4 false matches/query: PDQ distance <= "
         f"{tt['pdq']['threshold_at_target']}, robust >= {tt['robust']['threshold_at_target']} "
         f"inliers, Vigil (PDQ <= {PDQ_DEFAULT}, then robust) >= "
         f"{tt['vigil']['threshold_at_target']} inliers. Defaults: PDQ <= {PDQ_DEFAULT}, robust "
         f">= {ROBUST_DEFAULT} inliers."),
        "",
        "| tier | recall at default | false matches/query at default | false matches at default |",
        "| --- | ---: | ---: | ---: |",
    ]
    for tier, v in tt.items():
        lines.append(f"| {tier} | {v['recall_at_default']:.3f} | "
                     f"{v['false_matches_per_query_at_default']:.2e} | {v['false_matches_at_default']} |")
    lines += ["", ("Recall per edit (`*` = moderate strength, where the targets apply): at the "
                   "1e-4 threshold / at the default; last column: false matches per query at the "
                   "default for Vigil."), "",
              "| family | strength | n | PDQ | robust | Vigil | Vigil FP/q |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for key in sorted(r["groups"], key=lambda k: (r["groups"][k]["family"], k)):
        g = r["groups"][key]
        if not g["positives"]:
            continue
        cells = [f"{_fmt(g[f'{t}_target_recall'])} / {_fmt(g[f'{t}_default_recall'])}"
                 for t in TIERS]
        star = "*" if g["moderate"] else ""
        lines.append(f"| {g['family']} | {g['strength']}{star} | {g['positives']} | "
                     + " | ".join(cells) + f" | {g['vigil_default_fpq']:.1e} |")
    nk = r["negatives_by_kind_false_at_default"]
    lines += ["", "False matches at the defaults on negatives, by kind:", "",
              "| negatives | queries | PDQ | robust | Vigil |", "| --- | ---: | ---: | ---: | ---: |"]
    for kind, v in nk.items():
        lines.append(f"| {kind} | {v['queries']} | {v['pdq']} | {v['robust']} | {v['vigil']} |")
    return "\n".join(lines) + "\n"


def _plots(out: Path, curves: dict[str, list[tuple[float, float]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = {"pdq": "PDQ only", "robust": "robust tier only", "vigil": "Vigil (PDQ + robust)"}
    for kind in ("roc", "det"):
        fig, ax = plt.subplots(figsize=(5, 3.6), dpi=80)
        for tier, pts in curves.items():
            fp = np.array([max(p[0], 1e-6) for p in pts])
            rec = np.array([p[1] for p in pts])
            if kind == "roc":
                ax.plot(fp, rec, label=names[tier])
            else:
                ax.plot(fp, np.maximum(1 - rec, 1e-4), label=names[tier])
        ax.set_xscale("log")
        ax.axvline(TARGET_FPR, color="grey", ls=":", lw=1)
        ax.set_xlabel("false matches per query (1e-6 = none)")
        if kind == "roc":
            ax.set_ylabel("recall (all positives)")
            ax.set_ylim(0, 1)
        else:
            ax.set_yscale("log")
            ax.set_ylabel("miss rate")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / f"{kind}.png")
        plt.close(fig)


# -- 6. scale --------------------------------------------------------------------------------------
def stage_scale(cfg: Config) -> dict[str, t.Any]:
    """Growth with bank size (:func:`_scale`), in a fresh process that starts with one
    BLAS/OpenMP thread, as the matches stage's workers do: this process's pools may already
    hold idle threads, which spin and slow the one measured."""
    (out,) = _pool_map(_scale, [cfg], 1, spawn=True)
    _write_json(cfg.out / "scale.json", out)
    return out


def growth_queries(queries: list[dict[str, t.Any]], rng: np.random.Generator, n: int = 60,
                   ) -> tuple[list[dict[str, t.Any]], list[dict[str, t.Any]]]:
    """The growth stage's sample: ``n`` positives and ``n`` negatives. Embedded-picture edits are
    left out: their backgrounds are corpus pictures that the synthetic entries copy, so their
    whole picture would match a copy of the background (rightly: it is there) before the region
    pass looks for the reference."""
    positives = [q for q in queries if q["kind"] == "pos" and q["family"] not in ("pip", "screen")
                 and "pip" not in q["strength"]]
    negatives = [q for q in queries if q["kind"] in ("neg", "hard") and q["family"] != "pip"]
    pos = [positives[i] for i in rng.choice(len(positives), min(n, len(positives)), replace=False)]
    neg = [negatives[i] for i in rng.choice(len(negatives), min(n, len(negatives)), replace=False)] \
        if negatives else []
    return pos, neg


def synthetic_pool(out: Path, held_out: t.Collection[str]) -> tuple[list[t.Any], int]:
    """The banked features of the run's references, then of every negative picture whose source
    is not in ``held_out``: what synthetic bank entries copy. Returns (pool, references)."""
    from vigil.media.image import decode_image
    from vigil.signals.robust import OrbSignal, unpack_payload

    refs = json.loads((out / "references.json").read_text())
    paths = refs["references"] + [p for p in refs["negatives"] if p not in held_out]
    return ([unpack_payload(OrbSignal.analyse(decode_image(Path(p))).payload) for p in paths],
            len(refs["references"]))


def flip_masks(rng: np.random.Generator) -> np.ndarray:
    """4096 random 256-bit masks with ~10% of the bits set, each also rotated by 0-31 bytes."""
    base = np.packbits(rng.random((4096, 256)) < 0.10, axis=1)
    return np.stack([np.roll(base, k, axis=1) for k in range(32)], axis=1)  # (4096, 32, 32)


def synthetic_bank(pool: list[t.Any], n_real: int, size: int, rng: np.random.Generator,
                   masks: np.ndarray) -> tuple[t.Any, np.ndarray]:
    """A robust index of ``size`` pictures held in memory: the ``n_real`` references, then
    synthetic entries (a random pool picture's features with 10% of their bits flipped), searched
    as :class:`~vigil.core.robust.RobustIndex` searches (every pass, the shipped settings).
    Returns the index and, per entry id, the pool picture it copies (a hit on a copy of the
    query's own reference is the same picture)."""
    from vigil.core.robust import RobustIndex
    from vigil.index.local import LocalFeatureIndex, _nlist_for

    class MemoryIndex(RobustIndex):
        """The robust tier's search over an in-memory bank: a feature index and its payloads,
        without a store."""

        def __init__(self, index: t.Any, payload: dict[int, t.Any]) -> None:
            self.index, self._payload = index, payload

        def payloads(self, ids: t.Sequence[int]) -> dict[int, t.Any]:
            return {i: self._payload[i] for i in ids if i in self._payload}

    ids, codes, payload = [], [], {}
    src_of = np.arange(size)
    for i in range(size):
        if i < n_real:
            f = pool[i]
        else:
            src_of[i] = int(rng.integers(len(pool)))
            src = pool[src_of[i]]
            mask = masks[rng.integers(len(masks), size=len(src)), rng.integers(32)]
            f = dataclasses.replace(src, desc=src.desc ^ mask)
        ids.append(np.full(len(f), i, np.int64))
        codes.append(f.desc)
        payload[i] = f
    all_ids, all_codes = np.concatenate(ids), np.concatenate(codes)
    index = LocalFeatureIndex()
    nlist = _nlist_for(len(all_ids))
    cents = all_codes[(np.arange(nlist) * (len(all_codes) / max(1, nlist))).astype(np.int64)] \
        if nlist else np.zeros((0, 32), np.uint8)
    index.load_arrays(cents, all_ids, all_codes)
    return MemoryIndex(index, payload), src_of


def _scale(cfg: Config) -> dict[str, t.Any]:
    """Growth with bank size: banks of ``cfg.scale_sizes`` pictures (:func:`synthetic_bank`),
    searched exactly as the matcher searches (every pass, the shipped settings) by a sample of
    positives and of negatives (:func:`growth_queries`). A negative's source picture and the
    pictures its edits embed are held out of the synthetic entries, so a negative pays every
    pass as it would in production. Time: CPU of the search, the query's own features excluded
    (they do not depend on the bank)."""
    import cv2
    import faiss

    from vigil.media.image import decode_image
    from vigil.signals.robust import OrbSignal

    cv2.setNumThreads(1)
    faiss.omp_set_num_threads(1)
    queries = _read_jsonl(cfg.out / "queries.jsonl")
    rng = np.random.default_rng(cfg.seed)
    pos_sample, neg_sample = growth_queries(queries, rng)
    pool, n_real = synthetic_pool(cfg.out, {q["src"] for q in neg_sample})

    def analyse(q: dict[str, t.Any]) -> t.Any:
        data = Path(q["path"]).read_bytes()
        return OrbSignal.analyse(decode_image(data), source=data)

    sample = [(q, analyse(q)) for q in pos_sample + neg_sample]
    out: dict[str, t.Any] = {"sizes": {}, "positives": len(pos_sample), "negatives": len(neg_sample)}
    masks = flip_masks(rng)
    for size in cfg.scale_sizes:
        t0 = time.perf_counter()
        bank, src_of = synthetic_bank(pool, n_real, size, rng, masks)
        build_s = time.perf_counter() - t0
        times: dict[str, list[float]] = {"pos": [], "neg": []}
        found = false = 0
        for q, ra in sample:
            t1 = time.thread_time()
            hits = bank.search(ra.query, ra.mirrored, max_distance=100 - ROBUST_DEFAULT,
                               regions=ra.region_cuts, bars=ra.bars)
            kind = "pos" if q["kind"] == "pos" else "neg"
            times[kind].append((time.thread_time() - t1) * 1e3)
            # a hit on a synthetic copy of the query's own reference is the same picture; any
            # other hit is a false match (a negative's source picture is held out)
            mine = [q["ref"] is not None and src_of[c.signal_id] == q["ref"] for c in hits]
            found += kind == "pos" and any(mine)
            false += not all(mine)
        allt = times["pos"] + times["neg"]
        index = bank.index
        out["sizes"][str(size)] = {
            "banked": size, "descriptors": len(index), "nlist": index.nlist,
            "index_bytes_per_picture": index.memory_bytes() / size,
            "query_ms_median": float(np.median(allt)), "query_ms_p95": float(np.percentile(allt, 95)),
            "query_ms_median_positives": float(np.median(times["pos"])) if times["pos"] else None,
            "query_ms_median_negatives": float(np.median(times["neg"])) if times["neg"] else None,
            "build_s": round(build_s, 1), "recall_of_sample": found / max(1, len(pos_sample)),
            "false_matches_of_sample": false,
        }
        del index, bank
    return out


def run(cfg: Config, stages: t.Sequence[str] | None = None,
        on_stage: t.Callable[[str, float], None] | None = None,
        seed_given: bool = False) -> dict[str, float]:
    """Run the given stages (all by default) in order; returns seconds per stage. Stages after
    ``references`` run with the seed that stage recorded (the queries' edits and placements
    derive from it); ``seed_given``: ``cfg.seed`` was asked for, and must then agree."""
    from vigil.errors import UsageError

    refs_file = cfg.out / "references.json"
    if "references" not in (stages or STAGES) and refs_file.exists():
        stored = json.loads(refs_file.read_text()).get("seed", cfg.seed)
        if seed_given and stored != cfg.seed:
            raise UsageError(f"{cfg.out}: this run's references were sampled with seed {stored}, "
                             f"not {cfg.seed}; run the references stage again, or drop --seed")
        cfg.seed = stored
    fns = {"references": stage_references, "queries": stage_queries, "signals": stage_signals,
           "matches": stage_matches, "metrics": stage_metrics, "scale": stage_scale}
    cfg.out.mkdir(parents=True, exist_ok=True)
    took: dict[str, float] = {}
    for name in stages or STAGES:
        t0 = time.perf_counter()
        fns[name](cfg)
        took[name] = round(time.perf_counter() - t0, 1)
        if on_stage:
            on_stage(name, took[name])
    timing = cfg.out / "timing.json"
    old = json.loads(timing.read_text()) if timing.exists() else {}
    _write_json(timing, {**old, **took})
    return took
