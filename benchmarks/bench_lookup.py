"""PDQ lookup: Vigil's HammingIndex against a plain FAISS IndexBinaryFlat, at 1e6 and 1e7 entries.

    python benchmarks/bench_lookup.py            # 1e6 and 1e7 entries
    python benchmarks/bench_lookup.py --quick    # 1e5 entries (smoke run)
    python benchmarks/bench_lookup.py --sizes 1000000

Data: N random 256-bit codes, of which a pool of 256 query codes x 32 planted near-duplicates
(one at each distance 0..31 from its query, bits flipped at random positions) replace random rows
at random positions. Random codes lie ~128 bits from any query, so each query's answer within
radius 31 is its 32 planted codes; that is checked, not assumed:

* recall and precision against brute force (numpy XOR + popcount over all N codes) for 20
  queries: the (id, distance) sets must be equal;
* every timed call's answers from HammingIndex are compared with the plain index's.

Latency (one thread: ``faiss.omp_set_num_threads(1)``, OMP/BLAS env = 1, pinned to one CPU):

* single: one query per call, ``HammingIndex.query(code, 31)`` vs
  ``IndexBinaryFlat.range_search(code, 32)`` (FAISS's radius is strict), the two interleaved call by
  call (alternating which goes first); median and p99 over the calls;
* batched: 8 queries per call (as the matcher sends a picture's 8 dihedral hashes) and 64 per call.

Memory, each in a fresh child process so nothing else is on the heap: VmRSS before and after
``HammingIndex.add`` of all N entries in one call (how an index file is loaded), and in 100,000-entry
chunks (how the index is rebuilt from the store), next to the nominal 40 bytes per entry (32-byte
code + 8-byte id) that ``memory_bytes()`` reports; peak (VmHWM) during the add as well. Also the
time and peak memory of loading an index file of N entries (``read_index_file`` + ``add``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import typing as t
from pathlib import Path

import _common

PIN = _common.pin_from_argv(__name__ == "__main__")  # before numpy and FAISS load

import faiss
import numpy as np

from vigil.index.base import read_index_file, write_index_file
from vigil.index.hamming import HammingIndex

RADIUS = 31
POOL = 256  # distinct query codes, each with 32 planted neighbours
BRUTE_QUERIES = 20
GOAL_RATIO = 1.2
GOAL_BYTES = 40
CHUNK = 100_000


def make_codes(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 32), dtype=np.uint8)


def make_ids(n: int) -> np.ndarray:
    # store-like ids: int64, not 0..n-1 (so a mix-up of ids and positions cannot go unnoticed)
    return np.arange(n, dtype=np.int64) * 3 + 1000


def plant(codes: np.ndarray, seed: int) -> tuple[np.ndarray, dict[int, set[tuple[int, int]]]]:
    """Overwrite POOL*32 random rows with near-duplicates of POOL query codes; returns the queries
    and, per query, the planted (row, distance) pairs."""
    rng = np.random.default_rng(seed + 1)
    n = len(codes)
    queries = rng.integers(0, 256, size=(POOL, 32), dtype=np.uint8)
    rows = rng.choice(n, size=POOL * (RADIUS + 1), replace=False)
    truth: dict[int, set[tuple[int, int]]] = {}
    k = 0
    for qi in range(POOL):
        qbits = np.unpackbits(queries[qi])
        truth[qi] = set()
        for d in range(RADIUS + 1):
            b = qbits.copy()
            flip = rng.choice(256, size=d, replace=False)
            b[flip] ^= 1
            codes[rows[k]] = np.packbits(b)
            truth[qi].add((int(rows[k]), d))
            k += 1
    return queries, truth


def brute_force(codes: np.ndarray, q: np.ndarray, radius: int) -> set[tuple[int, int]]:
    words = codes.view(np.uint64).reshape(len(codes), 4)
    qw = q.reshape(1, 32).view(np.uint64)
    out: set[tuple[int, int]] = set()
    for start in range(0, len(codes), 1_000_000):
        d = np.bitwise_count(words[start : start + 1_000_000] ^ qw).sum(axis=1, dtype=np.int64)
        hit = np.flatnonzero(d <= radius)
        out.update((int(start + i), int(d[i])) for i in hit)
    return out


# -- memory, in a child process ----------------------------------------------------------------------
def memory_child(n: int, mode: str) -> dict:
    codes = make_codes(n, 7)
    ids = make_ids(n)
    gc.collect()
    tmp = None
    if mode == "file":
        tmp = Path(tempfile.mkdtemp(prefix="vigil-bench-lookup-")) / "pdq.vidx"
        write_index_file(
            tmp,
            {
                "signal_type": "pdq",
                "kind": "hamming",
                "code_size": 32,
                "count": n,
                "last_seq": 0,
                "store_id": "bench",
            },
            ids,
            codes,
        )
        del codes, ids
        gc.collect()
        # drop the file from the page cache accounting: it is not our RSS anyway
    rss0 = _common.proc_status("VmRSS")
    peak_ok = _common.reset_peak_rss()
    t0 = time.perf_counter()
    if mode == "one-call":
        index = HammingIndex(32)
        index.add(ids, codes)
    elif mode == "chunks":
        index = HammingIndex(32)
        for s in range(0, n, CHUNK):
            index.add(ids[s : s + CHUNK], codes[s : s + CHUNK])
    elif mode == "plain":
        index = faiss.IndexBinaryFlat(256)
        index.add(codes)
    elif mode == "file":
        assert tmp is not None
        _header, fids, fcodes = read_index_file(tmp)
        index = HammingIndex(32)
        index.add(fids, fcodes)
        del _header, fids, fcodes
        gc.collect()
    else:
        raise ValueError(mode)
    secs = time.perf_counter() - t0
    rss1 = _common.proc_status("VmRSS")
    hwm = _common.proc_status("VmHWM")
    if tmp is not None:
        tmp.unlink()
        tmp.parent.rmdir()
    nominal = index.memory_bytes() if isinstance(index, HammingIndex) else n * 32
    return {
        "n": n,
        "mode": mode,
        "seconds": secs,
        "rss_before": rss0,
        "rss_after": rss1,
        "peak": hwm if peak_ok else None,
        "measured_bytes_per_entry": (rss1 - rss0) / n,
        "peak_extra_bytes_per_entry": (hwm - rss0) / n if peak_ok else None,
        "nominal_bytes_per_entry": nominal / n,
    }


def run_memory_child(n: int, mode: str) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child", str(n), mode]
    if PIN.get("cpu_affinity"):
        cmd += ["--cpu", str(PIN["cpu_affinity"][0])]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


# -- latency --------------------------------------------------------------------------------------------
def as_set(hits: list[tuple[int, int]]) -> set[tuple[int, int]]:
    return {(int(i), int(d)) for i, d in hits}


def plain_sets(
    lims: np.ndarray, dist: np.ndarray, labels: np.ndarray, ids: np.ndarray, m: int
) -> list[set[tuple[int, int]]]:
    return [
        {
            (int(ids[p]), int(d))
            for p, d in zip(labels[lims[i] : lims[i + 1]], dist[lims[i] : lims[i + 1]])
        }
        for i in range(m)
    ]


def bench_size(n: int, args: argparse.Namespace) -> dict:
    print(f"[{n:,}] generating codes", file=sys.stderr)
    t0 = time.perf_counter()
    codes = make_codes(n, 7)
    ids = make_ids(n)
    queries, truth = plant(codes, 7)
    gen_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    ours = HammingIndex(32)
    ours.add(ids, codes)
    build_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    plain = faiss.IndexBinaryFlat(256)
    plain.add(codes)
    build_plain = time.perf_counter() - t0

    # -- correctness: brute force on BRUTE_QUERIES queries
    print(f"[{n:,}] brute force on {BRUTE_QUERIES} queries", file=sys.stderr)
    exact = 0
    found = expected = 0
    extra = 0
    planted_ok = 0
    for qi in range(BRUTE_QUERIES):
        bf = brute_force(codes, queries[qi], RADIUS)
        bf_ids = {(int(ids[p]), d) for p, d in bf}
        got = as_set(ours.query(queries[qi], RADIUS)[0])
        lims, dist, labels = plain.range_search(queries[qi : qi + 1], RADIUS + 1)
        got_plain = plain_sets(lims, dist, labels, ids, 1)[0]
        exact += got == bf_ids and got_plain == bf_ids
        found += len(got & bf_ids)
        expected += len(bf_ids)
        extra += len(got - bf_ids)
        planted_ok += bf == truth[qi]
    recall = found / expected if expected else float("nan")

    # -- latency, interleaved
    def per_call(single_s: float, per: int, lo: int, hi: int) -> int:
        return int(min(hi, max(lo, args.budget / (2 * per * single_s))))

    warm = queries[:1]
    for _ in range(3):
        ours.query(warm, RADIUS)
        plain.range_search(warm, RADIUS + 1)
    t0 = time.perf_counter()
    for i in range(5):
        plain.range_search(queries[i : i + 1], RADIUS + 1)
    single_s = (time.perf_counter() - t0) / 5
    plan = {
        1: per_call(single_s, 1, 50 if args.quick else 100, 400),
        8: per_call(single_s, 8, 20, 100),
        64: per_call(single_s, 64, 10, 40),
    }
    plain2 = faiss.IndexBinaryFlat(256)  # A/A control: a second plain copy of the same codes
    plain2.add(codes)
    clock = time.perf_counter_ns
    lat: dict[int, dict[str, list[float]]] = {}
    mismatches = 0
    calls = 0
    for batch, reps in plan.items():
        print(
            f"[{n:,}] {reps} calls of {batch} quer{'y' if batch == 1 else 'ies'} per path",
            file=sys.stderr,
        )
        who_all = ["ours", "plain", "plain2"] if batch == 1 else ["ours", "plain"]
        lat[batch] = {w: [] for w in who_all}
        for r in range(reps):
            start = (r * batch) % POOL
            q = queries[start : start + batch]
            if len(q) < batch:
                q = np.concatenate([q, queries[: batch - len(q)]])
            res: dict[str, t.Any] = {}
            k = r % len(who_all)
            for who in who_all[k:] + who_all[:k]:  # rotate which path goes first
                t0 = clock()
                if who == "ours":
                    res[who] = ours.query(q, RADIUS)
                elif who == "plain":
                    res[who] = plain.range_search(q, RADIUS + 1)
                else:
                    res[who] = plain2.range_search(q, RADIUS + 1)
                lat[batch][who].append((clock() - t0) / 1e9)
            sets_plain = plain_sets(*res["plain"], ids, len(q))
            calls += 1
            mismatches += any(as_set(a) != b for a, b in zip(res["ours"], sets_plain))

    latency = {}
    for batch, d in lat.items():
        so, sp = _common.summary(d["ours"]), _common.summary(d["plain"])
        paired = [a / b for a, b in zip(d["ours"], d["plain"])]
        latency[str(batch)] = {
            "calls": so["n"],
            "ours": so,
            "plain": sp,
            "ratio_of_medians": so["median"] / sp["median"],
            "ratio_of_p99": so["p99"] / sp["p99"],
            "median_paired_ratio": _common.median(paired),
        }
        if "plain2" in d:
            s2 = _common.summary(d["plain2"])
            latency[str(batch)]["control_plain2"] = s2
            latency[str(batch)]["control_ratio_of_medians"] = s2["median"] / sp["median"]
            latency[str(batch)]["control_ratio_of_p99"] = s2["p99"] / sp["p99"]

    del plain2
    del ours, plain, codes, ids
    gc.collect()
    print(f"[{n:,}] memory (child processes)", file=sys.stderr)
    memory = {mode: run_memory_child(n, mode) for mode in ("one-call", "chunks", "plain", "file")}
    return {
        "n": n,
        "planted": POOL * (RADIUS + 1),
        "generate_s": gen_s,
        "build_s": {"ours": build_ours, "plain": build_plain},
        "correctness": {
            "brute_force_queries": BRUTE_QUERIES,
            "exact_set_equal": exact,
            "recall": recall,
            "extra_results": extra,
            "brute_force_equals_planted": planted_ok,
            "timed_calls_checked": calls,
            "timed_calls_ours_differs_from_plain": mismatches,
        },
        "latency": latency,
        "memory": memory,
    }


def markdown(results: list[dict], data: dict, quick: bool) -> str:
    ms = lambda s: f"{s * 1e3:.2f}"
    corr_rows, lat_rows, mem_rows = [], [], []
    verdicts = []
    for r in results:
        n = f"{r['n']:,}"
        c = r["correctness"]
        corr_rows.append(
            [
                n,
                f"{c['exact_set_equal']}/{c['brute_force_queries']}",
                f"{c['recall']:.3f}",
                c["extra_results"],
                f"{c['brute_force_equals_planted']}/{c['brute_force_queries']}",
                f"{c['timed_calls_checked'] - c['timed_calls_ours_differs_from_plain']}/{c['timed_calls_checked']}",
            ]
        )
        for batch, L in r["latency"].items():
            per = int(batch)
            lat_rows.append(
                [
                    n,
                    batch,
                    L["calls"],
                    ms(L["ours"]["median"]),
                    ms(L["plain"]["median"]),
                    f"**{L['ratio_of_medians']:.3f}**",
                    ms(L["ours"]["p99"]),
                    ms(L["plain"]["p99"]),
                    f"{L['ratio_of_p99']:.3f}",
                    ms(L["ours"]["median"] / per),
                ]
            )
            verdicts.append(L["ratio_of_medians"] <= GOAL_RATIO)
            if "control_plain2" in L:
                C = L["control_plain2"]
                lat_rows.append(
                    [
                        n,
                        f"{batch} (A/A control: a 2nd plain index vs plain)",
                        C["n"],
                        ms(C["median"]),
                        ms(L["plain"]["median"]),
                        f"{L['control_ratio_of_medians']:.3f}",
                        ms(C["p99"]),
                        ms(L["plain"]["p99"]),
                        f"{L['control_ratio_of_p99']:.3f}",
                        ms(C["median"] / per),
                    ]
                )
        m = r["memory"]
        mem_rows.append(
            [
                n,
                f"{m['one-call']['nominal_bytes_per_entry']:.1f}",
                f"{m['one-call']['measured_bytes_per_entry']:.1f}",
                f"{m['chunks']['measured_bytes_per_entry']:.1f}",
                f"{m['one-call']['peak_extra_bytes_per_entry']:.1f}"
                if m["one-call"]["peak_extra_bytes_per_entry"] is not None
                else "n/a",
                f"{m['plain']['measured_bytes_per_entry']:.1f}",
                f"{m['file']['seconds']:.2f} s / {m['file']['peak_extra_bytes_per_entry']:.0f} B",
                f"{r['build_s']['ours']:.2f} s",
            ]
        )
    mem_ok = all(
        r["memory"]["one-call"]["measured_bytes_per_entry"] <= GOAL_BYTES
        and r["memory"]["one-call"]["nominal_bytes_per_entry"] <= GOAL_BYTES
        for r in results
    )
    recall_ok = all(
        r["correctness"]["recall"] == 1.0
        and r["correctness"]["exact_set_equal"] == r["correctness"]["brute_force_queries"]
        for r in results
    )
    worst = max(L["ratio_of_medians"] for r in results for L in r["latency"].values())
    return f"""\
### Results{" (quick smoke run: not the reference numbers)" if quick else ""}

Command: `{data["command"]}`

Machine: {_common.machine_line(data["machine"])}. FAISS OpenMP threads: {data["faiss_threads"]};
OMP/OpenBLAS/MKL = 1; pinned to CPU {PIN.get("cpu_affinity", "none (not pinned)")}.

Correctness (radius {RADIUS}; {POOL} query codes with 32 planted neighbours each):

{_common.md_table(["entries", "brute-force sets equal", "recall", "extra ids", "brute force = planted", "timed calls: ours = plain"], corr_rows)}

Latency per call, interleaved with a plain `IndexBinaryFlat.range_search` on the same codes
(ratio = ours / plain; goal <= {GOAL_RATIO}). For single queries a second plain index over the same
codes runs in the same rotation as an A/A control: its ratio to the first shows how much of a
difference this machine's noise and memory placement alone produce:

{_common.md_table(["entries", "queries/call", "calls", "ours median ms", "plain median ms", "ratio", "ours p99 ms", "plain p99 ms", "p99 ratio", "ours ms/query"], lat_rows)}

Memory (bytes per entry; goal <= {GOAL_BYTES}), each measured in a fresh process as VmRSS growth
across the add; "peak" is VmHWM above the starting RSS during the one-call add; "load file" is
`read_index_file` + `add` of an index file of N entries (time / peak bytes per entry):

{_common.md_table(["entries", "nominal (memory_bytes)", "RSS, one add", "RSS, 100k chunks", "peak, one add", "plain IndexBinaryFlat RSS", "load file: time / peak", "build (add) time"], mem_rows)}

Goals: recall 1.0 vs brute force: {"met" if recall_ok else "**missed**"}; latency ratio <= {GOAL_RATIO}:
{"met" if all(verdicts) else "**missed**"} (worst ratio of medians {worst:.3f}); <= {GOAL_BYTES} bytes
per entry: {"met" if mem_ok else "**missed**"}.
"""


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="1e5 entries only")
    ap.add_argument("--sizes", type=int, nargs="+", default=None)
    ap.add_argument(
        "--budget",
        type=float,
        default=20.0,
        help="seconds of plain-index time per (size, batch) to aim the call counts at",
    )
    ap.add_argument("--no-pin", action="store_true")
    ap.add_argument("--cpu", type=int, default=None)
    ap.add_argument("--memory-child", nargs=2, metavar=("N", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    faiss.omp_set_num_threads(1)
    if args.memory_child:
        print(json.dumps(memory_child(int(args.memory_child[0]), args.memory_child[1])))
        return
    sizes = args.sizes or ([100_000] if args.quick else [1_000_000, 10_000_000])
    data = {
        "benchmark": "lookup",
        "command": _common.command_line(),
        "machine": _common.machine_info(),
        "pinning": PIN,
        "faiss_threads": faiss.omp_get_max_threads(),
        "radius": RADIUS,
        "results": [],
    }
    for n in sizes:
        data["results"].append(bench_size(n, args))
        gc.collect()
    md = markdown(data["results"], data, args.quick)
    jpath, mpath = _common.write_results("lookup" + ("-quick" if args.quick else ""), data, md)
    print(md)
    print(f"wrote {jpath} and {mpath}", file=sys.stderr)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
