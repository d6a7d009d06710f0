"""Small test videos made with PyAV in a test's tmp_path (never committed).

A *shot* is a slow pan-and-zoom over one of the bundled sample photos (a "Ken Burns" shot, the
kind of motion the corpus slideshows have), so consecutive sampled frames differ and shots of
different photos are unrelated content. Edits (letterbox, logo, crop, flip) are applied per frame in
NumPy, so the tests need no ffmpeg command line.
"""

from __future__ import annotations

import typing as t
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

import vigil

SAMPLES = sorted((Path(vigil.__file__).parent / "samples" / "images").glob("*.jpg"))

Frame = np.ndarray  # (h, w, 3) uint8 RGB


def shot(photo: int, seconds: float, *, fps: int = 10, size: tuple[int, int] = (320, 240),
         zoom: float = 0.15, pan: float = 0.6) -> list[Frame]:
    """A pan-and-zoom over sample photo ``photo``: ``seconds * fps`` RGB frames (``pan``: the
    share of the free width the view travels; small ``pan`` and ``zoom`` make near-static
    footage)."""
    w, h = size
    src = Image.open(SAMPLES[photo % len(SAMPLES)]).convert("RGB")
    sw, sh = src.size
    n = max(1, int(round(seconds * fps)))
    frames = []
    for i in range(n):
        a = i / max(1, n - 1)
        scale = 1.0 - zoom * a  # zoom in
        cw, ch = sw * scale * 0.9, sh * scale * 0.9
        x0 = (sw - cw) * (0.5 - pan / 2 + pan * a)
        y0 = (sh - ch) * 0.5
        box = (int(x0), int(y0), int(x0 + cw), int(y0 + ch))
        frames.append(np.asarray(src.resize((w, h), Image.BILINEAR, box=box)))
    return frames


def card(seconds: float, *, fps: int = 10, size: tuple[int, int] = (320, 240),
         text_seed: int = 0) -> list[Frame]:
    """A static title card: one picture (blocky pattern) held for ``seconds``."""
    w, h = size
    rng = np.random.default_rng(text_seed)
    small = rng.integers(0, 255, (6, 8), dtype=np.uint8)
    pic = np.asarray(Image.fromarray(small).resize((w, h), Image.NEAREST).convert("RGB"))
    return [pic] * max(1, int(round(seconds * fps)))


def black(seconds: float, *, fps: int = 10, size: tuple[int, int] = (320, 240)) -> list[Frame]:
    w, h = size
    return [np.zeros((h, w, 3), np.uint8)] * max(1, int(round(seconds * fps)))


def letterbox(frames: t.Sequence[Frame], bar: float = 0.125) -> list[Frame]:
    """Keep the aspect, add bars on all four sides (the picture scaled to ``1 - 2 * bar`` and
    centred on black), as a re-upload inside another frame."""
    out = []
    for f in frames:
        h, w = f.shape[:2]
        nw, nh = int(w * (1 - 2 * bar)) // 2 * 2, int(h * (1 - 2 * bar)) // 2 * 2
        small = np.asarray(Image.fromarray(f).resize((nw, nh), Image.BILINEAR))
        canvas = np.zeros_like(f)
        y, x = (h - nh) // 2, (w - nw) // 2
        canvas[y : y + nh, x : x + nw] = small
        out.append(canvas)
    return out


def logo(frames: t.Sequence[Frame], *, size: float = 0.15, corner: str = "tl") -> list[Frame]:
    """Stamp a bright two-tone square "channel logo" in a corner of every frame."""
    out = []
    for f in frames:
        g = f.copy()
        h, w = g.shape[:2]
        s = int(min(h, w) * size)
        y = int(h * 0.16) if corner[0] == "t" else h - s - int(h * 0.16)
        x = int(w * 0.05) if corner[1] == "l" else w - s - int(w * 0.05)
        g[y : y + s, x : x + s] = (250, 250, 250)
        g[y + s // 4 : y + 3 * s // 4, x + s // 4 : x + 3 * s // 4] = (200, 30, 30)
        out.append(g)
    return out


def crop(frames: t.Sequence[Frame], *, keep: float = 0.9, x: float = 0.07,
         y: float = 0.03) -> list[Frame]:
    """Cut ``1 - keep`` of the width and of the height, off-centre (``x``, ``y``: where the kept
    box starts, as shares of the frame), and scale back to the frame's size."""
    out = []
    for f in frames:
        h, w = f.shape[:2]
        box = (int(w * x), int(h * y), int(w * (x + keep)), int(h * (y + keep)))
        out.append(np.asarray(Image.fromarray(f).resize((w, h), Image.BILINEAR, box=box)))
    return out


def flip(frames: t.Sequence[Frame]) -> list[Frame]:
    return [np.ascontiguousarray(f[:, ::-1]) for f in frames]


def write(path: Path, frames: t.Sequence[Frame], *, fps: int = 10, codec: str = "libx264",
          pts: t.Sequence[int] | None = None, time_base: Fraction | None = None,
          rotate: int | None = None) -> Path:
    """Encode RGB frames (H.264 by default). ``pts`` in ``time_base`` units make a
    variable-frame-rate file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = w, h
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "crf": "23"}
        if time_base is not None:
            stream.codec_context.time_base = time_base
            stream.time_base = time_base
        if rotate is not None:
            stream.metadata["rotate"] = str(rotate)
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            if pts is not None:
                vf.pts = int(pts[i])
                vf.time_base = time_base
            for packet in stream.encode(vf):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path
