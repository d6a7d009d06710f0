"""The fast path of ``POST /api/v1/match/signals``, the service's hottest call.

A platform checks every upload's hashes here, hundreds of times a second. Through FastAPI, a
one-signal lookup spent more CPU in the framework (middleware chain, routing, dependency
resolution, body validation, response encoding) than in matching and recording it. This pure
ASGI layer, inside the metrics and upload-limit guard, answers the *ordinary* request itself and
hands everything else to the full app, unchanged:

* served here: ``Content-Type: application/json``; a body under 1 MiB that is a JSON object
  with ``signals`` (1 to 1000 strings) and optionally ``record`` (a JSON boolean); a bearer token
  this process verified in the last few seconds (the same cache as
  :func:`vigil.api.deps.caller`) whose role may look up (submitter or admin);
* handed on, with the body replayed: anything else — no or unknown token, another role, other
  types or extra coercions pydantic would apply, oversized or malformed bodies — so every error,
  status and message is exactly FastAPI's; and a lookup that raised (a busy database): matching
  has no side effect and recording is one transaction, so the full app's retry is clean and
  reports the error in the usual shape.

The answer is the same function's (:func:`vigil.api.routes_content.lookup_signals`) rendered
the same way (compact JSON, UTF-8), so a client cannot tell which path served it;
``tests/test_api_workers.py`` checks both paths give identical bodies.
"""

from __future__ import annotations

import json
import logging
import time
import typing as t

from vigil.core.auth import Principal, hash_token

if t.TYPE_CHECKING:
    from vigil.api.app import Service

__all__ = ["SignalLookupFastPath"]

log = logging.getLogger(__name__)
MAX_BODY = 1 << 20


def _jsonable(value: t.Any) -> t.Any:
    """numpy scalars and arrays (from evidence) as plain numbers and lists."""
    for attr in ("tolist", "item"):
        if hasattr(value, attr):
            return getattr(value, attr)()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def render(content: t.Any) -> bytes:
    return json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None,
                      separators=(",", ":"), default=_jsonable).encode("utf-8")


def _parse(body: bytes) -> tuple[list[str], bool] | None:
    """The request, when it is exactly what pydantic would accept without coercing; else None."""
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(obj, dict) or set(obj) - {"signals", "record"}:
        return None
    signals = obj.get("signals")
    record = obj.get("record", True)
    from vigil.api.routes_content import MAX_SIGNALS

    if (not isinstance(signals, list) or not 1 <= len(signals) <= MAX_SIGNALS
            or not all(isinstance(x, str) for x in signals) or not isinstance(record, bool)):
        return None
    return signals, record


class SignalLookupFastPath:
    def __init__(self, app: t.Any, service: Service, path: str) -> None:
        self.app = app
        self.service = service
        self.path = path
        self.route: t.Any = None  # the FastAPI route, for the metrics' route label
        self.served = 0

    def _principal(self, scope: dict[str, t.Any]) -> Principal | None:
        header = b""
        for k, v in scope.get("headers") or ():
            if k == b"authorization":
                header = v
            elif k == b"content-type" and not v.lower().startswith(b"application/json"):
                return None
        scheme, _, token = header.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        hit = self.service.auth_cache.get(hash_token(token.strip()))
        if hit is None or hit[1] <= time.monotonic():
            return None  # the full app verifies it (and fills the cache)
        p = t.cast(Principal, hit[0])
        return p if p.allowed("submitter") else None

    async def __call__(self, scope: dict[str, t.Any], receive: t.Any, send: t.Any) -> None:
        if (scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.path
                or not any(k == b"content-type" for k, _ in scope.get("headers") or ())):
            await self.app(scope, receive, send)
            return
        messages: list[dict[str, t.Any]] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > MAX_BODY or not message.get("more_body", False):
                break
        request = None
        if messages[-1]["type"] == "http.request" and not messages[-1].get("more_body", False) \
                and size <= MAX_BODY and self._principal(scope) is not None:
            request = _parse(b"".join(m.get("body", b"") for m in messages))
        if request is not None:
            from vigil.api.routes_content import lookup_signals

            try:
                content = await lookup_signals(self.service, request[0], request[1])
            except Exception:  # noqa: BLE001 - the full app answers it in the usual shape
                log.debug("fast path lookup failed; handing on", exc_info=True)
            else:
                body = render(content)
                if self.route is None:  # the FastAPI route, so metrics name it the same
                    self.route = next((r for r in getattr(scope.get("app"), "routes", ())
                                       if getattr(r, "path", None) == self.path), False)
                if self.route:
                    scope["route"] = self.route
                self.served += 1
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, _replay(messages, receive), send)


def _replay(messages: list[dict[str, t.Any]], receive: t.Any) -> t.Any:
    """A ``receive`` that gives back what was already read, then reads on."""
    pending = list(messages)

    async def again() -> dict[str, t.Any]:
        if pending:
            return pending.pop(0)
        return t.cast(dict[str, t.Any], await receive())

    return again
