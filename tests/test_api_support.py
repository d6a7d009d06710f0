"""Fixtures shared by the service tests (imported by them; this module holds no tests).

``svc`` is the ASGI app around the ``core`` fixture (so every service test runs on SQLite and on
PostgreSQL), driven in-process through ``httpx.ASGITransport`` (a sync wrapper, :class:`Client`) over
``https://testserver`` (the UI
cookie is ``Secure``). Background workers are off: tests drive deliveries and jobs by hand."""

from __future__ import annotations

import io
import typing as t
from pathlib import Path

import anyio.from_thread
import httpx
import pytest
from PIL import Image, ImageOps

from vigil.api import create_app
from vigil.api.settings import ServiceSettings
from vigil.core.actions import DeliveryPolicy
from vigil.core.auth import create_token

ROLES = ("admin", "curator", "reviewer", "submitter")


def service_settings(**kw: t.Any) -> ServiceSettings:
    base: dict[str, t.Any] = dict(workers=False, exposure_cap=3,
                                  delivery=DeliveryPolicy(max_attempts=3, base_delay_s=0.0,
                                                          timeout_s=5))
    base.update(kw)
    return ServiceSettings(**base)


class Client:
    """A synchronous client for an ASGI app, in-process: an event loop in a helper thread runs
    the app's lifespan and an ``httpx.AsyncClient`` on ``httpx.ASGITransport``. Server errors
    raise in the test (ASGITransport re-raises them)."""

    def __init__(self, app: t.Any, base_url: str = "https://testserver") -> None:
        self.app = app
        self._portal_cm = anyio.from_thread.start_blocking_portal()
        self.portal = self._portal_cm.__enter__()
        self._lifespan = app.router.lifespan_context(app)
        self.portal.call(self._lifespan.__aenter__)
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)

    def request(self, method: str, url: str, **kw: t.Any) -> httpx.Response:
        async def go() -> httpx.Response:
            return await self.client.request(method, url, **kw)

        return self.portal.call(go)

    def get(self, url: str, **kw: t.Any) -> httpx.Response:
        return self.request("GET", url, **kw)

    def post(self, url: str, **kw: t.Any) -> httpx.Response:
        return self.request("POST", url, **kw)

    def patch(self, url: str, **kw: t.Any) -> httpx.Response:
        return self.request("PATCH", url, **kw)

    def delete(self, url: str, **kw: t.Any) -> httpx.Response:
        return self.request("DELETE", url, **kw)

    @property
    def cookies(self) -> httpx.Cookies:
        return self.client.cookies

    def close(self) -> None:
        try:
            self.portal.call(self.client.aclose)
            self.portal.call(self._lifespan.__aexit__, None, None, None)
        finally:
            self._portal_cm.__exit__(None, None, None)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture
def svc(core) -> t.Iterator[Client]:
    with Client(create_app(core, service_settings())) as client:
        yield client


@pytest.fixture
def tokens(core) -> dict[str, str]:
    return {r: create_token(core.store, f"{r}-1", r)["token"] for r in ROLES}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def variants(photo: Path) -> list[bytes]:
    """Edited re-uploads of one photo: re-encoded, resized, mirrored, bordered, lower quality."""
    with Image.open(photo) as im:
        im = im.convert("RGB")
        im.thumbnail((400, 400))  # small uploads keep the tests fast
        return [
            jpeg(im, 80),
            jpeg(im.resize((im.width // 2, im.height // 2))),
            jpeg(ImageOps.mirror(im)),
            jpeg(ImageOps.expand(im, border=40, fill=(0, 0, 0))),
            jpeg(im, 40),
        ]


def bank_with_photo(client: Client, tokens: dict[str, str], photo: Path, bank: str = "known",
                    labels: t.Sequence[str] = ("severity=high", "group=ExampleGroup",
                                               "release=r1", "category=glorification")) -> int:
    r = client.post("/api/v1/banks", json={"name": bank}, headers=auth(tokens["curator"]))
    assert r.status_code in (201, 409), r.text
    r = client.post(f"/api/v1/banks/{bank}/entries/upload", headers=auth(tokens["curator"]),
                    files={"file": (photo.name, photo.read_bytes(), "image/jpeg")},
                    data={"label": list(labels)})
    assert r.status_code == 201, r.text
    return int(r.json()["entry_id"])


def upload(client: Client, token: str, data: bytes, name: str = "up.jpg") -> t.Any:
    return client.post("/api/v1/match", headers=auth(token),
                       files={"file": (name, data, "image/jpeg")})
