"""Two versions of the code, side by side, on the queries of a `vigil bench robustness` folder.

`robust_side_by_side.py` compares settings of one version; a change that is not a setting (a
new way of choosing rectangles, say) needs the old code itself. This script runs the
benchmark's own per-query measurement (`vigil.bench.robustness._match_one`: PDQ, then every pass
of the robust tier, CPU time of one thread) in two worker processes, one importing `vigil` from
this checkout and one from a git worktree of `--baseline` (a commit). Each query goes to one
worker, then the other (the order alternates query by query), never to both at once, so that a
machine shared with other work slows both versions alike.

    python benchmarks/robust_versions.py --out /tmp/rb/final --baseline 52ba28c --negatives 500

Reported per version: median robust-tier ms of the negatives and of the positives, their ratio
(this checkout / baseline), and positives found; then the positives one version found and the
other did not. Positives: the embedded-picture and screen-recording families by default (the
region pass), or --strength.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import random
import subprocess
import sys
import tempfile
import typing as t
from pathlib import Path

import _common

REGION_STRENGTHS = ("scale-30%", "scale-40%", "scale-55%", "scale-70%", "phone-recording",
                    "pip55+q50")


def _worker(src: str, out: str, conn: t.Any) -> None:
    """Import vigil from ``src`` with one thread, then measure each query sent, until None."""
    _common.pin_threads(1)
    sys.path.insert(0, src)
    import vigil
    import vigil.bench.robustness as bench

    if not Path(vigil.__file__).resolve().is_relative_to(Path(src).resolve()):
        raise RuntimeError(f"imported {vigil.__file__}, not from {src}")
    bench._match_init(out)
    conn.send("ready")
    while (q := conn.recv()) is not None:
        conn.send(bench._match_one(q))


def _decide(row: dict[str, t.Any]) -> tuple[bool, bool]:
    """(found its own reference, matched another one): the robust tier's decision at the shipped
    defaults, as the benchmark's metrics make it (this checkout's code)."""
    from vigil.bench.robustness import ROBUST_DEFAULT, _decisions

    return _decisions("robust", row, ROBUST_DEFAULT)


def _found(row: dict[str, t.Any]) -> bool:
    return _decide(row)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="a `vigil bench robustness` folder")
    ap.add_argument("--baseline", required=True, help="the commit to compare against")
    ap.add_argument("--negatives", type=int, default=500)
    ap.add_argument("--strength", action="append", help="positive strengths (default: regions)")
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()

    queries = [json.loads(x) for x in (args.out / "queries.jsonl").read_text().splitlines() if x]
    wanted = set(args.strength or REGION_STRENGTHS)
    pos = [q for q in queries if q["kind"] == "pos" and q["strength"] in wanted]
    neg = random.Random(args.seed).sample([q for q in queries if q["kind"] != "pos"],
                                          args.negatives)
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "baseline"
        subprocess.run(["git", "-C", str(_common.REPO), "worktree", "add", "--detach", str(tree),
                        args.baseline], check=True, capture_output=True)
        try:
            ctx = mp.get_context("spawn")
            names = ("baseline", "this")
            pipes, procs = {}, []
            for name, src in zip(names, (tree / "src", _common.REPO / "src")):
                here, there = ctx.Pipe()
                p = ctx.Process(target=_worker, args=(str(src), str(args.out), there))
                p.start()
                procs.append(p)
                pipes[name] = here
                if here.recv() != "ready":
                    raise SystemExit(f"{name}: worker failed to start")
            rows: dict[str, list[dict[str, t.Any]]] = {n: [] for n in names}
            for i, q in enumerate(pos + neg, 1):
                for name in (names if i % 2 else names[::-1]):
                    pipes[name].send(q)
                    rows[name].append({**pipes[name].recv(), "kind": q["kind"],
                                       "strength": q["strength"]})
                if i % 100 == 0:
                    print(f"{i}/{len(pos) + len(neg)} queries", file=sys.stderr)
            for name in names:
                pipes[name].send(None)
            for p in procs:
                p.join()
        finally:
            subprocess.run(["git", "-C", str(_common.REPO), "worktree", "remove", "--force",
                            str(tree)], check=False, capture_output=True)

    import numpy as np

    med: dict[str, dict[str, float]] = {}
    for name in names:
        rr = rows[name]
        timed = [r for r in rr if "robust_ms" in r]  # a query that failed to decode has none
        med[name] = {k: float(np.median([r["robust_ms"] for r in timed
                                         if (r["kind"] == "pos") == p]))
                     for k, p in (("negatives", False), ("positives", True))
                     if any((r["kind"] == "pos") == p for r in timed)}
        found = sum(_found(r) for r in rr if r["kind"] == "pos")
        false = sum(_decide(r)[1] for r in rr)
        print(f"{name}: positives found {found}/{len(pos)}, false matches {false}, "
              + ", ".join(f"{k} median {v:.1f} ms" for k, v in med[name].items()))
    for k in med["this"]:
        print(f"ratio this / baseline, {k}: {med['this'][k] / med['baseline'][k]:.3f}")
    for a, b, q in zip(rows["baseline"], rows["this"], pos):
        if _found(a) != _found(b):
            who = "this" if _found(b) else "baseline"
            print(f"query {q['id']} {q['strength']}: found by {who}")


if __name__ == "__main__":
    main()
