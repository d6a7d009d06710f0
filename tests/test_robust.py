"""The robust tier: the ``orb`` signal type, its payloads, the local-feature index, geometric
verification, and the tier inside the matcher cascade (on both databases)."""

from __future__ import annotations

import json
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
