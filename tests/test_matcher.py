"""Matching end to end on the core: edits found with the right variant, per-bank thresholds,
allow banks suppress, tombstones stop matching at once, and the index follows the store across
processes through the change log."""

from __future__ import annotations


import numpy as np
import pytest
from PIL import Image, ImageOps

from conftest import save
from vigil.config import Settings
from vigil.core.app import Vigil
from vigil.core.banks import EntrySpec
from vigil.core.hashing import hash_file
from vigil.signals import Signal


@pytest.fixture
def banked(core, photos):
    core.create_bank("known")
    ids = {}
    for p in photos[:6]:
        (ids[p.name],) = core.add_entries("known", [EntrySpec(hash_file(p).signals, {"group": "G", "severity": "high"}, p.name)])
    return ids


EDITS = {
    "original": lambda im: im,
    "flip-x": ImageOps.mirror,
    "flip-y": ImageOps.flip,
    "rot90": lambda im: im.transpose(Image.Transpose.ROTATE_270),
    "rot180": lambda im: im.transpose(Image.Transpose.ROTATE_180),
    "rot270": lambda im: im.transpose(Image.Transpose.ROTATE_90),
    "transpose": lambda im: im.transpose(Image.Transpose.TRANSPOSE),
    "trimmed": lambda im: ImageOps.pad(im, (im.width, im.width), color=(0, 0, 0)),
    "trimmed+flip-x": lambda im: ImageOps.pad(ImageOps.mirror(im), (int(im.height * 2.2), im.height), color=(255, 255, 255)),
}


@pytest.mark.parametrize("variant", list(EDITS))
def test_edits_match_with_their_variant(core, banked, photos, tmp_path, variant):
    src = photos[1]
    with Image.open(src) as im:
        edited = EDITS[variant](im.convert("RGB"))
    path = save(edited, tmp_path / "q.jpg", quality=85)
    item = core.match_file(path)
    assert item.error is None
    hits = item.outcome.matches
    assert [h.entry_id for h in hits] == [banked[src.name]]
    assert hits[0].variant == variant and hits[0].signal_type == "pdq"
    assert hits[0].labels == {"group": "G", "severity": "high"} and hits[0].bank == "known"


def test_byte_identical_file_matches_on_md5_first(core, banked, photos):
    item = core.match_file(photos[0])
    (hit,) = item.outcome.matches
    assert hit.signal_type == "md5" and hit.distance == 0


def test_unrelated_photos_do_not_match(core, banked, photos):
    for p in photos[6:]:
        assert core.match_file(p).outcome.matches == [], p.name


def test_non_image_matches_by_bytes(core, tmp_path):
    doc = tmp_path / "statement.txt"
    doc.write_text("a known statement")
    core.create_bank("texts")
    core.add_entries("texts", [EntrySpec(hash_file(doc).signals)])
    item = core.match_file(doc)
    assert item.hashed.media_error is not None  # not an image: byte hashes only
    assert {h.signal_type for h in item.outcome.matches} <= {"md5", "sha256"}
    assert len(item.outcome.matches) == 1


def test_per_bank_thresholds(core, photos, tmp_path):
    core.create_bank("strict", thresholds={"pdq": 2})
    core.create_bank("loose", thresholds={"pdq": 40})
    sig = [s for s in hash_file(photos[2]).signals if s.type == "pdq"]
    core.add_entries("strict", [EntrySpec(sig)])
    core.add_entries("loose", [EntrySpec(sig)])
    with Image.open(photos[2]) as im:
        path = save(im.convert("RGB").resize((im.width // 3, im.height // 3)), tmp_path / "small.jpg", quality=30)
    item = core.match_file(path)
    d = item.outcome.matches[0].distance
    assert 2 < d <= 40, d  # the edit lands between the two thresholds
    assert [h.bank for h in item.outcome.matches] == ["loose"]


def test_allow_bank_suppresses_block_hits(core, banked, photos):
    core.create_bank("benign", "allow")
    core.add_entries("benign", [EntrySpec([s for s in hash_file(photos[3]).signals if s.type == "pdq"], {"note": "look-alike"})])
    item = core.match_file(photos[3])
    assert item.outcome.matches == []
    assert [h.bank for h in item.outcome.allowed] == ["benign"]
    assert [h.bank for h in item.outcome.suppressed] == ["known"]
    assert core.match_file(photos[4]).outcome.matches  # others still match


def test_disable_stops_matching_at_once_and_enable_restores(core, banked, photos):
    eid = banked[photos[5].name]
    assert core.match_file(photos[5]).outcome.matches
    core.set_enabled("known", eid, False)
    assert core.match_file(photos[5]).outcome.matches == []
    core.set_enabled("known", eid, True)
    assert [h.entry_id for h in core.match_file(photos[5]).outcome.matches] == [eid]


def test_bare_signals_and_low_quality(core):
    rng = np.random.default_rng(3)
    good = rng.integers(0, 256, 32, dtype=np.uint8)
    core.create_bank("known")
    low = Signal("pdq", (good ^ 1).tobytes().hex(), 20)  # a low-quality banked hash
    core.add_entries("known", [EntrySpec([Signal("pdq", good.tobytes().hex(), 100)]), EntrySpec([low])])
    near = good.copy()
    near[0] ^= 0b111  # 3 bits away
    (item,) = core.match_signals([Signal("pdq", near.tobytes().hex())])
    assert [(h.distance, h.variant) for h in item.outcome.matches] == [(3, "original")]
    # the low-quality entry is kept in the bank but never used for perceptual matching
    (item,) = core.match_signals([Signal("pdq", low.value)])
    assert all(h.distance > 0 for h in item.outcome.matches)
    # a low-quality query is not used for perceptual matching either
    (item,) = core.match_signals([Signal("pdq", good.tobytes().hex(), 10)])
    assert item.outcome.matches == []


def test_index_follows_the_store_across_processes(settings, photos):
    """What a second process adds or disables is seen by the first after catch-up, and a new
    process loads the saved file and replays the log instead of rebuilding."""
    a = Vigil(settings)
    a.create_bank("known")
    sig = [s for s in hash_file(photos[0]).signals if s.type == "pdq"]
    (first,) = a.add_entries("known", [EntrySpec(sig)])
    assert a.match_signals([sig[0]], record=False)[0].outcome.matches
    assert a.indexes.rebuilt  # first start: no file yet
    b = Vigil(settings)
    assert b.indexes.rebuilt == []  # the file a saved, plus the log
    (eid,) = b.add_entries("known", [EntrySpec([s for s in hash_file(photos[1]).signals if s.type == "pdq"])])
    b.set_enabled("known", first, False)
    a.indexes.catch_up()
    hits = a.match_signals([sig[0]], record=False)[0].outcome.matches
    assert hits == []
    c = Vigil(settings)
    assert c.indexes.rebuilt == []
    assert [h.entry_id for h in c.match_file(photos[1], record=False).outcome.matches] == [eid]
    for v in (a, b, c):
        v.close()


def test_stale_or_foreign_index_file_is_rebuilt(settings, tmp_path, photos):
    v = Vigil(settings)
    v.create_bank("known")
    v.add_entries("known", [EntrySpec([s for s in hash_file(photos[0]).signals if s.type == "pdq"])])
    _ = v.indexes
    v.close()
    path = settings.index_dir / "pdq.vidx"
    path.write_bytes(path.read_bytes()[:-5])  # damaged
    other = Settings(data_dir=tmp_path / "other")
    w = Vigil(Settings(data_dir=settings.data_dir, database_url=settings.database_url))
    assert "pdq" in w.indexes.rebuilt
    assert w.match_file(photos[0], record=False).outcome.matches
    w.close()
    # an index file from another store is not trusted
    x = Vigil(other)
    _ = x.indexes
    x.close()
    (other.index_dir / "pdq.vidx").replace(path)
    y = Vigil(Settings(data_dir=settings.data_dir, database_url=settings.database_url))
    assert "pdq" in y.indexes.rebuilt
    y.close()


def test_matches_are_recorded(core, banked, photos):
    from sqlalchemy import func, select

    from vigil.store.models import Match, Submission
    core.match_file(photos[0])
    with core.store.read() as s:
        assert s.scalar(select(func.count()).select_from(Submission)) == 1
        assert s.scalar(select(Match.signal_type)) == "md5"


def test_partner_hash_of_a_file_with_flat_background_still_matches(core, photos, tmp_path):
    """A partner hashes files without trimming (Meta's reference). When Vigil trims a flat
    background from the query, the untrimmed query hashes must still find that hash."""
    import pdqhash

    with Image.open(photos[2]) as im:
        padded = ImageOps.pad(im.convert("RGB"), (im.width, im.width * 2), color=(255, 255, 255))
    path = save(padded, tmp_path / "padded.png")
    vec, _ = pdqhash.compute(np.asarray(Image.open(path).convert("RGB")))
    reference = np.packbits(vec.astype(bool)).tobytes().hex()
    core.create_bank("partner")
    core.add_entries("partner", [EntrySpec([Signal("pdq", reference)])])
    item = core.match_file(path)
    assert item.hashed.trimmed
    assert [(h.bank, h.variant) for h in item.outcome.matches] == [("partner", "original")]
    assert item.outcome.matches[0].distance <= 10


def test_a_running_process_sees_other_processes_changes_on_its_next_match(settings, photos):
    """A long-running process (a scan, the server) picks up entries another process added or
    disabled at its next match, through the change log, without being told."""
    a = Vigil(settings)
    a.create_bank("known")
    _ = a.indexes  # loaded before the other process changes anything
    sig = [s for s in hash_file(photos[0]).signals if s.type == "pdq"]
    assert a.match_signals(sig, record=False)[0].outcome.matches == []
    b = Vigil(settings)
    (eid,) = b.add_entries("known", [EntrySpec(sig)])
    assert [h.entry_id for h in a.match_signals(sig, record=False)[0].outcome.matches] == [eid]
    b.set_enabled("known", eid, False)
    assert a.match_signals(sig, record=False)[0].outcome.matches == []
    assert a.refresh_indexes() == 0  # nothing new: only the head check ran
    a.close()
    b.close()


def test_bank_settings_changed_elsewhere_apply_at_the_next_match(settings, photos):
    """A running process reuses the banks' settings between matches; another process changing a
    threshold, a bank's kind of use, or deleting the bank is seen at the next match anyway."""
    a = Vigil(settings)
    a.create_bank("known")
    sig = [s for s in hash_file(photos[0]).signals if s.type == "pdq"]
    v = int(sig[0].value, 16) ^ 0b1111111  # 7 bits away
    near = [Signal("pdq", f"{v:064x}", 100)]
    (eid,) = a.add_entries("known", [EntrySpec(sig)])
    for _ in range(2):  # the second match reuses the cached settings
        assert [h.entry_id for h in a.match_signals(near, record=False)[0].outcome.matches] == [eid]
    b = Vigil(settings)
    b.set_thresholds("known", {"pdq": 5})
    assert a.match_signals(near, record=False)[0].outcome.matches == []
    b.set_thresholds("known", {"pdq": 31})
    assert [h.entry_id for h in a.match_signals(near, record=False)[0].outcome.matches] == [eid]
    a.set_thresholds("known", {"pdq": 6})  # this process's own change, too
    assert a.match_signals(near, record=False)[0].outcome.matches == []
    b.create_bank("benign", kind="allow")
    b.add_entries("benign", [EntrySpec(sig)])
    a.set_thresholds("known", {"pdq": 31})
    out = a.match_signals(near, record=False)[0].outcome
    assert out.matches == [] and [h.bank for h in out.suppressed] == ["known"]
    b.delete_bank("benign")
    assert [h.entry_id for h in a.match_signals(near, record=False)[0].outcome.matches] == [eid]
    a.close()
    b.close()
