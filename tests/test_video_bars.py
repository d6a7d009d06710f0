"""Video: per-shot bar boxes (letterbox/pillarbox next to dark picture).

Per-frame trimming cannot tell a bar from dark picture next to it; over a shot, bars stay the
bar colour in every frame while the picture changes (vigil.media.video.shot_boxes). Frames and
videos are generated in tmp_path (videogen.py).
"""

from __future__ import annotations

import numpy as np
import videogen as g
from PIL import Image

from vigil.media.video import SampledFrame, _trim, hash_video, shot_box, shot_boxes

_POP = np.array([i.bit_count() for i in range(256)], np.uint8)


def _dark(frames: list[np.ndarray]) -> list[np.ndarray]:
    """Dark footage: everything under mid-grey becomes black (a night sky, a dark stage)."""
    out = []
    for f in frames:
        x = f.astype(np.float32)
        x = np.where(x.mean(axis=2, keepdims=True) < 110, 0, (x - 110) * 1.5).clip(0, 255)
        out.append(x.astype(np.uint8))
    return out


def _luma(frames: list[np.ndarray]) -> list[np.ndarray]:
    return [np.asarray(Image.fromarray(f).convert("L")) for f in frames]


# the bar box of g.letterbox(bar=0.125) on 320x240: 30 rows and 40 columns a side
TRUE_BOX = (30, 210, 40, 280)


def _barred_dark(photo: int) -> list[np.ndarray]:
    return _luma(g.logo(g.letterbox(_dark(g.shot(photo, 3))), size=0.2))


def test_shot_box_finds_the_bars_that_per_frame_trimming_overshoots():
    for photo in (4, 5):
        lumas = _barred_dark(photo)
        per_frame = {_trim(y) for y in lumas}
        # the premise: frame by frame the dark picture is taken for bar, differently per frame
        assert len(per_frame) > 2 and TRUE_BOX not in per_frame, per_frame
        box = shot_box(np.maximum.reduce(lumas), np.minimum.reduce(lumas))
        assert box == TRUE_BOX, (photo, box)


def test_shot_box_leaves_unbarred_dark_footage_whole():
    lumas = _luma(_dark(g.shot(5, 3)))
    assert any(_trim(y) != (0, 240, 0, 320) for y in lumas)  # per frame: trimmed into picture
    assert shot_box(np.maximum.reduce(lumas), np.minimum.reduce(lumas)) == (0, 240, 0, 320)


def test_shot_box_light_bars_and_centred_bars():
    y = np.full((120, 160), 235, np.uint8)  # white bars
    pics = [np.random.default_rng(k).integers(0, 200, (80, 120)).astype(np.uint8)
            for k in range(3)]
    frames = []
    for p in pics:
        f = y.copy()
        f[20:100, 20:140] = p
        frames.append(f)
    assert shot_box(np.maximum.reduce(frames), np.minimum.reduce(frames)) == (20, 100, 20, 140)
    # a bar deeper on one side than the other: the deeper trim ran into picture; the smaller
    # one is used for both sides
    f = np.zeros((120, 160), np.uint8)
    f[10:110, 10:130] = 200
    assert shot_box(f, f) == (10, 110, 10, 150)
    # ...but a difference of a pixel or two is the scaler's rounding: each side keeps its own
    f = np.zeros((120, 160), np.uint8)
    f[10:110, 10:152] = 200
    assert shot_box(f, f) == (10, 110, 10, 152)


def test_shot_boxes_ignore_one_odd_frame():
    """An encoder glitch in the bar of one frame (measured on the corpus: a 16x16 block of the
    first frame after a cut a few levels off black) does not cost the whole shot its bars."""
    lumas = [y.copy() for y in _barred_dark(4)[::3]]
    lumas[0][:24, :16] = 24
    out = list(shot_boxes(_frames(lumas, {0})))
    assert _trim(np.maximum.reduce(lumas), keep=0.0)[2] == 0  # the plain maximum loses it
    assert {f.box for f in out} == {TRUE_BOX}


def _frames(lumas: list[np.ndarray], cuts: set[int]) -> list[SampledFrame]:
    return [SampledFrame(frame=i, timestamp=i * 0.25, luma=y, scene_cut=i in cuts)
            for i, y in enumerate(lumas)]


def test_shot_boxes_one_box_per_shot_and_bounded_chunks():
    barred = _barred_dark(4)[::4]
    plain = _luma(g.shot(2, 3))[::4]
    out = list(shot_boxes(_frames([*barred, *plain], {0, len(barred)})))
    assert [f.box for f in out[: len(barred)]] == [TRUE_BOX] * len(barred)
    assert {f.box for f in out[len(barred):]} == {(0, 240, 0, 320)}
    assert [f.timestamp for f in out] == [i * 0.25 for i in range(len(out))]
    # a long shot is boxed in chunks of at most max_bytes of buffered luma
    chunked = list(shot_boxes(_frames(barred, {0}), max_bytes=2 * barred[0].nbytes))
    assert len(chunked) == len(barred) and all(f.box is not None for f in chunked)


def test_dark_letterboxed_logo_clip_hashes_like_its_original(tmp_path):
    """End to end (decode, shot boxes, PDQ): a dark clip letterboxed and logo-stamped gives
    frame hashes near its original's; with each frame trimmed on its own it does not."""
    frames = _dark(g.shot(4, 3))
    orig = g.write(tmp_path / "orig.mp4", frames)
    barred = g.write(tmp_path / "barred.mp4", g.logo(g.letterbox(frames)))
    a, _ = hash_video(orig)
    b, _ = hash_video(barred)
    n = min(len(a), len(b))
    d = _POP[a.codes[:n] ^ b.codes[:n]].sum(axis=1)
    # measured: 31 bits median; each frame trimmed on its own (the previous behaviour): 127
    assert float(np.median(d)) <= 50, d
