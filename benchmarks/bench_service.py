"""Load benchmark of the service: ``vigil serve`` on loopback with 100k PDQ entries banked.

    python benchmarks/bench_service.py                   # full: 100k entries, 10-minute run
    python benchmarks/bench_service.py --quick           # 10k entries, ~1 minute
    python benchmarks/bench_service.py --lookup-s 150 --upload-s 30   # a shorter full-size run

Set-up (not timed): a fresh data directory, a block bank of N entries with random PDQ values (plus
1,000 "planted" entries whose near-duplicates the load looks up, and one entry per bundled sample
photo), imported through the core in one transaction; tokens for a submitter, a reviewer and an
admin. Then ``vigil serve`` is started as its own process (uvicorn, one worker, SQLite default)
and the load comes from this process over HTTP on 127.0.0.1:

* **signal lookups**: ``POST /api/v1/match/signals`` with one PDQ signal per request (the default
  ``record: true``, so every lookup is also a recorded submission), from ``--concurrency``
  concurrent clients; 5 % of the queries are near-duplicates (4 bits flipped) of planted entries,
  so matches (and review cases) happen; the rest are random codes (no match). Every response is
  checked: 200, one result, a match exactly when a planted code was asked.
* **a concurrent decision stream** during the lookups: a reviewer client lists open cases and
  decides each (confirm). At the end the acknowledged decisions (201) are compared with the
  decisions the service reports (decided cases) and with ``review.decide`` rows in the audit log:
  all three must be equal — no decision lost.
* **image uploads**: ``POST /api/v1/match`` with the bundled sample photos (JPEG, 0.1-0.4 MB),
  from 4 concurrent clients.
* **memory**: the server's VmRSS every 5 s; "growth after warm-up" compares the median of the
  last fifth of the lookup phase with the median of its second fifth.

Requests/s count completed requests over the phase's wall time; latencies (p50/p99) are measured
by the client, so they include the client's own queueing on this shared 2-core machine.
"""

from __future__ import annotations

import _common

_common.pin_threads(1)

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import typing as t
from pathlib import Path

import httpx

PLANTED = 1000


def rand_pdq(rng: random.Random) -> str:
    return f"{rng.getrandbits(256):064x}"


def flip(hex64: str, bits: int, rng: random.Random) -> str:
    v = int(hex64, 16)
    for b in rng.sample(range(256), bits):
        v ^= 1 << b
    return f"{v:064x}"


def setup(data: Path, n: int, rng: random.Random) -> tuple[dict[str, str], list[str], float]:
    from vigil.config import Settings
    from vigil.core.app import Vigil
    from vigil.core.auth import create_token
    from vigil.core.banks import EntrySpec
    from vigil.signals import Signal

    started = time.perf_counter()
    v = Vigil(Settings(data_dir=data))
    v.create_bank("known")
    planted = [rand_pdq(rng) for _ in range(PLANTED)]
    sev = ["low", "medium", "high", "critical"]
    specs = [EntrySpec([Signal("pdq", p, 100)], {"severity": sev[i % 4], "release": f"r{i}"})
             for i, p in enumerate(planted)]
    specs += [EntrySpec([Signal("pdq", rand_pdq(rng), 100)], {"severity": "low"})
              for _ in range(n - PLANTED)]
    v.add_entries("known", specs)
    photos = sorted((_common.REPO / "src/vigil/samples/images").glob("*.jpg"))
    list(v.add_files("known", photos, {"severity": "medium"}))
    toks = {r: create_token(v.store, f"bench-{r}", r)["token"]
            for r in ("submitter", "reviewer", "admin")}
    _ = v.indexes  # build and save the index files, so the server's start is a load
    v.close()
    return toks, planted, time.perf_counter() - started


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss(pid: int) -> int:
    return _common.proc_status("VmRSS", pid)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Phase:
    def __init__(self) -> None:
        self.lat: list[float] = []
        self.errors: list[str] = []
        self.ok = 0
        self.started = time.perf_counter()
        self.ended = self.started

    def result(self) -> dict[str, t.Any]:
        wall = self.ended - self.started
        return {"requests": self.ok + len(self.errors), "ok": self.ok, "failed": len(self.errors),
                "errors_sample": self.errors[:5], "wall_s": round(wall, 2),
                "rps": round(self.ok / wall, 1) if wall else 0.0,
                "p50_ms": round(_common.percentile(self.lat, 50) * 1000, 2),
                "p99_ms": round(_common.percentile(self.lat, 99) * 1000, 2)}


async def lookups(base: str, token: str, planted: list[str], seconds: float, conc: int,
                  rng: random.Random) -> Phase:
    ph = Phase()
    deadline = time.perf_counter() + seconds
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30, limits=limits) as c:
        async def worker() -> None:
            while time.perf_counter() < deadline:
                hit = rng.random() < 0.05
                q = flip(rng.choice(planted), 4, rng) if hit else rand_pdq(rng)
                t0 = time.perf_counter()
                try:
                    r = await c.post("/api/v1/match/signals", json={"signals": [f"pdq:{q}"]})
                    dt_ = time.perf_counter() - t0
                    body = r.json()
                    res = body["results"] if r.status_code == 200 else None
                    if res is None or len(res) != 1 or bool(res[0]["matches"]) != hit:
                        ph.errors.append(f"{r.status_code}: {r.text[:120]}")
                    else:
                        ph.ok += 1
                        ph.lat.append(dt_)
                except (httpx.HTTPError, ValueError) as exc:
                    ph.errors.append(f"{type(exc).__name__}: {exc}")

        await asyncio.gather(*(worker() for _ in range(conc)))
    ph.ended = time.perf_counter()
    return ph


async def decisions(base: str, token: str, stop: asyncio.Event) -> dict[str, t.Any]:
    acked: list[int] = []
    conflicts = failed = 0
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as c:
        while not stop.is_set():
            try:
                cases = (await c.get("/api/v1/review/cases?limit=20")).json()["cases"]
            except (httpx.HTTPError, ValueError, KeyError):
                failed += 1
                await asyncio.sleep(0.2)
                continue
            if not cases:
                await asyncio.sleep(0.2)
            for case in cases:
                r = await c.post(f"/api/v1/review/cases/{case['id']}/decision",
                                 json={"verdict": "confirm", "reason_code": "known_release"})
                if r.status_code == 201:
                    acked.append(r.json()["id"])
                elif r.status_code == 409:
                    conflicts += 1
                else:
                    failed += 1
    return {"acknowledged": len(acked), "conflicts": conflicts, "failed": failed,
            "ids": acked}


async def uploads(base: str, token: str, seconds: float, conc: int) -> Phase:
    photos = [p.read_bytes() for p in sorted((_common.REPO / "src/vigil/samples/images").glob("*.jpg"))]
    ph = Phase()
    deadline = time.perf_counter() + seconds
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"},
                                 timeout=60) as c:
        async def worker(k: int) -> None:
            i = k
            while time.perf_counter() < deadline:
                data = photos[i % len(photos)]
                i += conc
                t0 = time.perf_counter()
                try:
                    r = await c.post("/api/v1/match", files={"file": ("p.jpg", data, "image/jpeg")})
                    dt_ = time.perf_counter() - t0
                    if r.status_code == 200 and r.json()["matches"]:
                        ph.ok += 1
                        ph.lat.append(dt_)
                    else:
                        ph.errors.append(f"{r.status_code}: {r.text[:120]}")
                except (httpx.HTTPError, ValueError) as exc:
                    ph.errors.append(f"{type(exc).__name__}: {exc}")

        await asyncio.gather(*(worker(k) for k in range(conc)))
    ph.ended = time.perf_counter()
    return ph


async def sample_rss(pid: int, out: list[tuple[float, int]], stop: asyncio.Event,
                     every: float) -> None:
    t0 = time.perf_counter()
    while not stop.is_set():
        try:
            out.append((round(time.perf_counter() - t0, 1), rss(pid)))
        except (OSError, KeyError):
            return
        try:
            await asyncio.wait_for(stop.wait(), every)
        except TimeoutError:
            pass


async def run_load(base: str, toks: dict[str, str], planted: list[str], pid: int,
                   args: argparse.Namespace, rng: random.Random) -> dict[str, t.Any]:
    stop_rss, stop_dec = asyncio.Event(), asyncio.Event()
    samples: list[tuple[float, int]] = []
    rss_task = asyncio.create_task(sample_rss(pid, samples, stop_rss, args.rss_every))
    dec_task = asyncio.create_task(decisions(base, toks["reviewer"], stop_dec))
    srv0, cli0 = cpu_s(pid), cpu_s(os.getpid())
    look = await lookups(base, toks["submitter"], planted, args.lookup_s, args.concurrency, rng)
    cpu = {"server_cpu_s": round(cpu_s(pid) - srv0, 1),
           "client_cpu_s": round(cpu_s(os.getpid()) - cli0, 1)}
    lookup_samples = list(samples)
    stop_dec.set()
    dec = await dec_task
    up = await uploads(base, toks["submitter"], args.upload_s, 4)
    stop_rss.set()
    await rss_task
    async with httpx.AsyncClient(base_url=base, timeout=60,
                                 headers={"Authorization": f"Bearer {toks['admin']}"}) as c:
        decided: set[int] = set()
        offset = 0
        while True:
            page = (await c.get(f"/api/v1/review/cases?status=decided&limit=500&offset={offset}")).json()["cases"]
            decided |= {x["id"] for x in page}
            if len(page) < 500:
                break
            offset += 500
        audit_rows, before = 0, None
        while True:
            q = "/api/v1/audit?action=review.decide&limit=500" + (f"&before={before}" if before else "")
            rows = (await c.get(q)).json()["rows"]
            audit_rows += len(rows)
            if len(rows) < 500:
                break
            before = rows[-1]["seq"]
        verify = (await c.get("/api/v1/audit/verify")).json()
        metrics = (await c.get("/metrics")).text
    dec_ids = dec.pop("ids")
    dec.update({"decided_cases_reported": len(decided), "audit_rows": audit_rows,
                "unique_acknowledged": len(set(dec_ids)),
                "lost": len(dec_ids) - min(len(decided), audit_rows),
                "audit_verify": verify})
    vals = [v for _, v in lookup_samples]
    fifth = max(1, len(vals) // 5)
    warm = _common.median(vals[fifth:2 * fifth]) if len(vals) >= 5 else float("nan")
    end = _common.median(vals[-fifth:]) if vals else float("nan")
    return {"lookups": {**look.result(), **cpu}, "uploads": up.result(), "decisions": dec,
            "rss": {"samples": samples, "warm_mib": round(warm / 2**20, 1),
                    "end_mib": round(end / 2**20, 1),
                    "growth_mib": round((end - warm) / 2**20, 1),
                    "max_mib": round(max(v for _, v in samples) / 2**20, 1) if samples else None},
            "metrics_excerpt": [ln for ln in metrics.splitlines()
                                if ln.startswith(("vigil_index_size", "vigil_review_queue_depth"))]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="10k entries, ~1 minute")
    ap.add_argument("--entries", type=int, default=None)
    ap.add_argument("--lookup-s", type=float, default=None)
    ap.add_argument("--upload-s", type=float, default=None)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--rss-every", type=float, default=5.0)
    ap.add_argument("--keep", action="store_true", help="keep the data directory")
    args = ap.parse_args()
    args.entries = args.entries or (10_000 if args.quick else 100_000)
    args.lookup_s = args.lookup_s or (40 if args.quick else 480)
    args.upload_s = args.upload_s or (15 if args.quick else 120)
    name = "service-quick" if args.quick else "service"
    machine = _common.machine_info()
    rng = random.Random(20261129)
    data = Path(tempfile.mkdtemp(prefix="vigil-bench-")) / "data"
    toks, planted, setup_s = setup(data, args.entries, rng)
    port = free_port()
    env = {**os.environ, "VIGIL_DATA": str(data)}
    env.pop("VIGIL_DATABASE_URL", None)
    server = subprocess.Popen([sys.executable, "-c", "from vigil.cli.main import main; main()",
                               "serve", "--port", str(port),
                               "--log-level", "warning"], env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        t0 = time.perf_counter()
        while True:
            try:
                if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.perf_counter() - t0 > 300:
                raise SystemExit("the server did not become ready")
            time.sleep(0.2)
        ready_s = time.perf_counter() - t0
        res = asyncio.run(run_load(base, toks, planted, server.pid, args, rng))
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if not args.keep:
            shutil.rmtree(data.parent, ignore_errors=True)
    res.update({"entries": args.entries + 30, "concurrency": args.concurrency,
                "setup_s": round(setup_s, 1), "server_ready_s": round(ready_s, 2),
                "machine": machine, "command": _common.command_line()})
    _common.OUT.mkdir(parents=True, exist_ok=True)
    (_common.OUT / f"{name}.json").write_text(json.dumps(res, indent=1))
    lk, up, dec, r = res["lookups"], res["uploads"], res["decisions"], res["rss"]
    md = "\n".join([
        f"Command: `{res['command']}`  ",
        f"Machine: {_common.machine_line(machine)}",
        "",
        f"{res['entries']:,} PDQ entries banked; server ready in {res['server_ready_s']} s; "
        f"{args.concurrency} concurrent lookup clients.",
        "",
        "| load | requests | failed | req/s | p50 ms | p99 ms | wall s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| signal lookups (1 PDQ each, recorded) | {lk['requests']} | {lk['failed']} | {lk['rps']} "
        f"| {lk['p50_ms']} | {lk['p99_ms']} | {lk['wall_s']} |",
        f"| image uploads (sample photos) | {up['requests']} | {up['failed']} | {up['rps']} "
        f"| {up['p50_ms']} | {up['p99_ms']} | {up['wall_s']} |",
        "",
        f"CPU during the lookup phase: server {lk['server_cpu_s']} s, load generator "
        f"{lk['client_cpu_s']} s, over {lk['wall_s']} s of wall time on 2 shared cores.",
        "",
        f"Decision stream: {dec['acknowledged']} decisions acknowledged, "
        f"{dec['decided_cases_reported']} decided cases reported, {dec['audit_rows']} "
        f"`review.decide` audit rows; lost: {dec['lost']}; audit chain ok: {dec['audit_verify']['ok']}.",
        "",
        f"Server RSS during lookups: {r['warm_mib']} MiB after warm-up, {r['end_mib']} MiB at the "
        f"end (growth {r['growth_mib']} MiB); max {r['max_mib']} MiB over the run.",
    ])
    (_common.OUT / f"{name}.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
