"""Shared helpers for the benchmark scripts: thread pinning, machine facts, statistics, output.

Import this module *before* numpy, faiss or vigil: :func:`pin_threads` only works when the
thread-count variables are set before those libraries load their thread pools. Each script does::

    import _common
    _common.pin_threads(1)
    import numpy as np  # noqa: E402

Results go to ``benchmarks/out/<name>.json`` (raw numbers, git-ignored) and
``benchmarks/out/<name>.md`` (the Markdown section that ``docs/benchmarks.md`` carries).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import typing as t
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: the CPUs this process may use before any pinning (machine_info reports this one)
_CPUS_AT_IMPORT = (
    len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
)
OUT = REPO / "benchmarks" / "out"

_THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)


def pin_threads(n: int = 1, *, cpu: int | None = None) -> dict[str, t.Any]:
    """Limit BLAS/OpenMP pools to ``n`` threads and, when ``cpu`` is given, the process to that
    one CPU. Must run before numpy/faiss are imported; refuses to run after."""
    loaded = [m for m in ("numpy", "faiss", "vigil") if m in sys.modules]
    if loaded:
        raise RuntimeError(f"pin_threads() must run before importing {', '.join(loaded)}")
    for var in _THREAD_VARS:
        os.environ[var] = str(n)
    info: dict[str, t.Any] = {"threads": n, "env": {v: os.environ[v] for v in _THREAD_VARS}}
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
        info["cpu_affinity"] = sorted(os.sched_getaffinity(0))
    return info


def pin_from_argv(main: bool) -> dict[str, t.Any]:
    """For a script run as ``__main__``: one thread, pinned to the CPU given by ``--cpu`` (the
    first allowed one by default) unless ``--no-pin``; the real parser still owns those flags,
    this only reads them early, before numpy and FAISS load. Imported (by a test): nothing."""
    if not main:
        return {}
    import argparse

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--no-pin", action="store_true")
    pre.add_argument("--cpu", type=int, default=None)
    known, _ = pre.parse_known_args()
    cpu = None if known.no_pin else (known.cpu if known.cpu is not None else first_allowed_cpu())
    return pin_threads(1, cpu=cpu)


def first_allowed_cpu() -> int | None:
    if hasattr(os, "sched_getaffinity"):
        return min(os.sched_getaffinity(0))
    return None


# -- machine --------------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _version(mod: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(mod)
    except ImportError:  # importlib.metadata.PackageNotFoundError
        return None


def _git() -> dict[str, t.Any]:
    def run(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=False
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    dirty = [ln[3:] for ln in run("status", "--porcelain", "--", "src").splitlines() if ln]
    return {"commit": run("rev-parse", "--short", "HEAD").strip(), "src_uncommitted_changes": dirty}


def machine_info() -> dict[str, t.Any]:
    """CPU model, cores, RAM and library versions, for the results to be read against."""
    info: dict[str, t.Any] = {
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "cpus_allowed": _CPUS_AT_IMPORT,
        "ram_bytes": _mem_total(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "numpy": _version("numpy"),
        "faiss": _version("faiss-cpu"),
        "Pillow": _version("pillow"),
        "pdqhash": _version("pdqhash"),
        "SQLAlchemy": _version("sqlalchemy"),
        "git": _git(),
        "date_utc": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    try:
        info["loadavg_at_start"] = list(os.getloadavg())
    except OSError:
        pass
    return info


def machine_line(m: dict[str, t.Any]) -> str:
    ram = f"{m['ram_bytes'] / 2**30:.1f} GiB RAM" if m.get("ram_bytes") else "RAM unknown"
    dirty = m["git"]["src_uncommitted_changes"]
    git = m["git"]["commit"] + (
        f" + uncommitted changes in {len(dirty)} path(s) under src/ (listed in the JSON)"
        if dirty
        else ""
    )
    return (
        f"{m['cpu_model']}, {m['logical_cpus']} logical CPUs ({m['cpus_allowed']} allowed), {ram}; "
        f"Python {m['python']}, numpy {m['numpy']}, faiss-cpu {m['faiss']}, Pillow {m['Pillow']}, "
        f"pdqhash {m['pdqhash']}, SQLAlchemy {m['SQLAlchemy']}; git {git}; {m['date_utc']}; "
        f"load average at start {', '.join(f'{x:.2f}' for x in m.get('loadavg_at_start', []))}"
    )


def command_line() -> str:
    """The command as run, with the script path relative to the repository."""
    script = Path(sys.argv[0]).resolve()
    try:
        script_s = str(script.relative_to(REPO))
    except ValueError:
        script_s = str(script)
    return " ".join(["python", script_s, *sys.argv[1:]])


# -- process memory ---------------------------------------------------------------------------------
def proc_status(field: str, pid: int | str = "self") -> int:
    """A ``/proc/<pid>/status`` field in bytes (VmRSS, VmHWM, ...)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux: write 5 to clear_refs). False if not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# -- statistics -------------------------------------------------------------------------------------
def percentile(values: t.Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100), as numpy's default."""
    xs = sorted(values)
    if not xs:
        return float("nan")
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def median(values: t.Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summary(values: t.Sequence[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "median": median(values),
        "p99": percentile(values, 99),
        "min": min(values) if values else float("nan"),
        "max": max(values) if values else float("nan"),
    }


# -- output -----------------------------------------------------------------------------------------
def md_table(
    header: t.Sequence[str], rows: t.Iterable[t.Sequence[t.Any]], align: str | None = None
) -> str:
    """A Markdown table; ``align`` is one letter per column, l or r (default: first l, rest r)."""
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(name: str, data: dict[str, t.Any], markdown: str) -> tuple[Path, Path]:
    OUT.mkdir(parents=True, exist_ok=True)
    jpath = OUT / f"{name}.json"
    mpath = OUT / f"{name}.md"
    jpath.write_text(json.dumps(data, indent=2, default=str) + "\n")
    mpath.write_text(markdown.rstrip() + "\n")
    return jpath, mpath


def fmt_ms(seconds: float, digits: int = 2) -> str:
    return f"{seconds * 1e3:.{digits}f} ms"
