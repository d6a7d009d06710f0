"""How often the region pass's rectangle proposals hold the embedded picture, on benchmark folders.

For every picture-in-picture and phone-recording positive of one or more `vigil bench
robustness` folders, the true rectangle is found by template matching (the reference, resized as
the edit resized it, slid over the query; the edit pastes it unaltered, so the best score is
~1.0), or, for a phone recording, where the edit puts it. Reported per strength:
- **searched**: the true rectangle (IoU >= 0.7) is among the rectangles the region pass searches
  (`RobustAnalysis.rectangles`: the best MAX_REGIONS, at least MIN_REGION_AREA);
- **formed**: it is among the best 60 rectangles `find_embedded` forms, any size;
- **cut-out inliers** (`--verify`): the reference verified against the query cut along the true
  rectangle (what the region pass would find with a perfect proposal; 0 = no verification),
  listed for each query whose rectangle is not searched;
- with `--negatives N`, the mean number of rectangles searched in N negative queries per
  folder (each costs a negative a region search, ~8 ms), and the median CPU ms of finding
  them (`RobustAnalysis.rectangles`).

    python benchmarks/embedded_proposals.py --out /tmp/rb/final --out /tmp/rb/seed2 \\
        --out /tmp/rb/seed3 --out /tmp/rb/seed4 --verify

This is where docs/robustness.md's proposal counts come from (round 6: searched for 425 of the
480 embedded pictures of four samples, formed for 434; round 5's code, imported from a worktree
of `bf5dcef` with PYTHONPATH: 334 and 407), the rectangles searched per negative, and the
misses' cut-out inliers.
"""

from __future__ import annotations

import argparse
import collections
import random
import sys
import time
import typing as t
from pathlib import Path

import _common

_common.pin_threads(1)
import numpy as np


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


#: the edits whose reference sits whole in a rectangle of the query, and the share of the
#: background's width it was pasted at (None: a phone screen recording)
EMBEDDED = {"scale-30%": 0.30, "scale-40%": 0.40, "scale-55%": 0.55, "scale-70%": 0.70,
            "pip55+q50": 0.55, "phone-recording": None}


def true_rectangle(query: dict[str, t.Any]) -> tuple[tuple[float, float, float, float], float]:
    """Where the reference sits in an embedded-picture query, in the query's pixels, and the
    template-matching score. Picture-in-picture (`vigil.bench.edits._pip`): the reference at a
    share of the background's width, or 95% of its height when that is less, found by template
    matching. A phone recording (`_screen`): where the edit puts it, 720 px wide below 120 px
    of app chrome, all scaled by 0.85 (score 1.0)."""
    import cv2
    from PIL import Image

    share = EMBEDDED[query["strength"]]
    with Image.open(query["src"]) as im:
        ref = im.convert("L")
    if share is None:
        return (0.0, 120 * 0.85, 720 * 0.85, (120 + round(720 * ref.height / ref.width)) * 0.85), 1.0
    with Image.open(query["path"]) as im:
        q = np.asarray(im.convert("L"), np.float32)
    bh, bw = q.shape
    w = round(bw * share)
    h = round(w * ref.height / ref.width)
    if h > bh * 0.95:
        h = round(bh * 0.95)
        w = round(h * ref.width / ref.height)
    tpl = np.asarray(ref.resize((w, h), Image.Resampling.LANCZOS), np.float32)
    _, score, _, (x, y) = cv2.minMaxLoc(cv2.matchTemplate(q, tpl, cv2.TM_CCOEFF_NORMED))
    return (float(x), float(y), float(x + w), float(y + h)), float(score)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, action="append", required=True,
                    help="a `vigil bench robustness` folder (repeatable)")
    ap.add_argument("--verify", action="store_true",
                    help="also verify each reference against its true cut-out")
    ap.add_argument("--negatives", type=int, default=0, metavar="N",
                    help="also count the rectangles searched in N negative queries per folder "
                         "(a fixed random sample): what the region pass costs a negative")
    args = ap.parse_args()

    import cv2

    cv2.setNumThreads(1)  # CPU time of one thread measures all of OpenCV's work
    import vigil.bench.robustness as bench
    from vigil.core.robust import verify
    from vigil.media.image import decode_image
    from vigil.signals.robust import OrbSignal, Region, find_embedded

    hits: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    inliers: dict[str, list[int]] = collections.defaultdict(list)
    searched_in_negatives: list[int] = []
    rectangles_ms: list[float] = []
    for out in args.out:
        if args.verify:
            bench._match_init(str(out))  # the run's bank, to read each reference's payload
            by_ref = {r: s for s, r in bench._W["sig_ref"].items()}
        for q in bench._read_jsonl(out / "queries.jsonl"):
            if q["kind"] != "pos" or q["strength"] not in EMBEDDED:
                continue
            data = Path(q["path"]).read_bytes()
            decoded = decode_image(data)
            ra = OrbSignal.analyse(decoded, source=data)
            (x0, y0, x1, y1), _ = true_rectangle(q)
            from PIL import Image

            with Image.open(q["path"]) as im:
                full = np.asarray(im.convert("L"))
            # into the features' picture: the decoder's luma (maybe a scaled decode), less the
            # uniform borders it trimmed, at a long side of 640 px
            top, _, left, right = decoded.box
            s = decoded.luma.shape[1] / full.shape[1]
            g = ra.grey.shape[1] / (right - left)
            truth = ((x0 * s - left) * g, (y0 * s - top) * g, (x1 * s - left) * g,
                     (y1 * s - top) * g)
            s = q["strength"]
            hits[s]["queries"] += 1
            searched = any(_iou(truth, r) >= 0.7 for r in ra.rectangles())
            hits[s]["searched"] += searched
            hits[s]["formed"] += any(_iou(truth, r) >= 0.7 for r in find_embedded(ra.grey, 60))
            if args.verify:
                c0, r0, c1, r1 = (round(v) for v in (x0, y0, x1, y1))
                cut = Region((x0, y0, x1, y1), full[r0:r1, c0:c1], 1.0)
                sid = by_ref[q["ref"]]
                v = verify(cut.features(), bench._W["robust"].payloads([sid])[sid])
                inliers[s].append(v.inliers if v is not None else 0)
                if not searched:
                    print(f"{out.name} query {q['id']} {s}: not searched; cut out along its "
                          f"true rectangle, {inliers[s][-1]} inliers")
        if args.negatives:
            negatives = [q for q in bench._read_jsonl(out / "queries.jsonl") if q["kind"] != "pos"]
            random.Random(0).shuffle(negatives)
            for q in negatives[: args.negatives]:
                data = Path(q["path"]).read_bytes()
                ra = OrbSignal.analyse(decode_image(data), source=data)
                t0 = time.thread_time()
                searched_in_negatives.append(len(ra.rectangles()))
                rectangles_ms.append((time.thread_time() - t0) * 1e3)
        print(f"{out}: done", file=sys.stderr)
    total: collections.Counter[str] = collections.Counter()
    for s in sorted(hits):
        c = hits[s]
        total.update(c)
        line = f"{s}: searched {c['searched']}/{c['queries']}, formed {c['formed']}/{c['queries']}"
        if inliers[s]:
            line += f", cut-out inliers median {int(np.median(inliers[s]))}, " \
                    f"0 for {sum(n == 0 for n in inliers[s])}"
        print(line)
    print(f"all: searched {total['searched']}/{total['queries']}, "
          f"formed {total['formed']}/{total['queries']}")
    if searched_in_negatives:
        print(f"negatives: {np.mean(searched_in_negatives):.2f} rectangles searched per query, "
              f"found in {np.median(rectangles_ms):.1f} ms (median CPU, one thread) "
              f"({len(searched_in_negatives)} queries)")


if __name__ == "__main__":
    main()
