"""Tokens and roles on both databases: shown once and stored hashed, revocable, last-used time,
the role matrix; and the UI session: HttpOnly/SameSite/Secure cookie, CSRF on every form, and a
revoked token signing the browser out."""

from __future__ import annotations

import json
import re

import pytest
from sqlalchemy import select, text
from test_api_support import ROLES, auth, svc, tokens  # noqa: F401
from typer.testing import CliRunner

from vigil.cli.main import app as cli_app
from vigil.store.service_models import ApiToken


def test_tokens_are_shown_once_and_stored_hashed(svc, tokens, core):
    adm = auth(tokens["admin"])
    made = svc.post("/api/v1/tokens", headers=adm, json={"name": "bot", "role": "submitter"}).json()
    secret = made["token"]
    assert secret.startswith("vgl_") and len(secret) > 40
    listed = svc.get("/api/v1/tokens", headers=adm).json()["tokens"]
    assert all("token" not in t for t in listed)
    with core.store.engine.connect() as conn:
        dump = json.dumps([list(r) for r in conn.execute(text("SELECT * FROM api_tokens"))],
                          default=str)
    assert secret not in dump and secret[10:] not in dump  # only the hash and a prefix
    assert svc.get("/api/v1/me", headers=auth(secret)).json() == {
        "token_id": made["id"], "name": "bot", "role": "submitter"}
    with core.store.read() as s:
        assert s.get(ApiToken, made["id"]).last_used_at is not None
    assert svc.delete(f"/api/v1/tokens/{made['id']}", headers=adm).json()["active"] is False
    r = svc.get("/api/v1/me", headers=auth(secret))
    assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]
    assert svc.post("/api/v1/tokens", headers=adm,
                    json={"name": "x", "role": "root"}).status_code == 422


@pytest.mark.parametrize("path,method,allowed", [
    ("/api/v1/tokens", "GET", {"admin"}),
    ("/api/v1/banks", "GET", {"admin", "curator", "reviewer"}),
    ("/api/v1/banks/none", "GET", {"admin", "curator"}),
    ("/api/v1/review/cases", "GET", {"admin", "reviewer"}),
    ("/api/v1/audit", "GET", {"admin", "curator"}),
    ("/api/v1/rules", "GET", {"admin"}),
    ("/api/v1/submissions", "GET", {"admin", "curator", "reviewer"}),
    ("/api/v1/match/signals", "POST", {"admin", "submitter"}),
])
def test_role_matrix(svc, tokens, path, method, allowed):
    for role in ROLES:
        r = svc.request(method, path, headers=auth(tokens[role]),
                        json={"signals": ["md5:" + "0" * 32]} if method == "POST" else None)
        if role in allowed:
            assert r.status_code in (200, 404), (role, r.status_code, r.text)
        else:
            assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", (role, r.text)


def test_cli_token_commands(core):
    base = ["--data-dir", str(core.settings.data_dir), "--database-url", core.store.url]
    run = CliRunner().invoke
    r = run(cli_app, [*base, "token", "create", "--name", "ops", "--role", "curator", "--json"])
    made = json.loads(r.stdout)
    assert r.exit_code == 0 and made["token"].startswith("vgl_")
    r = run(cli_app, [*base, "token", "list", "--json"])
    (row,) = [json.loads(x) for x in r.stdout.splitlines()]
    assert "token" not in row and row["name"] == "ops" and row["active"]
    assert run(cli_app, [*base, "token", "revoke", str(made["id"])]).exit_code == 0
    assert run(cli_app, [*base, "token", "create", "--name", "x", "--role", "god"]).exit_code == 2
    assert run(cli_app, [*base, "token", "revoke", "999"]).exit_code == 2
    with core.store.read() as s:
        assert s.scalar(select(ApiToken.revoked_at)) is not None


def _login(svc, token: str):
    form = svc.get("/login")
    nonce = re.search(r'name="login_csrf" value="([^"]+)"', form.text).group(1)
    return svc.post("/login", data={"token": token, "login_csrf": nonce, "next": "/queue"})


def test_ui_session_cookie_and_csrf(svc, tokens, core):
    assert svc.get("/queue").status_code == 303  # to /login
    bad = _login(svc, "vgl_wrong")
    assert bad.status_code == 401 and "not valid" in bad.text
    r = _login(svc, tokens["reviewer"])
    assert r.status_code == 303 and r.headers["location"] == "/queue"
    cookie = [h for k, h in r.headers.multi_items() if k == "set-cookie" and "vigil_session" in h][0]
    low = cookie.lower()
    assert "httponly" in low and "samesite=strict" in low and "secure" in low
    page = svc.get("/queue")
    assert page.status_code == 200 and "Review queue" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    # a form post without the CSRF field is refused
    r = svc.post("/cases/1/claim", data={})
    assert r.status_code == 403 and "CSRF" in r.text
    # a tampered cookie is no session
    value = svc.cookies.get("vigil_session")
    svc.cookies.clear()
    svc.cookies.set("vigil_session", value[:-2] + ("00" if not value.endswith("00") else "11"))
    assert svc.get("/queue").status_code == 303
    svc.cookies.clear()
    svc.cookies.set("vigil_session", value)
    assert svc.get("/queue").status_code == 200
    # the wrong role for a page: 403
    assert svc.get("/actions").status_code == 403
    # revoking the token ends the session at once
    tid = svc.get("/api/v1/me", headers=auth(tokens["reviewer"])).json()["token_id"]
    svc.delete(f"/api/v1/tokens/{tid}", headers=auth(tokens["admin"]))
    assert svc.get("/queue").status_code == 303
    # login form itself is CSRF-protected (double submit)
    svc.cookies.clear()
    r = svc.post("/login", data={"token": tokens["admin"], "login_csrf": "forged"})
    assert r.status_code == 403
    # no open redirect after sign-in
    form = svc.get("/login")
    nonce = re.search(r'name="login_csrf" value="([^"]+)"', form.text).group(1)
    r = svc.post("/login", data={"token": tokens["admin"], "login_csrf": nonce,
                                 "next": "//evil.example/"})
    assert r.headers["location"] == "/queue"
