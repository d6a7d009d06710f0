"""The service with more than one worker: recording of lookups, background-work leadership,
and ``vigil serve --workers 2`` as real processes (shared port, summed metrics, jobs run)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import typing as t
from pathlib import Path

import httpx
import pytest
from test_api_support import (  # noqa: F401 - fixtures
    Client,
    auth,
    bank_with_photo,
    service_settings,
    svc,
    tokens,
)

from vigil.api import create_app
from vigil.config import Settings
from vigil.core.app import Vigil
from vigil.core.auth import create_token


def test_unmatched_signal_lookups_are_recorded(svc, tokens, photos):
    """Lookups that match nothing are recorded too (they take a bulk insert, hits the ORM)."""
    bank_with_photo(svc, tokens, photos[0])
    h = svc.post("/api/v1/hash", headers=auth(tokens["submitter"]),
                 files={"file": ("a.jpg", photos[0].read_bytes(), "image/jpeg")}).json()
    pdq = next(s["value"] for s in h["signals"] if s["type"] == "pdq")
    misses = ["0" * 64, "f" * 64]
    r = svc.post("/api/v1/match/signals", headers=auth(tokens["submitter"]),
                 json={"signals": [f"pdq:{misses[0]}", f"pdq:{pdq}", f"pdq:{misses[1]}"]})
    assert [bool(x["matches"]) for x in r.json()["results"]] == [False, True, False]
    rd = auth(tokens["reviewer"])
    unmatched = svc.get("/api/v1/submissions?matched=false", headers=rd).json()["submissions"]
    recorded = {s["signals"][0]["value"] for s in unmatched if s["signals"]}
    assert set(misses) <= recorded
    assert all(s["error"] is None and s["matches"] == [] and s["seen_at"] for s in unmatched)
    matched = svc.get("/api/v1/submissions?matched=true", headers=rd).json()["submissions"]
    assert [s["signals"][0]["value"] for s in matched if s["signals"]
            and s["signals"][0]["type"] == "pdq"] == [pdq]
    # not recorded when asked not to
    before = svc.get("/api/v1/submissions", headers=rd).json()["total"]
    svc.post("/api/v1/match/signals", headers=auth(tokens["submitter"]),
             json={"signals": ["pdq:" + "1" * 64], "record": False})
    assert svc.get("/api/v1/submissions", headers=rd).json()["total"] == before


def test_one_process_leads_the_background_work(core):
    """Two services on one data directory: one runs deliveries, jobs and retention; when it
    stops, the other takes over at its next sync tick."""
    settings = service_settings(workers=True, index_sync_s=0.05)
    first = create_app(core, settings)
    second = create_app(core, settings)
    with Client(first):
        lead = first.state.service
        with Client(second):
            standby = second.state.service
            time.sleep(0.2)
            assert lead.leadership.held and not standby.leadership.held
            assert lead.jobs.running and not standby.jobs.running
        assert not standby.leadership.held  # stopped: gave nothing up, took nothing
        third = create_app(core, settings)
    with Client(third):
        deadline = time.monotonic() + 5
        while not third.state.service.leadership.held and time.monotonic() < deadline:
            time.sleep(0.05)
        assert third.state.service.leadership.held
        assert third.state.service.jobs.running


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_serve_with_two_worker_processes(tmp_path: Path, photos) -> None:
    data = tmp_path / "data"
    v = Vigil(Settings(data_dir=data))
    try:
        v.create_bank("known")
        list(v.add_files("known", [photos[0]], {"release": "r1"}))
        token = create_token(v.store, "t", "admin")["token"]
    finally:
        v.close()
    port = _free_port()
    env = {**os.environ, "VIGIL_DATA": str(data), "VIGIL_SECURE_COOKIES": "0"}
    env.pop("VIGIL_DATABASE_URL", None)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    server = subprocess.Popen(
        [sys.executable, "-c", "from vigil.cli.main import main; main()", "serve",
         "--port", str(port), "--workers", "2", "--log-level", "warning"],
        env=env, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, "the server exited"
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.2)
        h = auth(token)
        n = 40
        for i in range(n):  # a new connection each: the kernel spreads them over the workers
            r = httpx.post(base + "/api/v1/match/signals", headers=h,
                           json={"signals": [f"pdq:{i:064x}"]}, timeout=30)
            assert r.status_code == 200 and r.json()["results"][0]["matches"] == []
        metrics = httpx.get(base + "/metrics", timeout=30).text
        line = next(ln for ln in metrics.splitlines()
                    if ln.startswith('vigil_lookups_total{kind="signal"}'))
        assert float(line.split()[-1]) == n  # summed over both workers
        job = httpx.post(base + "/api/v1/jobs", headers=h, timeout=30,
                         files={"file": ("p.jpg", photos[0].read_bytes(), "image/jpeg")}).json()
        deadline = time.monotonic() + 60
        while (st := httpx.get(f"{base}/api/v1/jobs/{job['id']}", headers=h,
                               timeout=30).json())["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, "the job never ran"
            time.sleep(0.2)
        assert st["status"] == "done" and st["result"]["matches"]
    finally:
        server.send_signal(signal.SIGINT)
        try:
            _, errors = server.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            _, errors = server.communicate()
    assert server.returncode == 0, errors[-2000:]
    assert "with 2 worker processes" in errors


def test_changes_apply_within_the_refresh_interval(core, settings, photos):
    """With a refresh interval (as `vigil serve` runs), the service's own changes apply to the
    very next lookup; another process's changes within the interval."""
    interval = 0.3
    app = create_app(core, service_settings(refresh_interval_s=interval))
    with Client(app) as svc:
        tok = {r: create_token(core.store, f"{r}-x", r)["token"] for r in ("curator", "submitter")}
        eid = bank_with_photo(svc, {"curator": tok["curator"], "submitter": tok["submitter"]},
                              photos[0])
        h = svc.post("/api/v1/hash", headers=auth(tok["submitter"]),
                     files={"file": ("a.jpg", photos[0].read_bytes(), "image/jpeg")}).json()
        pdq = next(s["value"] for s in h["signals"] if s["type"] == "pdq")
        near = f"pdq:{int(pdq, 16) ^ 0b111111:064x}"  # 6 bits away

        def hits() -> list[int]:
            r = svc.post("/api/v1/match/signals", headers=auth(tok["submitter"]),
                         json={"signals": [near], "record": False}).json()["results"][0]
            return [m["entry_id"] for m in r["matches"]]

        assert hits() == [eid]
        # this process's own change: at once, although the marks were read just now
        svc.patch("/api/v1/banks/known", json={"thresholds": {"pdq": 4}},
                  headers=auth(tok["curator"]))
        assert hits() == []
        svc.patch("/api/v1/banks/known", json={"thresholds": {"pdq": 31}},
                  headers=auth(tok["curator"]))
        assert hits() == [eid]
        # another process's change: applied once the interval has passed
        other = Vigil(settings)
        try:
            other.set_enabled("known", eid, False)
        finally:
            other.close()
        time.sleep(interval * 1.5)
        assert hits() == []


def _fast_path(app: t.Any) -> t.Any:
    """The SignalLookupFastPath instance in the built middleware stack."""
    node = app.middleware_stack
    while node is not None and type(node).__name__ != "SignalLookupFastPath":
        node = getattr(node, "app", None)
    assert node is not None
    return node


def test_fast_path_answers_exactly_as_the_full_app(core, photos):
    app = create_app(core, service_settings())
    with Client(app) as svc:
        tok = {r: create_token(core.store, f"{r}-f", r)["token"] for r in ("curator", "submitter")}
        eid = bank_with_photo(svc, tok, photos[0])
        h = svc.post("/api/v1/hash", headers=auth(tok["submitter"]),
                     files={"file": ("a.jpg", photos[0].read_bytes(), "image/jpeg")}).json()
        pdq = next(s["value"] for s in h["signals"] if s["type"] == "pdq")
        body = {"signals": [f"pdq:{pdq}", "pdq:nothex", "md5:" + "0" * 32, "x"], "record": False}
        fast = _fast_path(app)
        fresh = auth(create_token(core.store, "s2", "submitter")["token"])
        first = svc.post("/api/v1/match/signals", headers=fresh, json=body)
        assert fast.served == 0  # a token not verified yet: the full app answered (and cached it)
        second = svc.post("/api/v1/match/signals", headers=fresh, json=body)
        assert fast.served == 1
        assert first.status_code == second.status_code == 200
        assert first.content == second.content  # byte for byte
        assert first.headers["content-type"] == second.headers["content-type"]
        assert second.json()["results"][0]["matches"][0]["entry_id"] == eid
        # what the fast path does not take goes to the full app, with FastAPI's answers
        sub = auth(tok["submitter"])
        cases = [
            ({"signals": []}, 422), ({"signals": "pdq:x"}, 422), ({"record": True}, 422),
            ({"signals": [1]}, 422), ({"signals": ["md5:" + "0" * 32], "record": "maybe"}, 422),
            ({"signals": ["md5:" + "0" * 32], "record": "yes"}, 200),  # lax again
            ({"signals": ["md5:" + "0" * 32], "record": 0}, 200),  # pydantic's lax bool
            ({"signals": ["md5:" + "0" * 32], "other": 1}, 200),  # extra keys are ignored
        ]
        for payload, status in cases:
            r = svc.post("/api/v1/match/signals", headers=sub, json=payload)
            assert r.status_code == status, (payload, r.text)
            if status == 422:
                assert r.json()["error"]["code"] == "invalid_request"
        r = svc.post("/api/v1/match/signals", headers={**sub, "Content-Type": "application/json"},
                     content=b"{not json")
        assert r.status_code == 422
        assert svc.post("/api/v1/match/signals", headers=auth(tok["curator"]),
                        json=body).status_code == 403  # a cached token with the wrong role
        assert svc.post("/api/v1/match/signals", json=body).status_code == 401
        assert fast.served == 1  # none of those was served by the fast path
        metrics = svc.get("/metrics").text
        assert 'route="/api/v1/match/signals",status="200"' in metrics
