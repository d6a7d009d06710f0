"""Settings of the service face, read from the environment (nothing at import time).

========================== ========= =====================================================
variable                   default   meaning
========================== ========= =====================================================
VIGIL_MAX_UPLOAD           200 MB    largest request body, in bytes (413 above)
VIGIL_EXPOSURE_CAP         200       media reveals per reviewer per UTC day
VIGIL_RETENTION_DAYS       30        days review thumbnails are kept
VIGIL_SECURE_COOKIES       1         mark the UI session cookie ``Secure``
VIGIL_SESSION_HOURS        12        UI session lifetime
VIGIL_WEBHOOK_ATTEMPTS     6         attempts before a delivery is dead-lettered
VIGIL_WEBHOOK_BASE_DELAY   5         seconds before the first retry (doubles each time)
========================== ========= =====================================================
"""

from __future__ import annotations

import dataclasses
import os

from vigil.config import env_number
from vigil.core.actions import DeliveryPolicy

__all__ = ["ServiceSettings"]


def _num(name: str, default: float) -> float:
    return env_number(name, default, allow_zero=True)


@dataclasses.dataclass(frozen=True)
class ServiceSettings:
    max_upload_bytes: int = 200 * 1024 * 1024
    exposure_cap: int = 200
    retention_days: float = 30
    secure_cookies: bool = True
    session_hours: float = 12
    delivery: DeliveryPolicy = DeliveryPolicy()
    #: run the background workers (actions, jobs, retention); tests may drive them by hand
    workers: bool = True
    action_interval_s: float = 1.0
    retention_interval_s: float = 3600
    #: how often to pick up bank changes made by other processes (the CLI), between requests
    index_sync_s: float = 2.0
    #: at most this old a look at the store's change marks may be when a lookup is matched
    #: (Vigil.refresh_interval_s); 0: look before every match. ``from_env`` defaults to 50 ms
    refresh_interval_s: float = 0.0

    @classmethod
    def from_env(cls) -> ServiceSettings:
        base = cls()
        return cls(
            max_upload_bytes=int(_num("VIGIL_MAX_UPLOAD", base.max_upload_bytes)),
            exposure_cap=int(_num("VIGIL_EXPOSURE_CAP", base.exposure_cap)),
            retention_days=_num("VIGIL_RETENTION_DAYS", base.retention_days),
            secure_cookies=os.environ.get("VIGIL_SECURE_COOKIES", "1") != "0",
            session_hours=_num("VIGIL_SESSION_HOURS", base.session_hours),
            refresh_interval_s=_num("VIGIL_REFRESH_INTERVAL", 0.05),
            delivery=DeliveryPolicy(
                max_attempts=max(1, int(_num("VIGIL_WEBHOOK_ATTEMPTS", base.delivery.max_attempts))),
                base_delay_s=_num("VIGIL_WEBHOOK_BASE_DELAY", base.delivery.base_delay_s),
            ),
        )
