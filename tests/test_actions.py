"""Actions on both databases, against a real HTTP receiver on 127.0.0.1: rules select decisions,
the webhook body is signed (HMAC-SHA256 over timestamp and body) with an idempotency key, failures
are retried with backoff, every attempt is recorded, and exhausted deliveries become dead letters
that the API and the UI list and can retry."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from test_api_support import auth, bank_with_photo, svc, tokens, upload  # noqa: F401

from vigil.core import actions
from vigil.core.actions import DeliveryPolicy, deliver_due, verify_signature


class Receiver:
    """A webhook receiver: answers with the next status of ``script`` (then the last one)."""

    def __init__(self, script: list[int]) -> None:
        self.script = list(script)
        self.calls: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.calls.append({"headers": dict(self.headers), "body": body})
                status = outer.script.pop(0) if len(outer.script) > 1 else outer.script[0]
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made: list[Receiver] = []

    def make(script: list[int]) -> Receiver:
        made.append(Receiver(script))
        return made[-1]

    yield make
    for r in made:
        r.close()


def decide_one(svc, tokens, photo, verdict="confirm", reason="known_release") -> dict:
    upload(svc, tokens["submitter"], photo.read_bytes())
    case = svc.get("/api/v1/review/cases", headers=auth(tokens["reviewer"])).json()["cases"][0]
    r = svc.post(f"/api/v1/review/cases/{case['id']}/decision", headers=auth(tokens["reviewer"]),
                 json={"verdict": verdict, "reason_code": reason})
    assert r.status_code == 201, r.text
    return r.json()


def drain(core, policy: DeliveryPolicy, rounds: int = 10) -> None:
    with httpx.Client(timeout=5) as client:
        for _ in range(rounds):
            deliver_due(core.store, policy, client)


def test_signed_delivery_with_retries(svc, tokens, core, photos, receiver):
    rx = receiver([500, 503, 200])
    adm = auth(tokens["admin"])
    hook = svc.post("/api/v1/webhooks", headers=adm, json={"name": "siem", "url": rx.url}).json()
    secret = hook["secret"]
    assert "secret" not in svc.get("/api/v1/webhooks", headers=adm).json()["webhooks"][0]
    r = svc.post("/api/v1/rules", headers=adm, json={
        "webhook_id": hook["id"], "bank": "known", "label": "group=ExampleGroup",
        "severity": "high", "decision": "confirm"})
    assert r.status_code == 201
    svc.post("/api/v1/rules", headers=adm, json={"webhook_id": hook["id"], "decision": "escalate"})
    bank_with_photo(svc, tokens, photos[0])
    decision = decide_one(svc, tokens, photos[0])
    drain(core, DeliveryPolicy(max_attempts=5, base_delay_s=0.0))
    assert len(rx.calls) == 3  # two failures, then delivered; the escalate rule did not fire
    keys = {c["headers"]["Idempotency-Key"] for c in rx.calls}
    assert len(keys) == 1  # the same key on every retry
    for call in rx.calls:
        h = call["headers"]
        assert verify_signature(secret, h["X-Vigil-Timestamp"], call["body"], h["X-Vigil-Signature"])
        assert not verify_signature("wrong-secret-000000", h["X-Vigil-Timestamp"], call["body"],
                                    h["X-Vigil-Signature"])
        assert not verify_signature(secret, h["X-Vigil-Timestamp"], call["body"] + b" ",
                                    h["X-Vigil-Signature"])
    event = json.loads(rx.calls[-1]["body"])
    assert event["type"] == "decision" and event["decision"]["id"] == decision["id"]
    assert event["labels"]["group"] == "ExampleGroup" and event["case"]["bank"] == "known"
    (d,) = svc.get("/api/v1/actions/deliveries", headers=adm).json()["deliveries"]
    assert d["status"] == "delivered" and d["attempts"] == 3
    assert [a["status_code"] for a in d["attempt_log"]] == [500, 503, 200]
    rows = svc.get("/api/v1/audit?action=action.delivered", headers=adm).json()["rows"]
    assert rows and rows[0]["details"]["attempts"] == 3


def test_backoff_waits_between_attempts(core):
    store = core.store
    hook = actions.create_webhook(store, "slow", "http://127.0.0.1:9/unreachable")
    actions.create_rule(store, hook["id"])
    with store.transaction() as s:
        actions.schedule(s, {"type": "decision", "id": "decision:1"}, bank="b", labels={},
                         decision="confirm")
        again = actions.schedule(s, {"type": "decision", "id": "decision:1"}, bank="b", labels={},
                                 decision="confirm")
    assert again == []  # idempotent: the same event is scheduled once
    policy = DeliveryPolicy(max_attempts=4, base_delay_s=0.4, timeout_s=2)
    with httpx.Client(timeout=2) as client:
        assert deliver_due(store, policy, client) == 1  # attempt 1 fails (connection refused)
        assert deliver_due(store, policy, client) == 0  # not due yet: backoff 0.4 s
        time.sleep(0.45)
        assert deliver_due(store, policy, client) == 1  # attempt 2; next wait is 0.8 s
        time.sleep(0.45)
        assert deliver_due(store, policy, client) == 0
        time.sleep(0.4)
        assert deliver_due(store, policy, client) == 1
    (d,) = actions.list_deliveries(store)
    assert d["attempts"] == 3 and d["status"] == "pending"
    assert all(a["status_code"] is None and "Connect" in a["error"] for a in d["attempt_log"])


def test_dead_letters_are_listed_and_retried(svc, tokens, core, photos, receiver):
    rx = receiver([500])
    adm = auth(tokens["admin"])
    hook = svc.post("/api/v1/webhooks", headers=adm, json={
        "name": "broken", "url": rx.url, "secret": "s" * 32}).json()
    svc.post("/api/v1/rules", headers=adm, json={"webhook_id": hook["id"]})
    bank_with_photo(svc, tokens, photos[0])
    decide_one(svc, tokens, photos[0], "false_positive", "different_content")
    drain(core, DeliveryPolicy(max_attempts=3, base_delay_s=0.0))
    assert len(rx.calls) == 3
    (dead,) = svc.get("/api/v1/actions/dead-letters", headers=adm).json()["deliveries"]
    assert dead["status"] == "dead" and dead["last_error"] == "HTTP 500"
    assert svc.get("/api/v1/actions/dead-letters", headers=auth(tokens["curator"])).status_code == 403
    # ... and on the UI's Actions page
    form = svc.get("/login")
    nonce = re.search(r'name="login_csrf" value="([^"]+)"', form.text).group(1)
    svc.post("/login", data={"token": tokens["admin"], "login_csrf": nonce, "next": "/actions"})
    page = svc.get("/actions").text
    assert 'id="dead"' in page and dead["event_id"] in page and "HTTP 500" in page
    rx.script = [200]
    r = svc.post(f"/api/v1/actions/deliveries/{dead['id']}/retry", headers=adm)
    assert r.json()["status"] == "pending"
    drain(core, DeliveryPolicy(max_attempts=3, base_delay_s=0.0), rounds=2)
    assert svc.get("/api/v1/actions/dead-letters", headers=adm).json()["deliveries"] == []
    assert len(rx.calls) == 4
    assert svc.post("/api/v1/webhooks", headers=adm, json={
        "name": "x", "url": "file:///etc/passwd"}).status_code == 422
    assert svc.post("/api/v1/rules", headers=adm, json={
        "webhook_id": 999, "decision": "confirm"}).status_code == 404


def test_worker_thread_delivers(core, receiver):
    rx = receiver([200])
    hook = actions.create_webhook(core.store, "w", rx.url)
    actions.create_rule(core.store, hook["id"], decision="confirm")
    with core.store.transaction() as s:
        actions.schedule(s, {"type": "decision", "id": "decision:7"}, bank="b", labels={},
                         decision="confirm")
    worker = actions.ActionWorker(core.store, DeliveryPolicy(), interval_s=0.05)
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while not rx.calls and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        worker.stop()
    assert len(rx.calls) == 1
