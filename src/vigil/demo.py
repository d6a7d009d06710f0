"""``vigil demo``: the main job end to end on the embedded default (SQLite + in-process index).

1. Builds a block bank ``demo-releases`` from the bundled sample photos (public-domain/CC0 photos
   standing in for known releases, labelled with made-up groups).
2. Writes edited copies of some of them (crop, letterbox, flip, 90° rotation, logo overlay,
   re-encode, resize), unrelated photos, a text file and a truncated JPEG to a folder.
3. Scans that folder and prints what matched, what did not, and why.
"""

from __future__ import annotations

import shutil
import tempfile
import typing as t
from pathlib import Path

from PIL import Image, ImageDraw, ImageOps
from rich.console import Console
from rich.table import Table

from vigil.core.app import ItemResult, Vigil
from vigil.core.banks import EntrySpec
from vigil.core.hashing import hash_file
from vigil.errors import NotFound
from vigil.signals.pdq import PdqSignal

__all__ = ["SAMPLES", "run_demo", "sample_photos"]

SAMPLES = Path(__file__).parent / "samples" / "images"
BANK = "demo-releases"
GROUPS = ("Northwind Media Office", "Red Kestrel Productions", "Example Front Media")
CATEGORIES = ("glorification", "recruitment", "instruction")
SEVERITIES = ("high", "medium", "critical")


def sample_photos() -> list[Path]:
    return sorted(SAMPLES.glob("*.jpg"))


def _logo(size: int) -> Image.Image:
    logo = Image.new("RGBA", (size, size // 2), (0, 0, 0, 0))
    d = ImageDraw.Draw(logo)
    d.rounded_rectangle((0, 0, size - 1, size // 2 - 1), radius=size // 10, fill=(20, 20, 160, 230))
    d.ellipse((size // 12, size // 12, size // 2.6, size // 2.6), fill=(250, 200, 0, 255))
    d.text((size // 2.3, size // 6), "CHANNEL", fill=(255, 255, 255, 255))
    return logo


EDITS: dict[str, t.Callable[[Image.Image], Image.Image]] = {
    "cropped to its central 70%": lambda im: im.crop(
        (int(im.width * 0.15), int(im.height * 0.15), int(im.width * 0.85), int(im.height * 0.85))
    ),
    "letterbox (black bars)": lambda im: ImageOps.pad(im, (im.width, int(im.width * 1.0)), color=(0, 0, 0)),
    "mirrored left-right": lambda im: ImageOps.mirror(im),
    "rotated 90° clockwise": lambda im: im.transpose(Image.Transpose.ROTATE_270),
    "channel logo in a corner": lambda im: _stamp(im),
    "re-encoded as JPEG q25": lambda im: im,  # the quality is applied on save
    "resized to 40%": lambda im: im.resize((int(im.width * 0.4), int(im.height * 0.4))),
    "pillarbox in grey padding": lambda im: ImageOps.pad(im, (int(im.height * 2.0), im.height), color=(128, 128, 128)),
}


def _stamp(im: Image.Image) -> Image.Image:
    out = im.convert("RGB").copy()
    logo = _logo(max(32, im.width // 5))
    out.paste(logo, (im.width - logo.width - 10, 10), logo)
    return out


def build_bank(v: Vigil, photos: list[Path]) -> dict[str, int]:
    """Create and fill the demo bank (once); returns file name -> entry id."""
    try:
        v.bank_info(BANK)
    except NotFound:
        v.create_bank(BANK, "block", description="demo: sample photos standing in for releases")
        specs, payloads = [], {}
        for i, p in enumerate(photos):
            hr = hash_file(p)
            signals = list(hr.signals)
            if hr.robust is not None:  # the robust tier's local features, as `bank add` keeps them
                signals.append(hr.robust.signal)
                payloads[hr.robust.signal.value] = hr.robust.payload
            labels = {
                "group": GROUPS[i % len(GROUPS)],
                "category": CATEGORIES[i % len(CATEGORIES)],
                "severity": SEVERITIES[i % len(SEVERITIES)],
                "release": f"release-{i + 1:03d}",
                "source": "vigil demo",
                "tlp": "green",
            }
            specs.append(EntrySpec(signals, labels, p.name))
        v.add_entries(BANK, specs, payloads)
    return {e.reference: e.id for e, _ in v.export(BANK) if e.reference}


def write_queries(photos: list[Path], others: list[Path], folder: Path) -> dict[str, str]:
    """Edited copies and negatives; returns file name -> what it is."""
    what: dict[str, str] = {}
    for i, (edit, fn) in enumerate(EDITS.items()):
        src = photos[i % len(photos)]
        with Image.open(src) as im:
            edited = fn(im.convert("RGB"))
        name = f"{i + 1:02d}-{src.stem}.jpg"
        edited.save(folder / name, quality=25 if "q25" in edit else 88)
        what[name] = f"{edit} of {src.name}"
    for src in others:
        shutil.copy(src, folder / f"unrelated-{src.name}")
        what[f"unrelated-{src.name}"] = "an unrelated photo (not in the bank)"
    (folder / "notes.txt").write_text("a text file: checked by its byte hashes only\n")
    what["notes.txt"] = "a text file"
    data = photos[0].read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    what["truncated.jpg"] = "a JPEG cut off after a third of its bytes"
    return what


def _nearest(v: Vigil, item: ItemResult) -> str:
    if item.hashed is None or not item.hashed.pdq_query:
        return ""
    banked = [r.value for _, sigs in v.export(BANK) for r in sigs if r.type == "pdq"]
    if not banked:
        return ""
    d = min(PdqSignal.distance(q, b) for q in item.hashed.pdq_query.values() for b in banked)
    return f"nearest banked PDQ is {d} bits away (threshold {PdqSignal.default_threshold})"


def run_demo(v: Vigil, console: Console, workdir: Path | None = None) -> int:
    photos = sample_photos()
    known, others = photos[:20], photos[20:26]
    console.print(f"[bold]1.[/bold] bank [cyan]{BANK}[/cyan]: {len(known)} sample photos standing in "
                  f"for known releases (database: {v.store.safe_url})")
    ids = build_bank(v, known)
    tmp = Path(tempfile.mkdtemp(prefix="vigil-demo-")) if workdir is None else workdir
    tmp.mkdir(parents=True, exist_ok=True)
    what = write_queries(known, others, tmp)
    console.print(f"[bold]2.[/bold] wrote {len(what)} files to {tmp}: edited copies, unrelated "
                  "photos, a text file and a truncated JPEG")
    console.print(f"[bold]3.[/bold] scanning {tmp}")
    items: dict[str, ItemResult] = {}
    summary = v.scan(tmp, workers=2, rescan=True, on_item=lambda it: items.__setitem__(Path(it.path or "").name, it))
    table = Table("file", "what it is", "result", "why", show_lines=False)
    for name in sorted(what):
        item = items.get(name)
        if item is None:
            continue
        if item.error:
            table.add_row(name, what[name], "[yellow]error[/yellow]", item.error.message.split(": ", 1)[-1])
        elif item.outcome and item.outcome.matches:
            h = item.outcome.matches[0]
            how = (f"{h.evidence['inliers']} matching local features covering "
                   f"{h.evidence['coverage']:.0%} of it" if h.evidence else
                   f"{h.signal_type} distance {h.distance} <= {h.threshold}")
            why = (f"entry {h.entry_id} ({h.reference}, {h.labels.get('group')}, "
                   f"{h.labels.get('release')}): {how}, variant {h.variant}")
            table.add_row(name, what[name], "[bold red]MATCH[/bold red]", why)
        elif item.hashed and item.hashed.media_error:
            table.add_row(name, what[name], "no match", "not an image: md5/sha256 only, no bank hit")
        elif name.startswith("unrelated-"):
            table.add_row(name, what[name], "no match", _nearest(v, item))
        else:
            table.add_row(name, what[name], "[yellow]missed[/yellow]",
                          _nearest(v, item) + "; no tier recognised this edit")
    console.print(table)
    console.print(f"{summary.checked} files checked: {summary.matched} matched, "
                  f"{summary.checked - summary.matched - summary.errors} did not, {summary.errors} could not be read. "
                  f"Bank entries: {len(ids)}.")
    if workdir is None:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0
