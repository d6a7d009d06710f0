"""PDQ hashing throughput on one core: Vigil's path against Meta's reference, side by side.

    python benchmarks/bench_hashing.py            # every JPEG of the shared corpus, 5 passes
    python benchmarks/bench_hashing.py --quick    # 40 images, 1 pass (smoke run)

Reads the shared test corpus (``../shared/corpus/images/**/*.jpg`` next to the repository; 334
JPEGs; ``--corpus`` to point elsewhere). The file cache is warmed first (every file read twice),
so both paths decode from memory and disk I/O does not dominate either.

Paths timed, interleaved image by image (the order of the paths rotates from image to image and
the image order is shuffled per pass), on one thread pinned to one CPU:

* ``reference``: Pillow full decode, ``ImageOps.exif_transpose``, ``convert("RGB")``,
  ``pdqhash.compute`` (Meta's C++ PDQ), hex = ``np.packbits(vec.astype(bool)).tobytes().hex()``;
  one hash per image.
* ``vigil hashing``: ``decode_image(path)`` + ``PdqSignal.analyse(decoded)``: JPEG scaled luma-only
  decode, border detection, the stored hash(es) and the 8 dihedral query hashes.
* ``vigil hashing, no weight cache``: the same, with the per-size filter weights computed afresh
  for every image (``_sample_weights`` is an LRU cache keyed by image size; this is the worst case,
  every image a size never seen before).
* ``vigil hash_file``: ``vigil.core.hashing.hash_file(path)``, the full production path (md5 +
  sha256 of the bytes, then the above).

Throughput is images / summed time per pass; ratios are reference time / path time within the
same pass; the table gives the median over passes (and the range). Agreement with the reference
is measured over images whose reference quality is >= 80, both for the hash Vigil stores (the
border-trimmed one when a uniform border was found) and for the untrimmed hash (the picture the
reference sees).
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import time
from pathlib import Path

import _common

PIN = _common.pin_from_argv(__name__ == "__main__")  # before numpy and FAISS load

import numpy as np
import pdqhash
from PIL import Image, ImageOps

import vigil.signals.pdq as pdq_mod
from vigil.core.hashing import hash_file
from vigil.errors import MediaError
from vigil.media.image import decode_image, find_borders
from vigil.signals import registry
from vigil.signals.pdq import PdqSignal, hash_luma

DEFAULT_CORPUS = _common.REPO.parent / "shared" / "corpus" / "images"
QUALITY_FLOOR = 80
GOAL_RATIO = 3.0


def reference_hash(path: Path) -> tuple[str, int]:
    with Image.open(path) as im:
        rgb = ImageOps.exif_transpose(im).convert("RGB")
        vec, quality = pdqhash.compute(np.asarray(rgb))
    return np.packbits(vec.astype(bool)).tobytes().hex(), int(quality)


def vigil_hash(path: Path) -> tuple[str, int]:
    signals, _dihedral, quality = PdqSignal.analyse(decode_image(path))
    return signals[0].value, quality


def vigil_hash_uncached(path: Path) -> tuple[str, int]:
    cached = pdq_mod._sample_weights
    pdq_mod._sample_weights = cached.__wrapped__  # the same function without its LRU cache
    try:
        return vigil_hash(path)
    finally:
        pdq_mod._sample_weights = cached


def vigil_hash_file(path: Path) -> tuple[str, int]:
    hr = hash_file(path)
    if hr.error is not None:
        raise RuntimeError(hr.error.message)
    pdq = next(s for s in hr.signals if s.type == "pdq")
    return pdq.value, int(hr.pdq_quality or 0)


def vigil_bytes_and_pdq(path: Path) -> tuple[str, int]:
    """What ``hash_file`` does for an image minus any image signal type other than PDQ: read,
    md5 + sha256 of the bytes, decode, PDQ. Equals ``hash_file`` when PDQ is the only image
    signal type registered."""
    data = path.read_bytes()
    for fh in registry.file_hashers():
        fh.hash_bytes(data)
    signals, _dihedral, quality = PdqSignal.analyse(decode_image(data, name=str(path)))
    return signals[0].value, quality


PATHS = {
    "reference": reference_hash,
    "vigil hashing": vigil_hash,
    "vigil hashing, no weight cache": vigil_hash_uncached,
    "vigil md5 + sha256 + PDQ": vigil_bytes_and_pdq,
    "vigil hash_file": vigil_hash_file,
}


def bits(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def agreement(files: list[Path]) -> dict:
    rows = []
    for f in files:
        ref_hex, ref_q = reference_hash(f)
        dec = decode_image(f)
        signals, _, q = PdqSignal.analyse(dec)
        untrimmed, _ = hash_luma(dec.luma, full_size=dec.full_size)
        rows.append(
            {
                "file": str(f),
                "ref_quality": ref_q,
                "quality": q,
                "trimmed": dec.was_trimmed,
                "scaled_decode": dec.luma.shape != dec.full_size,
                "stored_bits": bits(signals[0].value, ref_hex),
                "untrimmed_bits": bits(untrimmed, ref_hex),
                "hash_file_same": vigil_hash_file(f)[0] == signals[0].value,
            }
        )

    def stats(sel: list[dict], key: str) -> dict:
        d = [r[key] for r in sel]
        if not d:
            return {"n": 0}
        return {
            "n": len(d),
            "max": max(d),
            "mean": float(np.mean(d)),
            "median": float(np.median(d)),
            "share_le_10": sum(x <= 10 for x in d) / len(d),
            "share_le_31": sum(x <= 31 for x in d) / len(d),
        }

    good = [r for r in rows if r["ref_quality"] >= QUALITY_FLOOR]
    worst = sorted(good, key=lambda r: -r["stored_bits"])[:8]
    return {
        "images": len(rows),
        "ref_quality_ge_80": len(good),
        "trimmed": sum(r["trimmed"] for r in rows),
        "trimmed_in_ge_80": sum(r["trimmed"] for r in good),
        "scaled_decode": sum(r["scaled_decode"] for r in rows),
        "hash_file_equals_analyse": all(r["hash_file_same"] for r in rows),
        "quality_abs_diff_mean": float(
            np.mean([abs(r["quality"] - r["ref_quality"]) for r in rows])
        ),
        "stored_q80": stats(good, "stored_bits"),
        "untrimmed_q80": stats(good, "untrimmed_bits"),
        "stored_all": stats(rows, "stored_bits"),
        "untrimmed_all": stats(rows, "untrimmed_bits"),
        "worst_q80": [
            {k: r[k] for k in ("file", "ref_quality", "trimmed", "stored_bits", "untrimmed_bits")}
            for r in worst
        ],
        "rows": rows,
    }


def timed_passes(files: list[Path], reps: int) -> dict[str, list[float]]:
    names = list(PATHS)
    totals: dict[str, list[float]] = {n: [] for n in names}
    clock = time.perf_counter
    for rep in range(reps):
        order = files[:]
        random.Random(rep).shuffle(order)
        acc = dict.fromkeys(names, 0.0)
        for i, f in enumerate(order):
            k = (i + rep) % len(names)
            for name in names[k:] + names[:k]:  # rotate which path goes first
                fn = PATHS[name]
                t0 = clock()
                fn(f)
                acc[name] += clock() - t0
        for n in names:
            totals[n].append(acc[n])
        print(
            f"  pass {rep + 1}/{reps}: "
            + ", ".join(f"{n} {len(files) / acc[n]:.1f} img/s" for n in names),
            file=sys.stderr,
        )
    return totals


def breakdown(files: list[Path]) -> dict[str, float]:
    """One untimed-against-anything pass splitting Vigil's hashing into its stages (seconds)."""
    clock = time.perf_counter
    t0 = clock()
    decoded = [decode_image(f) for f in files]
    t1 = clock()
    for d in decoded:
        find_borders(d.luma)
    t2 = clock()
    for d in decoded:
        PdqSignal.analyse(d)
    t3 = clock()
    out = {
        "decode_image (incl. its border search)": t1 - t0,
        "find_borders alone (re-run)": t2 - t1,
        "PdqSignal.analyse": t3 - t2,
    }
    blobs = [f.read_bytes() for f in files]
    for fh in registry.file_hashers():
        t0 = clock()
        for b in blobs:
            fh.hash_bytes(b)
        out[f"{fh.name} of the bytes"] = clock() - t0
    for ih in registry.image_hashers():  # what else hash_file computes for an image
        if ih is PdqSignal:
            continue
        fn = getattr(ih, "analyse", None) or ih.hash_image
        t0 = clock()
        for d in decoded:
            with contextlib.suppress(MediaError):  # hash_file skips a degenerate picture too
                fn(d)
        out[f"{ih.__name__}.{fn.__name__} (also in hash_file)"] = clock() - t0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="40 images, 1 pass")
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--reps", type=int, default=None, help="timed passes (default 5, quick 1)")
    ap.add_argument("--limit", type=int, default=None, help="use the first N images (sorted)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin the process to one CPU")
    ap.add_argument("--cpu", type=int, default=None, help="CPU to pin to (default: first allowed)")
    args = ap.parse_args()
    reps = args.reps or (1 if args.quick else 5)
    limit = args.limit or (40 if args.quick else None)

    files = sorted(args.corpus.rglob("*.jpg"))
    if not files:
        sys.exit(f"no JPEGs under {args.corpus}: the benchmark reads the shared corpus")
    if limit:
        files = files[:limit]
    nbytes = 0
    for _ in range(2):  # warm the page cache
        nbytes = sum(len(f.read_bytes()) for f in files)
    machine = _common.machine_info()
    print(f"{len(files)} images, {nbytes / 2**20:.1f} MiB, {reps} passes", file=sys.stderr)

    for f in files[:5]:  # first-call costs (imports, BLAS init) out of the timing
        for fn in PATHS.values():
            fn(f)
    before = pdq_mod._sample_weights.cache_info()
    vigil_hash_uncached(files[0])
    if pdq_mod._sample_weights.cache_info()[:2] != before[:2]:
        sys.exit("the uncached path still used the weight cache: pdq.py changed, fix the benchmark")
    agree = agreement(files)
    totals = timed_passes(files, reps)
    stages = breakdown(files)

    n = len(files)
    ref = totals["reference"]
    result_paths = {}
    for name, ts in totals.items():
        ips = [n / x for x in ts]
        ratios = [r / x for r, x in zip(ref, ts)]
        result_paths[name] = {
            "seconds_per_pass": ts,
            "images_per_s_median": _common.median(ips),
            "ms_per_image_median": _common.median(ts) / n * 1e3,
            "speedup_vs_reference_median": _common.median(ratios),
            "speedup_vs_reference_min": min(ratios),
            "speedup_vs_reference_max": max(ratios),
        }
    data = {
        "benchmark": "hashing",
        "command": _common.command_line(),
        "machine": machine,
        "pinning": PIN,
        "corpus": str(args.corpus),
        "images": n,
        "bytes": nbytes,
        "passes": reps,
        "paths": result_paths,
        "stages_seconds": stages,
        "agreement": agree,
    }

    # -- Markdown -------------------------------------------------------------------------------
    rows = []
    for name, r in result_paths.items():
        sp = (
            "1 (baseline)"
            if name == "reference"
            else (
                f"**{r['speedup_vs_reference_median']:.2f}x** "
                f"({r['speedup_vs_reference_min']:.2f}-{r['speedup_vs_reference_max']:.2f})"
            )
        )
        rows.append(
            [name, f"{r['images_per_s_median']:.1f}", f"{r['ms_per_image_median']:.2f}", sp]
        )
    main_ratio = result_paths["vigil hashing"]["speedup_vs_reference_median"]
    full_ratio = result_paths["vigil hash_file"]["speedup_vs_reference_median"]
    bytes_ratio = result_paths["vigil md5 + sha256 + PDQ"]["speedup_vs_reference_median"]
    extra_hashers = [ih.name for ih in registry.image_hashers() if ih is not PdqSignal]
    cold_ratio = result_paths["vigil hashing, no weight cache"]["speedup_vs_reference_median"]
    s80, u80 = agree["stored_q80"], agree["untrimmed_q80"]

    def agree_row(label: str, s: dict) -> list[str]:
        return [
            label,
            str(s["n"]),
            str(s["max"]),
            f"{s['mean']:.2f}",
            f"{s['median']:.0f}",
            f"{100 * s['share_le_10']:.1f}%",
            f"{100 * s['share_le_31']:.1f}%",
        ]

    verdict = "met" if main_ratio >= GOAL_RATIO else "**missed**"
    verdict_full = "met" if full_ratio >= GOAL_RATIO else "**missed**"
    md = f"""\
### Results{" (quick smoke run: not the reference numbers)" if args.quick else ""}

Command: `{data["command"]}`

Machine: {_common.machine_line(machine)}. One thread (OMP/OpenBLAS/MKL = 1), pinned to CPU
{PIN.get("cpu_affinity", "none (not pinned)")}.

Input: {n} JPEGs ({nbytes / 2**20:.1f} MiB) from `{args.corpus}`; page cache warmed; {reps}
interleaved pass(es), median shown (range over passes in brackets). {agree["scaled_decode"]} of {n}
images got a DCT-scaled decode (the others have a short side too small for a 1/2 scale to stay
at or above 256 px and are decoded at full size, luma only); {agree["trimmed"]} had a uniform
border trimmed.

{_common.md_table(["path", "images/s", "ms/image", "speed-up vs reference (same pass)"], rows)}

Goal: >= {GOAL_RATIO:.0f}x the reference on hashing: {verdict} ({main_ratio:.2f}x for
`decode_image` + `PdqSignal.analyse`). Read + md5 + sha256 + decode + PDQ: {bytes_ratio:.2f}x.
`hash_file` as it stands (image signal types registered besides PDQ:
{", ".join(extra_hashers) or "none"}): {full_ratio:.2f}x ({verdict_full}). Without the
filter-weight cache (every image a new size): {cold_ratio:.2f}x.

Where Vigil's time goes (one extra pass, stage by stage, seconds for all {n} images):

{
        _common.md_table(
            ["stage", "seconds", "ms/image"],
            [[k, f"{v:.3f}", f"{v / n * 1e3:.2f}"] for k, v in stages.items()],
        )
    }

Agreement with the reference, bits of 256 (Hamming distance), images whose reference quality
is >= {QUALITY_FLOOR} ({agree["ref_quality_ge_80"]} of {n}; {
        agree["trimmed_in_ge_80"]
    } of them trimmed):

{
        _common.md_table(
            ["hash compared", "images", "max", "mean", "median", "<= 10 bits", "<= 31 bits"],
            [
                agree_row("stored hash (trimmed if a border was found)", s80),
                agree_row("untrimmed hash (same picture as the reference)", u80),
                agree_row("stored hash, all qualities", agree["stored_all"]),
            ],
        )
    }

Mean |quality difference| to the reference: {agree["quality_abs_diff_mean"]:.2f}.
`hash_file`'s PDQ equals `analyse`'s on every image: {agree["hash_file_equals_analyse"]}.

Largest distances (stored hash, quality >= {QUALITY_FLOOR}):

{
        _common.md_table(
            ["image", "ref quality", "trimmed", "stored bits", "untrimmed bits"],
            [
                [
                    Path(w["file"]).relative_to(args.corpus).as_posix(),
                    w["ref_quality"],
                    w["trimmed"],
                    w["stored_bits"],
                    w["untrimmed_bits"],
                ]
                for w in agree["worst_q80"]
            ],
        )
    }
"""
    jpath, mpath = _common.write_results("hashing" + ("-quick" if args.quick else ""), data, md)
    print(md)
    print(f"wrote {jpath} and {mpath}", file=sys.stderr)


if __name__ == "__main__":
    main()
