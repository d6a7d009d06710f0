"""Retention of review media: thumbnails are kept for a limited time, then deleted.

Banks never hold media. The only media Vigil keeps are the downscaled review thumbnails under
``<data>/review-media`` (see :mod:`vigil.core.review`). :func:`purge` deletes every thumbnail of a
review item older than ``days`` (default 30) and clears the item's ``media_path``, then deletes
files in the folder that no item refers to and that are older than the limit (left behind by a
transaction that rolled back). The service runs it every hour (``RetentionWorker``); ``vigil
retention purge`` runs it by hand. Each purge that removed something is audited.
"""

from __future__ import annotations

import datetime as dt
import logging
import typing as t
from pathlib import Path

from sqlalchemy import select

from vigil.core import audit
from vigil.core.background import BackgroundLoop
from vigil.core.review import MEDIA_DIR
from vigil.store.db import Store
from vigil.store.models import utcnow
from vigil.store.service_models import ReviewItem

__all__ = ["DEFAULT_DAYS", "RetentionWorker", "purge"]

log = logging.getLogger(__name__)
DEFAULT_DAYS = 30


def purge(store: Store, data_dir: Path, days: float = DEFAULT_DAYS,
          now: dt.datetime | None = None) -> dict[str, t.Any]:
    now = now or utcnow()
    cutoff = now - dt.timedelta(days=days)
    removed = 0
    with store.transaction() as s:
        items = s.scalars(select(ReviewItem).where(ReviewItem.media_path.is_not(None),
                                                   ReviewItem.created_at < cutoff)).all()
        for it in items:
            assert it.media_path is not None
            (data_dir / it.media_path).unlink(missing_ok=True)
            it.media_path = None
            removed += 1
        kept = set(s.scalars(select(ReviewItem.media_path).where(ReviewItem.media_path.is_not(None))))
        orphans = 0
        folder = data_dir / MEDIA_DIR
        if folder.is_dir():
            for f in folder.iterdir():
                rel = f"{MEDIA_DIR}/{f.name}"
                if rel not in kept and f.stat().st_mtime < cutoff.timestamp():
                    f.unlink(missing_ok=True)
                    orphans += 1
        if removed or orphans:
            audit.append(s, "system:retention", "retention.purge", MEDIA_DIR,
                         {"items": removed, "orphans": orphans, "days": days})
    return {"purged_items": removed, "purged_orphans": orphans, "days": days,
            "cutoff": audit._ts(cutoff) + "Z"}


class RetentionWorker(BackgroundLoop):
    """Runs :func:`purge` every ``interval_s`` seconds in a background thread."""

    thread_name = "vigil-retention"
    what = "retention purge"
    min_wait_s = 1.0

    def __init__(self, store: Store, data_dir: Path, days: float, interval_s: float = 3600) -> None:
        super().__init__(interval_s)
        self.store, self.data_dir, self.days = store, data_dir, days

    def run_round(self) -> None:
        purge(self.store, self.data_dir, self.days)
