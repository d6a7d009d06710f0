"""Side-by-side comparison of robust-tier settings on a `vigil bench robustness` run folder.

Every query runs under each setting in turn, in one process and one thread, so that a machine
shared with other work slows all settings alike: what this reports are differences measured
side by side, which is how the settings in docs/robustness.md were chosen.

    python benchmarks/robust_side_by_side.py --out /tmp/rb/final \\
        --setting base: --setting np16:nprobe=16 --setting regions2:signals.MAX_REGIONS=2

A setting is NAME:ASSIGNMENTS, comma-separated; each assignment is MODULE.ATTR=VALUE with MODULE
one of `signals` (vigil.signals.robust), `core` (vigil.core.robust) or `index`
(vigil.index.local), or `nprobe=N` (the loaded feature index's nprobe). Every setting starts from
the shipped values. Queries: the positives of the hardest families (or of --strength), and
--negatives random negatives (all kinds). Reported per setting: positives found (own reference
verified, or its PDQ region hit), false matches, median CPU ms of the robust tier (features,
every pass) for negatives and positives, and found per strength.

--bank-size N searches a bank of N pictures instead of the run's own: the references, then
synthetic entries, as the benchmark's growth stage builds them (vigil.bench.robustness.
synthetic_bank; the negatives' pictures held out). As in that stage, embedded-picture positives
and negatives are left out (their backgrounds are corpus pictures the synthetic entries copy),
a hit on a copy of the query's reference counts as found, and there is no PDQ region look-up.

    python benchmarks/robust_side_by_side.py --out /tmp/rb/final --bank-size 10000 \\
        --setting base: --setting v200:core.VOTE_FEATURES=200
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import sys
import time
import typing as t
from pathlib import Path

import _common

# one BLAS/OpenMP thread, set before numpy loads: idle pool threads spin and slow the measured one
_common.pin_threads(1)
import numpy as np

HARD = ("scale-30%", "scale-40%", "scale-55%", "scale-70%", "phone-recording", "caption-30%",
        "caption-15%", "edge-40%", "centre-40%", "logo-25%", "stickers-3x6%", "15deg", "x0.2",
        "blur-r2", "gamma2")


def _parse_setting(text: str) -> tuple[str, list[tuple[str, str, str]]]:
    name, _, body = text.partition(":")
    if not name:
        raise SystemExit(f"--setting {text!r}: give NAME:ASSIGNMENTS")
    out = []
    for item in filter(None, (x.strip() for x in body.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise SystemExit(f"--setting {text!r}: {item!r} is not KEY=VALUE")
        mod, _, attr = key.rpartition(".")
        if key != "nprobe" and mod not in ("signals", "core", "index"):
            raise SystemExit(f"--setting {text!r}: {key!r}: use signals./core./index.ATTR or nprobe")
        out.append((mod, attr, value))
    return name, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="a `vigil bench robustness` folder")
    ap.add_argument("--setting", action="append", required=True, help="NAME:ASSIGNMENTS")
    ap.add_argument("--negatives", type=int, default=300)
    ap.add_argument("--strength", action="append", help="positive strengths (default: hardest)")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--bank-size", type=int, default=0,
                    help="search a synthetic bank of this many pictures (see above)")
    args = ap.parse_args()

    import vigil.bench.robustness as bench
    from vigil.core import robust as core
    from vigil.index import local as index_mod
    from vigil.media.image import decode_image
    from vigil.signals import robust as signals

    bench._match_init(str(args.out))  # the run's bank; one thread for OpenCV and FAISS
    robust = bench._W["robust"]
    sig_ref = bench._W["sig_ref"]
    modules = {"signals": signals, "core": core, "index": index_mod}
    settings = dict(_parse_setting(s) for s in args.setting)
    shipped = {(m, a): getattr(modules[m], a) for assigns in settings.values()
               for m, a, _ in assigns if m}
    shipped_nprobe = robust.index.nprobe

    def apply(assigns: list[tuple[str, str, str]]) -> None:
        for (m, a), v in shipped.items():
            setattr(modules[m], a, v)
        robust.index.nprobe = shipped_nprobe
        if robust.index.nlist:
            robust.index._index.nprobe = shipped_nprobe
        for m, a, v in assigns:
            if not m:
                robust.index.nprobe = int(v)
                if robust.index.nlist:
                    robust.index._index.nprobe = int(v)
                continue
            old = getattr(modules[m], a)
            setattr(modules[m], a, type(old)(json.loads(v)) if not isinstance(old, str) else v)

    queries = bench._read_jsonl(args.out / "queries.jsonl")
    wanted = set(args.strength or HARD)
    pos = [q for q in queries if q["kind"] == "pos"
           and (q["strength"] in wanted or (not args.strength and q["family"] == "combo"))]
    negatives = [q for q in queries if q["kind"] != "pos"]
    region_check: t.Any = bench._region_pdq
    source_of: t.Callable[[int], t.Any] = sig_ref.get
    if args.bank_size:
        pos = [q for q in pos if q["family"] not in ("pip", "screen") and "pip" not in q["strength"]]
        negatives = [q for q in negatives if q["family"] != "pip"]
    rng = random.Random(args.seed)
    neg = rng.sample(negatives, min(args.negatives, len(negatives)))
    if args.bank_size:
        pool, n_real = bench.synthetic_pool(args.out, {q["src"] for q in neg})
        gen = np.random.default_rng(args.seed)
        robust, src_of = bench.synthetic_bank(pool, n_real, args.bank_size, gen,
                                              bench.flip_masks(gen))
        source_of = lambda sid: int(src_of[sid])
        region_check = None
        print(f"bank: {args.bank_size} pictures, {len(robust.index)} descriptors, "
              f"{robust.index.nlist} lists", file=sys.stderr)
    rows: dict[str, list[dict[str, t.Any]]] = collections.defaultdict(list)
    for n, q in enumerate(pos + neg, 1):
        data = Path(q["path"]).read_bytes()
        decoded = decode_image(data)
        for name, assigns in settings.items():
            apply(assigns)
            t0 = time.thread_time()
            ra = signals.OrbSignal.analyse(decoded, source=data)
            found = robust.search(ra.query, ra.mirrored, max_distance=100 - bench.ROBUST_DEFAULT,
                                  regions=ra.region_cuts, bars=ra.bars,
                                  region_check=region_check)
            ms = (time.thread_time() - t0) * 1e3
            mine = [q["ref"] is not None and source_of(c.signal_id) == q["ref"] for c in found]
            rows[name].append({"id": q["id"], "kind": q["kind"], "strength": q["strength"],
                               "ms": ms, "found": any(mine), "false": not all(mine)})
        if n % 100 == 0:
            print(f"{n}/{len(pos) + len(neg)} queries", file=sys.stderr)
    apply([])
    for name, rr in rows.items():
        p = [r for r in rr if r["kind"] == "pos"]
        ng = [r for r in rr if r["kind"] != "pos"]
        by: dict[str, int] = collections.Counter(r["strength"] for r in p if r["found"])
        print(f"{name}: positives found {sum(r['found'] for r in p)}/{len(p)}, "
              f"false matches {sum(r['false'] for r in rr)}, "
              f"negatives median {np.median([r['ms'] for r in ng]) if ng else float('nan'):.1f} ms, "
              f"positives median {np.median([r['ms'] for r in p]) if p else float('nan'):.1f} ms")
        print("   " + " ".join(f"{k}:{by.get(k, 0)}" for k in sorted({r['strength'] for r in p})))
    # the positives some settings found and others did not, to look at
    names = list(rows)
    for i, first in enumerate(rows[names[0]]):
        got = [rows[name][i]["found"] for name in names]
        if first["kind"] == "pos" and len(set(got)) > 1:
            print(f"query {first['id']} {first['strength']}: found by "
                  + ", ".join(n for n, g in zip(names, got) if g))


if __name__ == "__main__":
    main()
