"""The service face: FastAPI app (JSON API under /api/v1 and the review UI at /)."""

from __future__ import annotations

from vigil.api.app import create_app

__all__ = ["create_app"]
