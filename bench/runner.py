"""Run hadr's benchmarks side by side with the tools a user would otherwise pick, and print the ratios.

Each ``bench/bench_<name>.py`` exposes ``run() -> list[Figure]``. Usage::

    python3 bench/runner.py                 # every benchmark
    python3 bench/runner.py pipeline        # only bench_pipeline.py
    python3 bench/runner.py --markdown ...  # the table as markdown, for docs/BENCHMARKS.md

A target reads ``ratio >= 0.8`` (ours against theirs, where above 1 means hadr is better) or ``< 150``
(ours, in the figure's unit); an empty target marks a figure that is only informative.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
_TARGET = re.compile(r"^\s*(ratio)?\s*(>=|<=|>|<)\s*([0-9.]+)")


@dataclass(frozen=True)
class Figure:
    name: str
    ours: float
    theirs: float | None
    unit: str
    higher_is_better: bool
    competitor: str
    target: str

    @property
    def ratio(self) -> float | None:
        """How many times as good as the competitor hadr is (above 1: better)."""
        if not self.theirs or not self.ours:
            return None
        return self.ours / self.theirs if self.higher_is_better else self.theirs / self.ours

    @property
    def met(self) -> bool | None:
        match = _TARGET.match(self.target)
        if not match:
            return None
        value = self.ratio if match.group(1) else self.ours
        if value is None:
            return None
        bound = float(match.group(3))
        return {">=": value >= bound, "<=": value <= bound, ">": value > bound, "<": value < bound}[match.group(2)]


def timed(command: list[str] | str, *, cwd: Path = ROOT, env: dict | None = None) -> float:
    """Wall seconds of one run of ``command`` (a string runs under bash); fails loudly if it fails."""
    args = ["bash", "-c", command] if isinstance(command, str) else command
    start = time.perf_counter()
    result = subprocess.run(args, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"benchmark command failed ({result.returncode}): {command}\n{result.stderr.decode()}")
    return elapsed


def machine() -> str:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in _read_lines("/proc/cpuinfo") if line.startswith("model name")),
        platform.processor() or "unknown CPU",
    )
    system = f"{platform.system()} {platform.release()}"
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {system}"


def _read_lines(path: str) -> list[str]:
    try:
        return Path(path).read_text().splitlines()
    except OSError:
        return []


def run_benchmarks(names: list[str]) -> list[Figure]:
    sys.path[:0] = [str(BENCH_DIR), str(ROOT)]
    if not names:
        names = sorted(p.stem.removeprefix("bench_") for p in BENCH_DIR.glob("bench_*.py"))
    figures: list[Figure] = []
    for name in names:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        figures.extend(importlib.import_module(f"bench_{name}").run())
    return figures


def _cells(figure: Figure) -> list[str]:
    ratio = "-" if figure.ratio is None else f"{figure.ratio:.2f}"
    met = {True: "yes", False: "NO", None: "-"}[figure.met]
    theirs = "-" if figure.theirs is None else f"{figure.theirs:,.1f}"
    return [
        figure.name,
        f"{figure.ours:,.1f}",
        theirs,
        figure.unit,
        ratio,
        figure.target or "-",
        met,
        figure.competitor,
    ]


HEADINGS = ["benchmark", "hadr", "theirs", "unit", "ratio", "target", "met", "compared with"]


def render_text(figures: list[Figure]) -> str:
    rows = [HEADINGS] + [_cells(f) for f in figures]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADINGS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def render_markdown(figures: list[Figure]) -> str:
    lines = ["| " + " | ".join(HEADINGS) + " |", "|" + "---|" * len(HEADINGS)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in _cells(f)) + " |" for f in figures]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run hadr's benchmarks against the usual tools.")
    parser.add_argument("names", nargs="*", help="benchmarks to run (bench_<name>.py); default: all")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    args = parser.parse_args(argv)
    figures = run_benchmarks(args.names)
    table = render_markdown(figures) if args.markdown else render_text(figures)
    print(f"Machine: {machine()}; zstd: {_version('zstd', '--version')}; openssl: {_version('openssl', 'version')}\n")
    print(table)
    return 0 if all(f.met is not False for f in figures) else 1


def _version(tool: str, flag: str) -> str:
    if not shutil.which(tool):
        return "not installed"
    output = subprocess.run([tool, flag], capture_output=True, text=True).stdout.strip()
    found = re.search(r"v?(\d+\.\d+\.\d+)", output)
    return found.group(1) if found else output


if __name__ == "__main__":
    sys.exit(main())
