"""``vigil bench``: benchmarks that reproduce the numbers in docs/ (see :mod:`vigil.bench`)."""

from __future__ import annotations

import json
import typing as t
from pathlib import Path

import typer

__all__ = ["bench_app"]

bench_app = typer.Typer(help="Benchmarks that reproduce the tables in docs/.", no_args_is_help=True)


@bench_app.command("robustness")
def robustness_cmd(
    out: t.Annotated[Path, typer.Option("--out", help="Folder for every stage's files.")] = Path("bench-robustness"),
    quick: t.Annotated[bool, typer.Option("--quick", help="A small subset (CI, a few minutes).")] = False,
    stage: t.Annotated[list[str] | None, typer.Option(help="Run only these stages (repeatable).")] = None,
    workers: t.Annotated[int, typer.Option(help="Processes for the query and match stages.")] = 1,
    corpus: t.Annotated[Path | None, typer.Option(help="The media corpus (default ../shared/corpus).")] = None,
    refs: t.Annotated[int, typer.Option(help="Banked references (0: 90, or 12 with --quick).")] = 0,
    neg_edits: t.Annotated[int, typer.Option(help="Edits per negative picture (0: all, or 8 with --quick).")] = 0,
    seed: t.Annotated[int | None, typer.Option(help="Sample of references, edits and placements (default 20240501; later stages take the run's own).")] = None,
) -> None:
    """Recall under evasive edits vs false matches, PDQ-only against Vigil, in one run."""
    from vigil.bench.robustness import STAGES, Config, run
    from vigil.errors import UsageError

    bad = [s for s in stage or [] if s not in STAGES]
    if bad:
        raise typer.BadParameter(f"unknown stage(s) {bad}; stages: {', '.join(STAGES)}")
    cfg = Config(out=out, quick=quick, workers=max(1, workers), n_refs=max(0, refs),
                 neg_edits_per_image=neg_edits or 0)
    if corpus is not None:
        cfg.corpus = corpus
    if seed is not None:
        cfg.seed = seed

    def report(name: str, seconds: float) -> None:
        typer.echo(json.dumps({"stage": name, "seconds": seconds}))

    try:
        run(cfg, stage or None, on_stage=report, seed_given=seed is not None)
    except UsageError as exc:
        typer.echo(exc.message, err=True)
        raise typer.Exit(2) from exc
    metrics = out / "metrics.json"
    if metrics.exists():
        m = json.loads(metrics.read_text())
        typer.echo(json.dumps({"summary": m["summary"], "tiers": m["tiers"],
                               "robust_ms_median": m["robust_ms_median"]}))


@bench_app.command("video")
def video_cmd(
    quick: t.Annotated[bool, typer.Option("--quick", help="6 videos, 9 edit families (a few minutes).")] = False,
    corpus: t.Annotated[Path | None, typer.Option(help="The media corpus (default ../shared/corpus).")] = None,
    work: t.Annotated[Path | None, typer.Option(help="Folder for variants and the store (default benchmarks/out/video-work).")] = None,
) -> None:
    """Video matching per edit family (recall, false matches, boundary error) and hashing speed
    against decoding and hashing every frame; runs benchmarks/bench_video.py (results in
    benchmarks/out/video*.md, quoted in docs/video.md)."""
    import subprocess
    import sys

    import vigil

    script = Path(vigil.__file__).resolve().parents[2] / "benchmarks" / "bench_video.py"
    if not script.is_file():
        typer.echo(f"{script} not found: `vigil bench video` runs from a source checkout", err=True)
        raise typer.Exit(2)
    args = [sys.executable, str(script)]
    if quick:
        args.append("--quick")
    if corpus is not None:
        args += ["--corpus", str(corpus)]
    if work is not None:
        args += ["--work", str(work)]
    raise typer.Exit(subprocess.run(args, check=False).returncode)
