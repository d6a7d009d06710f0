"""The CLI is the public contract: JSON lines on stdout, errors on stderr and in the item's
``error`` field, exit 0/1/2. Run in-process with an injected data directory."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps
from typer.testing import CliRunner

from conftest import save
from vigil.cli.main import app


@pytest.fixture
def cli(tmp_path: Path, db_url: str):
    runner = CliRunner()
    base = ["--data-dir", str(tmp_path / "data"), "--database-url", db_url]

    def run(*args: str, input: str | None = None):
        return runner.invoke(app, [*base, *map(str, args)], input=input, env={"COLUMNS": "200"})

    return run


def lines(result) -> list[dict]:
    return [json.loads(x) for x in result.stdout.splitlines() if x.strip()]


def test_hash_json_shape(cli, photos, tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    r = cli("hash", photos[0], empty, "--json")
    assert r.exit_code == 1  # one item failed
    ok, bad = lines(r)
    assert ok["path"] == str(photos[0]) and ok["error"] is None
    types = [s["type"] for s in ok["signals"]]
    assert types == ["md5", "sha256", "pdq"]
    pdq = ok["signals"][2]
    assert len(pdq["value"]) == 64 and 0 <= pdq["quality"] <= 100
    assert bad["signals"] == [] and bad["error"]["code"] == "empty_file"
    assert "empty" in r.stderr


def test_hash_table_reports_low_quality(cli, tmp_path):
    flat = save(Image.new("RGB", (300, 200), (90, 90, 90)), tmp_path / "flat.png")
    r = cli("hash", flat)
    assert r.exit_code == 0 and "low quality" in r.stdout
    (obj,) = lines(cli("hash", flat, "--json"))
    pdq = [s for s in obj["signals"] if s["type"] == "pdq"][0]
    assert pdq["quality"] < 50 and len(pdq["value"]) == 64


def test_bank_lifecycle(cli, photos, tmp_path):
    assert cli("bank", "create", "known", "--threshold", "pdq=25", "--json").exit_code == 0
    r = cli("bank", "create", "known")
    assert r.exit_code == 2 and "already exists" in r.stderr
    r = cli("bank", "add", "known", photos[0], photos[1], "--label", "group=G", "--label", "severity=high", "--json")
    assert r.exit_code == 0, r.stderr
    added = lines(r)
    assert [a["error"] for a in added] == [None, None]
    eid = added[0]["entry_id"]
    (info,) = lines(cli("bank", "show", "known", "--json"))
    assert info["entries"] == 2 and info["thresholds"]["pdq"] == 25
    assert [b["name"] for b in lines(cli("bank", "list", "--json"))] == ["known"]
    (m,) = lines(cli("match", photos[0], "--json"))
    assert m["matches"][0]["entry_id"] == eid and m["matches"][0]["labels"] == {"group": "G", "severity": "high"}
    assert set(m["matches"][0]) >= {"bank", "entry_id", "signal_type", "distance", "variant", "labels"}
    assert cli("bank", "disable", "known", eid).exit_code == 0
    (m,) = lines(cli("match", photos[0], "--json"))
    assert m["matches"] == [] and m["error"] is None
    assert cli("bank", "enable", "known", eid, "--json").exit_code == 0
    (m,) = lines(cli("match", photos[0], "--json"))
    assert m["matches"][0]["entry_id"] == eid
    r = cli("bank", "disable", "known", 9999)
    assert r.exit_code == 2 and "no entry 9999" in r.stderr
    r = cli("bank", "show", "nope")
    assert r.exit_code == 2 and "no bank named" in r.stderr
    assert cli("bank", "set-threshold", "known", "pdq=10").exit_code == 0
    assert lines(cli("bank", "show", "known", "--json"))[0]["thresholds"]["pdq"] == 10


def test_import_export_round_trip_through_the_cli(cli, tmp_path):
    rng = np.random.default_rng(5)
    hexes = [rng.integers(0, 256, 32, dtype=np.uint8).tobytes().hex() for _ in range(5)]
    src = tmp_path / "in.csv"
    src.write_text("signal_type,signal_value,group\n" + "".join(f"pdq,{h},G{i}\n" for i, h in enumerate(hexes)))
    cli("bank", "create", "a")
    r = cli("bank", "import", "a", src, "--json")
    assert r.exit_code == 0 and lines(r) == [{"bank": "a", "imported": 5, "error": None}]
    out_csv = tmp_path / "out.csv"
    assert cli("bank", "export", "a", "--out", out_csv).exit_code == 0
    text = out_csv.read_text().splitlines()
    assert text[0].startswith("signal_type,signal_value,entry,quality,variant,reference,group")
    assert [row.split(",")[1] for row in text[1:]] == hexes
    cli("bank", "create", "b")
    assert cli("bank", "import", "b", out_csv).exit_code == 0
    r = cli("bank", "export", "b", "--format", "jsonl")
    exported = lines(r)
    assert [e["signals"][0]["value"] for e in exported] == hexes
    assert [e["labels"]["group"] for e in exported] == [f"G{i}" for i in range(5)]
    jl = tmp_path / "b.jsonl"
    jl.write_text(r.stdout)
    cli("bank", "create", "c")
    assert lines(cli("bank", "import", "c", jl, "--format", "jsonl", "--json"))[0]["imported"] == 5
    bad = tmp_path / "bad.csv"
    bad.write_text("signal_type,signal_value\npdq,zz\n")
    r = cli("bank", "import", "c", bad)
    assert r.exit_code == 1 and "line 2" in r.stderr


def test_match_signals_and_signals_from(cli, tmp_path):
    h = "f" * 64
    cli("bank", "create", "k")
    (tmp_path / "l.csv").write_text(f"signal_type,signal_value\npdq,{h}\n")
    cli("bank", "import", "k", tmp_path / "l.csv")
    near = "e" + "f" * 63  # 1 bit away
    r = cli("match", "--signal", f"pdq:{near}", "--json")
    (m,) = lines(r)
    assert m["signal"] == f"pdq:{near}" and m["matches"][0]["distance"] == 1
    listing = tmp_path / "sigs.txt"
    listing.write_text(f"# a comment\npdq:{h}\n\nmd5:{'0' * 32}\npdq:nothex\n")
    r = cli("match", "--signals-from", listing, "--json")
    got = lines(r)
    assert r.exit_code == 1
    bad = [g for g in got if g["error"]]
    assert len(got) == 3 and len(bad) == 1 and bad[0]["error"]["code"] == "invalid_signal"
    r = cli("match", "--signals-from", "-", "--json", input=f"pdq:{h}\n")
    assert lines(r)[0]["matches"][0]["distance"] == 0
    r = cli("match")
    assert r.exit_code == 2


def test_usage_errors_exit_2(cli):
    assert cli("bank", "create").exit_code == 2
    assert cli("bank", "create", "x", "--threshold", "pdq=999").exit_code == 2
    assert cli("bank", "create", "x", "--kind", "maybe").exit_code == 2
    assert cli("nonsense").exit_code == 2
    assert cli("bank", "add", "x", "/nonexistent", "--label", "severity=extreme").exit_code == 2


def test_scan_is_resumable_parallel_and_summarises(cli, photos, tmp_path):
    cli("bank", "create", "known")
    cli("bank", "add", "known", photos[0], photos[1])
    folder = tmp_path / "uploads"
    with Image.open(photos[0]) as im:
        save(ImageOps.mirror(im.convert("RGB")), folder / "a" / "mirrored.jpg", quality=80)
    save(Image.open(photos[5]).convert("RGB"), folder / "unrelated.jpg")
    (folder / "b").mkdir()
    (folder / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    (folder / "notes.txt").write_text("hello")
    r = cli("scan", folder, "--workers", "2", "--json")
    assert r.exit_code == 1  # the broken PNG
    got = lines(r)
    summary = got[-1]["summary"]
    assert summary == {"files": 4, "checked": 4, "skipped": 0, "matched": 1, "allowed": 0,
                       "not_images": 1, "errors": 1}
    by_name = {Path(g["path"]).name: g for g in got[:-1]}
    assert by_name["mirrored.jpg"]["matches"][0]["variant"] == "flip-x"
    assert by_name["broken.png"]["error"]["code"] == "corrupt_media"
    # a re-run skips what was checked; a changed file is checked again
    r = cli("scan", folder, "--json")
    assert lines(r)[-1]["summary"]["skipped"] == 4
    (folder / "notes.txt").write_text("changed")
    os.utime(folder / "notes.txt", ns=(1, 1))
    assert lines(cli("scan", folder, "--json"))[-1]["summary"]["checked"] == 1
    assert lines(cli("scan", folder, "--rescan", "--json"))[-1]["summary"]["checked"] == 4
    r = cli("scan", folder)  # human summary
    assert "4 files" in r.stdout and "skipped" in r.stdout
    r = cli("scan", tmp_path / "missing")
    assert r.exit_code == 2 and "not a directory" in r.stderr


def test_demo_runs_and_explains(cli, tmp_path):
    r = cli("demo", "--workdir", tmp_path / "demo")
    assert r.exit_code == 0, r.stdout + r.stderr
    out = r.stdout
    assert out.count("MATCH") >= 6 and "no match" in out and "error" in out
    assert "variant rot90" in out and "variant flip-x" in out and "variant trimmed" in out
    assert "variant robust" in out  # the crop: PDQ misses it, the robust tier finds it


def test_bank_robust_mode(cli):
    cli("bank", "create", "known")
    assert lines(cli("bank", "show", "known", "--json"))[0]["robust_mode"] == "on-miss"
    r = cli("bank", "robust-mode", "known", "off", "--json")
    assert r.exit_code == 0 and lines(r)[0]["robust_mode"] == "off"
    assert lines(cli("bank", "show", "known", "--json"))[0]["robust_mode"] == "off"
    r = cli("bank", "robust-mode", "known", "sometimes")
    assert r.exit_code == 2 and "robust mode must be one of" in r.stderr
