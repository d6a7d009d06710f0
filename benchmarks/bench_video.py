"""Video matching: recall, false matches and boundary error per edit family, and hashing speed.

    python benchmarks/bench_video.py            # all 20 corpus videos (~15-20 min on 2 shared cores)
    python benchmarks/bench_video.py --quick    # 6 videos, fewer families (~3-5 min)
    vigil bench video [--quick]                 # the same, from the CLI

Reads the shared corpus (``../shared/corpus/videos/*.mp4``: 20 H.264 videos, 480 px high,
8-43 s; 5 real footage, 15 photo slideshows; ``--corpus`` to point elsewhere) and the overlay
cut-outs (``../shared/corpus/overlays``). Stages, each saving its output under ``--work``
(default ``benchmarks/out/video-work``; re-runs reuse built variants):

1. **variants**: FFmpeg builds one edited copy of every source video per family (the edits of
   issue 5): re-encode at another resolution, frame rate and bitrate; letterbox/pillarbox added
   (picture scaled into a frame of the other aspect); bars removed (the *bank* holds a barred
   copy, the query is the plain video); crop of 10% of width and of height, off-centre (19% of
   the picture); greyscale; sepia; small
   (12% of width) and large (30%) logo overlay; horizontal flip; a trimmed excerpt of 5-8 s; an
   excerpt of 6-10 s embedded between an intro and outro of unrelated footage (pans over corpus
   *photos*, which are disjoint from the video stills); the same embedded excerpt also
   letterboxed and logo-stamped (the "done means" case); speed 0.75x, 1.25x or 1.5x; and
   compilations of three 5-7 s excerpts of three different videos. Every variant knows where its
   content came from (source, query interval, reference interval).
2. **bank**: a fresh store; bank ``corpus`` gets the 20 originals, bank ``barred`` gets a
   letterboxed copy of each (for the bars-removed family). Hashing time is recorded.
3. **match**: every variant is matched with ``Vigil.match_file`` (the production path).
4. **speed**: on one CPU (process pinned, one decoder thread, one BLAS thread), each original is
   hashed by Vigil's path (reference-frame-only decode without loop filter, ~1 frame/s plus
   scene-change frames) and by the baseline (decode every frame normally and PDQ-hash every
   frame with the same trimming and PDQ code), interleaved video by video; CPU seconds of the
   process (``time.process_time``) and wall seconds are both reported.

Scoring. A truth segment is *found* when a match to its source's entry has a segment that
overlaps its query interval by at least half of the truth's length; its boundary errors are
the absolute differences of the four times (query start/end, reference start/end) of the best
overlapping segment. A *false match* is a match to any entry whose source is not in the query
(every query is checked against all banked videos, i.e. against the other corpus videos, and
each variant family is an edit of them). A *misplaced segment* is a segment on the right entry
that overlaps no truth segment.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import dataclasses
import json
import os
import random
import shutil
import subprocess
import sys
import time
import typing as t
from pathlib import Path

import _common

if __name__ == "__main__":
    PIN = _common.pin_threads(1)
else:  # imported (e.g. by a test): do not touch the process's threads
    PIN = {}

import av

from vigil.config import Settings
from vigil.core.app import Vigil
from vigil.media.video import VideoLimits, hash_video

DEFAULT_CORPUS = _common.REPO.parent / "shared" / "corpus"
FAMILIES = (
    "reencode", "letterbox", "bars-removed", "crop", "grey", "sepia", "logo-small", "logo-large",
    "flip", "excerpt", "embedded", "embedded-letterbox-logo", "speed", "compilation",
)
QUICK_FAMILIES = ("reencode", "letterbox", "crop", "logo-large", "flip", "embedded",
                  "embedded-letterbox-logo", "speed", "compilation")
SPEEDS = (0.75, 1.25, 1.5)
W, H = 854, 480


@dataclasses.dataclass
class Truth:
    source: str
    q_start: float
    q_end: float
    r_start: float
    r_end: float


@dataclasses.dataclass
class Variant:
    family: str
    path: str
    truths: list[Truth]
    bank: str = "corpus"


# -- helpers --------------------------------------------------------------------------------------
def ffmpeg(*args: str) -> None:
    cmd = ["nice", "-n", "10", "ffmpeg", "-v", "error", "-y", "-threads", "1", *args]
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)


ENC = ["-an", "-c:v", "libx264", "-preset", "ultrafast", "-crf", "23", "-pix_fmt", "yuv420p"]


def duration_of(path: Path) -> float:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        if s.duration is not None:
            return float(s.duration * s.time_base)
        return float(c.duration or 0) / 1e6


def size_of(path: Path) -> tuple[int, int]:
    with av.open(str(path)) as c:
        cc = c.streams.video[0].codec_context
        return int(cc.width), int(cc.height)


def unrelated(work: Path, photo: Path, seconds: float, name: str) -> Path:
    """Unrelated footage: a slow pan over a corpus photo (photos are not video stills)."""
    out = work / "filler" / f"{name}.mp4"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        vf = (f"scale={W * 1.3:.0f}:{H * 1.3:.0f}:force_original_aspect_ratio=increase,"
              f"crop={W}:{H}:x='(iw-{W})*t/{seconds}':y='(ih-{H})/2',fps=25,setsar=1")
        ffmpeg("-loop", "1", "-t", f"{seconds}", "-i", str(photo), "-vf", vf, *ENC, str(out))
    return out


def fit(extra: str = "") -> str:
    """Scale and pad any source to W x H (keeps aspect) so clips can be concatenated."""
    return (f"scale={W}:{H}:force_original_aspect_ratio=decrease,pad={W}:{H}:(ow-iw)/2:(oh-ih)/2,"
            f"setsar=1,fps=25{extra}")


def letterbox_filter(w: int, h: int) -> str:
    """Into a frame of the other aspect: 16:9-ish into 4:3 (letterbox), 4:3 into 16:9 (pillar)."""
    if w / h > 1.5:
        return "scale=640:-2,pad=640:480:(ow-iw)/2:(oh-ih)/2,setsar=1"
    return "scale=-2:360,pad=640:360:(ow-iw)/2:(oh-ih)/2,setsar=1"


def build_variant(family: str, src: Path, work: Path, rnd: random.Random, overlays: list[Path],
                  photos: list[Path], sources: list[Path], idx: int) -> Variant:
    """Build (or reuse) one variant. Its truth is saved beside it and reused with the file, so
    a variant built by an earlier run with other choices (e.g. ``--quick``'s source list) is
    scored by what it actually contains."""
    side = work / "variants" / family / f"{src.stem}.truth.json"
    if side.exists() and side.with_suffix("").with_suffix(".mp4").exists():
        d = json.loads(side.read_text())
        return Variant(d["family"], d["path"], [Truth(**x) for x in d["truths"]], d["bank"])
    var = _build_variant(family, src, work, rnd, overlays, photos, sources, idx)
    side.write_text(json.dumps(dataclasses.asdict(var)))
    return var


def _build_variant(family: str, src: Path, work: Path, rnd: random.Random, overlays: list[Path],
                   photos: list[Path], sources: list[Path], idx: int) -> Variant:
    name = src.stem
    out = work / "variants" / family / f"{name}.mp4"
    out.parent.mkdir(parents=True, exist_ok=True)
    dur = duration_of(src)
    w, h = size_of(src)
    whole = [Truth(name, 0.0, dur, 0.0, dur)]
    ov = overlays[idx % len(overlays)]
    if family == "compilation":
        picks = [sources[(idx + k * 7) % len(sources)] for k in range(3)]
        if len({p.stem for p in picks}) < 3:
            picks = [sources[(idx + k) % len(sources)] for k in range(3)]
        truths, parts, t0 = [], [], 0.0
        for k, p in enumerate(picks):
            pd = duration_of(p)
            ln = rnd.uniform(5.0, 7.0)
            st = rnd.uniform(0.0, max(0.0, pd - ln - 0.5))
            parts.append((p, st, ln))
            truths.append(Truth(p.stem, t0, t0 + ln, st, st + ln))
            t0 += ln
        if not out.exists():
            ins: list[str] = []
            for p, st, ln in parts:
                ins += ["-ss", f"{st:.3f}", "-t", f"{ln:.3f}", "-i", str(p)]
            fc = ";".join(f"[{k}:v]{fit()}[v{k}]" for k in range(3))
            fc += ";" + "".join(f"[v{k}]" for k in range(3)) + "concat=n=3:v=1[v]"
            ffmpeg(*ins, "-filter_complex", fc, "-map", "[v]", *ENC, str(out))
        return Variant(family, str(out), truths)
    if family in ("excerpt", "embedded", "embedded-letterbox-logo"):
        ln = min(dur - 0.5, rnd.uniform(5.0, 8.0) if family == "excerpt" else rnd.uniform(6.0, 10.0))
        st = rnd.uniform(0.0, max(0.0, dur - ln - 0.25))
        if family == "excerpt":
            if not out.exists():
                ffmpeg("-ss", f"{st:.3f}", "-t", f"{ln:.3f}", "-i", str(src), *ENC, str(out))
            return Variant(family, str(out), [Truth(name, 0.0, ln, st, st + ln)])
        intro_len, outro_len = rnd.uniform(4.0, 9.0), rnd.uniform(4.0, 9.0)
        intro = unrelated(work, photos[(2 * idx) % len(photos)], intro_len, f"{name}-intro-{family}")
        outro = unrelated(work, photos[(2 * idx + 1) % len(photos)], outro_len, f"{name}-outro-{family}")
        intro_len, outro_len = duration_of(intro), duration_of(outro)
        if not out.exists():
            mid = fit()
            if family == "embedded-letterbox-logo":
                mid = (f"{letterbox_filter(w, h)},{fit()}[m0];[3:v]scale={W // 8}:-2[lg];"
                       f"[m0][lg]overlay=W*0.04:H*0.16")
            fc = (f"[0:v]{fit()}[a];[1:v]{mid}[b];[2:v]{fit()}[c];[a][b][c]concat=n=3:v=1[v]")
            ins = ["-i", str(intro), "-ss", f"{st:.3f}", "-t", f"{ln:.3f}", "-i", str(src),
                   "-i", str(outro)]
            if family == "embedded-letterbox-logo":
                ins += ["-i", str(ov)]
            ffmpeg(*ins, "-filter_complex", fc, "-map", "[v]", *ENC, str(out))
        return Variant(family, str(out), [Truth(name, intro_len, intro_len + ln, st, st + ln)])
    if family == "speed":
        sp = SPEEDS[idx % len(SPEEDS)]
        if not out.exists():
            ffmpeg("-i", str(src), "-vf", f"setpts=PTS/{sp},fps=25", *ENC, str(out))
        return Variant(family, str(out), [Truth(name, 0.0, dur / sp, 0.0, dur)])
    if family == "bars-removed":
        barred = work / "variants" / "barred-bank" / f"{name}.mp4"
        barred.parent.mkdir(parents=True, exist_ok=True)
        if not barred.exists():
            ffmpeg("-i", str(src), "-vf", letterbox_filter(w, h), *ENC, str(barred))
        if not out.exists():
            ffmpeg("-i", str(src), "-an", "-c:v", "libx264", "-preset", "ultrafast", "-crf", "28",
                   str(out))
        return Variant(family, str(out), whole, bank="barred")
    filters: dict[str, list[str]] = {
        "reencode": ["-vf", "scale=-2:360,fps=15", "-an", "-c:v", "libx264", "-preset",
                     "ultrafast", "-crf", "32"],
        "letterbox": ["-vf", letterbox_filter(w, h), *ENC],
        # 10% of width and of height cut, off-centre: 19% of the picture gone
        "crop": ["-vf", "crop=iw*0.9:ih*0.9:iw*0.07:ih*0.03,setsar=1", *ENC],
        "grey": ["-vf", "hue=s=0", *ENC],
        "sepia": ["-vf", "colorchannelmixer=.393:.769:.189:0:.349:.686:.168:0:.272:.534:.131",
                  *ENC],
        "flip": ["-vf", "hflip", *ENC],
    }
    if family in filters:
        if not out.exists():
            ffmpeg("-i", str(src), *filters[family], str(out))
        return Variant(family, str(out), whole)
    if family in ("logo-small", "logo-large"):
        frac, pos = (0.12, "W-w-W*0.03:H*0.05") if family == "logo-small" else (0.30, "W*0.03:H-h-H*0.05")
        if not out.exists():
            fc = f"[1:v]scale={int(w * frac)}:-2[lg];[0:v][lg]overlay={pos}"
            ffmpeg("-i", str(src), "-i", str(ov), "-filter_complex", fc, *ENC, str(out))
        return Variant(family, str(out), whole)
    raise ValueError(family)


# -- scoring --------------------------------------------------------------------------------------
def overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def score(variant: Variant, result: dict[str, t.Any], entry_source: dict[int, str]) -> dict[str, t.Any]:
    sources = {tr.source for tr in variant.truths}
    found, errors, false, misplaced = [], [], [], 0
    hits = result.get("matches", [])
    for tr in variant.truths:
        best, best_ov = None, 0.0
        for m in hits:
            if entry_source.get(m["entry_id"]) != tr.source:
                continue
            for sg in m.get("segments") or []:
                ov = overlap(sg["query_start"], sg["query_end"], tr.q_start, tr.q_end)
                if ov > best_ov:
                    best, best_ov = sg, ov
        ok = best is not None and best_ov >= 0.5 * (tr.q_end - tr.q_start)
        found.append(ok)
        if ok:
            errors += [abs(best["query_start"] - tr.q_start), abs(best["query_end"] - tr.q_end),
                       abs(best["ref_start"] - tr.r_start), abs(best["ref_end"] - tr.r_end)]
    for m in hits:
        src = entry_source.get(m["entry_id"])
        if src not in sources:
            false.append(src)
            continue
        for sg in m.get("segments") or []:
            if not any(overlap(sg["query_start"], sg["query_end"], tr.q_start, tr.q_end) > 0
                       for tr in variant.truths if tr.source == src):
                misplaced += 1
    return {"found": found, "errors": errors, "false": false, "misplaced": misplaced}


# -- stages ---------------------------------------------------------------------------------------
def speed_stage(sources: list[Path], reps: int) -> dict[str, t.Any]:
    cpu = _common.first_allowed_cpu()
    before = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if cpu is not None and before is not None:
        os.sched_setaffinity(0, {cpu})
    limits = VideoLimits(threads=1)
    rows = []
    try:
        for src in sources:
            data = src.read_bytes()
            dur = duration_of(src)
            row: dict[str, t.Any] = {"video": src.stem, "seconds": dur}
            for rep in range(reps):
                order = ["vigil", "baseline"] if (rep + len(rows)) % 2 == 0 else ["baseline", "vigil"]
                for path in order:
                    c0, w0 = time.process_time(), time.perf_counter()
                    sig, _ = hash_video(data, limits, every_frame=(path == "baseline"))
                    c1, w1 = time.process_time(), time.perf_counter()
                    row.setdefault(path, []).append((c1 - c0, w1 - w0, len(sig)))
            rows.append(row)
    finally:
        if before is not None:
            os.sched_setaffinity(0, before)
    total = sum(r["seconds"] for r in rows)
    out: dict[str, t.Any] = {"videos": len(rows), "video_seconds": total, "rows": rows}
    for path in ("vigil", "baseline"):
        cpu_s = sum(min(x[0] for x in r[path]) for r in rows)
        wall_s = sum(min(x[1] for x in r[path]) for r in rows)
        frames = sum(r[path][0][2] for r in rows)
        out[path] = {"cpu_s": cpu_s, "wall_s": wall_s, "frames_hashed": frames,
                     "realtime_cpu": total / cpu_s, "realtime_wall": total / wall_s,
                     "cpu_s_per_hour": 3600 * cpu_s / total, "wall_s_per_hour": 3600 * wall_s / total}
    out["speedup_cpu"] = out["baseline"]["cpu_s"] / out["vigil"]["cpu_s"]
    return out


def run(args: argparse.Namespace) -> dict[str, t.Any]:
    corpus: Path = args.corpus
    sources = sorted((corpus / "videos").glob("*.mp4"))
    if not sources:
        sys.exit(f"no videos under {corpus / 'videos'}: the benchmark reads the shared corpus")
    overlays = sorted((corpus / "overlays").glob("*.png"))
    photos = sorted((corpus / "images").rglob("*.jpg"))
    families = QUICK_FAMILIES if args.quick else FAMILIES
    if args.families:
        unknown = sorted(set(args.families) - set(FAMILIES))
        if unknown:
            sys.exit(f"unknown families: {', '.join(unknown)} (known: {', '.join(FAMILIES)})")
        families = tuple(f for f in FAMILIES if f in args.families)
    chosen = sources
    if args.quick:
        chosen = [s for s in sources if s.stem in (
            "footage-box", "footage-pedestrians", "slideshow-animals-a", "slideshow-monuments-b",
            "slideshow-quickcuts", "slideshow-space")] or sources[:6]
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    # 1. variants
    t0 = time.perf_counter()
    jobs = []
    with cf.ThreadPoolExecutor(args.jobs) as pool:
        for fam in families:
            for idx, src in enumerate(chosen):
                rnd = random.Random(f"{fam}:{src.stem}")
                jobs.append(pool.submit(build_variant, fam, src, work, rnd, overlays, photos,
                                        chosen, idx))
        variants = [j.result() for j in jobs]
    # negatives: unrelated footage only (must match nothing)
    negatives = [Variant("unrelated", str(unrelated(work, photos[(7 * i + 3) % len(photos)], 12.0,
                                                    f"negative-{i}")), [])
                 for i in range(len(chosen))]
    timings["variants_s"] = time.perf_counter() - t0

    # 2. bank
    t0 = time.perf_counter()
    data = work / "store"
    shutil.rmtree(data, ignore_errors=True)
    v = Vigil(Settings(data_dir=data))
    v.review_queue = False  # bench measures matching, not the review queue
    entry_source: dict[int, str] = {}
    try:
        v.create_bank("corpus")
        v.create_bank("barred")
        bank_time = 0.0
        for src in sources:  # always all 20: false matches are counted against every video
            b0 = time.perf_counter()
            (item,) = list(v.add_files("corpus", [src], {}))
            bank_time += time.perf_counter() - b0
            if item.error:
                raise SystemExit(f"{src}: {item.error.message}")
            entry_source[int(item.entry_id or 0)] = src.stem
        barred = sorted((work / "variants" / "barred-bank").glob("*.mp4"))
        for b in barred:
            (item,) = list(v.add_files("barred", [b], {}))
            entry_source[int(item.entry_id or 0)] = b.stem
        store_bytes = _store_bytes(v)
        timings["bank_s"] = time.perf_counter() - t0

        # 3. match
        t0 = time.perf_counter()
        results = []
        for var in [*variants, *negatives]:
            m0 = time.perf_counter()
            item = v.match_file(Path(var.path), record=False)
            res = item.to_dict()
            results.append({"family": var.family, "path": var.path, "bank": var.bank,
                            "truths": [dataclasses.asdict(x) for x in var.truths],
                            "seconds": time.perf_counter() - m0, "result": res,
                            "score": score(var, res, entry_source)})
        timings["match_s"] = time.perf_counter() - t0
    finally:
        v.close()

    # 4. speed
    t0 = time.perf_counter()
    speed = speed_stage(chosen if args.quick else sources, 1 if args.quick else 2)
    timings["speed_s"] = time.perf_counter() - t0
    total_video = sum(duration_of(s) for s in sources)
    return {"results": results, "speed": speed, "timings": timings, "families": list(families),
            "sources": [s.stem for s in chosen], "bank_hash_s": bank_time,
            "bank_video_s": total_video, "store": store_bytes}


def _store_bytes(v: Vigil) -> dict[str, t.Any]:
    from sqlalchemy import func, select

    from vigil.store.video_models import VideoSignalsRow

    with v.store.read() as s:
        n, data, dur, frames = s.execute(select(
            func.count(), func.sum(func.length(VideoSignalsRow.data)),
            func.sum(VideoSignalsRow.duration), func.sum(VideoSignalsRow.frame_count))).one()
    return {"videos": int(n), "blob_bytes": int(data), "video_seconds": float(dur),
            "frames": int(frames), "bytes_per_second": float(data) / float(dur),
            "bytes_per_frame": float(data) / float(frames)}


def report(data: dict[str, t.Any], machine: dict[str, t.Any], cmd: str) -> str:
    fams = [*data["families"], "unrelated"]
    rows = []
    allerr: list[float] = []
    for fam in fams:
        rs = [r for r in data["results"] if r["family"] == fam]
        found = [f for r in rs for f in r["score"]["found"]]
        errs = [e for r in rs for e in r["score"]["errors"]]
        allerr += errs
        false = sum(len(r["score"]["false"]) for r in rs)
        mis = sum(r["score"]["misplaced"] for r in rs)
        recall = sum(found) / len(found) if found else float("nan")
        rows.append([fam, len(rs), len(found), f"{recall:.2f}" if found else "-", false, mis,
                     f"{_common.median(errs):.2f}" if errs else "-",
                     f"{_common.percentile(errs, 90):.2f}" if errs else "-",
                     f"{_common.median([r['seconds'] for r in rs]):.2f}"])
    total_found = [f for r in data["results"] for f in r["score"]["found"]]
    total_false = sum(len(r["score"]["false"]) for r in data["results"])
    rows.append(["**all**", len(data["results"]), len(total_found),
                 f"{sum(total_found) / len(total_found):.3f}", total_false,
                 sum(r["score"]["misplaced"] for r in data["results"]),
                 f"{_common.median(allerr):.2f}", f"{_common.percentile(allerr, 90):.2f}", ""])
    sp = data["speed"]
    st = data["store"]
    md = [
        f"Command: `{cmd}`  ",
        f"Machine: {_common.machine_line(machine)}; PyAV {_common._version('av')}, "
        f"FFmpeg (PyAV's) {'.'.join(map(str, av.ffmpeg_version_info)) if hasattr(av, 'ffmpeg_version_info') else '?'}. "
        "The machine was shared with other engineers' jobs (2 cores); variants were built with "
        "`nice -n 10`.",
        "",
        f"Sources: {len(data['sources'])} corpus videos edited; bank: all "
        f"{st['videos'] - len([r for r in data['results'] if r['family'] == 'bars-removed'])} "
        "corpus originals (+ one barred copy per source for the bars-removed family).",
        "",
        _common.md_table(["family", "queries", "truth segments", "recall", "false matches",
                          "misplaced segments", "boundary error median (s)",
                          "boundary error p90 (s)", "match time median (s)"], rows),
        "",
        "Hashing speed on one core (process pinned to one CPU, one decoder thread, one BLAS "
        f"thread), {sp['videos']} corpus videos, {sp['video_seconds']:.0f} s of 480p video, best "
        "of the runs per video, both paths interleaved:",
        "",
        _common.md_table(["path", "frames hashed", "CPU s", "x realtime (CPU)",
                          "CPU s per hour of video", "wall s", "x realtime (wall)"], [
            [name, sp[key]["frames_hashed"], f"{sp[key]['cpu_s']:.2f}",
             f"{sp[key]['realtime_cpu']:.1f}", f"{sp[key]['cpu_s_per_hour']:.0f}",
             f"{sp[key]['wall_s']:.2f}", f"{sp[key]['realtime_wall']:.1f}"]
            for name, key in (("Vigil (ref. frames only, no loop filter, luma only; 4/s + scene changes, PDQ + crop-code grid: the query path)", "vigil"),
                              ("baseline (every frame decoded and hashed)", "baseline"))
        ]),
        "",
        f"Speed-up over the baseline (CPU): {sp['speedup_cpu']:.1f}x.",
        "",
        f"Storage: {st['videos']} video entries, {st['video_seconds']:.0f} s of video, "
        f"{st['frames']} frame signals in {st['blob_bytes']} bytes of packed frame data: "
        f"**{st['bytes_per_second']:.1f} bytes per second of video** "
        f"({st['bytes_per_frame']:.1f} bytes per frame).",
        "",
        "Stage times: " + ", ".join(f"{k} {v:.0f} s" for k, v in data["timings"].items()) + ".",
    ]
    return "\n".join(md)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="6 videos, 9 families, 1 speed pass")
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--work", type=Path, default=_common.OUT / "video-work")
    ap.add_argument("--jobs", type=int, default=2, help="parallel ffmpeg processes")
    ap.add_argument("--families", type=lambda s: [x for x in s.split(",") if x],
                    help="comma-separated families to match (the bank is always all 20 "
                         "originals and barred copies; the unrelated negatives always run); "
                         "results go to video-families.md")
    args = ap.parse_args()
    machine = _common.machine_info()
    data = run(args)
    name = "video-quick" if args.quick else ("video-families" if args.families else "video")
    md = report(data, machine, _common.command_line())
    data["machine"] = machine
    jpath, mpath = _common.write_results(name, data, md)
    print(md)
    print(f"\nwrote {jpath} and {mpath}", file=sys.stderr)


if __name__ == "__main__":
    main()
