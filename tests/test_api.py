"""The JSON API on both databases: health, error shape and statuses, banks and entries, matching
uploads and signals, batches, jobs, submissions."""

from __future__ import annotations

from test_api_support import (  # noqa: F401
    Client,
    auth,
    bank_with_photo,
    service_settings,
    svc,
    tokens,
    upload,
    variants,
)

from vigil.api import create_app

PDQ_A = "pdq:" + "f" * 64


def err(r) -> dict:
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


def test_health_ready_metrics_need_no_token(svc):
    assert svc.get("/healthz").json() == {"status": "ok"}
    r = svc.get("/readyz")
    assert r.status_code == 200 and r.json()["checks"] == {"database": True, "indexes": True}
    svc.get("/api/v1/banks")  # a 401, counted
    text = svc.get("/metrics").text
    assert 'vigil_http_requests_total{method="GET",route="/api/v1/banks",status="401"} 1.0' in text
    assert "vigil_index_size" in text and 'vigil_review_queue_depth{status="open"}' in text
    assert svc.get("/api/v1/openapi.json").json()["paths"]["/api/v1/match"]


def test_error_statuses_and_one_shape(svc, tokens):
    r = svc.get("/api/v1/banks")
    assert r.status_code == 401 and err(r)["code"] == "unauthorized"
    assert r.headers["www-authenticate"] == "Bearer"
    r = svc.get("/api/v1/banks", headers=auth("vgl_not-a-real-token"))
    assert r.status_code == 401 and err(r)["code"] == "unauthorized"
    r = svc.get("/api/v1/banks", headers={"Authorization": "Basic abc"})
    assert r.status_code == 401
    r = svc.post("/api/v1/banks", json={"name": "x"}, headers=auth(tokens["submitter"]))
    assert r.status_code == 403 and err(r)["code"] == "forbidden"
    assert err(r)["details"]["needs"] == ["admin", "curator"]
    r = svc.get("/api/v1/banks/nope", headers=auth(tokens["curator"]))
    assert r.status_code == 404 and err(r)["code"] == "not_found"
    r = svc.get("/api/v1/entries/99999", headers=auth(tokens["curator"]))
    assert r.status_code == 404 and err(r)["code"] == "not_found"
    r = svc.get("/api/v1/review/cases/99999", headers=auth(tokens["reviewer"]))
    assert r.status_code == 404
    r = svc.get("/api/v1/entries/99999999999999999999999", headers=auth(tokens["curator"]))
    assert r.status_code == 422 and err(r)["code"] == "invalid_request"
    r = svc.get("/api/v1/no/such/path", headers=auth(tokens["admin"]))
    assert r.status_code == 404 and err(r)["code"] == "not_found"
    r = svc.post("/api/v1/match", json={"file": "x"}, headers=auth(tokens["submitter"]))
    assert r.status_code == 415 and err(r)["code"] == "unsupported_media"
    r = svc.post("/api/v1/match/signals", content=b"{not json", headers={
        **auth(tokens["submitter"]), "Content-Type": "application/json"})
    assert r.status_code == 422 and err(r)["code"] == "invalid_request"
    r = svc.post("/api/v1/banks", json={"name": "a\x00b"}, headers=auth(tokens["curator"]))
    assert r.status_code == 422
    r = svc.post("/api/v1/match", headers=auth(tokens["submitter"]),
                 files={"file": ("bad.jpg", b"\xff\xd8\xff\xe0 truncated", "image/jpeg")})
    assert r.status_code == 422 and err(r)["code"] == "corrupt_media"
    r = svc.post("/api/v1/match", headers=auth(tokens["submitter"]),
                 files={"file": ("empty.jpg", b"", "image/jpeg")})
    assert r.status_code == 422 and err(r)["code"] == "empty_file"


def test_upload_limit_is_413(core, tokens, photos):
    app = create_app(core, service_settings(max_upload_bytes=10_000))
    with Client(app) as c:
        big = photos[0].read_bytes()
        assert len(big) > 10_000
        r = c.post("/api/v1/match", headers=auth(tokens["submitter"]),
                   files={"file": ("big.jpg", big, "image/jpeg")})
        assert r.status_code == 413 and err(r)["code"] == "file_too_large"
        assert err(r)["details"]["limit"] == 10_000

        async def chunks():  # no Content-Length: the streamed body is cut off at the limit
            for _ in range(20):
                yield b"x" * 1000

        r = c.post("/api/v1/match/signals", content=chunks(), headers={
            **auth(tokens["submitter"]), "Content-Type": "application/json"})
        assert r.status_code == 413
        ok = c.post("/api/v1/match/signals", json={"signals": [PDQ_A]},
                    headers=auth(tokens["submitter"]))
        assert ok.status_code == 200


def test_bank_and_entry_lifecycle(svc, tokens, photos):
    cur = auth(tokens["curator"])
    r = svc.post("/api/v1/banks", json={"name": "known", "thresholds": {"pdq": 25}}, headers=cur)
    assert r.status_code == 201 and r.json()["thresholds"]["pdq"] == 25
    assert svc.post("/api/v1/banks", json={"name": "known"}, headers=cur).status_code == 409
    r = svc.post("/api/v1/banks", json={"name": "x", "thresholds": {"pdq": 9999}}, headers=cur)
    assert r.status_code == 422 and err(r)["code"] == "usage"
    assert [b["name"] for b in svc.get("/api/v1/banks", headers=cur).json()["banks"]] == ["known"]
    r = svc.patch("/api/v1/banks/known", json={"thresholds": {"pdq": 20}}, headers=cur)
    assert r.status_code == 200 and r.json()["thresholds"]["pdq"] == 20
    entries = [{"signals": [f"md5:{i:032x}"], "labels": {"severity": sev, "group": "G"}}
               for i, sev in enumerate(["low", "high", "high", "critical", "low"])]
    r = svc.post("/api/v1/banks/known/entries", json={"entries": entries}, headers=cur)
    assert r.status_code == 201 and len(r.json()["entry_ids"]) == 5
    bad = svc.post("/api/v1/banks/known/entries", headers=cur, json={"entries": [
        {"signals": ["md5:" + "a" * 32]}, {"signals": ["pdq:zz"]}]})
    assert bad.status_code == 422 and "entry 1" in err(bad)["message"]
    r = svc.get("/api/v1/banks/known/entries?label=severity=high&limit=1", headers=cur).json()
    assert r["total"] == 2 and len(r["entries"]) == 1
    page2 = svc.get("/api/v1/banks/known/entries?label=severity=high&limit=1&offset=1",
                    headers=cur).json()
    assert page2["entries"][0]["entry_id"] != r["entries"][0]["entry_id"]
    eid = bank_with_photo(svc, tokens, photos[0])
    shown = svc.get(f"/api/v1/entries/{eid}", headers=cur).json()
    assert shown["labels"]["severity"] == "high"
    assert {s["type"] for s in shown["signals"]} >= {"md5", "sha256", "pdq"}
    sub = auth(tokens["submitter"])
    assert upload(svc, tokens["submitter"], photos[0].read_bytes()).json()["matches"]
    r = svc.post(f"/api/v1/banks/known/entries/{eid}/disable", headers=cur)
    assert r.json()["changed"] is True
    assert upload(svc, tokens["submitter"], photos[0].read_bytes()).json()["matches"] == []
    svc.post(f"/api/v1/banks/known/entries/{eid}/enable", headers=cur)
    assert upload(svc, tokens["submitter"], photos[0].read_bytes()).json()["matches"]
    r = svc.get("/api/v1/banks/known/entries?enabled=false", headers=cur).json()
    assert r["total"] == 0
    # a bank whose entries matched cannot be deleted; an unused one can
    assert svc.delete("/api/v1/banks/known", headers=cur).status_code == 409
    svc.post("/api/v1/banks", json={"name": "spare"}, headers=cur)
    svc.post("/api/v1/banks/spare/entries", json={"entries": [{"signals": [PDQ_A]}]}, headers=cur)
    assert svc.delete("/api/v1/banks/spare", headers=cur).json() == {"bank": "spare",
                                                                     "deleted": True}
    assert svc.get("/api/v1/banks/spare", headers=cur).status_code == 404
    r = svc.post("/api/v1/match/signals", json={"signals": [PDQ_A]}, headers=sub).json()
    assert r["results"][0]["matches"] == []  # its signal left the index with it


def test_match_uploads_signals_and_batches(svc, tokens, photos):
    eid = bank_with_photo(svc, tokens, photos[0])
    sub = tokens["submitter"]
    for data in variants(photos[0]):
        body = upload(svc, sub, data).json()
        assert [m["entry_id"] for m in body["matches"]] == [eid], body
        assert body["error"] is None and body["filename"] == "up.jpg"
    assert upload(svc, sub, photos[5].read_bytes()).json()["matches"] == []
    h = svc.post("/api/v1/hash", headers=auth(sub),
                 files={"file": ("a.jpg", photos[0].read_bytes(), "image/jpeg")}).json()
    pdq = next(s for s in h["signals"] if s["type"] == "pdq")
    r = svc.post("/api/v1/match/signals", headers=auth(sub), json={
        "signals": [f"pdq:{pdq['value']}", "pdq:nothex", "nosuch:abc"]}).json()["results"]
    assert [x["matches"][0]["entry_id"] for x in r[:1]] == [eid]
    assert r[1]["error"]["code"] == "invalid_signal"
    assert r[2]["error"]["code"] == "unknown_signal_type"
    files = [("files", ("a.jpg", photos[0].read_bytes(), "image/jpeg")),
             ("files", ("bad.jpg", b"\xff\xd8\xff garbage", "image/jpeg")),
             ("files", ("note.txt", b"hello world", "text/plain"))]
    res = svc.post("/api/v1/match/batch", headers=auth(sub), files=files).json()["results"]
    assert [x["filename"] for x in res] == ["a.jpg", "bad.jpg", "note.txt"]
    assert res[0]["matches"] and res[1]["error"]["code"] == "corrupt_media"
    assert res[2]["error"] is None and res[2]["matches"] == [] and "note" in res[2]
    text = svc.get("/metrics").text
    assert 'vigil_matches_total{bank="known"}' in text
    subs = svc.get("/api/v1/submissions?matched=true", headers=auth(tokens["reviewer"])).json()
    assert subs["submissions"] and all(s["matches"] for s in subs["submissions"])
    one = svc.get(f"/api/v1/submissions/{subs['submissions'][0]['id']}",
                  headers=auth(tokens["reviewer"])).json()
    assert one["matches"][0]["entry_id"] == eid


def test_async_job_shape(svc, tokens, photos):
    eid = bank_with_photo(svc, tokens, photos[0])
    r = svc.post("/api/v1/jobs", headers=auth(tokens["submitter"]),
                 files={"file": ("big.jpg", photos[0].read_bytes(), "image/jpeg")},
                 data={"kind": "match"})
    assert r.status_code == 202 and r.json()["status"] == "queued"
    job_id = r.json()["id"]
    runner = svc.app.state.service.jobs
    assert runner.run_once() is True
    done = svc.get(f"/api/v1/jobs/{job_id}", headers=auth(tokens["submitter"])).json()
    assert done["status"] == "done" and done["result"]["matches"][0]["entry_id"] == eid
    assert done["finished_at"] and done["error"] is None
    r = svc.post("/api/v1/jobs", headers=auth(tokens["submitter"]),
                 files={"file": ("bad.jpg", b"\xff\xd8\xff junk", "image/jpeg")})
    runner.run_once()
    failed = svc.get(f"/api/v1/jobs/{r.json()['id']}", headers=auth(tokens["submitter"])).json()
    assert failed["status"] == "failed" and failed["error"]["code"] == "corrupt_media"
    assert svc.get("/api/v1/jobs/nope", headers=auth(tokens["submitter"])).status_code == 404
    assert not list((svc.app.state.service.vigil.settings.data_dir / "jobs").iterdir())


def test_bank_changes_from_another_process_reach_the_service(core, tokens):
    import time

    from vigil.core.app import Vigil
    from vigil.core.banks import EntrySpec
    from vigil.signals import Signal

    app = create_app(core, service_settings(index_sync_s=0.1))
    with Client(app) as c:
        sub = auth(tokens["submitter"])
        assert c.post("/api/v1/match/signals", json={"signals": [PDQ_A]},
                      headers=sub).json()["results"][0]["matches"] == []
        other = Vigil(core.settings)  # as `vigil bank add` in another process would
        try:
            other.create_bank("late")
            other.add_entries("late", [EntrySpec([Signal.parse(PDQ_A)])])
        finally:
            other.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            r = c.post("/api/v1/match/signals", json={"signals": [PDQ_A], "record": False},
                       headers=sub).json()["results"][0]
            if r["matches"]:
                break
            time.sleep(0.1)
        assert r["matches"] and r["matches"][0]["bank"] == "late"
