"""The review queue on both databases: grouping per bank entry, priority, claims, decisions with
statements of reasons, false-positive follow-ups, exposure caps, concurrent decisions, retention."""

from __future__ import annotations

import concurrent.futures as cf
import datetime as dt
import os

from sqlalchemy import func, select
from test_api_support import auth, bank_with_photo, svc, tokens, upload, variants  # noqa: F401

from vigil.core import review
from vigil.core.retention import purge
from vigil.store.service_models import Decision, ReviewItem


def open_cases(svc, tokens) -> list[dict]:
    return svc.get("/api/v1/review/cases", headers=auth(tokens["reviewer"])).json()["cases"]


def test_fifty_reuploads_of_one_release_are_one_case(svc, tokens, photos):
    eid = bank_with_photo(svc, tokens, photos[0])
    edits = variants(photos[0])
    pdqs = []
    for i, data in enumerate(edits):  # five edited re-uploads, with media ...
        body = upload(svc, tokens["submitter"], data).json()
        assert body["matches"]
        if i == 2:
            continue  # a mirrored copy matches as a picture (dihedral variants), not as a bare PDQ
        h = svc.post("/api/v1/hash", headers=auth(tokens["submitter"]),
                     files={"file": ("e.jpg", data, "image/jpeg")}).json()
        pdqs.append("pdq:" + next(x["value"] for x in h["signals"] if x["type"] == "pdq"))
    # ... and 45 more sightings of re-encoded copies reported as signals (50 hashes are slow)
    r = svc.post("/api/v1/match/signals", headers=auth(tokens["submitter"]),
                 json={"signals": pdqs * 11 + pdqs[:1]})
    assert all(x["matches"] for x in r.json()["results"])
    (case,) = open_cases(svc, tokens)
    assert case["entry_id"] == eid and case["items"] == 50
    assert case["severity"] == "high" and 0.5 < case["confidence"] <= 1.0
    detail = svc.get(f"/api/v1/review/cases/{case['id']}", headers=auth(tokens["reviewer"])).json()
    assert len(detail["items_shown"]) == 50 and detail["labels"]["release"] == "r1"
    assert sum(i["has_media"] for i in detail["items_shown"]) == 5
    r = svc.post(f"/api/v1/review/cases/{case['id']}/decision", headers=auth(tokens["reviewer"]),
                 json={"verdict": "confirm", "reason_code": "known_release", "reason_text": "ok"})
    assert r.status_code == 201
    sor = r.json()["statement_of_reasons"]
    assert sor["automated_detection"] is True and sor["automated_decision"] is False
    assert sor["decision_ground"] == "incompatible_with_terms"
    assert sor["category"] and sor["category_specification"] == "glorification"
    assert sor["content_type"] == "CONTENT_TYPE_IMAGE" and "50 item(s)" in sor["facts_and_circumstances"]
    assert open_cases(svc, tokens) == []
    # a new upload after the decision opens a new case
    upload(svc, tokens["submitter"], edits[0])
    assert len(open_cases(svc, tokens)) == 1


def test_queue_is_ordered_by_severity_then_confidence(svc, tokens, photos):
    a = bank_with_photo(svc, tokens, photos[0], labels=["severity=low"])
    b = bank_with_photo(svc, tokens, photos[1], labels=["severity=critical"])
    c = bank_with_photo(svc, tokens, photos[2], labels=["severity=low"])
    sub = tokens["submitter"]
    upload(svc, sub, variants(photos[0])[4])  # low, an edit: lower confidence
    upload(svc, sub, photos[2].read_bytes())  # low, exact: confidence 1.0
    upload(svc, sub, variants(photos[1])[4])  # critical
    order = [x["entry_id"] for x in open_cases(svc, tokens)]
    assert order == [b, c, a]


def test_claims_and_double_decisions_conflict(svc, tokens, core, photos):
    bank_with_photo(svc, tokens, photos[0])
    upload(svc, tokens["submitter"], photos[0].read_bytes())
    (case,) = open_cases(svc, tokens)
    from vigil.core.auth import create_token

    other = create_token(core.store, "reviewer-2", "reviewer")["token"]
    url = f"/api/v1/review/cases/{case['id']}"
    assert svc.post(url + "/claim", headers=auth(tokens["reviewer"])).json()["claimed_by"] == "reviewer-1"
    r = svc.post(url + "/claim", headers=auth(other))
    assert r.status_code == 409 and "claimed by reviewer-1" in r.json()["error"]["message"]
    bad = svc.post(url + "/decision", headers=auth(tokens["reviewer"]),
                   json={"verdict": "confirm", "reason_code": "benign_lookalike"})
    assert bad.status_code == 422
    bad = svc.post(url + "/decision", headers=auth(tokens["reviewer"]),
                   json={"verdict": "confirm", "reason_code": "known_release", "disable_entry": True})
    assert bad.status_code == 422
    ok = svc.post(url + "/decision", headers=auth(tokens["reviewer"]),
                  json={"verdict": "escalate", "reason_code": "needs_legal"})
    assert ok.status_code == 201
    again = svc.post(url + "/decision", headers=auth(other),
                     json={"verdict": "confirm", "reason_code": "known_release"})
    assert again.status_code == 409
    assert svc.post(url + "/decision", headers=auth(tokens["submitter"]),
                    json={"verdict": "confirm", "reason_code": "x"}).status_code == 403


def test_false_positive_disables_entry_or_adds_to_allow_bank(svc, tokens, photos):
    cur, sub, rev = auth(tokens["curator"]), tokens["submitter"], auth(tokens["reviewer"])
    e1 = bank_with_photo(svc, tokens, photos[0])
    bank_with_photo(svc, tokens, photos[1])
    svc.post("/api/v1/banks", json={"name": "benign", "kind": "allow"}, headers=cur)
    look = variants(photos[1])[1]
    upload(svc, sub, photos[0].read_bytes())
    upload(svc, sub, look)
    c1, c2 = sorted(open_cases(svc, tokens), key=lambda c: c["entry_id"])
    r = svc.post(f"/api/v1/review/cases/{c1['id']}/decision", headers=rev, json={
        "verdict": "false_positive", "reason_code": "different_content", "disable_entry": True})
    assert r.json()["follow_up"] == {"disabled_entry": e1}
    assert upload(svc, sub, photos[0].read_bytes()).json()["matches"] == []  # stopped at once
    r = svc.post(f"/api/v1/review/cases/{c2['id']}/decision", headers=rev, json={
        "verdict": "false_positive", "reason_code": "benign_lookalike", "allow_bank": "benign"})
    allow_entry = r.json()["follow_up"]["allow_entry"]
    body = upload(svc, sub, look).json()
    assert body["matches"] == [] and [h["entry_id"] for h in body["allowed"]] == [allow_entry]
    assert body["suppressed"]  # the block hit is still explained
    bad = svc.post("/api/v1/review/cases/99/decision", headers=rev, json={
        "verdict": "false_positive", "reason_code": "other", "allow_bank": "known"})
    assert bad.status_code == 404


def test_exposure_cap_hides_media(svc, tokens, photos):
    bank_with_photo(svc, tokens, photos[0])
    upload(svc, tokens["submitter"], photos[0].read_bytes())
    (case,) = open_cases(svc, tokens)
    item = svc.get(f"/api/v1/review/cases/{case['id']}",
                   headers=auth(tokens["reviewer"])).json()["items_shown"][0]["id"]
    url = f"/api/v1/review/items/{item}/media"
    for n in (1, 2, 3):  # the test settings cap at 3
        r = svc.get(url, headers=auth(tokens["reviewer"]))
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        assert r.headers["x-vigil-exposure"] == str(n) and r.content[:3] == b"\xff\xd8\xff"
    r = svc.get(url, headers=auth(tokens["reviewer"]))
    assert r.status_code == 403 and r.json()["error"]["code"] == "exposure_cap"
    ex = svc.get("/api/v1/review/exposure", headers=auth(tokens["reviewer"])).json()
    assert ex == {"reviewer": "reviewer-1", "today": 3, "cap": 3}
    # the thumbnail is small: review media is downscaled
    import io

    from PIL import Image

    from vigil.core.auth import create_token

    t2 = create_token(svc.app.state.service.vigil.store, "r2", "reviewer")["token"]
    img = Image.open(io.BytesIO(svc.get(url, headers=auth(t2)).content))
    assert max(img.size) <= review.THUMB_SIDE


def test_concurrent_decisions_lose_nothing(svc, tokens, core, photos):
    sub = tokens["submitter"]
    ids = [bank_with_photo(svc, tokens, p, labels=["severity=medium"]) for p in photos[:8]]
    for p in photos[:8]:
        upload(svc, sub, p.read_bytes())
    cases = open_cases(svc, tokens)
    assert sorted(c["entry_id"] for c in cases) == sorted(ids)

    def decide(case_id: int, who: int) -> int:
        return svc.post(f"/api/v1/review/cases/{case_id}/decision", headers=auth(tokens["reviewer"]),
                        json={"verdict": "confirm", "reason_code": "known_release",
                              "reason_text": f"r{who}"}).status_code

    # every case decided by two reviewers at once: exactly one decision each, none lost
    with cf.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(decide, [c["id"] for c in cases] * 2, range(16)))
    assert sorted(codes) == [201] * 8 + [409] * 8
    with core.store.read() as s:
        per_case = s.execute(select(Decision.case_id, func.count()).group_by(Decision.case_id)).all()
    assert sorted(n for _, n in per_case) == [1] * 8
    assert svc.get("/api/v1/audit?action=review.decide",
                   headers=auth(tokens["admin"])).json()["rows"].__len__() == 8


def test_retention_purges_review_media(svc, tokens, core, photos):
    bank_with_photo(svc, tokens, photos[0])
    upload(svc, tokens["submitter"], photos[0].read_bytes())
    with core.store.read() as s:
        (item,) = s.scalars(select(ReviewItem)).all()
    path = core.settings.data_dir / item.media_path
    assert path.is_file()
    assert purge(core.store, core.settings.data_dir, 30)["purged_items"] == 0
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=31)
    res = purge(core.store, core.settings.data_dir, 30, now=later)
    assert res["purged_items"] == 1 and not path.exists()
    r = svc.get(f"/api/v1/review/items/{item.id}/media", headers=auth(tokens["reviewer"]))
    assert r.status_code == 404
    rows = svc.get("/api/v1/audit?action=retention.purge", headers=auth(tokens["admin"])).json()
    assert rows["rows"][0]["details"]["items"] == 1


def test_cli_scans_queue_block_matches_unless_turned_off(core, photos, tmp_path):
    import shutil

    core.create_bank("known")
    core.add_files("known", [photos[0]], {"severity": "high"}).__next__()
    scan = tmp_path / "scan"
    scan.mkdir()
    shutil.copy(photos[0], scan / "a.jpg")
    core.scan(scan)
    with core.store.read() as s:
        assert review.queue_depth(s) == {"open": 1}
    core.review_queue = False
    shutil.copy(photos[0], scan / "b.jpg")
    core.scan(scan)
    with core.store.read() as s:
        assert s.scalar(select(func.count()).select_from(ReviewItem)) == 1
    assert os.environ.get("VIGIL_REVIEW_QUEUE", "1") != "0"
