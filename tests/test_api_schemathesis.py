"""Property-based API test: schemathesis generates requests from /api/v1/openapi.json and sends
them through the ASGI app in-process, as an admin (so they reach the handlers, not only the auth
check); no input may produce a server error. Bounded so it runs in well under a minute."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from test_api_support import Client, service_settings

from vigil.api import create_app
from vigil.config import Settings
from vigil.core.app import Vigil
from vigil.core.auth import create_token


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    data = tmp_path_factory.mktemp("st") / "data"
    vigil = Vigil(Settings(data_dir=data))
    token = create_token(vigil.store, "fuzz", "admin")["token"]
    vigil.create_bank("known")
    app = create_app(vigil, service_settings())
    client = Client(app)  # runs the lifespan (indexes loaded, as under `vigil serve`)
    yield app, token, client
    client.close()
    vigil.close()


#: examples per operation; about 40 operations
EXAMPLES = 12
#: endpoints whose every call changes what others see in ways that hide bugs behind 401s: a fuzzed
#: DELETE /tokens/{id} could revoke the fuzzing token itself
SKIP = {("DELETE", "/api/v1/tokens/{token_id}")}


def test_no_input_produces_a_server_error(service):
    app, token, client = service
    schema = schemathesis.openapi.from_dict(app.openapi())
    failures: list[str] = []
    statuses: list[int] = []
    if True:
        for result in schema.get_all_operations():
            op = result.ok()
            if (op.method.upper(), op.path) in SKIP:
                continue

            @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy())
            def run(case: schemathesis.Case) -> None:
                kw = case.as_transport_kwargs(base_url="https://testserver",
                                              headers={"Authorization": f"Bearer {token}"})
                method, url = kw.pop("method"), kw.pop("url")
                kw.pop("cookies", None)
                kw = {k: v for k, v in kw.items() if k in ("headers", "params", "json", "data",
                                                           "files", "content")}
                if isinstance(kw.get("data"), (bytes, str)):  # requests-style raw body
                    kw["content"] = kw.pop("data")
                resp = client.request(method, url, **kw)
                statuses.append(resp.status_code)
                if resp.status_code >= 500:
                    failures.append(f"{method} {url} -> {resp.status_code}: {resp.text[:200]}")
                assert resp.headers.get("content-type", "").startswith(
                    ("application/json", "image/jpeg", "text/plain", "text/html")), resp.headers
                if resp.status_code >= 400 and resp.headers["content-type"].startswith("application/json"):
                    body = resp.json()
                    assert set(body) == {"error"} and {"code", "message", "details"} <= set(body["error"])

            run()
    assert failures == []
    # the fuzzing reached the handlers: successes and client errors both occurred, many times
    assert len(statuses) > 200
    assert any(200 <= c < 300 for c in statuses) and any(c == 422 for c in statuses)
