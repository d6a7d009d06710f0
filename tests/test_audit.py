"""The audit log on both databases: every kind of change is on the record, the chain verifies,
and an altered, a removed-from-the-middle or a removed-from-the-end row is reported (by the API and
by ``vigil audit verify``) at the first broken link."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import delete, select, update
from test_api_support import auth, bank_with_photo, svc, tokens, upload  # noqa: F401
from typer.testing import CliRunner

from vigil.cli.main import app as cli_app
from vigil.core import audit
from vigil.store.service_models import AuditRow


def make_history(svc, tokens, photos) -> None:
    eid = bank_with_photo(svc, tokens, photos[0])
    svc.patch("/api/v1/banks/known", json={"thresholds": {"pdq": 30}}, headers=auth(tokens["curator"]))
    svc.post(f"/api/v1/banks/known/entries/{eid}/disable", headers=auth(tokens["curator"]))
    svc.post(f"/api/v1/banks/known/entries/{eid}/enable", headers=auth(tokens["curator"]))
    upload(svc, tokens["submitter"], photos[0].read_bytes())
    case = svc.get("/api/v1/review/cases", headers=auth(tokens["reviewer"])).json()["cases"][0]
    svc.post(f"/api/v1/review/cases/{case['id']}/decision", headers=auth(tokens["reviewer"]),
             json={"verdict": "confirm", "reason_code": "known_release"})
    w = svc.post("/api/v1/webhooks", headers=auth(tokens["admin"]),
                 json={"name": "hook", "url": "http://127.0.0.1:9/x"}).json()
    svc.post("/api/v1/rules", headers=auth(tokens["admin"]), json={"webhook_id": w["id"]})
    t = svc.post("/api/v1/tokens", headers=auth(tokens["admin"]),
                 json={"name": "temp", "role": "submitter"}).json()
    svc.delete(f"/api/v1/tokens/{t['id']}", headers=auth(tokens["admin"]))


def cli_verify(core) -> tuple[int, str, str]:
    r = CliRunner().invoke(cli_app, ["--data-dir", str(core.settings.data_dir), "--database-url",
                                     core.store.url, "audit", "verify"])
    return r.exit_code, r.stdout, r.stderr


def test_changes_are_recorded_and_chain_verifies(svc, tokens, core, photos):
    make_history(svc, tokens, photos)
    rows = svc.get("/api/v1/audit?limit=500", headers=auth(tokens["curator"])).json()["rows"]
    actions = [r["action"] for r in reversed(rows)]
    for needed in ("token.create", "bank.create", "entry.add", "bank.thresholds", "entry.disable",
                   "entry.enable", "review.decide", "webhook.create", "rule.create",
                   "token.revoke"):
        assert needed in actions, (needed, actions)
    by_action = {r["action"]: r for r in rows}
    assert by_action["bank.create"]["actor"] == "curator:curator-1"
    assert by_action["review.decide"]["actor"] == "reviewer:reviewer-1"
    assert by_action["review.decide"]["details"]["verdict"] == "confirm"
    for newer, older in zip(rows, rows[1:]):
        assert newer["prev_hash"] == older["hash"]
    report = svc.get("/api/v1/audit/verify", headers=auth(tokens["curator"])).json()
    assert report == {"ok": True, "rows": len(rows), "first_broken_seq": None, "problem": None}
    assert svc.get("/api/v1/audit", headers=auth(tokens["submitter"])).status_code == 403
    code, out, _ = cli_verify(core)
    assert code == 0 and f"{len(rows)} rows verified" in out


@pytest.mark.parametrize("tamper", ["alter", "remove-middle", "remove-last"])
def test_tampering_is_found_at_the_first_broken_link(svc, tokens, core, photos, tamper):
    make_history(svc, tokens, photos)
    with core.store.read() as s:
        seqs = list(s.scalars(select(AuditRow.seq).order_by(AuditRow.seq)))
    victim = seqs[len(seqs) // 2]
    with core.store.transaction() as s:
        if tamper == "alter":
            s.execute(update(AuditRow).where(AuditRow.seq == victim)
                      .values(details={"verdict": "false_positive"}))
            expect, word = victim, "altered"
        elif tamper == "remove-middle":
            s.execute(delete(AuditRow).where(AuditRow.seq == victim))
            expect, word = seqs[seqs.index(victim) + 1], "removed"
        else:
            s.execute(delete(AuditRow).where(AuditRow.seq == seqs[-1]))
            expect, word = seqs[-1], "removed from the end"
    report = svc.get("/api/v1/audit/verify", headers=auth(tokens["admin"])).json()
    assert report["ok"] is False and report["first_broken_seq"] == expect, report
    assert word in report["problem"]
    code, _, err = cli_verify(core)
    assert code == 1 and f"broken at row {expect}" in err


def test_append_is_chained_within_the_callers_transaction(core):
    with core.store.transaction() as s:
        a = audit.append(s, "t", "x.one", "a", {"n": 1})
        b = audit.append(s, "t", "x.two", "b", {"n": 2})
        assert b.prev_hash == a.hash and a.prev_hash == audit.GENESIS
    with pytest.raises(RuntimeError), core.store.transaction() as s:
        audit.append(s, "t", "x.three", "c", {})
        raise RuntimeError("rolled back")
    with core.store.read() as s:
        report = audit.verify(s)
        assert report.ok and report.rows == 2
        assert json.loads(audit.canonical(1, a.at, "t", "x.one", "a", {"n": 1}, audit.GENESIS))["seq"] == 1
