"""Run the benchmarks and write docs/BENCHMARKS.md.

Each ``benchmarks/bench_*.py`` module has ``run(quick: bool) -> str`` returning a Markdown section.
Results of every module are kept in ``benchmarks/results/<name>.md`` so that running one module
(``python benchmarks/run.py engine``) refreshes its section without re-running the others.

Usage: ``make bench`` (all), ``python benchmarks/run.py NAME ...``, ``--quick`` for a smoke run,
``--collect`` to rebuild docs/BENCHMARKS.md from the kept results (after running a module by hand).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, no GPU; Python {platform.python_version()}, "
            f"torch {torch.__version__}")


def commit() -> str:
    """The checkout's short commit, with ``+changes`` when tracked files differ from it."""
    import subprocess

    def git(*a):
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def load(name: str):
    path = HERE / f"bench_{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(HERE))
    sys.modules[spec.name] = mod  # dataclasses and pickling (process pools) look the module up by name
    spec.loader.exec_module(mod)
    return mod


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, to check the benchmarks run")
    p.add_argument("--collect", action="store_true",
                   help="run nothing: rebuild docs/BENCHMARKS.md from benchmarks/results/*.md")
    args = p.parse_args()
    available = sorted(f.stem[len("bench_"):] for f in HERE.glob("bench_*.py"))
    names = [] if args.collect else (args.names or available)
    unknown = [n for n in names if n not in available]
    if unknown:
        print(f"unknown benchmark {unknown[0]!r}; available: {', '.join(available)}", file=sys.stderr)
        return 2
    RESULTS.mkdir(exist_ok=True)
    for name in names:
        t0 = time.perf_counter()
        print(f"== {name}", flush=True)
        section = load(name).run(quick=args.quick)
        stamp = (f"\n_Measured {datetime.date.today()} by `python benchmarks/run.py {name}`"
                 f"{' --quick' if args.quick else ''} at commit {commit()} in {time.perf_counter() - t0:.0f} s on "
                 f"{machine()}; load average {os.getloadavg()[0]:.1f} at the end._\n")
        (RESULTS / f"{name}.md").write_text(section.rstrip() + "\n" + stamp)
        print(section)
    parts = ["# Benchmarks\n",
             "Every performance or accuracy claim of dnntune comes from one of these benchmarks, run side by side "
             "in one process on the machine named under each section. Regenerate with `make bench` "
             "(all) or `.venv/bin/python benchmarks/run.py NAME`.\n"]
    for name in available:
        f = RESULTS / f"{name}.md"
        if f.exists():
            parts.append(f.read_text())
    (ROOT / "docs" / "BENCHMARKS.md").write_text("\n".join(parts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
