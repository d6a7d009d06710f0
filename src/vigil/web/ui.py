"""The reviewers' web UI: server-rendered pages over the same core as the API.

Sign-in: the login form takes an API token (double-submit CSRF cookie on the form itself). On
success the browser gets ``vigil_session``: ``<token id>.<expiry>.<nonce>.<HMAC>``, signed with
the store's session secret, ``HttpOnly``, ``SameSite=Strict`` and ``Secure`` (configurable for
plain-HTTP test rigs). The session dies with its token: every request re-reads the token, so a
revoked token signs the browser out at once. Every form carries a CSRF field, and the media reveal
call a header, both derived from the session's nonce (HMAC), checked on every POST.

Reviewer safety: the case page shows labels and match evidence first. Media is a server-side
blurred, greyscale preview by default (``/ui/media/<id>/preview``); a click calls
``POST /ui/media/<id>/reveal``, which counts one exposure against the reviewer's daily cap and
returns a short-lived grant URL for the real thumbnail; leaving the item (mouse out, focus out,
tab hidden) swaps the preview back. Past the cap no media is shown at all. Audio/video elements
are always muted, never autoplay.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import secrets
import time
import typing as t
import urllib.parse
from pathlib import Path

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from vigil.core import actions, audit, review
from vigil.core import banks as bankops
from vigil.core.auth import Principal, authenticate, principal_for
from vigil.errors import Forbidden, NotFound, Unauthorized, UsageError, VigilError

if t.TYPE_CHECKING:
    from vigil.api.app import Service

__all__ = ["mount_ui"]

HERE = Path(__file__).parent
COOKIE = "vigil_session"
LOGIN_COOKIE = "vigil_login"
GRANT_TTL_S = 60
CSP = ("default-src 'self'; img-src 'self'; script-src 'self'; style-src 'self'; "
       "media-src 'none'; object-src 'none'; frame-ancestors 'none'; form-action 'self'; "
       "base-uri 'none'")


class _Redirect(Exception):
    def __init__(self, url: str) -> None:
        self.url = url


def _mac(secret: bytes, msg: str) -> str:
    return hmac.new(secret, msg.encode(), hashlib.sha256).hexdigest()


class Session(t.NamedTuple):
    principal: Principal
    nonce: str
    csrf: str


def mount_ui(app: FastAPI, service: Service) -> None:
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    secure = service.settings.secure_cookies

    def csrf_for(nonce: str) -> str:
        return _mac(service.secret, "csrf." + nonce)[:40]

    def session(request: Request) -> Session | None:
        raw = request.cookies.get(COOKIE, "")
        parts = raw.split(".")
        if len(parts) != 4:
            return None
        tid, exp, nonce, sig = parts
        if not hmac.compare_digest(_mac(service.secret, f"{tid}.{exp}.{nonce}"), sig):
            return None
        if not (tid.isdigit() and exp.isdigit()) or int(exp) < time.time():
            return None
        p = principal_for(service.vigil.store, int(tid))
        return None if p is None else Session(p, nonce, csrf_for(nonce))

    def need(request: Request, *roles: str) -> Session:
        sess = session(request)
        if sess is None:
            raise _Redirect("/login?next=" + urllib.parse.quote(request.url.path))
        sess.principal.require(*roles)
        return sess

    async def check_csrf(request: Request, sess: Session) -> dict[str, t.Any]:
        form = dict(await request.form())
        token = str(form.get("csrf") or request.headers.get("x-csrf-token") or "")
        if not hmac.compare_digest(token, sess.csrf):
            raise Forbidden("the form expired or did not come from this site (CSRF check failed)")
        return form

    def page(request: Request, name: str, sess: Session | None, code: int = 200,
             **ctx: t.Any) -> HTMLResponse:
        me = sess.principal if sess else None
        resp = templates.TemplateResponse(request, name, {"sess": sess, "me": me, **ctx},
                                          status_code=code)
        resp.headers["Content-Security-Policy"] = CSP
        resp.headers["X-Frame-Options"] = "DENY"
        resp.headers["Cache-Control"] = "no-store"
        resp.headers["Referrer-Policy"] = "no-referrer"
        return resp

    @app.exception_handler(_Redirect)
    async def redirect(request: Request, exc: _Redirect) -> Response:
        return RedirectResponse(exc.url, status_code=303)

    def ui_error(request: Request, exc: VigilError, sess: Session | None) -> Response:
        return page(request, "error.html", sess, code=exc.status, error=exc)

    # -- sign in / out ---------------------------------------------------------------------------
    @app.get("/login", include_in_schema=False)
    def login_form(request: Request, next: str = "/queue") -> HTMLResponse:
        nonce = secrets.token_urlsafe(24)
        resp = page(request, "login.html", None, login_csrf=nonce, next=_safe_next(next))
        resp.set_cookie(LOGIN_COOKIE, nonce, httponly=True, samesite="strict", secure=secure,
                        max_age=1800)
        return resp

    @app.post("/login", include_in_schema=False)
    def login(request: Request, token: str = Form(""), login_csrf: str = Form(""),
              next: str = Form("/queue")) -> Response:
        cookie = request.cookies.get(LOGIN_COOKIE, "")
        if not cookie or not hmac.compare_digest(cookie, login_csrf):
            return page(request, "login.html", None, code=403, login_csrf=cookie,
                        error="the sign-in form expired; try again", next=_safe_next(next))
        try:
            p = authenticate(service.vigil.store, token.strip())
        except Unauthorized as exc:
            return page(request, "login.html", None, code=401, login_csrf=cookie,
                        error=exc.message, next=_safe_next(next))
        exp = int(time.time() + service.settings.session_hours * 3600)
        nonce = secrets.token_urlsafe(18).replace(".", "_")
        value = f"{p.token_id}.{exp}.{nonce}"
        resp = RedirectResponse(_safe_next(next), status_code=303)
        resp.set_cookie(COOKIE, f"{value}.{_mac(service.secret, value)}", httponly=True,
                        samesite="strict", secure=secure, max_age=exp - int(time.time()), path="/")
        resp.delete_cookie(LOGIN_COOKIE)
        return resp

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        sess = session(request)
        if sess is not None:
            await check_csrf(request, sess)
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(COOKIE, path="/")
        return resp

    # -- queue and cases ---------------------------------------------------------------------
    @app.get("/queue", include_in_schema=False)
    def queue(request: Request, status: str = "open") -> Response:
        sess = need(request, "reviewer")
        status = status if status in ("open", "decided") else "open"
        with service.vigil.store.read() as s:
            cases = review.list_cases(s, status=status, limit=200)
            exposure = review.exposure_today(s, sess.principal.name)
        return page(request, "queue.html", sess, cases=cases, status=status,
                    exposure=exposure, cap=service.settings.exposure_cap)

    @app.get("/cases/{case_id}", include_in_schema=False)
    def case_page(request: Request, case_id: int) -> Response:
        sess = need(request, "reviewer")
        try:
            with service.vigil.store.read() as s:
                case = review.case_detail(s, case_id)
                exposure = review.exposure_today(s, sess.principal.name)
            banks = [b for b in service.vigil.list_banks() if b["kind"] == "allow"]
        except VigilError as exc:
            return ui_error(request, exc, sess)
        return page(request, "case.html", sess, case=case, exposure=exposure,
                    cap=service.settings.exposure_cap, reasons=review.REASON_CODES,
                    allow_banks=banks)

    @app.post("/cases/{case_id}/claim", include_in_schema=False)
    async def claim(request: Request, case_id: int) -> Response:
        sess = need(request, "reviewer")
        try:
            await check_csrf(request, sess)
            with service.vigil.store.transaction() as s:
                review.claim(s, case_id, sess.principal.name)
        except VigilError as exc:
            return ui_error(request, exc, sess)
        return RedirectResponse(f"/cases/{case_id}", status_code=303)

    @app.post("/cases/{case_id}/decide", include_in_schema=False)
    async def decide(request: Request, case_id: int) -> Response:
        sess = need(request, "reviewer")
        try:
            form = await check_csrf(request, sess)
            verdict = str(form.get("verdict", ""))
            with audit.acting_as(sess.principal.actor), service.index_lock:
                review.decide(
                    service.vigil, case_id, sess.principal.actor, verdict,
                    str(form.get("reason_code", "")), str(form.get("reason_text", ""))[:5000],
                    disable_entry=verdict == "false_positive" and form.get("disable_entry") == "on",
                    allow_bank=(str(form.get("allow_bank")) or None)
                    if verdict == "false_positive" and form.get("allow_bank") else None)
            service.actions.wake()
        except VigilError as exc:
            return ui_error(request, exc, sess)
        return RedirectResponse(f"/cases/{case_id}", status_code=303)

    # -- media -------------------------------------------------------------------------------
    def _media_file(item_id: int) -> Path:
        with service.vigil.store.read() as s:
            from vigil.store.service_models import ReviewItem

            item = s.get(ReviewItem, item_id)
            if item is None or item.media_path is None:
                raise NotFound(f"no media for item {item_id}")
            return service.vigil.settings.data_dir / item.media_path

    @app.get("/ui/media/{item_id}/preview", include_in_schema=False)
    def preview(request: Request, item_id: int) -> Response:
        sess = need(request, "reviewer")
        try:
            with service.vigil.store.read() as s:
                if review.exposure_today(s, sess.principal.name) >= service.settings.exposure_cap:
                    raise review.ExposureCapReached("daily exposure cap reached")
            data = _blurred(_media_file(item_id))
        except VigilError as exc:
            return JSONResponse({"error": exc.to_dict()}, status_code=exc.status)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    @app.post("/ui/media/{item_id}/reveal", include_in_schema=False)
    async def reveal(request: Request, item_id: int) -> Response:
        sess = need(request, "reviewer")
        try:
            await check_csrf(request, sess)
            with service.vigil.store.transaction() as s:
                _, count = review.reveal(s, item_id, sess.principal.name,
                                         service.settings.exposure_cap)
        except VigilError as exc:
            return JSONResponse({"error": exc.to_dict()}, status_code=exc.status)
        exp = int(time.time()) + GRANT_TTL_S
        grant = _mac(service.secret, f"grant.{item_id}.{sess.principal.token_id}.{exp}")
        return JSONResponse({"url": f"/ui/media/{item_id}/full?exp={exp}&g={grant}",
                             "today": count, "cap": service.settings.exposure_cap},
                            headers={"Cache-Control": "no-store"})

    @app.get("/ui/media/{item_id}/full", include_in_schema=False)
    def full(request: Request, item_id: int, exp: int = 0, g: str = "") -> Response:
        sess = need(request, "reviewer")
        want = _mac(service.secret, f"grant.{item_id}.{sess.principal.token_id}.{exp}")
        if exp < time.time() or not hmac.compare_digest(want, g):
            return JSONResponse({"error": Forbidden("reveal the item first").to_dict()},
                                status_code=403)
        try:
            data = _media_file(item_id).read_bytes()
        except (VigilError, OSError):
            return JSONResponse({"error": NotFound("media is gone").to_dict()}, status_code=404)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    # -- banks (curators) ----------------------------------------------------------------------
    @app.get("/banks", include_in_schema=False)
    def banks_page(request: Request) -> Response:
        sess = need(request, "curator")
        return page(request, "banks.html", sess, banks=service.vigil.list_banks())

    @app.get("/banks/{name}", include_in_schema=False)
    def bank_page(request: Request, name: str, label: str = "", offset: int = 0) -> Response:
        sess = need(request, "curator")
        from sqlalchemy import func, select

        from vigil.store.models import Entry

        offset = max(0, min(offset, 2**62))
        try:
            with service.vigil.store.read() as s:
                bank = bankops.get_bank(s, name)
                info = bankops.bank_summary(s, bank)
                stmt = select(Entry).where(Entry.bank_id == bank.id)
                if label:
                    key, sep, value = label.partition("=")
                    if not sep:
                        raise UsageError("filter with key=value, e.g. severity=high")
                    stmt = stmt.where(Entry.labels[key.strip()].as_string() == value.strip())
                total = s.scalar(select(func.count()).select_from(stmt.subquery()))
                entries = s.scalars(stmt.order_by(Entry.id.desc()).limit(50).offset(offset)).all()
                rows = [{"id": e.id, "enabled": e.enabled, "labels": e.labels,
                         "reference": e.reference} for e in entries]
        except VigilError as exc:
            return ui_error(request, exc, sess)
        return page(request, "bank.html", sess, bank=info, entries=rows, label=label,
                    offset=offset, total=total)

    @app.post("/banks/{name}/entries/{entry_id}/toggle", include_in_schema=False)
    async def toggle(request: Request, name: str, entry_id: int) -> Response:
        sess = need(request, "curator")
        try:
            form = await check_csrf(request, sess)
            with audit.acting_as(sess.principal.actor), service.index_lock:
                service.vigil.set_enabled(name, entry_id, form.get("enable") == "1")
        except VigilError as exc:
            return ui_error(request, exc, sess)
        return RedirectResponse(f"/banks/{urllib.parse.quote(name)}", status_code=303)

    # -- audit and actions -------------------------------------------------------------------
    @app.get("/audit", include_in_schema=False)
    def audit_page(request: Request, before: int | None = None) -> Response:
        sess = need(request, "curator")
        with service.vigil.store.read() as s:
            rows = audit.rows(s, limit=100, before=before if before and before < 2**62 else None)
            report = audit.verify(s)
        return page(request, "audit.html", sess, rows=rows, report=report)

    @app.get("/actions", include_in_schema=False)
    def actions_page(request: Request) -> Response:
        sess = need(request, "admin")
        store = service.vigil.store
        return page(request, "actions.html", sess,
                    dead=actions.list_deliveries(store, "dead", 100),
                    recent=actions.list_deliveries(store, None, 50),
                    webhooks=actions.list_webhooks(store), rules=actions.list_rules(store))

    @app.post("/actions/deliveries/{delivery_id}/retry", include_in_schema=False)
    async def retry(request: Request, delivery_id: int) -> Response:
        sess = need(request, "admin")
        try:
            await check_csrf(request, sess)
            actions.retry(service.vigil.store, delivery_id, sess.principal.actor)
            service.actions.wake()
        except VigilError as exc:
            return ui_error(request, exc, sess)
        return RedirectResponse("/actions", status_code=303)


def _safe_next(url: str) -> str:
    """Only same-site paths: an open redirect after sign-in is a phishing aid."""
    return url if url.startswith("/") and not url.startswith("//") and "\\" not in url else "/queue"


def _blurred(path: Path) -> bytes:
    from PIL import Image, ImageFilter

    try:
        with Image.open(path) as im:
            grey = im.convert("L")
            grey.thumbnail((160, 160))
            small = grey.filter(ImageFilter.GaussianBlur(6))
            out = io.BytesIO()
            small.save(out, "JPEG", quality=60)
            return out.getvalue()
    except OSError as exc:
        raise NotFound("media is gone") from exc
