"""The ``vigil`` command line: the public contract that scripts and other tools depend on.

Every command takes ``--json`` and then prints one JSON object per item and per line on stdout;
human output is a table. Errors go to stderr and, with ``--json``, to the item's ``error`` field.
Progress bars go to stderr. Exit status (:class:`ReturnCode`): 0 when every item was processed,
matches or not; 1 when some items failed; 2 on usage errors.
"""

from __future__ import annotations

import csv
import enum
import json
import sys
import typing as t
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from vigil.config import Settings
from vigil.core.app import ItemResult, Vigil, default_workers
from vigil.core.banks import KNOWN_LABELS, csv_header, parse_thresholds
from vigil.core.labels import parse_label_args
from vigil.errors import InvalidSignal, UsageError, VigilError
from vigil.signals import Signal

__all__ = ["ReturnCode", "app", "main"]


class ReturnCode(enum.IntEnum):
    OK = 0
    ITEM_FAILED = 1
    USAGE = 2


app = typer.Typer(
    name="vigil",
    help="Recognise known media and its edited re-uploads.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bank_app = typer.Typer(help="Create, inspect and fill banks of known media.", no_args_is_help=True)
app.add_typer(bank_app, name="bank")
from vigil.cli.bench_cmds import bench_app  # a sub-app in its own module

app.add_typer(bench_app, name="bench")

out = Console(soft_wrap=True, highlight=False)
err = Console(stderr=True, highlight=False)


class _State:
    data_dir: Path | None = None
    database_url: str | None = None
    vigil: Vigil | None = None


state = _State()

JsonOpt = t.Annotated[bool, typer.Option("--json", help="One JSON object per line on stdout.")]


def _close() -> None:
    if state.vigil is not None:
        state.vigil.close()
        state.vigil = None


@app.callback()
def _root(
    ctx: typer.Context,
    data_dir: t.Annotated[
        Path | None,
        typer.Option("--data-dir", envvar="VIGIL_DATA", help="Data directory [default: ./vigil-data]."),
    ] = None,
    database_url: t.Annotated[
        str | None,
        typer.Option("--database-url", envvar="VIGIL_DATABASE_URL",
                     help="SQLAlchemy URL; default a SQLite file in the data directory."),
    ] = None,
) -> None:
    state.data_dir = data_dir
    state.database_url = database_url
    state.vigil = None
    ctx.call_on_close(_close)


def core() -> Vigil:
    if state.vigil is None:
        state.vigil = Vigil(Settings.from_env(state.data_dir, state.database_url))
    return state.vigil


def emit(obj: t.Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def fail(exc: VigilError) -> t.NoReturn:
    err.print(f"[red]error:[/red] {exc.message}")
    raise typer.Exit(ReturnCode.USAGE if isinstance(exc, UsageError | InvalidSignal) or exc.status in (404, 409) else ReturnCode.ITEM_FAILED)


def progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=err, transient=True, disable=not err.is_terminal,
    )


def expand(paths: t.Sequence[Path]) -> list[Path]:
    """Files as given; directories expanded recursively (sorted)."""
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files += sorted(q for q in p.rglob("*") if q.is_file())
        else:
            files.append(p)
    return files


def _report_error(item: ItemResult) -> None:
    if item.error is not None:
        err.print(f"[red]error:[/red] {item.error.message}")


# -- hash ----------------------------------------------------------------------------------------
@app.command("hash")
def hash_cmd(paths: t.Annotated[list[Path], typer.Argument(help="Files or folders.")],
             json_out: JsonOpt = False,
             vpdq_dir: t.Annotated[Path | None, typer.Option(
                 "--vpdq-dir", help="Also write each video's frame hashes there, in Meta's vPDQ "
                 "text form (<name>.vpdq.txt).")] = None) -> None:
    """Compute the signals of files (md5, sha256, PDQ for images, frame signals for videos)."""
    from vigil.core.hashing import hash_file

    limits = Settings.from_env(state.data_dir, state.database_url).limits
    failed = False
    files = expand(paths)
    table = Table("path", "type", "value", "quality", "variant", "note")
    with progress() as bar:
        task = bar.add_task("hashing", total=len(files))
        for i, f in enumerate(files):
            hr = hash_file(f, limits, progress=lambda x, i=i: bar.update(task, completed=i + x),
                           local_features=False)
            bar.update(task, completed=i + 1)
            if hr.video is not None and vpdq_dir is not None:
                vpdq_dir.mkdir(parents=True, exist_ok=True)
                (vpdq_dir / f"{f.name}.vpdq.txt").write_text(hr.video.to_vpdq(), encoding="utf-8")
            if hr.video is not None and not json_out:
                v = hr.video.summary()
                table.add_row(str(f), "video frames", f"{v['frames']} frames at {v['rate']}/s + "
                              f"scene changes over {v['duration']} s", "", "", "")
            if hr.error:
                failed = True
                err.print(f"[red]error:[/red] {hr.error.message}")
            if json_out:
                emit(hr.to_dict())
                continue
            note = hr.media_error.message if hr.media_error else (hr.error.message if hr.error else "")
            for s in hr.signals:
                low = " (low quality)" if s.quality is not None and s.quality < 50 else ""
                table.add_row(str(f), s.type, s.value, f"{s.quality}{low}" if s.quality is not None else "",
                              s.variant or "", note)
            if not hr.signals:
                table.add_row(str(f), "", "", "", "", note)
    if not json_out:
        out.print(table)
    raise typer.Exit(ReturnCode.ITEM_FAILED if failed else ReturnCode.OK)


# -- bank ----------------------------------------------------------------------------------------
def _bank_table(banks: list[dict[str, t.Any]]) -> Table:
    table = Table("bank", "kind", "entries", "disabled", "signals", "thresholds")
    for b in banks:
        table.add_row(b["name"], b["kind"], str(b["entries"]), str(b["disabled_entries"]),
                      ", ".join(f"{k}={v}" for k, v in b["signals"].items()),
                      ", ".join(f"{k}={v}" for k, v in b["thresholds"].items()))
    return table


@bank_app.command("create")
def bank_create(
    name: str,
    kind: t.Annotated[str, typer.Option(help="block (known bad) or allow (benign look-alikes).")] = "block",
    threshold: t.Annotated[list[str] | None, typer.Option(help="Per signal type, e.g. pdq=31.")] = None,
    description: str = "",
    json_out: JsonOpt = False,
) -> None:
    """Create a bank."""
    try:
        info = core().create_bank(name, kind, parse_thresholds(threshold or []), description)
    except VigilError as exc:
        fail(exc)
    emit(info) if json_out else out.print(_bank_table([info]))


@bank_app.command("list")
def bank_list(json_out: JsonOpt = False) -> None:
    """List banks with their entry counts and thresholds."""
    banks = core().list_banks()
    if json_out:
        for b in banks:
            emit(b)
    else:
        out.print(_bank_table(banks))


@bank_app.command("show")
def bank_show(name: str, json_out: JsonOpt = False) -> None:
    """Show one bank."""
    try:
        info = core().bank_info(name)
    except VigilError as exc:
        fail(exc)
    emit(info) if json_out else out.print(_bank_table([info]))


@bank_app.command("set-threshold")
def bank_set_threshold(name: str, threshold: t.Annotated[list[str], typer.Argument(help="e.g. pdq=20")],
                       json_out: JsonOpt = False) -> None:
    """Change a bank's per-signal-type thresholds."""
    try:
        info = core().set_thresholds(name, parse_thresholds(threshold))
    except VigilError as exc:
        fail(exc)
    emit(info) if json_out else out.print(_bank_table([info]))


@bank_app.command("add")
def bank_add(
    name: str,
    paths: t.Annotated[list[Path], typer.Argument(help="Files or folders; each file is one entry.")],
    label: t.Annotated[list[str] | None, typer.Option(help="key=value, repeatable: " + ", ".join(KNOWN_LABELS))] = None,
    json_out: JsonOpt = False,
) -> None:
    """Hash files and add each as an entry (the bank keeps signals and labels, never the media)."""
    try:
        labels = parse_label_args(label or [])
        files = expand(paths)
        failed = False
        table = Table("path", "entry", "signals", "error")
        with progress() as bar:
            task = bar.add_task("adding", total=len(files))
            done = [0]

            def advanced() -> None:
                done[0] += 1
                bar.update(task, completed=done[0])

            for item in core().add_files(name, files, labels, progress=advanced,
                                         fraction=lambda x: bar.update(task, completed=done[0] + x)):
                failed |= item.error is not None
                _report_error(item)
                sigs = [s.to_dict() for s in item.hashed.signals] if item.hashed else []
                if json_out:
                    emit({"path": item.path, "entry_id": item.entry_id, "signals": sigs,
                          "error": item.error.to_dict() if item.error else None})
                else:
                    table.add_row(item.path, str(item.entry_id or ""), ", ".join(s["type"] for s in sigs),
                                  item.error.message if item.error else "")
    except VigilError as exc:
        fail(exc)
    if not json_out:
        out.print(table)
    raise typer.Exit(ReturnCode.ITEM_FAILED if failed else ReturnCode.OK)


@bank_app.command("robust-mode")
def bank_robust_mode(
    name: str,
    mode: t.Annotated[str, typer.Argument(help="always, on-miss (the default) or off")],
    json_out: JsonOpt = False,
) -> None:
    """When the robust tier (local features) runs for this bank: always, on-miss (only when the
    exact and PDQ tiers found nothing in it) or off."""
    try:
        info = core().set_robust_mode(name, mode)
    except VigilError as exc:
        fail(exc)
    emit(info) if json_out else out.print(f"{name}: robust tier {info['robust_mode']}")


@bank_app.command("video-settings")
def bank_video_settings(
    name: str,
    min_seconds: t.Annotated[float | None, typer.Option(help="Shortest matched segment, seconds (default 3).")] = None,
    min_share: t.Annotated[float | None, typer.Option(help="Or: smallest share of the reference a segment covers (0-1).")] = None,
    no_min_share: t.Annotated[bool, typer.Option("--no-min-share", help="Stop using a minimum share.")] = False,
    frame_threshold: t.Annotated[int | None, typer.Option(help="Largest PDQ distance between matching frames.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Show or change a bank's video matching settings."""
    from vigil.core import video as videoops

    try:
        with core().store.transaction() as s:
            st = videoops.set_settings(s, name, min_seconds=min_seconds, min_share=min_share,
                                       frame_threshold=frame_threshold, clear_share=no_min_share)
    except VigilError as exc:
        fail(exc)
    res = {"bank": name, **st.to_dict()}
    emit(res) if json_out else out.print(", ".join(f"{k}={v}" for k, v in res.items()))


@bank_app.command("import")
def bank_import(
    name: str,
    file: Path,
    fmt: t.Annotated[str, typer.Option("--format", help="csv, jsonl, or vpdq (one video's frame "
                                          "hashes in Meta's vPDQ text form, as one entry)")] = "csv",
    label: t.Annotated[list[str] | None, typer.Option(help="Labels for entries that lack them.")] = None,
    json_out: JsonOpt = False,
) -> None:
    """Import a hash list (CSV `signal_type,signal_value[,labels…]` or JSONL) in one transaction."""
    try:
        n = core().import_file(name, file, fmt, parse_label_args(label or []))
    except VigilError as exc:
        fail(exc)
    if json_out:
        emit({"bank": name, "imported": n, "error": None})
    else:
        out.print(f"imported {n} entries into {name}")


@bank_app.command("export")
def bank_export(
    name: str,
    fmt: t.Annotated[str, typer.Option("--format", help="csv, jsonl, or vpdq (video entries: "
                                          "one vPDQ text file each in the --out folder)")] = "csv",
    output: t.Annotated[Path | None, typer.Option("--out", help="File to write; default stdout.")] = None,
) -> None:
    """Export a bank's enabled entries as a hash list (PDQ as Meta's 64-hex form)."""
    if fmt == "vpdq":  # one file per video entry, in Meta's vPDQ text form, and a manifest
        from vigil.core import video as videoops

        if output is None:
            fail(UsageError("--format vpdq writes one file per video: give a folder with --out"))
        try:
            rows = videoops.export_vpdq_dir(core().store, name, output)
        except VigilError as exc:
            fail(exc)
        out.print(f"exported {len(rows)} video entries of {name} to {output}")
        return
    if fmt not in ("csv", "jsonl"):
        fail(UsageError(f"--format must be csv, jsonl or vpdq, got {fmt!r}"))
    v = core()
    try:
        v.bank_info(name)
        fh = output.open("w", newline="", encoding="utf-8") if output else sys.stdout
    except (VigilError, OSError) as exc:
        fail(exc if isinstance(exc, VigilError) else UsageError(str(exc)))
    try:
        if fmt == "jsonl":
            from vigil.core.robust import export_signal_dicts

            for e, sigs in v.export(name):
                fh.write(json.dumps({
                    "entry_id": e.id, "reference": e.reference, "labels": e.labels,
                    # orb rows carry their payload (base64), so the import can match with it
                    "signals": export_signal_dicts(v.store, sigs),
                }, ensure_ascii=False) + "\n")
        else:
            extra = {k for e, _ in v.export(name) for k in e.labels}
            header = csv_header(extra)
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(header)
            from vigil.core.robust import export_signal_dicts

            for e, sigs in v.export(name):
                # orb rows carry their payload (base64) in the last column, as in JSONL
                for r, d in zip(sigs, export_signal_dicts(v.store, sigs)):
                    base = {"signal_type": r.type, "signal_value": r.value, "entry": e.id,
                            "quality": r.quality, "variant": r.variant, "reference": e.reference,
                            "payload": d.get("payload")}
                    row = {**e.labels, **base}
                    writer.writerow(["" if row.get(c) is None else row.get(c) for c in header])
    finally:
        if output:
            fh.close()


def _toggle(name: str, entry_id: int, enabled: bool, json_out: bool) -> None:
    try:
        res = core().set_enabled(name, entry_id, enabled)
    except VigilError as exc:
        fail(exc)
    if json_out:
        emit(res)
    else:
        state_word = "enabled" if enabled else "disabled"
        out.print(f"entry {entry_id} in {name} {state_word}" + ("" if res["changed"] else " (no change)"))


@bank_app.command("disable")
def bank_disable(name: str, entry_id: int, json_out: JsonOpt = False) -> None:
    """Tombstone an entry: it stops matching at once and is kept for the record."""
    _toggle(name, entry_id, False, json_out)


@bank_app.command("enable")
def bank_enable(name: str, entry_id: int, json_out: JsonOpt = False) -> None:
    """Re-enable a disabled entry."""
    _toggle(name, entry_id, True, json_out)


# -- match / scan --------------------------------------------------------------------------------
def _match_table() -> Table:
    return Table("item", "result", "bank", "entry", "signal", "distance", "variant", "labels")


def _add_rows(table: Table, item: ItemResult) -> None:
    name = item.path or item.signal or ""
    if item.error:
        table.add_row(name, "[red]error[/red]", "", "", "", "", "", item.error.message)
        return
    o = item.outcome
    if o is None or not (o.matches or o.allowed):
        note = item.hashed.media_error.message if item.hashed and item.hashed.media_error else ""
        table.add_row(name, "no match", "", "", "", "", "", note)
        return
    kind = "[bold red]MATCH[/bold red]" if o.matches else "[green]allowed[/green]"
    for h in o.matches or o.allowed:
        labels = ", ".join(f"{k}={v}" for k, v in h.labels.items())
        table.add_row(name, kind, h.bank, str(h.entry_id), h.signal_type,
                      f"{h.distance}/{h.threshold}", h.variant, labels)
    for h in o.suppressed:
        table.add_row(name, "suppressed", h.bank, str(h.entry_id), h.signal_type,
                      f"{h.distance}/{h.threshold}", h.variant, "suppressed by an allow bank")


@app.command("match")
def match_cmd(
    paths: t.Annotated[list[Path] | None, typer.Argument(help="Files or folders to check.")] = None,
    signal: t.Annotated[list[str] | None, typer.Option(help="A signal type:value, repeatable.")] = None,
    signals_from: t.Annotated[Path | None, typer.Option(help="File with one type:value per line ('-' for stdin).")] = None,
    json_out: JsonOpt = False,
    explain: t.Annotated[Path | None, typer.Option(help="Draw why this file matched (with --out).")] = None,
    overlay: t.Annotated[Path, typer.Option("--out", help="PNG written by --explain.")] = Path("overlay.png"),
) -> None:
    """Check files or signals against every bank."""
    if explain is not None:
        from vigil.core.robust import explain_file

        try:
            res = explain_file(core(), explain, overlay)
        except VigilError as exc:
            fail(exc)
        if json_out:
            emit(res)
        else:
            ex = res["explained"]
            why = ("" if not ex else f"PDQ distance {ex['distance']}" if ex["inliers"] is None
                   else f"{ex['inliers']} inliers, coverage {ex['coverage']:.2f}")
            out.print(f"{explain}: " + (f"entry {ex['entry_id']} in {ex['bank']}: {why} "
                      f"({ex['variant']}); drawn to {overlay}"
                      if ex else "no verified local-feature match to draw"))
        raise typer.Exit(ReturnCode.OK)
    if not paths and not signal and signals_from is None:
        fail(UsageError("give files, --signal or --signals-from"))
    v = core()
    failed = False
    table = _match_table()

    def show(item: ItemResult) -> None:
        nonlocal failed
        failed |= item.error is not None
        _report_error(item)
        emit(item.to_dict()) if json_out else _add_rows(table, item)

    raw: list[str] = list(signal or [])
    if signals_from is not None:
        try:
            text = sys.stdin.read() if str(signals_from) == "-" else signals_from.read_text(encoding="utf-8")
        except OSError as exc:
            fail(UsageError(f"{signals_from}: cannot read: {exc.strerror or exc}"))
        raw += [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    parsed: list[Signal] = []
    for r in raw:
        try:
            parsed.append(Signal.parse(r))
        except InvalidSignal as exc:
            show(ItemResult(signal=r.strip(), error=exc))
    if parsed:
        for item in v.match_signals(parsed):
            show(item)
    files = expand(paths or [])
    with progress() as bar:
        task = bar.add_task("matching", total=len(files))
        for i, f in enumerate(files):
            show(v.match_file(f, fraction=lambda x, i=i: bar.update(task, completed=i + x)))
            bar.update(task, completed=i + 1)
    if not json_out:
        out.print(table)
    raise typer.Exit(ReturnCode.ITEM_FAILED if failed else ReturnCode.OK)


@app.command("scan")
def scan_cmd(
    directory: Path,
    workers: t.Annotated[int, typer.Option(help="Hashing processes.")] = default_workers(),
    rescan: t.Annotated[bool, typer.Option(help="Check files again even if already checked.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Check every file under a folder, in parallel; a re-run skips files already checked."""
    v = core()
    table = _match_table()
    with progress() as bar:
        task = bar.add_task("scanning", total=None)

        def on_item(item: ItemResult) -> None:
            bar.advance(task)
            _report_error(item)
            if json_out:
                emit(item.to_dict())
            elif item.error or (item.outcome and (item.outcome.matches or item.outcome.allowed)):
                _add_rows(table, item)

        try:
            summary = v.scan(directory, workers=workers, rescan=rescan,
                             on_total=lambda n: bar.update(task, total=n), on_item=on_item)
        except VigilError as exc:
            fail(exc)
    if json_out:
        emit({"summary": summary.to_dict()})
    else:
        out.print(table)
        s = summary
        out.print(f"{s.files} files: {s.checked} checked, {s.skipped} skipped (already checked), "
                  f"{s.matched} matched, {s.allowed} allowed look-alikes, {s.not_images} not images "
                  f"(byte hashes only), {s.errors} errors")
    raise typer.Exit(ReturnCode.ITEM_FAILED if summary.errors else ReturnCode.OK)


@app.command("demo")
def demo_cmd(
    workdir: t.Annotated[Path | None, typer.Option(help="Where to write the edited copies; default a temporary folder.")] = None,
) -> None:
    """Build a demo bank from the bundled sample photos, edit copies, scan them, show the result."""
    from vigil.demo import run_demo

    raise typer.Exit(run_demo(core(), out, workdir))


from vigil.cli import service_cmds  # noqa: E402,F401  (serve, token, audit, retention)


def main() -> None:
    try:
        app()
    except VigilError as exc:  # anything a command did not handle itself
        err.print(f"[red]error:[/red] {exc.message}")
        sys.exit(ReturnCode.ITEM_FAILED)


if __name__ == "__main__":
    main()
