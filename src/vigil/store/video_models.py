"""Models for video entries: the frame signals of banked videos, per-bank video settings, and the
matched segments that are the evidence of a video match.

A video entry is an ordinary :class:`~vigil.store.models.Entry` (with its byte hashes as
signals, when it was hashed from a file) plus one ``video_signals`` row holding all its frame
signals packed into one blob (:meth:`vigil.signals.vpdq.VideoSignals.pack`, about 43 bytes a
frame). One row per video rather than one per frame keeps the store near the packed size: at
the default rate that is under 64 bytes per second of video, where a row per frame would cost
more in row and index overhead than the 32-byte hash itself.

Index changes for video entries go through the same ``index_log`` as every other signal, with
``signal_type = "video"`` and ``signal_id`` holding the *entry* id whose frames were added or
removed (see :mod:`vigil.core.video`).
"""

from __future__ import annotations

import typing as t

from sqlalchemy import Float, ForeignKey, Integer, LargeBinary
from sqlalchemy.orm import Mapped, mapped_column, relationship

from vigil.store.models import Base, BigId

__all__ = ["VideoBankSettings", "VideoSegmentRow", "VideoSignalsRow"]


class VideoSignalsRow(Base):
    __tablename__ = "video_signals"
    entry_id: Mapped[int] = mapped_column(
        ForeignKey("entries.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    #: number of frames in ``data`` (also in its header; here for queries and summaries)
    frame_count: Mapped[int] = mapped_column(Integer)
    duration: Mapped[float] = mapped_column(Float)
    #: the packed frame signals, see vigil.signals.vpdq.VideoSignals.pack
    data: Mapped[bytes] = mapped_column(LargeBinary)


class VideoBankSettings(Base):
    """Per-bank video matching settings; a bank without a row uses the defaults."""

    __tablename__ = "video_bank_settings"
    bank_id: Mapped[int] = mapped_column(
        ForeignKey("banks.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    #: an aligned segment must last at least this many seconds (of the query)...
    min_seconds: Mapped[float] = mapped_column(Float)
    #: ...or cover at least this share of the reference video (None: not used)
    min_share: Mapped[float | None] = mapped_column(Float, default=None)
    #: largest PDQ distance for two frames to count as the same picture
    frame_threshold: Mapped[int] = mapped_column(Integer)


class VideoSegmentRow(Base):
    """One matched segment of a recorded video match."""

    __tablename__ = "video_segments"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    match_id: Mapped[int] = mapped_column(ForeignKey("matches.id", ondelete="CASCADE"), index=True)
    query_start: Mapped[float] = mapped_column(Float)
    query_end: Mapped[float] = mapped_column(Float)
    ref_start: Mapped[float] = mapped_column(Float)
    ref_end: Mapped[float] = mapped_column(Float)
    score: Mapped[float] = mapped_column(Float)
    frames: Mapped[int] = mapped_column(Integer)

    match: Mapped[t.Any] = relationship("Match")
