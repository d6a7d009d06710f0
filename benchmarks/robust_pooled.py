"""Recall per edit pooled over several `vigil bench robustness` samples, at the shipped defaults.

One sample holds 20 positives per (family, strength), so one miss moves a cell by 0.05 and a
cell at 0.95 is 19 of 20. Samples drawn with different `--seed`s have different references,
backgrounds and edits; pooling their `metrics.json` (hits and positives per cell, summed) gives
each cell 20 x (number of samples) positives, and the false matches of all their negatives.

    python benchmarks/robust_pooled.py --out /tmp/rb/final --out /tmp/rb/seed2 \\
        --out /tmp/rb/seed3 --out /tmp/rb/seed4

Prints a Markdown table: per moderate cell (the targets' cells, `*` in the benchmark's table)
PDQ's and Vigil's pooled recall at the defaults, with each sample's Vigil hits; then the lowest
moderate single edit and combination, and false matches over all negatives. `--all` lists the
cells that are not moderate too.
"""

from __future__ import annotations

import argparse
import collections
import json
import typing as t
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, action="append", required=True,
                    help="a `vigil bench robustness` folder with metrics.json (repeatable)")
    ap.add_argument("--all", action="store_true", help="also the cells that are not moderate")
    args = ap.parse_args()

    cells: dict[str, dict[str, t.Any]] = {}
    per_sample: dict[str, list[str]] = collections.defaultdict(list)
    false = collections.Counter()
    negatives = 0
    for out in args.out:
        m = json.loads((out / "metrics.json").read_text())
        negatives += m["negatives"]
        for kind in m["negatives_by_kind_false_at_default"].values():
            for tier in ("pdq", "robust", "vigil"):
                false[tier] += kind[tier]
        for key, g in m["groups"].items():
            if not g["positives"]:  # a group of negatives only
                continue
            c = cells.setdefault(key, {"family": g["family"], "strength": g["strength"],
                                       "moderate": g["moderate"], "positives": 0,
                                       "pdq": 0, "vigil": 0})
            c["positives"] += g["positives"]
            c["pdq"] += g["pdq_default_hits"]
            c["vigil"] += g["vigil_default_hits"]
            per_sample[key].append(f"{g['vigil_default_hits']}/{g['positives']}")

    print(f"{len(args.out)} samples: {', '.join(str(o) for o in args.out)}\n")
    print("| family | strength | positives | PDQ | Vigil | Vigil per sample |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    lowest: dict[bool, tuple[float, str]] = {}
    for key in sorted(cells):
        c = cells[key]
        pdq, vigil = c["pdq"] / c["positives"], c["vigil"] / c["positives"]
        if c["moderate"]:
            combo = c["family"] == "combo"
            if combo not in lowest or vigil < lowest[combo][0]:
                lowest[combo] = (vigil, key)
        if c["moderate"] or args.all:
            star = "*" if c["moderate"] else ""
            print(f"| {c['family']} | {c['strength']}{star} | {c['positives']} | {pdq:.3f} | "
                  f"{vigil:.3f} | {' '.join(per_sample[key])} |")
    print()
    for combo, name in ((False, "single edit"), (True, "combination")):
        if combo in lowest:
            value, key = lowest[combo]
            print(f"lowest moderate {name}, pooled: {value:.3f} ({key})")
    print(f"false matches at the defaults over {negatives} negatives: "
          + ", ".join(f"{tier} {false[tier]}" for tier in ("pdq", "robust", "vigil")))


if __name__ == "__main__":
    main()
