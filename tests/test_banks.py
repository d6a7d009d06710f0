"""Banks and entries: kinds, thresholds, labels, tombstones, import/export and atomic imports."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vigil.core.banks import EntrySpec, parse_import, parse_thresholds
from vigil.core.labels import parse_label_args, validate_labels
from vigil.errors import ImportFormatError, NotFound, UnknownSignalType, UsageError
from vigil.signals import Signal


def rand_pdq(rng: np.random.Generator) -> str:
    return rng.integers(0, 256, 32, dtype=np.uint8).tobytes().hex()


def test_create_list_show(core):
    core.create_bank("known", "block", {"pdq": 20}, "test bank")
    core.create_bank("benign", "allow")
    banks = {b["name"]: b for b in core.list_banks()}
    assert banks["known"]["kind"] == "block" and banks["benign"]["kind"] == "allow"
    assert banks["known"]["thresholds"]["pdq"] == 20
    assert banks["benign"]["thresholds"]["pdq"] == 31  # the PDQ default
    assert core.bank_info("known")["entries"] == 0
    with pytest.raises(NotFound):
        core.bank_info("nope")


@pytest.mark.parametrize("name", ["", "has space", "x" * 129, "-lead", "semi;colon"])
def test_bad_bank_names(core, name):
    with pytest.raises(UsageError):
        core.create_bank(name)


def test_bad_kind_and_thresholds(core):
    with pytest.raises(UsageError, match="kind"):
        core.create_bank("x", "maybe")
    with pytest.raises(UsageError, match="between 0 and 96"):
        parse_thresholds(["pdq=300"])
    with pytest.raises(UsageError, match="integer"):
        parse_thresholds(["pdq=abc"])
    with pytest.raises(UnknownSignalType):
        parse_thresholds(["phash=3"])
    with pytest.raises(UsageError, match="type=distance"):
        parse_thresholds(["31"])
    assert parse_thresholds(["PDQ=0", "md5=0"]) == {"pdq": 0, "md5": 0}


def test_labels_are_validated():
    assert validate_labels({"Severity": "HIGH", "tlp": "TLP:AMBER", "group": " G "}) == {
        "severity": "high", "tlp": "amber", "group": "G"}
    assert validate_labels({"tlp": "white"}) == {"tlp": "clear"}
    with pytest.raises(UsageError, match="severity must be one of"):
        validate_labels({"severity": "extreme"})
    with pytest.raises(UsageError, match="tlp must be one of"):
        validate_labels({"tlp": "purple"})
    with pytest.raises(UsageError, match="lower-case identifier"):
        validate_labels({"bad key": "x"})
    with pytest.raises(UsageError, match="key=value"):
        parse_label_args(["group"])
    assert parse_label_args(["group=A=B", "campaign=x"]) == {"group": "A=B", "campaign": "x"}


def test_add_disable_enable_entries(core):
    core.create_bank("known")
    rng = np.random.default_rng(1)
    hexes = [rand_pdq(rng) for _ in range(3)]
    ids = core.add_entries("known", [EntrySpec([Signal("pdq", h, 100)], {"group": "g"}) for h in hexes])
    assert len(ids) == 3
    info = core.bank_info("known")
    assert info["entries"] == 3 and info["signals"] == {"pdq": 3}
    res = core.set_enabled("known", ids[0], False)
    assert res["changed"] and core.bank_info("known")["disabled_entries"] == 1
    assert not core.set_enabled("known", ids[0], False)["changed"]  # idempotent
    assert core.entry(ids[0])["enabled"] is False  # tombstoned, not deleted
    core.set_enabled("known", ids[0], True)
    assert core.bank_info("known")["entries"] == 3
    core.create_bank("other")
    with pytest.raises(NotFound):
        core.set_enabled("other", ids[1], False)  # entry of another bank


CSV_OK = """signal_type,signal_value,group,severity,note
pdq,{a},Group A,high,first
pdq,{b},Group B,low,
md5,d41d8cd98f00b204e9800998ecf8427e,,,empty file
"""


def test_import_csv_and_export_round_trip(core, tmp_path):
    rng = np.random.default_rng(2)
    a, b = rand_pdq(rng), rand_pdq(rng)
    src = tmp_path / "list.csv"
    src.write_text(CSV_OK.format(a=a, b=b))
    core.create_bank("partner")
    assert core.import_file("partner", src, "csv") == 3
    rows = list(core.export("partner"))
    assert [(s[0].type, s[0].value) for _, s in rows] == [("pdq", a), ("pdq", b), ("md5", "d41d8cd98f00b204e9800998ecf8427e")]
    assert rows[0][0].labels == {"group": "Group A", "severity": "high", "note": "first"}


def test_import_headerless_hma_style_list():
    specs = parse_import(io.StringIO("pdq," + "a" * 64 + "\npdq," + "b" * 64 + "\n"), "csv")
    assert [str(s.signals[0]) for s in specs] == ["pdq:" + "a" * 64, "pdq:" + "b" * 64]


def test_import_groups_rows_by_entry_column():
    text = "signal_type,signal_value,entry,group\nmd5," + "1" * 32 + ",e1,G\npdq," + "2" * 64 + ",e1,\n"
    (spec,) = parse_import(io.StringIO(text), "csv")
    assert [s.type for s in spec.signals] == ["md5", "pdq"] and spec.labels == {"group": "G"}


@pytest.mark.parametrize(
    "text, message",
    [
        ("value,type\n", "header must start with signal_type,signal_value"),
        ("signal_type,signal_value\npdq,abc\n", "line 2: pdq value must be 64 hex digits"),
        ("signal_type,signal_value\npdq," + "0" * 64 + "\nwhat," + "0" * 64 + "\n", "line 3: unknown signal type 'what'"),
        ("signal_type,signal_value,severity\npdq," + "0" * 64 + ",extreme\n", "line 2: severity"),
        ("signal_type,signal_value\npdq," + "0" * 64 + ",extra\n", "line 2: 3 fields"),
        ("signal_type,signal_value,quality\npdq," + "0" * 64 + ",high\n", "line 2: quality must be an integer"),
    ],
)
def test_malformed_csv_fails_with_line_number(text, message):
    with pytest.raises(ImportFormatError, match=message):
        parse_import(io.StringIO(text), "csv")


def test_malformed_import_writes_nothing(core, tmp_path):
    core.create_bank("partner")
    good = "\n".join(f"pdq,{i:064x}" for i in range(50))
    (tmp_path / "bad.csv").write_text("signal_type,signal_value\n" + good + "\npdq,nothex\n")
    with pytest.raises(ImportFormatError, match="line 52"):
        core.import_file("partner", tmp_path / "bad.csv", "csv")
    assert core.bank_info("partner")["entries"] == 0


def test_import_jsonl_forms_and_errors(core, tmp_path):
    lines = [
        {"signals": ["pdq:" + "a" * 64, {"type": "md5", "value": "b" * 32}], "labels": {"group": "G"}},
        {"signal_type": "pdq", "signal_value": "c" * 64, "quality": 90},
        {"signal": "sha256:" + "d" * 64, "reference": "partner-42"},
    ]
    src = tmp_path / "list.jsonl"
    src.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    core.create_bank("j")
    assert core.import_file("j", src, "jsonl") == 3
    entries = list(core.export("j"))
    assert len(entries[0][1]) == 2 and entries[2][0].reference == "partner-42"
    for bad, msg in [("{not json", "line 1: not JSON"), ("[1,2]", "expected a JSON object"),
                     ('{"labels": {}}', "no signals"), ('{"signals": "pdq:x"}', "must be a list"),
                     ('{"signal": "pdq:xyz"}', "64 hex digits")]:
        with pytest.raises(ImportFormatError, match=msg):
            parse_import(io.StringIO(bad + "\n"), "jsonl")


def test_unknown_format_and_unreadable_file(core, tmp_path):
    core.create_bank("x")
    with pytest.raises(UsageError, match="csv or jsonl"):
        core.import_file("x", _write(tmp_path / "a.csv", "signal_type,signal_value\n"), "xml")
    with pytest.raises(UsageError, match="cannot read"):
        core.import_file("x", tmp_path / "missing.csv", "csv")
    (tmp_path / "latin.csv").write_bytes(b"signal_type,signal_value\n\xff\xfe\n")
    with pytest.raises(UsageError, match="not UTF-8"):
        core.import_file("x", tmp_path / "latin.csv", "csv")


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_import_killed_mid_transaction_leaves_bank_as_it_was(core, settings, tmp_path):
    """kill -9 in the middle of an import (after thousands of rows were inserted, before the
    commit) leaves the bank exactly as it was; the same import then succeeds."""
    core.create_bank("partner")
    core.import_file("partner", _write(tmp_path / "first.csv", "signal_type,signal_value\npdq," + "e" * 64 + "\n"), "csv")
    rows = "\n".join(f"pdq,{i:064x}" for i in range(1, 6001))
    big = _write(tmp_path / "big.csv", "signal_type,signal_value\n" + rows + "\n")
    env = {**os.environ, "VIGIL_FAULT_KILL_AFTER_ENTRIES": "4000"}
    cmd = [sys.executable, "-m", "vigil.cli.main", "--data-dir", str(settings.data_dir),
           "--database-url", settings.database_url or "", "bank", "import", "partner", str(big)]
    proc = subprocess.run(cmd, env=env, capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    assert core.bank_info("partner")["entries"] == 1
    env.pop("VIGIL_FAULT_KILL_AFTER_ENTRIES")
    proc = subprocess.run(cmd, env=env, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    assert core.bank_info("partner")["entries"] == 6001
