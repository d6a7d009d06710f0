"""Video: safe decoding, frame signals, vPDQ exchange, banking, matching with localisation.

Test videos are generated with PyAV in tmp_path (see videogen.py): pan-and-zoom shots over the
bundled sample photos, 320x240 at 10 frames/s, so every test stays fast.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import videogen as g
from typer.testing import CliRunner

from vigil.cli.main import app
from vigil.core.hashing import hash_file
from vigil.errors import (
    CorruptMedia,
    DecodeTimeout,
    DecompressionBomb,
    EmptyFile,
    ImportFormatError,
    MediaTooLong,
    UnsupportedMedia,
)
from vigil.media.video import VideoLimits, hash_video, looks_like_video, open_video
from vigil.signals.vpdq import VideoSignals

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"


# -- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Reference videos, an unrelated one, and edited copies (made once per module)."""
    d = tmp_path_factory.mktemp("videos")
    ref = [f for i in range(5) for f in g.shot(i, 4)]  # 20 s, cuts at 4, 8, 12, 16
    other = [f for i in range(10, 13) for f in g.shot(i, 4)]
    clip = ref[65:185]  # reference 6.5 s .. 18.5 s
    out = {
        "ref": g.write(d / "ref.mp4", ref),
        "other": g.write(d / "other.mp4", other),
        # the "done means": a clip, letterboxed, logo-stamped, between unrelated footage
        "embedded": g.write(d / "embedded.mp4",
                            [*g.shot(20, 5), *g.logo(g.letterbox(clip)), *g.shot(21, 6)]),
        "flipped": g.write(d / "flipped.mp4", g.flip(clip)),
        "excerpt": g.write(d / "excerpt.mp4", ref[30:90]),  # 3 s .. 9 s
    }
    return out


def _bank(core, *paths: Path, bank: str = "known") -> list[int]:
    if bank not in {b["name"] for b in core.list_banks()}:
        core.create_bank(bank)
    items = list(core.add_files(bank, list(paths), {}))
    assert all(i.error is None for i in items), [i.error for i in items]
    return [int(i.entry_id) for i in items]


def _segments(item, entry_id: int) -> list[dict]:
    d = item.to_dict()
    (m,) = [m for m in d["matches"] if m["entry_id"] == entry_id]
    return m["segments"]


# -- decoding -------------------------------------------------------------------------------------
def test_sampling_rate_and_scene_cuts(media):
    with open_video(media["ref"]) as r:
        frames = list(r.sample(1.0))
    times = [f.timestamp for f in frames]
    assert times[0] == 0.0 and frames[0].scene_cut
    # one frame per second of presentation time
    assert all(any(abs(t - s) < 0.15 for t in times) for s in range(20))
    # the first frame of each shot is flagged (cuts at 4, 8, 12, 16 s)
    cut_times = [f.timestamp for f in frames if f.scene_cut][1:]
    assert cut_times == pytest.approx([4.0, 8.0, 12.0, 16.0], abs=0.15)
    assert frames[0].luma.shape == (240, 320) and frames[0].luma.dtype == np.uint8


def test_scene_cut_between_grid_points_gets_its_own_frame(tmp_path):
    path = g.write(tmp_path / "v.mp4", [*g.shot(0, 2.55), *g.shot(3, 2.0)])
    with open_video(path) as r:
        frames = list(r.sample(1.0))
    cut = [f for f in frames if f.scene_cut and f.timestamp > 0]
    assert len(cut) == 1 and cut[0].timestamp == pytest.approx(2.55, abs=0.11)


def test_variable_frame_rate_uses_timestamps(tmp_path):
    frames = g.shot(1, 6, fps=10)
    # the first 2 s at 5 frames/s, then 20 frames/s: frame counts would misplace every sample
    pts, t_ms = [], 0
    for i in range(len(frames)):
        pts.append(t_ms)
        t_ms += 200 if t_ms < 2000 else 50
    path = g.write(tmp_path / "vfr.mp4", frames, pts=pts, time_base=Fraction(1, 1000))
    with open_video(path) as r:
        got = [f.timestamp for f in r.sample(1.0)]
    end = pts[-1] / 1000
    assert got[0] == 0.0 and abs(got[-1] - int(end)) < 0.25
    for s in range(int(end) + 1):
        assert any(abs(t - s) < 0.25 for t in got), (s, got)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg command")
def test_rotated_display_matrix_is_applied(tmp_path, media):
    rotated = tmp_path / "rot.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(media["excerpt"]), "-c", "copy",
                    "-metadata:s:v:0", "rotate=90", str(rotated)], check=True)
    plain, _ = hash_video(media["excerpt"])
    turned, info = hash_video(rotated)
    assert info["rotation"] == 90
    with open_video(rotated) as r:
        assert next(iter(r.sample())).luma.shape == (320, 240)  # displayed upright: portrait
    # the stored frames of the rotated file are those of the original turned: its hashes differ,
    # the original's hashes turned the same way agree (PDQ of the upright picture is what a
    # viewer sees; a rotated re-upload is matched through the dihedral variants, not here)
    assert (plain.codes != turned.codes).any()
    assert len(plain) == len(turned)


def test_corrupt_truncated_empty_and_audio_only(tmp_path, media):
    data = media["ref"].read_bytes()
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    assert isinstance(hash_file(empty).error, EmptyFile)

    junk = tmp_path / "junk.mp4"  # an MP4 box header followed by garbage
    junk.write_bytes(data[:32] + bytes(np.random.default_rng(1).integers(0, 256, 5000, np.uint8)))
    hr = hash_file(junk)
    assert isinstance(hr.error, CorruptMedia) and hr.signals  # byte hashes still computed
    assert hr.error.to_dict()["code"] == "corrupt_media"

    truncated = tmp_path / "truncated.mkv"  # Matroska streams: a cut file still plays its start
    g.write(truncated, [f for i in range(3) for f in g.shot(i, 4)])
    whole = truncated.read_bytes()
    truncated.write_bytes(whole[: len(whole) // 2])
    hr = hash_file(truncated)
    if hr.error is None:  # the frames before the damage, and it says so
        assert hr.video is not None and 2 <= len(hr.video.thin()) < 12
        assert hr.media is not None and hr.media.get("truncated")
    else:
        assert isinstance(hr.error, CorruptMedia)

    audio = tmp_path / "audio.m4a"
    import av

    with av.open(str(audio), "w", format="mp4") as out:
        st = out.add_stream("aac", rate=16000)
        samples = (np.sin(np.arange(16000) / 5) * 0.3).astype(np.float32)[None, :]
        for chunk in range(0, 16000, 1024):
            frame = av.AudioFrame.from_ndarray(samples[:, chunk : chunk + 1024].copy(),
                                               format="fltp", layout="mono")
            frame.sample_rate = 16000
            for p in st.encode(frame):
                out.mux(p)
        for p in st.encode():
            out.mux(p)
    hr = hash_file(audio)
    assert hr.error is None and hr.video is None
    assert isinstance(hr.media_error, UnsupportedMedia) and "audio only" in hr.media_error.message
    assert [s.type for s in hr.signals] == ["md5", "sha256"]


def test_limits_are_typed_errors(media):
    with pytest.raises(DecompressionBomb):
        hash_video(media["ref"], VideoLimits(max_pixels=320 * 200))
    with pytest.raises(MediaTooLong):
        hash_video(media["ref"], VideoLimits(max_duration=5.0))
    with pytest.raises(DecodeTimeout):
        hash_video(media["ref"], VideoLimits(max_decode_seconds=1e-9))


def test_looks_like_video_by_content_not_name(tmp_path, media):
    assert looks_like_video(media["ref"].read_bytes()[:400])
    assert not looks_like_video(b"\x89PNG\r\n\x1a\n" + b"\0" * 400)
    assert not looks_like_video(b"hello world, this is text" * 20)
    renamed = tmp_path / "holiday.jpg"  # a video whatever its name says
    renamed.write_bytes(media["excerpt"].read_bytes())
    hr = hash_file(renamed)
    assert hr.error is None and hr.video is not None and hr.media["kind"] == "video"


# -- frame signals --------------------------------------------------------------------------------
def test_vpdq_text_and_storage_round_trip(media):
    dense, _ = hash_video(media["ref"])
    sig = dense.thin()  # what is stored and exchanged: ~1 frame/s plus scene changes
    assert dense.rate == 4.0 and sig.rate == 1.0 and len(dense) > 3 * len(sig)
    assert 20 <= len(sig) <= 25 and sig.scene_cut.sum() == 5
    text = dense.to_vpdq()
    first = text.splitlines()[0].split(",")
    assert len(first) == 4 and len(first[1]) == 64 and first[3] == "0.000"
    back = VideoSignals.from_vpdq(text)
    assert (back.codes == sig.codes).all() and (back.quality == sig.quality).all()
    assert (back.frames == sig.frames).all() and np.allclose(back.timestamps, sig.timestamps)
    packed = sig.pack()
    un = VideoSignals.unpack(packed)
    assert (un.codes == sig.codes).all() and np.allclose(un.timestamps, sig.timestamps)
    assert (un.frames == sig.frames).all() and un.duration == sig.duration
    # the budget: at most 64 bytes per second of video
    assert len(packed) / sig.duration <= 64, len(packed) / sig.duration


def test_vpdq_import_rejects_bad_lines_with_their_number():
    good = "0," + "ab" * 32 + ",100,0.000\n"
    with pytest.raises(ImportFormatError, match="line 2"):
        VideoSignals.from_vpdq(good + "1," + "zz" * 32 + ",100,1.000\n")
    with pytest.raises(ImportFormatError, match="line 3"):
        VideoSignals.from_vpdq(good + "\n1," + "ab" * 32 + ",100\n")
    with pytest.raises(ImportFormatError, match="quality"):
        VideoSignals.from_vpdq("0," + "ab" * 32 + ",101,0.0\n")
    with pytest.raises(ImportFormatError, match="no frames"):
        VideoSignals.from_vpdq("# only a comment\n")


# -- matching -------------------------------------------------------------------------------------
def test_clip_letterboxed_logo_between_unrelated_footage_is_located(core, media):
    ref_id, _other = _bank(core, media["ref"], media["other"])
    item = core.match_file(media["embedded"])
    assert item.error is None
    assert [m["entry_id"] for m in item.to_dict()["matches"]] == [ref_id]
    (seg,) = _segments(item, ref_id)
    # the clip is reference 6.5-18.5 s, placed at 5-17 s of the query
    assert abs(seg["query_start"] - 5.0) <= 1.0 and abs(seg["query_end"] - 17.0) <= 1.0
    assert abs(seg["ref_start"] - 6.5) <= 1.0 and abs(seg["ref_end"] - 18.5) <= 1.0
    assert 0 < seg["score"] <= 1 and seg["frames"] >= 8


def test_flipped_and_excerpt(core, media):
    (ref_id,) = _bank(core, media["ref"])
    flipped = core.match_file(media["flipped"], record=False).to_dict()
    (m,) = flipped["matches"]
    assert m["entry_id"] == ref_id and m["variant"] == "video+flip-x"
    assert abs(m["segments"][0]["ref_start"] - 6.5) <= 1.0
    (seg,) = _segments(core.match_file(media["excerpt"], record=False), ref_id)
    assert abs(seg["ref_start"] - 3.0) <= 1.0 and abs(seg["ref_end"] - 9.0) <= 1.0
    assert seg["query_start"] == 0.0 and abs(seg["query_end"] - 6.0) <= 1.0


def test_unrelated_video_does_not_match(core, media):
    _bank(core, media["ref"])
    assert core.match_file(media["other"], record=False).to_dict()["matches"] == []


def test_min_duration_and_share_are_bank_settings(core, media, tmp_path):
    from vigil.core import video as videoops

    (ref_id,) = _bank(core, media["ref"])
    ref = [f for i in range(5) for f in g.shot(i, 4)]  # the frames of media["ref"]
    short = g.write(tmp_path / "short.mp4", [*g.shot(23, 4), *ref[45:65], *g.shot(24, 4)])
    assert core.match_file(short, record=False).to_dict()["matches"] == []  # 2 s < 3 s
    with core.store.transaction() as s:
        videoops.set_settings(s, "known", min_seconds=8.0)
    assert core.match_file(media["excerpt"], record=False).to_dict()["matches"] == []  # 6 s < 8
    with core.store.transaction() as s:
        videoops.set_settings(s, "known", min_share=0.25)  # 6 s of 20 s = 30%
    assert [m["entry_id"] for m in core.match_file(media["excerpt"], record=False).to_dict()["matches"]] == [ref_id]


def test_shared_title_card_and_black_frames_do_not_match(core, tmp_path):
    """Two unrelated videos that open with the same 6 s card (and black frames) never match."""
    card = g.card(6, text_seed=7)
    a = g.write(tmp_path / "a.mp4", [*g.black(2), *card, *g.shot(40, 8)])
    b = g.write(tmp_path / "b.mp4", [*g.black(3), *card, *g.shot(41, 8)])
    _bank(core, a)
    assert core.match_file(b, record=False).to_dict()["matches"] == []
    # ...while the same video re-encoded does match (the test can fail)
    c = g.write(tmp_path / "c.mp4", [*g.black(2), *card, *g.shot(40, 8)], codec="mpeg4")
    assert core.match_file(c, record=False).to_dict()["matches"]


def test_disable_stops_matching_at_once_and_index_rebuilds(core, media, settings):
    from vigil.core.app import Vigil

    (ref_id,) = _bank(core, media["ref"])
    assert core.match_file(media["excerpt"], record=False).to_dict()["matches"]
    core.set_enabled("known", ref_id, False)
    assert core.match_file(media["excerpt"], record=False).to_dict()["matches"] == []
    assert len(core.video_index) == 0
    core.set_enabled("known", ref_id, True)
    assert core.match_file(media["excerpt"], record=False).to_dict()["matches"]
    core.video_index.save()
    # another process: index file present -> replay; missing -> rebuilt from the store
    other = Vigil(settings)
    try:
        assert other.match_file(media["excerpt"], record=False).to_dict()["matches"]
        assert not other.video_index.rebuilt
        core.set_enabled("known", ref_id, False)  # logged; the other process replays it
        other.video_index.catch_up()
        assert other.match_file(media["excerpt"], record=False).to_dict()["matches"] == []
    finally:
        other.close()
    core.set_enabled("known", ref_id, True)
    core.video_index.path.unlink()
    fresh = Vigil(settings)
    try:
        assert fresh.match_file(media["excerpt"], record=False).to_dict()["matches"]
        assert fresh.video_index.rebuilt and core.video_index.path.exists()
    finally:
        fresh.close()


def test_vpdq_import_is_matchable_and_recorded_with_segments(core, media, tmp_path):
    from sqlalchemy import select

    from vigil.store.video_models import VideoSegmentRow

    sig, _ = hash_video(media["ref"])
    text = tmp_path / "ref.vpdq.txt"
    text.write_text(sig.to_vpdq())
    core.create_bank("shared")
    assert core.import_file("shared", text, "vpdq", {"source": "partner"}) == 1
    item = core.match_file(media["embedded"])  # recorded
    (m,) = item.to_dict()["matches"]
    assert m["labels"] == {"source": "partner"} and m["segments"]
    with core.store.read() as s:
        rows = s.scalars(select(VideoSegmentRow)).all()
        assert len(rows) == 1 and abs(rows[0].ref_start - 6.5) <= 1.0


# -- the CLI --------------------------------------------------------------------------------------
@pytest.fixture
def cli(tmp_path: Path, db_url: str):
    runner = CliRunner()
    base = ["--data-dir", str(tmp_path / "data"), "--database-url", db_url]

    def run(*args: str):
        return runner.invoke(app, [*base, *map(str, args)], env={"COLUMNS": "200"})

    return run


def _lines(result) -> list[dict]:
    return [json.loads(x) for x in result.stdout.splitlines() if x.strip()]


def test_cli_done_means(cli, media, tmp_path, photos):
    """From the CLI: bank a video, find the letterboxed, logo-stamped clip inside unrelated
    footage with its position to within a second; hash reports the frame signals; scan takes a
    mixed folder."""
    (h,) = _lines(cli("hash", media["ref"], "--json", "--vpdq-dir", tmp_path / "vpdq"))
    assert h["media"]["kind"] == "video" and h["video"]["frames"] >= 20
    assert h["video"]["rate"] == 1.0 and h["video"]["duration"] == pytest.approx(20.0, abs=0.2)
    assert (tmp_path / "vpdq" / "ref.mp4.vpdq.txt").read_text().count("\n") == h["video"]["frames"]
    assert cli("bank", "create", "known").exit_code == 0
    r = cli("bank", "add", "known", media["ref"], "--json")
    assert r.exit_code == 0, r.stderr
    (added,) = _lines(r)
    r = cli("match", media["embedded"], "--json")
    assert r.exit_code == 0, r.stderr
    (res,) = _lines(r)
    (m,) = res["matches"]
    assert m["entry_id"] == added["entry_id"]
    (seg,) = m["segments"]
    for key, want in (("query_start", 5.0), ("query_end", 17.0), ("ref_start", 6.5), ("ref_end", 18.5)):
        assert abs(seg[key] - want) <= 1.0, (key, seg)
    r = cli("bank", "video-settings", "known", "--min-seconds", "4", "--json")
    assert _lines(r)[0]["min_seconds"] == 4.0
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(media["embedded"], mixed / "clip.bin")
    shutil.copy(photos[0], mixed / "photo.jpg")
    (mixed / "notes.txt").write_text("not media")
    r = cli("scan", mixed, "--workers", "1", "--json")
    out = _lines(r)
    summary = out[-1]["summary"]
    assert summary["checked"] == 3 and summary["errors"] == 0 and summary["matched"] == 1
    by_name = {Path(o["path"]).name: o for o in out[:-1]}
    assert by_name["clip.bin"]["matches"][0]["segments"]


@pytest.mark.skipif(not (CORPUS / "videos" / "footage-cup.mp4").exists(), reason="no shared corpus")
@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg command")
def test_corpus_clip_letterboxed_logo_embedded(core, tmp_path):
    """The same with a real corpus video (8 s of footage) edited by FFmpeg."""
    src = CORPUS / "videos" / "footage-cup.mp4"
    logo = sorted((CORPUS / "overlays").glob("*.png"))[0]
    (ref_id,) = _bank(core, src)
    filler = [g.write(tmp_path / f"f{i}.mp4", g.shot(50 + i, 4, size=(854, 480)), fps=10)
              for i in range(2)]
    out = tmp_path / "q.mp4"
    fit = "scale=854:480:force_original_aspect_ratio=decrease,pad=854:480:(ow-iw)/2:(oh-ih)/2,setsar=1,fps=25"
    fc = (f"[0:v]{fit}[a];[1:v]scale=-2:360,pad=854:480:(ow-iw)/2:(oh-ih)/2,setsar=1,fps=25[m];"
          f"[3:v]scale=100:-2[l];[m][l]overlay=30:80[b];[2:v]{fit}[c];[a][b][c]concat=n=3:v=1[v]")
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(filler[0]), "-ss", "1.5", "-t", "5.5",
                    "-i", str(src), "-i", str(filler[1]), "-i", str(logo), "-filter_complex", fc,
                    "-map", "[v]", "-c:v", "libx264", "-preset", "ultrafast", str(out)], check=True)
    (seg,) = _segments(core.match_file(out, record=False), ref_id)
    assert abs(seg["query_start"] - 4.0) <= 1.0 and abs(seg["query_end"] - 9.5) <= 1.0
    assert abs(seg["ref_start"] - 1.5) <= 1.0 and abs(seg["ref_end"] - 7.0) <= 1.0


# -- the API --------------------------------------------------------------------------------------
def test_api_video_upload_and_async_match_job(core, media):
    """Bank a video through the API, then match the edited clip as an async job: the job's
    result carries the located segment."""
    pytest.importorskip("fastapi")
    from test_api_support import Client, auth, service_settings

    from vigil.api import create_app
    from vigil.core.auth import create_token

    tokens = {r: create_token(core.store, f"{r}-v", r)["token"] for r in ("curator", "submitter")}
    with Client(create_app(core, service_settings())) as svc:
        assert svc.post("/api/v1/banks", json={"name": "known"},
                        headers=auth(tokens["curator"])).status_code == 201
        r = svc.post("/api/v1/banks/known/entries/upload", headers=auth(tokens["curator"]),
                     files={"file": ("ref.mp4", media["ref"].read_bytes(), "video/mp4")})
        assert r.status_code == 201, r.text
        eid = r.json()["entry_id"]
        r = svc.post("/api/v1/jobs", headers=auth(tokens["submitter"]),
                     files={"file": ("upload.mp4", media["embedded"].read_bytes(), "video/mp4")},
                     data={"kind": "match"})
        assert r.status_code == 202
        runner = svc.app.state.service.jobs
        handler, reported = runner.handlers["match"], []

        def spy(params, progress):  # the decoder's progress reaches the job
            return handler(params, lambda f: (reported.append(f), progress(f)))

        runner.handlers["match"] = spy
        assert runner.run_once() is True
        done = svc.get(f"/api/v1/jobs/{r.json()['id']}", headers=auth(tokens["submitter"])).json()
    assert done["status"] == "done", done
    assert done["progress"] == 1.0 and reported and reported == sorted(reported) and reported[-1] > 0.5
    (m,) = done["result"]["matches"]
    assert m["entry_id"] == eid
    (seg,) = m["segments"]
    assert abs(seg["query_start"] - 5.0) <= 1.0 and abs(seg["ref_start"] - 6.5) <= 1.0


def test_bench_scoring_counts_found_false_and_misplaced():
    """The benchmark's scoring (benchmarks/bench_video.py) on hand-made results."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        import bench_video as bv
    finally:
        sys.path.pop(0)
    var = bv.Variant("embedded", "q.mp4", [bv.Truth("a", 5.0, 15.0, 2.0, 12.0)])
    seg = {"query_start": 5.5, "query_end": 15.0, "ref_start": 2.5, "ref_end": 12.0}
    far = {"query_start": 30.0, "query_end": 34.0, "ref_start": 0.0, "ref_end": 4.0}
    res = {"matches": [{"entry_id": 1, "segments": [seg, far]}, {"entry_id": 2, "segments": [seg]}]}
    sc = bv.score(var, res, {1: "a", 2: "b"})
    assert sc["found"] == [True] and sc["false"] == ["b"] and sc["misplaced"] == 1
    assert sc["errors"] == pytest.approx([0.5, 0.0, 0.5, 0.0])
    short = {"matches": [{"entry_id": 1, "segments": [{**seg, "query_end": 8.0}]}]}
    assert bv.score(var, short, {1: "a"})["found"] == [False]  # covers under half the truth
