"""Models for the robust tier: the payloads behind ``orb`` signals.

An ``orb`` signal's value is the BLAKE2b-128 digest of its payload (ORB keypoints and descriptors,
~9 KB; see :mod:`vigil.signals.robust`), far too large for the 256-character ``signals.value``
column. Payloads are content-addressed here, keyed by that digest: the signal row and its payload
are written in one transaction, the same payload banked twice is stored once, and no foreign key
ties a payload to one signal row (signals are never deleted, only disabled, so payloads are never
orphaned by normal use).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from vigil.store.models import Base, utcnow

__all__ = ["RobustPayload"]


class RobustPayload(Base):
    __tablename__ = "robust_payloads"
    digest: Mapped[str] = mapped_column(String(32), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
