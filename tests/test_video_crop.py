"""Video: crops (crop codes), the packed v1/v2 forms, and vPDQ export of a bank's videos.

Frames and videos are generated in tmp_path (videogen.py); the crop-code tests need no decoding.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import videogen as g
from PIL import Image
from typer.testing import CliRunner

from vigil.cli.main import app
from vigil.media.video import hash_video
from vigil.signals import vpdq
from vigil.signals.pdq import hash_luma
from vigil.signals.vpdq import VideoSignals, crop_codes

_POP = np.array([i.bit_count() for i in range(256)], np.uint8)


def _luma(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).convert("L"))


def _pdq_bits(a: np.ndarray, b: np.ndarray) -> int:
    ha, _ = hash_luma(a.astype(np.float32))
    hb, _ = hash_luma(b.astype(np.float32))
    return (int(ha, 16) ^ int(hb, 16)).bit_count()


@pytest.mark.parametrize("keep,x,y", [(0.9, 0.07, 0.03), (0.85, 0.05, 0.1), (0.95, 0.0, 0.05)])
def test_crop_codes_find_a_cropped_frame_that_pdq_loses(keep, x, y):
    frames = [f for i in range(6) for f in g.shot(i, 0.3, size=(480, 360))[:1]]
    cropped = g.crop(frames, keep=keep, x=x, y=y)
    for k, (orig, cut) in enumerate(zip(frames, cropped)):
        bank = crop_codes(_luma(orig), query=False)
        grid = crop_codes(_luma(cut), query=True)
        own = int(_POP[grid ^ bank[0]].sum(axis=1).min())
        assert own <= 8, (k, own)
        # the other pictures' centre codes stay away from every box of this query
        for j, other in enumerate(frames):
            if j != k:
                far = int(_POP[grid ^ crop_codes(_luma(other), query=False)[0]].sum(axis=1).min())
                assert far > 8, (k, j, far)
    # ...which frame PDQ cannot do: the reason crop codes exist
    assert _pdq_bits(_luma(frames[0]), _luma(cropped[0])) > 40


def test_crop_grid_holds_the_centre_box():
    y = np.random.default_rng(3).integers(0, 255, (120, 160)).astype(np.uint8)
    grid = crop_codes(y, query=True)
    n = len(vpdq._axis_boxes(True))
    assert grid.shape == (n * n, vpdq.CROP_BYTES)
    assert (grid[vpdq._centre_box()] == crop_codes(y, query=False)[0]).all()


def test_packed_form_keeps_crop_codes_and_reads_v1(tmp_path):
    frames = [f for i in range(3) for f in g.shot(i, 3)]
    dense, _ = hash_video(g.write(tmp_path / "v.mp4", frames))
    sig = dense.thin()
    assert sig.crops is not None and sig.crops.shape == (len(sig), vpdq.CROP_BYTES)
    blob = sig.pack()
    assert blob[4] == 2 and len(blob) / sig.duration <= 64
    back = VideoSignals.unpack(blob)
    assert (back.crops == sig.crops).all() and (back.codes == sig.codes).all()
    # imported vPDQ hashes have no crop codes: packed as v1, read back without them
    imported = VideoSignals.from_vpdq(sig.to_vpdq())
    old = imported.pack()
    assert old[4] == 1 and VideoSignals.unpack(old).crops is None
    with pytest.raises(Exception, match="truncated|corrupt"):
        VideoSignals.unpack(blob[: len(blob) // 2])


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cropvideos")
    ref = [f for i in range(4) for f in g.shot(i, 4)]  # 16 s
    return {
        "ref": g.write(d / "ref.mp4", ref),
        # 10% of width and height cut off-centre, inside unrelated footage
        "cropped": g.write(d / "cropped.mp4",
                           [*g.shot(20, 4), *g.crop(ref[30:130]), *g.shot(21, 4)]),
        "other": g.write(d / "other.mp4", [f for i in range(10, 14) for f in g.shot(i, 4)]),
        "other_cropped": g.write(d / "other_cropped.mp4",
                                 g.crop([f for i in range(10, 14) for f in g.shot(i, 4)])),
    }


def test_cropped_clip_is_found_and_located(core, clips):
    core.create_bank("known")
    (item,) = list(core.add_files("known", [clips["ref"]], {}))
    ref_id = int(item.entry_id)
    res = core.match_file(clips["cropped"], record=False).to_dict()
    (m,) = res["matches"]
    assert m["entry_id"] == ref_id and m["variant"] == "video+crop" and m["signal_type"] == "pdq"
    assert len(m["segments"]) == 1, m["segments"]
    (seg,) = m["segments"]
    # the clip is reference 3-13 s, at 4-14 s of the query
    for key, want in (("query_start", 4.0), ("query_end", 14.0), ("ref_start", 3.0),
                      ("ref_end", 13.0)):
        assert abs(seg[key] - want) <= 1.0, (key, seg)
    for q in ("other", "other_cropped"):  # unrelated footage, cropped or not, matches nothing
        assert core.match_file(clips[q], record=False).to_dict()["matches"] == [], q


def test_crop_index_file_is_saved_and_rebuilt(core, clips, settings):
    from vigil.core.app import Vigil

    core.create_bank("known")
    list(core.add_files("known", [clips["ref"]], {}))
    core.video_index.save()
    assert core.video_index.crop_path.exists() and len(core.video_index.crops) > 0
    core.video_index.crop_path.unlink()  # a missing crop file: the next process rebuilds both
    fresh = Vigil(settings)
    try:
        assert fresh.video_index.rebuilt and len(fresh.video_index.crops) > 0
        assert fresh.match_file(clips["cropped"], record=False).to_dict()["matches"]
    finally:
        fresh.close()


def test_cli_export_vpdq_round_trips_to_import_and_match(tmp_path, db_url, clips):
    runner = CliRunner()
    base = ["--data-dir", str(tmp_path / "data"), "--database-url", db_url]

    def cli(*args: object):
        return runner.invoke(app, [*base, *map(str, args)], env={"COLUMNS": "200"})

    assert cli("bank", "create", "known").exit_code == 0
    r = cli("bank", "add", "known", clips["ref"], "--label", "group=g1", "--json")
    assert r.exit_code == 0, r.stderr
    out = tmp_path / "export"
    r = cli("bank", "export", "known", "--format", "vpdq", "--out", out)
    assert r.exit_code == 0, r.stderr
    (row,) = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert row["labels"] == {"group": "g1"}
    text = (out / row["file"]).read_text()
    lines = text.splitlines()
    assert len(lines) == row["frames"] >= 16
    fno, hx, qual, ts = lines[0].split(",")
    assert fno == "0" and len(hx) == 64 and 0 <= int(qual) <= 100 and ts == "0.000"
    # the exported frames are the banked ones
    dense, _ = hash_video(clips["ref"])
    assert text == dense.to_vpdq()
    # import into another bank and match an (uncropped) excerpt against it
    assert cli("bank", "create", "partner").exit_code == 0
    r = cli("bank", "import", "partner", out / row["file"], "--format", "vpdq")
    assert r.exit_code == 0, r.stderr
    cli("bank", "disable", "known", row["entry_id"])
    excerpt = g.write(tmp_path / "excerpt.mp4",
                      [f for i in range(4) for f in g.shot(i, 4)][20:100])
    r = cli("match", excerpt, "--json")
    assert r.exit_code == 0, r.stderr
    (res,) = [json.loads(x) for x in r.stdout.splitlines() if x.strip()]
    (m,) = res["matches"]
    assert m["bank"] == "partner" and m["segments"]
    assert abs(m["segments"][0]["ref_start"] - 2.0) <= 1.0
    # no --out for a per-video format: a usage error, nothing written
    r = cli("bank", "export", "known", "--format", "vpdq")
    assert r.exit_code != 0 and "--out" in r.stderr


def test_slow_near_static_footage_excerpt_is_located(core, tmp_path):
    """Footage that barely changes (a tree in the wind): every query frame is within the
    search radius of every banked frame, and the banked frames are nearly one picture. The
    excerpt must still be placed at its own moment, not rejected as a static card."""
    ref = g.shot(5, 24, pan=0.3, zoom=0.03)
    _id = list(core.add_files(_bank_name(core), [g.write(tmp_path / "slow.mp4", ref)], {}))
    ref_id = int(_id[0].entry_id)
    q = g.write(tmp_path / "slow-excerpt.mp4", ref[90:160])  # reference 9-16 s
    (m,) = core.match_file(q, record=False).to_dict()["matches"]
    assert m["entry_id"] == ref_id
    (seg,) = m["segments"]
    assert abs(seg["ref_start"] - 9.0) <= 1.0 and abs(seg["ref_end"] - 16.0) <= 1.0, seg


def test_time_specificity_tells_slow_footage_from_a_held_card():
    from vigil.core import video as cv

    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, 32, dtype=np.uint8)

    def drift(n: int, bits_per_step: int) -> np.ndarray:
        out, cur = [], base.copy()
        for _ in range(n):
            out.append(cur.copy())
            for b in rng.choice(256, bits_per_step, replace=False):
                cur[b // 8] ^= np.uint8(1 << (b % 8))
        return np.stack(out)

    def sig(codes: np.ndarray, ts: np.ndarray) -> VideoSignals:
        n = len(codes)
        return VideoSignals(codes=codes, quality=np.full(n, 100, np.uint8), timestamps=ts,
                            frames=np.arange(n), duration=float(ts[-1] + 1), rate=1.0)

    ts = np.arange(12, dtype=np.float64)
    slow = drift(12, 4)  # a few bits a second: frames drift apart slowly
    card = np.repeat(base[None, :], 12, axis=0)  # one picture held
    for codes, want in ((slow, True), (card, False)):
        ref = cv._Ref(1, None, {}, None, sig(codes, ts), cv.VideoSettings())
        assert cv._time_specific(sig(codes, ts), ref, np.arange(12), 1.0, 0.0) is want
    # _closest drops a query frame's far hits on a video, keeps its near ones
    hits = np.array([[0, 1, 0, 30], [0, 1, 5, 4], [0, 1, 6, 12], [1, 1, 3, 50]])
    kept = cv._closest(hits)
    assert sorted(map(tuple, kept.tolist())) == [(0, 1, 5, 4), (0, 1, 6, 12), (1, 1, 3, 50)]


def _bank_name(core) -> str:
    core.create_bank("known")
    return "known"


def test_merge_never_shortens_a_segment_that_contains_the_next():
    from vigil.core.video import Segment, _merge

    outer = Segment(0.0, 30.0, 0.3, 30.0, 0.8, 100, 1.0)
    inner = Segment(0.6, 5.0, 0.0, 4.4, 0.5, 14, 1.0)  # on the same line, inside the first
    (joined,) = _merge([outer, inner])
    assert joined.query_start == 0.0 and joined.query_end == 30.0 and joined.ref_end == 30.0


def test_low_quality_frames_join_an_established_alignment(core, tmp_path):
    """A dark, flat stretch (PDQ quality ~20: never searched, as vPDQ excludes it) after a
    short well-lit one: the segment found on the lit frames grows over the dark frames that
    match the reference at their aligned moment, so a 2 s lit + 6 s dark excerpt is placed
    (the lit part alone is under the 3 s minimum)."""
    lit = g.shot(2, 6)
    dark = [(f * 0.1).astype(np.uint8) for f in g.shot(6, 10)]
    ref = [*lit, *dark]  # lit 0-6 s, dark 6-16 s
    core.create_bank("known")
    (item,) = list(core.add_files("known", [g.write(tmp_path / "ref.mp4", ref)], {}))
    q = g.write(tmp_path / "q.mp4", ref[40:120])  # reference 4-12 s: 2 s lit, 6 s dark
    (m,) = core.match_file(q, record=False).to_dict()["matches"]
    assert m["entry_id"] == int(item.entry_id)
    (seg,) = m["segments"]
    assert seg["query_start"] <= 0.5 and seg["query_end"] >= 7.0, seg
    assert abs(seg["ref_start"] - 4.0) <= 1.0 and abs(seg["ref_end"] - 12.0) <= 1.0, seg
    # an unrelated dark video does not match the dark stretch on its own
    other = g.write(tmp_path / "other.mp4", [(f * 0.1).astype(np.uint8) for f in g.shot(9, 8)])
    assert core.match_file(other, record=False).to_dict()["matches"] == []
