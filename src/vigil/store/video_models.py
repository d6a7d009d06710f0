"""Models for video entries: per-frame signals of banked videos.

(Filled in by the video work; see issue 5.)
"""

from __future__ import annotations
