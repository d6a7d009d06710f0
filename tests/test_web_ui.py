"""The review UI in a real browser: Debian's Chromium driven by Playwright (no browser download),
against ``vigil serve``'s app under uvicorn on 127.0.0.1. Sign in with a token, see a blurred
greyscale item, reveal it, see it re-blur on leaving, decide, and find the decision in the audit
log. Screenshots go to tests/artifacts/ (git-ignored)."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from test_api_support import service_settings

from vigil.api import create_app
from vigil.config import Settings
from vigil.core.app import Vigil
from vigil.core.auth import create_token

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run"]

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path):
    import uvicorn

    vigil = Vigil(Settings(data_dir=tmp_path / "data"))
    app = create_app(vigil, service_settings(exposure_cap=10))
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                        lifespan="on"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started
    try:
        yield f"http://127.0.0.1:{port}", vigil
    finally:
        srv.should_exit = True
        thread.join(timeout=20)
        vigil.close()


def filter_of(page, selector: str) -> str:
    return page.eval_on_selector(selector, "el => getComputedStyle(el).filter")


def test_review_in_the_browser(server, photos):
    from playwright.sync_api import sync_playwright

    base, vigil = server
    toks = {r: create_token(vigil.store, f"{r}-ui", r)["token"] for r in
            ("admin", "curator", "reviewer", "submitter")}
    with httpx.Client(base_url=base, timeout=30) as api:
        h = {"Authorization": f"Bearer {toks['curator']}"}
        assert api.post("/api/v1/banks", json={"name": "known"}, headers=h).status_code == 201
        assert api.post("/api/v1/banks/known/entries/upload", headers=h,
                        files={"file": ("k.jpg", photos[3].read_bytes(), "image/jpeg")},
                        data={"label": ["severity=critical", "group=ExampleGroup"]}).status_code == 201
        r = api.post("/api/v1/match", headers={"Authorization": f"Bearer {toks['submitter']}"},
                     files={"file": ("up.jpg", photos[3].read_bytes(), "image/jpeg")})
        assert r.json()["matches"]
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(base + "/queue")
            assert "/login" in page.url
            page.fill("#token", toks["reviewer"])
            page.click("#signin")
            page.wait_for_url(base + "/queue")
            page.click("#cases a")
            page.wait_for_selector(".media-box img")
            # labels and evidence come before the media
            html = page.content()
            assert html.index("Labels") < html.index("Match evidence") < html.index("Media")
            page.wait_for_function("document.querySelector('.media-box img').complete")
            f = filter_of(page, ".media-box img")
            assert "blur" in f and "grayscale(1)" in f, f
            assert "/preview" in page.get_attribute(".media-box img", "src")
            page.screenshot(path=str(ARTIFACTS / "1-blurred.png"), full_page=True)
            page.click("button.reveal")
            page.wait_for_selector(".media-box.revealed")
            assert filter_of(page, ".media-box img") == "none"
            assert "/full?" in page.get_attribute(".media-box img", "src")
            assert page.inner_text("#exposure") == "1"
            page.screenshot(path=str(ARTIFACTS / "2-revealed.png"), full_page=True)
            page.mouse.move(5, 5)  # leave the item: it re-blurs
            page.wait_for_selector(".media-box:not(.revealed)")
            assert "blur" in filter_of(page, ".media-box img")
            assert page.eval_on_selector_all("video[autoplay], audio[autoplay]", "els => els.length") == 0
            page.check("input[value=confirm]")
            page.select_option("#reason_code", "known_release")
            page.fill("textarea[name=reason_text]", "matches the known release")
            page.click("#decide")
            page.wait_for_selector(".decision")
            assert "confirm" in page.inner_text(".decision")
            page.screenshot(path=str(ARTIFACTS / "3-decided.png"), full_page=True)

            admin = browser.new_context().new_page()
            admin.goto(base + "/login")
            admin.fill("#token", toks["admin"])
            admin.click("#signin")
            admin.wait_for_url(base + "/queue")
            admin.goto(base + "/audit")
            text = admin.inner_text("#audit")
            assert "review.decide" in text and "reviewer:reviewer-ui" in text
            assert "Hash chain verified" in admin.inner_text("#verify")
            admin.screenshot(path=str(ARTIFACTS / "4-audit.png"), full_page=True)
        finally:
            browser.close()
