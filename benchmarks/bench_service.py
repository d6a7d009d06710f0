"""Load benchmark of the service: ``vigil serve`` on loopback with 100k PDQ entries banked.

    python benchmarks/bench_service.py                   # full: 100k entries, 10-minute run
    python benchmarks/bench_service.py --quick           # 10k entries, ~1 minute
    python benchmarks/bench_service.py --server-workers 1   # one process instead of two

Set-up (not timed): a fresh data directory, a block bank of N entries with random PDQ values (plus
1,000 "planted" entries whose near-duplicates the load looks up, and one entry per bundled sample
photo), imported through the core in one transaction; tokens for a submitter, a reviewer and an
admin. Then ``vigil serve`` is started as its own process (uvicorn, ``--server-workers`` worker
processes, SQLite default) and the load comes from this process over HTTP on 127.0.0.1, in three
phases that together make the 10-minute run:

* **signal lookups, open loop** (``--lookup-s``, 420 s): ``POST /api/v1/match/signals`` with one
  PDQ signal per request (the default ``record: true``, so every lookup is also a recorded
  submission), sent on a fixed schedule of ``--rate`` (500) a second whatever the server does,
  over up to ``--max-connections`` keep-alive connections. Latency counts from the *scheduled*
  send time, so a server that falls behind is charged for the queue it causes (no coordinated
  omission). 5 % of the queries are near-duplicates (4 bits flipped) of planted entries, so
  matches (and review cases) happen; the rest are random codes (no match). Every response is
  checked: 200, one result, a match exactly when a planted code was asked.
* **signal lookups, closed loop** (``--max-s``, 60 s): ``--concurrency`` (16) clients, each
  sending its next lookup when the last is answered: the most the server does per second.
* **a concurrent decision stream** during both lookup phases: a reviewer client lists open
  cases and decides each (confirm). At the end the acknowledged decisions (201) are compared
  with the decisions the service reports (decided cases) and with ``review.decide`` rows in the
  audit log: all three must be equal — no decision lost.
* **image uploads** (``--upload-s``, 120 s): ``POST /api/v1/match`` with the bundled sample
  photos (JPEG, 0.1-0.4 MB), from 4 concurrent clients.
* **memory**: the RSS of the server's processes every 5 s over the whole run; "growth after
  warm-up" compares the median of the last fifth of the open-loop phase with the median of its
  second fifth.

The lookup load comes from a minimal HTTP/1.1 client (:class:`RawConnection`, ~0.2 ms of CPU a
request) rather than httpx (~4 ms), because client and server share the 2 cores: with httpx the
benchmark mostly measured its own client. Requests/s count completed requests over the phase's
wall time; latencies (p50/p99) are measured by the client, so they include its own queueing.
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
#: lookups ask to be recorded as submissions (the API's default); --no-record turns it off
RECORD = True


class RawConnection:
    """A minimal HTTP/1.1 keep-alive client connection for the load generator.

    httpx costs ~4 ms of client CPU per request, as much as the server itself: on a 2-core machine
    shared by both, the load generator would measure mostly its own overhead. This client writes
    pre-built request bytes and reads ``Content-Length`` (or chunked) responses: ~0.1 ms a
    request. It does exactly what a production client does on the wire — one request at a time per
    connection, no pipelining — so the server's work per request is unchanged."""

    def __init__(self, host: str, port: int, token: str) -> None:
        self.host, self.port = host, port
        self.head = (f"Host: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
                     "Connection: keep-alive\r\n").encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
            self.writer = self.reader = None

    async def request(self, method: str, path: str, body: bytes = b"",
                      content_type: str = "application/json") -> tuple[int, bytes]:
        """One request; reconnects once if the server closed an idle keep-alive connection."""
        for attempt in (0, 1):
            if self.writer is None:
                await self._connect()
            assert self.reader is not None and self.writer is not None
            head = (f"{method} {path} HTTP/1.1\r\n".encode() + self.head
                    + (f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                       if body or method == "POST" else "").encode() + b"\r\n")
            try:
                self.writer.write(head + body)
                return await self._response()
            except (ConnectionError, asyncio.IncompleteReadError):
                await self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    async def _response(self) -> tuple[int, bytes]:
        assert self.reader is not None
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {k.strip().lower(): v.strip()
                   for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
        if headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
                data = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                chunks.append(data[:-2])
            body = b"".join(chunks)
        else:
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, body


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


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a ``--workers N`` server is a supervisor and N workers)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            try:
                todo += [int(x) for x in task.read_text().split()]
            except OSError:
                pass
    return out


def rss(pid: int) -> int:
    """Resident memory of the server's process tree."""
    total = 0
    for p in tree(pid):
        try:
            total += _common.proc_status("VmRSS", p)
        except (OSError, KeyError):
            pass
    return total


def _cpu_one(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process tree so far (live processes)."""
    total = 0.0
    for p in tree(pid):
        try:
            total += _cpu_one(p)
        except OSError:
            pass
    return total


class Phase:
    def __init__(self) -> None:
        self.lat: list[float] = []
        #: when each answered request was sent (s since the phase started), for the timeline plot
        self.sent: list[float] = []
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


def _lookup_body(planted: list[str], rng: random.Random) -> tuple[bytes, bool]:
    """One request body: 5 % near-duplicates (4 bits flipped) of planted entries, else random."""
    hit = rng.random() < 0.05
    q = flip(rng.choice(planted), 4, rng) if hit else rand_pdq(rng)
    tail = b'"]}' if RECORD else b'"], "record": false}'
    return b'{"signals": ["pdq:' + q.encode() + tail, hit


async def _lookup(conn: RawConnection, body: bytes, hit: bool, since: float, ph: Phase) -> None:
    """Send one lookup and check its answer: 200, one result, a match exactly when expected.
    The latency counts from ``since`` (the scheduled send time in the open-loop phase)."""
    try:
        status, data = await conn.request("POST", "/api/v1/match/signals", body)
        dt_ = time.perf_counter() - since
        res = json.loads(data)["results"] if status == 200 else None
        if res is None or len(res) != 1 or bool(res[0]["matches"]) != hit:
            ph.errors.append(f"{status}: {data[:120]!r}")
        else:
            ph.ok += 1
            ph.lat.append(dt_)
            ph.sent.append(since - ph.started)
    except (OSError, asyncio.IncompleteReadError, ValueError, KeyError) as exc:
        ph.errors.append(f"{type(exc).__name__}: {exc}")


def _host_port(base: str) -> tuple[str, int]:
    host, port = base.rsplit("/", 1)[1].split(":")
    return host, int(port)


async def lookups_closed(base: str, token: str, planted: list[str], seconds: float, conc: int,
                         rng: random.Random) -> Phase:
    """Closed loop: ``conc`` clients, each sending its next lookup as soon as the last one is
    answered. Measures the most the server can do (its latency is mostly queueing)."""
    ph = Phase()
    deadline = time.perf_counter() + seconds
    host, port = _host_port(base)

    async def worker() -> None:
        conn = RawConnection(host, port, token)
        try:
            while time.perf_counter() < deadline:
                body, hit = _lookup_body(planted, rng)
                await _lookup(conn, body, hit, time.perf_counter(), ph)
        finally:
            await conn.close()

    await asyncio.gather(*(worker() for _ in range(conc)))
    ph.ended = time.perf_counter()
    return ph


async def lookups_open(base: str, token: str, planted: list[str], seconds: float, rate: float,
                       max_conns: int, rng: random.Random) -> Phase:
    """Open loop: lookups are sent on a fixed schedule (``rate`` a second) whatever the server
    does, over a pool of up to ``max_conns`` keep-alive connections. Latency counts from the
    *scheduled* time, so a request that waits for a free connection because the server fell
    behind is charged for the wait (no coordinated omission)."""
    ph = Phase()
    host, port = _host_port(base)
    pool: asyncio.Queue[RawConnection] = asyncio.Queue()
    conns = [RawConnection(host, port, token) for _ in range(max_conns)]
    for c in conns:
        pool.put_nowait(c)
    pending: set[asyncio.Task[None]] = set()

    async def one(scheduled: float, body: bytes, hit: bool) -> None:
        conn = await pool.get()
        try:
            await _lookup(conn, body, hit, scheduled, ph)
        finally:
            pool.put_nowait(conn)

    start = time.perf_counter()
    for i in range(int(seconds * rate)):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        body, hit = _lookup_body(planted, rng)
        task = asyncio.create_task(one(scheduled, body, hit))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)
    ph.ended = time.perf_counter()
    for c in conns:
        await c.close()
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
    # warm-up at the offered rate: connections opened, lazy imports and first-time paths run;
    # reported as its own row (its failures count), not mixed into the measured latencies
    warmup = await lookups_open(base, toks["submitter"], planted, args.warmup_s, args.rate,
                              args.max_connections, rng) if args.warmup_s > 0 else Phase()
    measured_from = samples[-1][0] if samples else 0.0  # RSS sample times count from the warm-up
    srv0, cli0 = cpu_s(pid), _cpu_one(os.getpid())
    look = await lookups_open(base, toks["submitter"], planted, args.lookup_s, args.rate,
                              args.max_connections, rng)
    cpu = {"server_cpu_s": round(cpu_s(pid) - srv0, 1),
           "client_cpu_s": round(_cpu_one(os.getpid()) - cli0, 1)}
    lookup_samples = [x for x in samples if x[0] >= measured_from]
    srv0, cli0 = cpu_s(pid), _cpu_one(os.getpid())
    most = await lookups_closed(base, toks["submitter"], planted, args.max_s, args.concurrency, rng)
    cpu_most = {"server_cpu_s": round(cpu_s(pid) - srv0, 1),
                "client_cpu_s": round(_cpu_one(os.getpid()) - cli0, 1)}
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
    timeline = {"sent_s": [round(x, 3) for x in look.sent],
                "latency_ms": [round(x * 1000, 2) for x in look.lat]}
    return {"timeline": timeline, "warmup": warmup.result(),
            "lookups": {**look.result(), **cpu, "offered_rps": args.rate},
            "lookups_max": {**most.result(), **cpu_most}, "uploads": up.result(), "decisions": dec,
            "rss": {"samples": samples, "measured_from_s": measured_from, "warm_mib": round(warm / 2**20, 1),
                    "end_mib": round(end / 2**20, 1),
                    "growth_mib": round((end - warm) / 2**20, 1),
                    "max_mib": round(max(v for _, v in samples) / 2**20, 1) if samples else None},
            "metrics_excerpt": [ln for ln in metrics.splitlines()
                                if ln.startswith(("vigil_index_size", "vigil_review_queue_depth"))]}


def plot(res: dict[str, t.Any], path: Path) -> None:
    """Latency of the open-loop lookups second by second (p50, p99) over the server's RSS."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tl = res["timeline"]
    per_s: dict[int, list[float]] = {}
    for sent, lat in zip(tl["sent_s"], tl["latency_ms"]):
        per_s.setdefault(int(sent), []).append(lat)
    secs = sorted(per_s)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    ax1.plot(secs, [_common.percentile(per_s[k], 50) for k in secs], label="p50", lw=1)
    ax1.plot(secs, [_common.percentile(per_s[k], 99) for k in secs], label="p99", lw=1)
    ax1.axhline(50, color="grey", ls="--", lw=0.8, label="goal p99 < 50 ms")
    ax1.set_yscale("log")
    ax1.set_ylabel("latency, ms (per second sent)")
    ax1.set_title(f"Signal lookups at {res['lookups']['offered_rps']:g}/s offered, "
                  f"{res['entries']:,} PDQ entries")
    ax1.legend(loc="upper right", fontsize=8)
    rss = res["rss"]["samples"]
    shift = res["rss"].get("measured_from_s", 0.0)  # sampling started with the warm-up
    ax2.plot([x - shift for x, _ in rss], [v / 2**20 for _, v in rss], color="C2")
    ax2.set_ylabel("server RSS, MiB")
    ax2.set_xlabel("seconds since the open-loop phase started "
                   "(then the closed-loop and upload phases)")
    ax2.set_ylim(bottom=0)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _per_req(ph: dict[str, t.Any]) -> str:
    return f"{1000 * ph['server_cpu_s'] / ph['requests']:.2f}" if ph["requests"] else "-"


def _event_loop_runner() -> t.Callable[..., t.Any]:
    """uvloop when installed (as ``vigil[service]`` installs it for uvicorn): the load generator
    shares the 2 cores with the server, so its own CPU per request matters."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="10k entries, ~1 minute")
    ap.add_argument("--entries", type=int, default=None)
    ap.add_argument("--lookup-s", type=float, default=None,
                    help="open-loop lookup phase, seconds (full 420, quick 30)")
    ap.add_argument("--warmup-s", type=float, default=10.0,
                    help="unmeasured open-loop warm-up at the same rate, seconds")
    ap.add_argument("--rate", type=float, default=500.0,
                    help="offered lookups per second in the open-loop phase")
    ap.add_argument("--max-connections", type=int, default=64,
                    help="connection pool of the open-loop phase")
    ap.add_argument("--max-s", type=float, default=None,
                    help="closed-loop (most lookups/s) phase, seconds (full 60, quick 10)")
    ap.add_argument("--upload-s", type=float, default=None,
                    help="image upload phase, seconds (full 120, quick 10)")
    ap.add_argument("--concurrency", type=int, default=16,
                    help="clients of the closed-loop phase")
    ap.add_argument("--server-workers", type=int, default=2,
                    help="worker processes of `vigil serve` (its --workers)")
    ap.add_argument("--no-record", action="store_true",
                    help='lookups with "record": false (no submission rows, no review cases)')
    ap.add_argument("--rss-every", type=float, default=5.0)
    ap.add_argument("--keep", action="store_true", help="keep the data directory")
    args = ap.parse_args()
    global RECORD
    RECORD = not args.no_record
    args.entries = args.entries or (10_000 if args.quick else 100_000)
    args.lookup_s = args.lookup_s or (30 if args.quick else 420)
    args.max_s = args.max_s or (10 if args.quick else 60)
    args.upload_s = args.upload_s or (10 if args.quick else 120)
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
                               "--workers", str(args.server_workers),
                               "--log-level", "warning"], env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        t0 = time.perf_counter()
        ready: set[int] = set()  # the workers that answered ready (each on a new connection)
        while True:
            try:
                r = httpx.get(base + "/readyz", timeout=2)
                if r.status_code == 200:
                    ready.add(int(r.json()["worker"]))
                    if len(ready) >= args.server_workers:
                        break
                    continue  # another new connection may reach another worker
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.perf_counter() - t0 > 300:
                raise SystemExit("the server did not become ready")
            time.sleep(0.2)
        ready_s = time.perf_counter() - t0
        res = _event_loop_runner()(run_load(base, toks, planted, server.pid, args, rng))
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
    lk, mx, up, dec, r = (res["lookups"], res["lookups_max"], res["uploads"], res["decisions"],
                          res["rss"])
    wu = res["warmup"]
    md = "\n".join([
        f"Command: `{res['command']}`  ",
        f"Machine: {_common.machine_line(machine)}",
        "",
        f"{res['entries']:,} PDQ entries banked; server ready in {res['server_ready_s']} s. "
        f"`vigil serve --workers {args.server_workers}`. "
        f"Phases in order: a {args.warmup_s:g} s warm-up, open loop at {args.rate:g} lookups/s offered ({args.lookup_s:g} s, "
        f"latency from the scheduled send time), closed loop with {args.concurrency} clients "
        f"({args.max_s:g} s), image uploads from 4 clients ({args.upload_s:g} s); a reviewer "
        "decides cases during both lookup phases.",
        "",
        "| load | requests | failed | req/s | p50 ms | p99 ms | wall s | server CPU ms/req |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| warm-up, open loop at {args.rate:g}/s ({args.warmup_s:g} s, not in the other rows) "
        f"| {wu['requests']} | {wu['failed']} | {wu['rps']} | {wu['p50_ms']} | {wu['p99_ms']} "
        f"| {wu['wall_s']} | |",
        f"| signal lookups, open loop at {args.rate:g}/s (1 PDQ each, recorded) | {lk['requests']} "
        f"| {lk['failed']} | {lk['rps']} | {lk['p50_ms']} | {lk['p99_ms']} | {lk['wall_s']} "
        f"| {_per_req(lk)} |",
        f"| signal lookups, closed loop, {args.concurrency} clients (most/s) | {mx['requests']} "
        f"| {mx['failed']} | {mx['rps']} | {mx['p50_ms']} | {mx['p99_ms']} | {mx['wall_s']} "
        f"| {_per_req(mx)} |",
        f"| image uploads (sample photos) | {up['requests']} | {up['failed']} | {up['rps']} "
        f"| {up['p50_ms']} | {up['p99_ms']} | {up['wall_s']} | |",
        "",
        f"CPU during the open-loop phase: server {lk['server_cpu_s']} s, load generator "
        f"{lk['client_cpu_s']} s, over {lk['wall_s']} s of wall time on 2 shared cores.",
        "",
        f"Decision stream: {dec['acknowledged']} decisions acknowledged, "
        f"{dec['decided_cases_reported']} decided cases reported, {dec['audit_rows']} "
        f"`review.decide` audit rows; lost: {dec['lost']}; audit chain ok: {dec['audit_verify']['ok']}.",
        "",
        f"Server RSS during the open-loop phase: {r['warm_mib']} MiB after warm-up (median of its "
        f"second fifth), {r['end_mib']} MiB at its end (median of its last fifth): growth "
        f"{r['growth_mib']} MiB; max {r['max_mib']} MiB over the whole run "
        f"({len(r['samples'])} samples, every {args.rss_every:g} s).",
    ])
    # the full run's picture goes with docs/benchmarks.md; a quick run's stays in the git-ignored out/
    png = (_common.OUT if args.quick else _common.REPO / "docs" / "img") / f"{name}-load.png"
    plot(res, png)
    md += f"\n\n![latency and memory over the run](img/{png.name})"
    (_common.OUT / f"{name}.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
