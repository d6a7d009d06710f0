"""The robust tier: the ``orb`` signal type, its payloads, the local-feature index, geometric
verification, and the tier inside the matcher cascade (on both databases)."""

from __future__ import annotations

import json
import typing as t
from pathlib import Path

import numpy as np
import pytest
from conftest import sample_photos, save
from PIL import Image, ImageOps

from vigil.core.app import Vigil
from vigil.core.hashing import hash_file
from vigil.core.robust import verify
from vigil.errors import IndexFileError, InvalidSignal, UsageError
from vigil.index import local as local_index
from vigil.index.local import LocalFeatureIndex, read_local_index, write_local_index
from vigil.media.image import decode_image
from vigil.signals.robust import OrbSignal, pack_payload, payload_digest, unpack_payload
from vigil.testing import SignalTypeContract, encode_image, synthetic_image


class TestOrbContract(SignalTypeContract):
    TYPE = OrbSignal

    def test_light_edits_stay_within_default_threshold(self) -> None:
        """The value is a payload digest, so "within the threshold" is decided on the payloads:
        light edits of a picture still verify with at least 100 - default_threshold inliers."""
        img = synthetic_image(5, (480, 360))
        base = OrbSignal.analyse(decode_image(encode_image(img))).banked
        for data in (encode_image(img, "JPEG", quality=50),
                     encode_image(img.resize((360, 270), Image.Resampling.LANCZOS))):
            q = OrbSignal.analyse(decode_image(data)).query
            v = verify(q, base)
            assert v is not None and v.distance <= OrbSignal.default_threshold


def _analyse(img: Image.Image, **kw):
    return OrbSignal.analyse(decode_image(encode_image(img, "JPEG", quality=90, **kw)))


@pytest.fixture(scope="module")
def giraffe() -> Image.Image:
    with Image.open(sample_photos()[0]) as im:
        return im.convert("RGB")


def test_payload_round_trip_and_digest(giraffe):
    ra = _analyse(giraffe)
    f = unpack_payload(ra.payload)
    assert 40 <= len(f) <= 256 and f.desc.shape == (len(f), 32)
    assert pack_payload(f) == ra.payload
    assert payload_digest(ra.payload) == ra.signal.value and ra.signal.quality == len(f)
    assert len(ra.payload) < 10_000  # 36 bytes per keypoint
    with pytest.raises(InvalidSignal):
        unpack_payload(ra.payload[:-1])
    with pytest.raises(InvalidSignal):
        unpack_payload(b"nope")


def test_verify_accepts_edits_and_reports_the_region(giraffe):
    ref = _analyse(giraffe).banked
    w, h = giraffe.size
    crop = giraffe.crop((int(w * 0.2), int(h * 0.1), w, h)).rotate(8, resample=Image.Resampling.BICUBIC)
    v = verify(_analyse(crop).query, ref)
    assert v is not None and v.inliers >= 15 and v.coverage >= 0.3
    # the reference's outline extends left/up beyond the crop: the region starts outside it
    xs = [p[0] for p in v.quad]
    assert min(xs) < 0 < max(xs)
    # mirrored: only the mirrored query verifies
    ra = _analyse(ImageOps.mirror(crop))
    assert verify(ra.mirrored(), ref) is not None


def test_verify_rejects_unrelated_and_shared_logo(giraffe, photos):
    with Image.open(photos[5]) as im:
        other = im.convert("RGB")
    ref = _analyse(giraffe).banked
    assert verify(_analyse(other).query, ref) is None
    # the same logo on two different pictures: many inliers in a small area, rejected
    logo = synthetic_image(11, (200, 200))
    a, b = giraffe.copy(), other.resize(giraffe.size)
    a.paste(logo, (40, 40))
    b.paste(logo, (300, 150))
    v = verify(_analyse(b).query, _analyse(a).banked)
    assert v is None
    loose = verify(_analyse(b).query, _analyse(a).banked, min_coverage=0.0)
    assert loose is None or loose.coverage < 0.3  # the logo did match: the coverage gate decided


def _codes(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 32), dtype=np.uint8)


@pytest.mark.parametrize("flat_limit", [10**9, 2000])
def test_local_index_add_remove_vote_and_file(tmp_path, monkeypatch, flat_limit):
    monkeypatch.setattr(local_index, "FLAT_LIMIT", flat_limit)
    idx = LocalFeatureIndex()
    data = {i: _codes(256, i) for i in range(1, 21)}
    for i, c in data.items():
        idx.add(np.full(len(c), i, np.int64), c)
    assert len(idx) == 20 * 256
    assert (idx.nlist > 0) == (flat_limit == 2000)
    noisy = data[7] ^ (np.random.default_rng(0).random((256, 256)) < 0.05).astype(np.uint8)[:, :32]
    assert idx.vote(noisy)[0][0] == 7
    idx.remove(np.array([7]))
    assert all(i != 7 for i, _ in idx.vote(noisy)) and len(idx) == 19 * 256
    path = tmp_path / "x.vlfx"
    write_local_index(path, {"last_seq": 5, "store_id": "s"}, idx)
    header, back = read_local_index(path)
    assert header["last_seq"] == 5 and len(back) == len(idx) and back.nlist == idx.nlist
    assert back.vote(data[3])[0][0] == 3
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(IndexFileError):
        read_local_index(path)


def _bank_photo(core: Vigil, photo: Path, bank: str = "known") -> int:
    (item,) = list(core.add_files(bank, [photo], {}))
    assert item.error is None
    return int(item.entry_id)


def _evade(img: Image.Image, tmp: Path, name: str, mirror: bool = False) -> Path:
    w, h = img.size
    out = img.crop((int(w * 0.22), int(h * 0.05), int(w * 0.97), int(h * 0.9)))
    out = out.rotate(6, resample=Image.Resampling.BICUBIC)
    if mirror:
        out = ImageOps.mirror(out)
    return save(out, tmp / name, quality=75)


def test_cascade_robust_hit_evidence_disable_and_modes(core, photos, tmp_path, giraffe):
    core.create_bank("known")
    eid = _bank_photo(core, photos[0])
    _bank_photo(core, photos[5])
    q = _evade(giraffe, tmp_path, "q.jpg")
    hr = hash_file(q)
    assert [s.type for s in hr.signals] == ["md5", "sha256", "pdq"]  # `vigil hash` unchanged
    got = core.match_file(q).to_dict()
    (hit,) = got["matches"]
    assert hit["entry_id"] == eid and hit["variant"] == "robust" and hit["signal_type"] == "orb"
    ev = hit["evidence"]
    assert ev["inliers"] >= 15 and 0.3 <= ev["coverage"] <= 1 and len(ev["region"]) == 4
    assert hit["distance"] == 100 - min(100, ev["inliers"]) <= hit["threshold"] == 85
    # mirrored and cropped: found on the mirrored picture
    m = core.match_file(_evade(giraffe, tmp_path, "m.jpg", mirror=True)).to_dict()
    assert [h["variant"] for h in m["matches"]] == ["robust+flip-x"]
    # an unrelated photo does not match
    assert core.match_file(photos[9]).to_dict()["matches"] == []
    # mode off: no robust tier for that bank; back on
    core.set_robust_mode("known", "off")
    assert core.match_file(q).to_dict()["matches"] == []
    assert core.set_robust_mode("known", None)["robust_mode"] == "on-miss"
    with pytest.raises(UsageError):
        core.set_robust_mode("known", "sometimes")
    # a PDQ hit: on-miss skips the robust tier, always runs it too (the PDQ hit still wins)
    assert core.match_file(photos[0]).to_dict()["matches"][0]["signal_type"] == "md5"
    core.set_robust_mode("known", "always")
    assert core.match_file(photos[0]).to_dict()["matches"][0]["signal_type"] == "md5"
    assert core.match_file(q).to_dict()["matches"][0]["variant"] == "robust"
    # disabling stops matching as soon as the call returns
    core.set_enabled("known", eid, False)
    assert core.match_file(q).to_dict()["matches"] == []
    core.set_enabled("known", eid, True)
    assert core.match_file(q).to_dict()["matches"][0]["entry_id"] == eid


def test_allow_bank_suppresses_robust_hit(core, photos, tmp_path, giraffe):
    core.create_bank("known")
    core.create_bank("benign", kind="allow")
    _bank_photo(core, photos[0])
    _bank_photo(core, photos[0], "benign")
    got = core.match_file(_evade(giraffe, tmp_path, "q.jpg")).to_dict()
    assert got["matches"] == [] and got["allowed"][0]["variant"] == "robust"
    assert got["suppressed"][0]["variant"] == "robust"


def test_other_process_sees_new_entries_and_export_carries_the_digest(settings, photos, tmp_path, giraffe):
    a = Vigil(settings)
    try:
        a.create_bank("known")
        assert len(a.robust) == 0  # index built (empty) and saved
        a.robust.save()
        eid = _bank_photo(a, photos[0])
        rows = [sig for _, sigs in a.export("known") for sig in sigs]
        orb = [r for r in rows if r.type == "orb"]
        assert len(orb) == 1 and OrbSignal.validate(orb[0].value) == orb[0].value
    finally:
        a.close()
    b = Vigil(settings)  # a new process: replays the change log onto the saved index file
    try:
        hit = b.match_file(_evade(giraffe, tmp_path, "q.jpg")).to_dict()["matches"][0]
        assert hit["entry_id"] == eid and hit["variant"] == "robust"
    finally:
        b.close()


def test_cli_match_explain_draws_overlay(tmp_path, photos, giraffe, db_url):
    from typer.testing import CliRunner

    from vigil.cli.main import app

    runner = CliRunner()
    base = ["--data-dir", str(tmp_path / "data"), "--database-url", db_url]

    def cli(*args: str):
        return runner.invoke(app, [*base, *args], env={"COLUMNS": "200"})

    assert cli("bank", "create", "known").exit_code == 0
    assert cli("bank", "add", "known", str(photos[0])).exit_code == 0
    q = _evade(giraffe, tmp_path, "q.jpg")
    png = tmp_path / "overlay.png"
    r = cli("match", "--explain", str(q), "--out", str(png), "--json")
    assert r.exit_code == 0, r.output
    obj = json.loads(r.stdout.strip().splitlines()[-1])
    assert obj["explained"]["inliers"] >= 15 and obj["matches"][0]["variant"] == "robust"
    with Image.open(png) as im:
        assert im.width > giraffe.width // 2
    r = cli("match", "--explain", str(photos[9]), "--out", str(tmp_path / "n.png"))
    assert r.exit_code == 0 and "no verified" in r.stdout
    assert not (tmp_path / "n.png").exists()


# -- the cheaper verification, the mirrored query, the index layout -------------------------------
def test_ratio_matches_agree_with_opencv_brute_force(giraffe):
    """FAISS's two nearest query descriptors of each reference descriptor give the same
    ratio-test matches, one reference keypoint per query keypoint, as OpenCV's brute-force
    matcher (ties aside); a prebuilt query index gives the same as one built per call."""
    import cv2

    from vigil.core.robust import RATIO, query_codes, ratio_matches

    ref = _analyse(giraffe).banked
    w, h = giraffe.size
    q = _analyse(giraffe.crop((int(w * 0.1), 0, w, int(h * 0.9))).rotate(4)).query
    qi, ri = ratio_matches(q.desc, ref.desc)
    assert len(set(qi.tolist())) == len(qi) >= 30  # one reference keypoint per query keypoint
    qi2, ri2 = ratio_matches(q.desc, ref.desc, query_codes(q.desc))
    assert qi2.tolist() == qi.tolist() and ri2.tolist() == ri.tolist()
    best: dict[int, t.Any] = {}
    for m in cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(ref.desc, q.desc, k=2):
        if len(m) == 2 and m[0].distance < RATIO * m[1].distance and (
                m[0].trainIdx not in best or m[0].distance < best[m[0].trainIdx].distance):
            best[m[0].trainIdx] = m[0]
    theirs = {(m.trainIdx, m.queryIdx) for m in best.values()}
    ours = set(zip(qi.tolist(), ri.tolist()))
    assert len(ours & theirs) >= 0.95 * max(len(ours), len(theirs))


def test_mirrored_features_are_the_mirrored_pictures(giraffe):
    """The mirrored query re-describes the mirrored keypoints instead of detecting anew: the
    result must be (nearly) what detecting on the mirrored picture gives."""
    from vigil.signals.robust import extract_features, mirror_features

    ra = _analyse(giraffe)
    mirrored = mirror_features(ra.grey, ra.query)
    w = ra.grey.shape[1]
    assert np.allclose(np.sort(mirrored.xy[:, 0]), np.sort(w - 1 - ra.query.xy[:, 0]), atol=0.01)
    fresh = extract_features(np.ascontiguousarray(ra.grey[:, ::-1]))
    # descriptors at the same place agree with those of a fresh detection on the mirrored picture
    gap = np.linalg.norm(mirrored.xy[:, None, :] - fresh.xy[None, :, :], axis=2)
    near = gap.argmin(1)
    same = gap[np.arange(len(near)), near] < 1.5
    bits = np.unpackbits(mirrored.desc[same] ^ fresh.desc[near[same]], axis=1).sum(1)
    assert same.mean() >= 0.8 and (bits <= 40).mean() >= 0.7  # a wrong angle gives ~128 bits
    # and it still finds a mirrored crop (the verification test above checks the variant)
    assert verify(mirrored, ra.banked) is None  # a mirror is not the picture itself


def test_vote_scans_at_most_its_share_of_unbalanced_lists(monkeypatch):
    """A query descriptor scans at most SCAN_LIMIT times what nprobe balanced lists hold: with
    half the bank piled into one list, the vote scans a bounded number of codes and still finds
    the picture (its lists are the nearest, scanned first)."""
    monkeypatch.setattr(local_index, "FLAT_LIMIT", 2000)
    idx = LocalFeatureIndex()
    data = {i: _codes(256, 300 + i) for i in range(1, 21)}
    pile = np.zeros((20 * 256, 32), np.uint8)  # near-identical codes: one list gets them all
    pile[:, 0] = np.arange(20 * 256) % 7
    for i, c in data.items():
        idx.add(np.full(len(c), i, np.int64), c)
    idx.add(np.full(len(pile), 99, np.int64), pile)
    noisy = data[7] ^ (np.random.default_rng(1).random((256, 256)) < 0.05).astype(np.uint8)[:, :32]
    got = idx.vote(noisy)
    limit = idx._index.max_codes
    assert 0 < limit == int(local_index.SCAN_LIMIT * idx.nprobe * len(idx) / idx.nlist) < len(pile)
    assert got[0][0] == 7
    monkeypatch.setattr(local_index, "SCAN_LIMIT", 0)  # 0: the probed lists are scanned whole
    idx._index.max_codes = 0
    assert idx.vote(noisy)[0][0] == 7 and idx._index.max_codes == 0


def _flip(codes: np.ndarray, share: float, seed: int) -> np.ndarray:
    bits = np.random.default_rng(seed).random((len(codes), 256)) < share
    return codes ^ np.packbits(bits, axis=1)


def test_distinctive_vote_slot_reaches_a_small_embedded_picture():
    """Two banked pictures share a common texture (the same descriptors), which a query
    shows at length; the picture it embeds small gives only a few of its descriptors. By plain
    votes the texture pictures lead and the small one falls under the share of the leader; the
    distinctive slot (nearest picture clearly nearer than any other) brings it in, and a query
    of the texture alone gets no distinctive candidate."""
    texture = _codes(60, 500)
    hub = twin = texture
    small = _codes(256, 501)
    idx = LocalFeatureIndex()
    for sid, c in ((1, np.concatenate([hub, _codes(196, 502)])),
                   (2, np.concatenate([twin, _codes(196, 503)])), (3, small),
                   *((10 + i, _codes(256, 600 + i)) for i in range(10))):
        idx.add(np.full(len(c), sid, np.int64), c)
    query = np.concatenate([_flip(texture, 0.05, 3), _flip(small[:12], 0.05, 4),
                            _codes(100, 504)])
    plain = idx.vote(query, top=2, share=0.25)
    assert [i for i, _ in plain] == [1, 2]
    got = idx.vote(query, top=2, share=0.25, distinctive=1)
    assert [i for i, _ in got] == [1, 3] and dict(got)[3] == 12  # votes stay the plain count
    dist, labels = idx._index.search(query, 6)
    assert local_index.distinctive_votes(dist, labels, 64)[:1] == [3]
    dist, labels = idx._index.search(np.ascontiguousarray(query[:60]), 6)
    assert local_index.distinctive_votes(dist, labels, 64, min_votes=5) == []
    # with nothing distinctive, the slot goes to the next by plain votes
    assert [i for i, _ in idx.vote(query[:60], top=2, distinctive=1)] == [1, 2]


def test_flat_index_file_gets_lists_once_big_enough(tmp_path, monkeypatch):
    """A file written flat (e.g. by a version with a higher FLAT_LIMIT) is given inverted lists on
    load when its size calls for them, and still finds what it holds."""
    monkeypatch.setattr(local_index, "FLAT_LIMIT", 10**9)
    idx = LocalFeatureIndex()
    data = {i: _codes(256, 100 + i) for i in range(1, 21)}
    for i, c in data.items():
        idx.add(np.full(len(c), i, np.int64), c)
    path = tmp_path / "flat.vlfx"
    write_local_index(path, {"last_seq": 1}, idx)
    assert idx.nlist == 0
    monkeypatch.setattr(local_index, "FLAT_LIMIT", 2000)
    _, back = read_local_index(path)
    assert back.nlist > 0 and len(back) == 20 * 256
    assert back.vote(data[11])[0][0] == 11


# -- embedded pictures ---------------------------------------------------------------------------
def _picture_in_picture(picture: Image.Image, scale: float = 0.22, at: tuple[int, int] = (480, 100),
                        level: int = 25) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """``picture`` at ``scale`` of the width of a 1024x683 dark noisy background."""
    rng = np.random.default_rng(0)
    bg = Image.fromarray(np.clip(rng.normal(level, 6, (683, 1024, 3)), 0, 255).astype(np.uint8))
    w = round(1024 * scale)
    h = round(w * picture.height / picture.width)
    bg.paste(picture.resize((w, h), Image.Resampling.LANCZOS), at)
    return bg, (at[0], at[1], at[0] + w, at[1] + h)


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_embedded_picture_is_found_cut_out_and_verified(giraffe, photos, monkeypatch):
    from vigil.signals import robust as robust_signal
    from vigil.signals.robust import find_embedded

    # the picture covers 4% of the query, under the region pass's MIN_REGION_AREA (see
    # test_region_pass_skips_small_rectangles): lifted here to test the cut-out itself
    monkeypatch.setattr(robust_signal, "MIN_REGION_AREA", 0.0)
    img, truth = _picture_in_picture(giraffe)
    data = encode_image(img, "JPEG", quality=90)
    ra = OrbSignal.analyse(decode_image(data), data)
    ref = _analyse(giraffe).banked
    whole = verify(ra.query, ref)
    assert whole is None or whole.inliers < 15  # too small for the whole-picture pass
    k = ra.grey.shape[1] / 1024
    rects = find_embedded(ra.grey)
    assert rects and _iou(rects[0], [c * k for c in truth]) > 0.85
    found = [v for v in (verify(f, ref) for f in ra.regions()) if v is not None]
    best = max(found, key=lambda v: v.inliers)
    assert best.inliers >= 30 and best.coverage >= 0.5
    # the evidence region is where the picture is, in the query's (decoded luma) coordinates
    lk = ra.luma_size[1] / 1024
    xs, ys = [p[0] for p in best.quad], [p[1] for p in best.quad]
    assert _iou((min(xs), min(ys), max(xs), max(ys)), [c * lk for c in truth]) > 0.85
    # another picture embedded the same way: a rectangle, but nothing that verifies
    with Image.open(photos[9]) as im:
        other, _ = _picture_in_picture(im.convert("RGB"))
    data = encode_image(other, "JPEG", quality=90)
    ra = OrbSignal.analyse(decode_image(data), data)
    assert find_embedded(ra.grey)
    assert all(verify(f, ref) is None for f in ra.regions())


def test_cascade_finds_a_small_embedded_picture(core, photos, tmp_path, giraffe, monkeypatch):
    from vigil.signals import robust as robust_signal

    monkeypatch.setattr(robust_signal, "MIN_REGION_AREA", 0.0)  # 4% of the query: see above
    core.create_bank("known")
    eid = _bank_photo(core, photos[0])
    _bank_photo(core, photos[5])
    img, truth = _picture_in_picture(giraffe)
    q = save(img, tmp_path / "pip.jpg", quality=90)
    (hit,) = core.match_file(q).to_dict()["matches"]
    assert hit["entry_id"] == eid and hit["variant"] == "robust+region"
    assert hit["evidence"]["inliers"] >= 15 and len(hit["evidence"]["region"]) == 4
    # --explain draws it: the correspondences land inside the embedded picture
    from vigil.core.robust import explain_file

    res = explain_file(core, q, tmp_path / "why.png")
    assert res["explained"]["variant"] == "robust+region" and res["explained"]["inliers"] >= 15
    with Image.open(tmp_path / "why.png") as im:
        drawn = np.asarray(im.convert("RGB")).astype(int)
    red = (drawn[:, :, 0] > 200) & (drawn[:, :, 1] < 60) & (drawn[:, :, 2] < 60)
    xs = np.nonzero(red)[1]
    qx = xs[xs > drawn.shape[1] - 640] - (drawn.shape[1] - 640)  # the query half, 640 px wide
    k = 640 / 1024
    x0, _, x1, _ = [c * k for c in truth]
    assert len(qx) and np.median(qx) == pytest.approx((x0 + x1) / 2, abs=0.25 * (x1 - x0))
    with Image.open(photos[9]) as im:
        other, _ = _picture_in_picture(im.convert("RGB"))
    assert core.match_file(save(other, tmp_path / "o.jpg", quality=90)).to_dict()["matches"] == []


# -- exports carry the payloads --------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_export_import_round_trips_a_robust_bank(tmp_path, photos, giraffe, db_url, fmt):
    """`vigil bank export` (JSONL and CSV) carries each orb payload (base64); importing it into
    an empty store there makes the robust tier match with it. A payload that does not match its
    digest fails the whole import, which then adds nothing."""
    import base64
    import csv
    import io

    from typer.testing import CliRunner

    from vigil.cli.main import app

    runner = CliRunner()

    def cli(base: list[str], *args: str):
        return runner.invoke(app, [*base, *args], env={"COLUMNS": "200"})

    a = ["--data-dir", str(tmp_path / "a"), "--database-url", db_url]
    b = ["--data-dir", str(tmp_path / "b"), "--database-url", f"sqlite:///{tmp_path / 'b.db'}"]
    assert cli(a, "bank", "create", "known").exit_code == 0
    assert cli(a, "bank", "add", "known", str(photos[0])).exit_code == 0
    out = tmp_path / f"known.{fmt}"
    r = cli(a, "bank", "export", "known", "--format", fmt, "--out", str(out))
    assert r.exit_code == 0, r.output

    def orb_rows(text: str) -> list[dict[str, t.Any]]:
        if fmt == "jsonl":
            return [x for x in json.loads(text)["signals"] if x["type"] == "orb"]
        return [x for x in csv.DictReader(io.StringIO(text)) if x["signal_type"] == "orb"]

    text = out.read_text()
    (orb,) = orb_rows(text)
    value = orb.get("value") or orb.get("signal_value")
    assert payload_digest(base64.b64decode(orb["payload"])) == value
    q = _evade(giraffe, tmp_path, "q.jpg")
    assert cli(b, "bank", "create", "copy").exit_code == 0
    # a tampered payload: rejected with its line, nothing imported
    raw = bytearray(base64.b64decode(orb["payload"]))
    raw[-1] ^= 0xFF
    (tmp_path / f"bad.{fmt}").write_text(text.replace(orb["payload"], base64.b64encode(bytes(raw)).decode()))
    r = cli(b, "bank", "import", "copy", str(tmp_path / f"bad.{fmt}"), "--format", fmt)
    assert r.exit_code != 0 and "does not match its digest" in r.output
    r = cli(b, "match", str(q), "--json")
    assert json.loads(r.stdout.strip().splitlines()[-1])["matches"] == []
    # the real export: the copy matches the evaded picture through the robust tier
    r = cli(b, "bank", "import", "copy", str(out), "--format", fmt, "--json")
    assert r.exit_code == 0, r.output
    r = cli(b, "match", str(q), "--json")
    (hit,) = json.loads(r.stdout.strip().splitlines()[-1])["matches"]
    assert hit["variant"] == "robust" and hit["signal_type"] == "orb"


def test_query_features_survive_pickling(giraffe):
    """Hash results travel between processes (parallel scans): the analysis must pickle, and the
    mirrored query still works on the other side."""
    import pickle

    from vigil.signals.robust import MIRROR_FEATURES

    here = _analyse(giraffe)
    ra = pickle.loads(pickle.dumps(here))
    mirrored = ra.mirrored()
    assert len(mirrored) == min(len(ra.query), MIRROR_FEATURES) == len(here.mirrored())
    assert np.array_equal(mirrored.desc, here.mirrored().desc)


def test_region_pass_skips_small_rectangles(giraffe):
    """Rectangles under MIN_REGION_AREA of the query are found but not searched: on photos they
    are mostly windows and panels, and each searched region costs a detection and a retrieval."""
    from vigil.signals import robust as robust_signal
    from vigil.signals.robust import MIN_REGION_AREA, find_embedded

    img, truth = _picture_in_picture(giraffe)  # 4% of the picture
    assert (truth[2] - truth[0]) * (truth[3] - truth[1]) < MIN_REGION_AREA * 1024 * 683
    data = encode_image(img, "JPEG", quality=90)
    ra = OrbSignal.analyse(decode_image(data), data)
    assert find_embedded(ra.grey)
    assert find_embedded(ra.grey, min_area=MIN_REGION_AREA) == []
    assert list(ra.regions()) == []
    big, _ = _picture_in_picture(giraffe, scale=0.4)  # 13.5%: searched
    data = encode_image(big, "JPEG", quality=90)
    rb = OrbSignal.analyse(decode_image(data), data)
    assert robust_signal.find_embedded(rb.grey, min_area=MIN_REGION_AREA)
    assert len(list(rb.regions())) >= 1


def test_small_rectangles_do_not_take_the_slots_of_a_larger_one():
    """The minimum area applies before the best ``limit`` are chosen. A small crisp rectangle (a
    window, a sign) scores higher than an embedded picture whose sides are less clean (here the
    bottom one is broken for a third of its length, and the fourth is the query's own edge);
    when the area was checked only after choosing, it took the only slot and was then dropped,
    and the embedded picture was never searched."""
    from vigil.signals.robust import find_embedded

    rng = np.random.default_rng(3)
    grey = np.clip(120 + rng.normal(0, 2, (480, 640)), 0, 255).astype(np.uint8)
    grey[60:160, 60:180] = 20  # 4% of the picture, four crisp sides
    grey[200:440, 400:] = 220  # 28%: three sides inside the picture, the fourth its right edge
    grey[440:470, 480:560] = 220  # the bottom side broken for 80 of its 240 px
    small, large = (60, 60, 180, 160), (400, 200, 639, 440)
    best = find_embedded(grey, limit=2)
    assert _iou(best[0], small) > 0.9 and _iou(best[1], large) > 0.9
    (only,) = find_embedded(grey, limit=1, min_area=0.06)
    assert _iou(only, large) > 0.9


def _textured(seed: int, picture: np.ndarray, width: int = 256):
    """``picture`` (grey) pasted at ``width`` px, at a random place, on a 640x480 texture whose
    every few pixels carry a strong edge (blurred noise: a lawn, gravel); returns the query and
    the pasted rectangle."""
    import cv2

    rng = np.random.default_rng(seed)
    tex = cv2.GaussianBlur(rng.normal(128, 60, (480, 640)).astype(np.float32), (0, 0), 1.2)
    grey = np.clip(tex, 0, 255).astype(np.uint8)
    h = round(width * picture.shape[0] / picture.shape[1])
    x, y = int(rng.integers(0, 640 - width)), int(rng.integers(0, 480 - h))
    grey[y : y + h, x : x + width] = cv2.resize(picture, (width, h), interpolation=cv2.INTER_AREA)
    return grey, (x, y, x + width, y + h)


def test_embedded_picture_is_found_on_a_texture_of_edges(giraffe, monkeypatch):
    """On a texture, most pixels have a strong gradient (over half of them here): rows of
    thresholded gradient were as long there as the embedded picture's own sides, and with
    those maps no rectangle of it is formed (none of these 12). Canny's thin edges, each
    counted for one direction only, seldom line up over a side's length (8 of the 12 found)."""
    from vigil.signals import robust as robust_signal
    from vigil.signals.robust import MIN_REGION_AREA, _line_edges, _strong_gradient, find_embedded

    picture = np.asarray(giraffe.convert("L"))
    queries = [_textured(seed, picture) for seed in range(12)]

    def found() -> int:
        return sum(any(_iou(r, truth) > 0.7 for r in find_embedded(grey, min_area=MIN_REGION_AREA))
                   for grey, truth in queries)

    assert found() >= 6
    grey = queries[-1][0]
    horizontal, vertical = _line_edges(grey)
    assert horizontal.mean() < 0.4 and vertical.mean() < 0.4
    # the thresholded gradient used before: most of the texture is edge, and nothing is found
    assert _strong_gradient(grey, 0, 1).mean() > 0.5 and _strong_gradient(grey, 1, 0).mean() > 0.5
    monkeypatch.setattr(robust_signal, "_line_edges",
                        lambda g: (_strong_gradient(g, 0, 1), _strong_gradient(g, 1, 0)))
    assert found() == 0


def test_two_perfect_sides_outrank_four_that_a_texture_lines_up():
    """A screen recording: app chrome (a dark status bar, a white page) around a star field.
    The star field lines up middling edges into four-sided rectangles; the picture has two
    perfect sides (top and bottom) and the screen's own edges. Rectangles rank by the mean
    cover of their sides, so the picture comes first; when each side's cover was added up,
    star rectangles with four sides came first."""
    import cv2

    from vigil.signals.robust import MIN_REGION_AREA, find_embedded

    rng = np.random.default_rng(0)
    grey = np.full((640, 420), 245, np.uint8)
    grey[:30] = 20
    stars = np.zeros((420, 420), np.float32)
    at = rng.integers(0, 420, (4000, 2))
    stars[at[:, 0], at[:, 1]] = rng.uniform(120, 255, 4000)
    grey[70:490] = np.clip(cv2.GaussianBlur(stars, (0, 0), 1.0) * 4 + 10, 0, 255).astype(np.uint8)
    best = find_embedded(grey, min_area=MIN_REGION_AREA)[0]
    assert _iou(best, (0, 70, 419, 490)) > 0.85


def test_region_keypoints_are_spread_over_the_cut_out(giraffe):
    """A cut-out that is not exactly the embedded picture holds some of what surrounds it (here
    a strip of noise, as sharp as a lawn or an app's text); its strongest 400 corners are then
    mostly there, and a plain picture keeps few. The region's 400 are taken spread over the
    cut-out from its 800 strongest."""
    from vigil.signals.robust import (
        REGION_FAST,
        REGION_FEATURES,
        Region,
        extract_features,
        prepare_luma,
    )

    picture = np.asarray(giraffe.convert("L").resize((480, 320)), np.float32)
    cut = np.zeros((320, 640), np.uint8)
    cut[:, :160] = np.random.default_rng(0).integers(0, 256, (320, 160))
    cut[:, 160:] = np.clip(128 + (picture - 128) * 0.5, 0, 255).astype(np.uint8)  # low contrast
    f = Region((0.0, 0.0, 640.0, 320.0), cut, 1.0).features()
    grey, s = prepare_luma(cut, 640)
    strongest = extract_features(grey, REGION_FEATURES, s, REGION_FAST)
    on_picture = int((f.xy[:, 0] >= 165).sum())
    assert len(f) == REGION_FEATURES
    assert on_picture >= 1.3 * int((strongest.xy[:, 0] >= 165).sum()) and on_picture >= 90


def test_spread_order_is_round_robin_over_cells_and_levels():
    """spread_order (vectorised) against the definition: round after round, the strongest
    remaining keypoint of every (4x4 cell, level band), stronger (lower index) first."""
    from vigil.signals.robust import LocalFeatures, spread_order

    def _take_rounds(queues, k):
        rounds = []
        depth = 0
        while len(rounds) < k:
            layer = sorted(q[depth] for q in queues.values() if depth < len(q))
            rounds += layer[: k - len(rounds)]
            depth += 1
        return rounds

    rng = np.random.default_rng(7)
    for n in (30, 400, 1000):
        xy = np.column_stack([rng.uniform(0, 640, n), rng.uniform(0, 480, n)]).astype(np.float32)
        xy[: n // 2] *= 0.2  # half of them, the strongest, crowd one corner (a caption, say)
        f = LocalFeatures(xy, np.zeros((n, 32), np.uint8), (480, 640),
                          octave=rng.integers(0, 8, n).astype(np.int16))
        for k in (10, 256, 300):
            want = sorted(_take_rounds({c: q for c, q in _cells(f).items()}, min(k, n)))
            assert spread_order(f, k).tolist() == want


def _cells(f) -> dict[int, list[int]]:
    rows, cols = f.size
    cell = (np.minimum(3, (f.xy[:, 1] * 4 // rows).astype(int)) * 4
            + np.minimum(3, (f.xy[:, 0] * 4 // cols).astype(int)))
    cell = cell + 16 * np.minimum(2, f.octave.astype(int) // 2)
    out: dict[int, list[int]] = {}
    for i, c in enumerate(cell.tolist()):
        out.setdefault(c, []).append(i)
    return out


def test_votes_reach_the_picture_past_strong_clutter(giraffe, photos, monkeypatch):
    """A caption or a border edge takes the strongest keypoints of a query; the voting
    descriptors are spread over the picture, so the picture's own still find it."""
    from vigil.core import robust as core_robust
    from vigil.signals.robust import LocalFeatures

    ref = _analyse(giraffe)
    with Image.open(photos[5]) as im:
        other = _analyse(im.convert("RGB"))
    index = LocalFeatureIndex()
    index.add(np.full(len(ref.banked), 1), ref.banked.desc)
    index.add(np.full(len(other.banked), 2), other.banked.desc)
    # the query: the giraffe's own features, behind 600 stronger ones that match nothing, all in
    # one corner (random 256-bit descriptors are ~128 bits from everything banked)
    q = ref.query
    rng = np.random.default_rng(3)
    n = 600
    clutter_xy = rng.uniform(0, 100, (n, 2)).astype(np.float32)
    feats = LocalFeatures(np.concatenate([clutter_xy, q.xy]),
                          np.concatenate([rng.integers(0, 256, (n, 32), dtype=np.uint8), q.desc]),
                          q.size, q.scale, np.concatenate([np.zeros(n, np.int16), q.octave]))
    votes = index.vote(core_robust.vote_codes(feats), top=3)
    assert votes and votes[0][0] == 1
    monkeypatch.setattr(core_robust, "VOTE_SPREAD", False)  # the strongest only: clutter alone
    assert [i for i, _ in index.vote(core_robust.vote_codes(feats), top=3)] == []


def test_verify_min_inliers_fails_early_without_changing_results(giraffe):
    from vigil.core.robust import MIN_INLIERS

    q = _analyse(giraffe.rotate(5, expand=True)).query
    ref = _analyse(giraffe).banked
    v = verify(q, ref)
    assert v is not None and v.inliers >= 15
    again = verify(q, ref, min_inliers=v.inliers)
    assert again is not None and again.inliers == v.inliers
    assert verify(q, ref, min_inliers=v.inliers + 1000) is None
    assert verify(q, ref, min_inliers=1) is not None  # never below MIN_INLIERS
    assert MIN_INLIERS >= 4


def _caption(img: Image.Image, share: float) -> Image.Image:
    """A solid caption bar with text over the bottom ``share`` of ``img``."""
    from PIL import ImageDraw

    out = img.copy()
    w, h = out.size
    d = ImageDraw.Draw(out)
    d.rectangle((0, round(h * (1 - share)), w, h), fill=(38, 38, 38))
    for i in range(6):
        d.text((20 + 90 * i, round(h * (1 - share / 2))), "#news", fill=(255, 255, 255))
    return out


def test_caption_bars_are_found_and_only_where_they_are(giraffe, photos):
    from vigil.signals.robust import find_bars

    for share in (0.15, 0.3):
        data = encode_image(_caption(giraffe, share), "JPEG", quality=90)
        decoded = decode_image(data)
        ra = OrbSignal.analyse(decoded)
        rows, cols = ra.grey.shape
        # the bar's edge in the features' picture (the decoder trims the bar's plain rows)
        top, bottom, _, _ = decoded.box
        edge = (decoded.luma.shape[0] * (1 - share) - top) * rows / (bottom - top)
        bars = find_bars(ra.grey)
        assert len(bars) == 1
        x0, y0, x1, y1 = bars[0]
        assert (x0, y0, x1) == (0, 0, cols) and abs(y1 - edge) <= 3
        turned = _analyse(_caption(giraffe, share).rotate(90, expand=True))
        side = find_bars(turned.grey)  # the bar is now at the right: the left part is visible
        assert len(side) == 1
        assert side[0][:2] == (0, 0) and side[0][3] == turned.grey.shape[0]
        assert side[0][2] < 0.9 * turned.grey.shape[1]
    for p in photos[:6]:  # plain photos carry no bar
        with Image.open(p) as im:
            assert find_bars(_analyse(im.convert("RGB")).grey) == []


def test_coverage_counts_what_a_caption_bar_left_visible(giraffe):
    """A bar over 30% of the query hides part of the reference; coverage is measured against
    the visible part (at most MAX_BAR of the reference excused), so the match needs less of
    the whole reference and a logo stays rejected."""
    from vigil.core.robust import _visible_coverage
    from vigil.signals.robust import MAX_BAR, find_bars

    ref = _analyse(giraffe).banked
    ra = _analyse(_caption(giraffe, 0.3))
    plain = verify(ra.query, ref, min_coverage=0.0)
    assert plain is not None
    strict = plain.coverage + 0.1  # more than the whole reference gives
    assert verify(ra.query, ref, min_coverage=strict) is None
    seen = verify(ra.query, ref, min_coverage=strict, visible=lambda: find_bars(ra.grey))
    assert seen is not None and seen.coverage >= strict and seen.inliers == plain.inliers
    # no bar, no excuse; and however small the visible part, at most MAX_BAR is excused
    assert verify(ra.query, ref, min_coverage=strict, visible=list) is None
    hull = 1000.0
    assert _visible_coverage(100.0, ref, np.eye(3), hull, [(0, 0, 1, 1)]) == pytest.approx(
        100.0 / max((1 - MAX_BAR) * hull, 0.05 * ref.size[0] * ref.size[1]))


def test_embedded_picture_is_rehashed_with_pdq(core, photos, tmp_path, giraffe):
    """A picture embedded whole in another is cut out and re-hashed with PDQ: it matches a bank
    that holds only the PDQ hash (a partner's hash list, no local features), with the region as
    evidence; an unrelated embedded picture does not."""
    from vigil.core.banks import EntrySpec

    core.create_bank("hashes")
    sigs = [s for s in hash_file(photos[0]).signals if s.type == "pdq"]
    (eid,) = core.add_entries("hashes", [EntrySpec(sigs)])
    img, truth = _picture_in_picture(giraffe, scale=0.45, at=(300, 150))
    q = save(img, tmp_path / "pip.jpg", quality=90)
    result = core.match_file(q).to_dict()
    (hit,) = result["matches"]
    assert hit["entry_id"] == eid and hit["signal_type"] == "pdq"
    assert hit["variant"] == "pdq+region" and hit["distance"] <= 31
    xs = [p[0] for p in hit["evidence"]["region"]]
    ys = [p[1] for p in hit["evidence"]["region"]]
    k = decode_image(q.read_bytes()).luma.shape[1] / 1024  # evidence is in decoded-luma pixels
    assert _iou((min(xs), min(ys), max(xs), max(ys)), [c * k for c in truth]) > 0.9
    from vigil.core.robust import explain_file

    res = explain_file(core, q, tmp_path / "why.png")
    assert res["explained"]["variant"] == "pdq+region" and res["explained"]["distance"] <= 31
    assert (tmp_path / "why.png").stat().st_size > 1000
    with Image.open(photos[9]) as im:
        other, _ = _picture_in_picture(im.convert("RGB"), scale=0.45, at=(300, 150))
    assert core.match_file(save(other, tmp_path / "o.jpg", quality=90)).to_dict()["matches"] == []


def test_region_pdq_is_close_to_pdq_of_the_same_pixels(photos):
    """A cut-out region is PDQ-hashed from a fixed-size resize (its own size would cost new
    filter weights each time); the hash stays close to PDQ of the same pixels."""
    from vigil.signals.pdq import PdqSignal, hash_luma
    from vigil.signals.robust import Region

    gaps = []
    for p in photos[:8]:
        luma = decode_image(p.read_bytes()).luma  # a scaled decode: its own exact PDQ is the truth
        exact, _ = hash_luma(luma.astype(np.float32))
        approx, quality = Region((0, 0, 1, 1), luma, 1.0).pdq()
        assert quality > 0
        gaps.append(PdqSignal.distance(exact, approx["original"]))
    assert max(gaps) <= 24 and np.median(gaps) <= 12, gaps
