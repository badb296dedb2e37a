"""Shared plumbing for the benchmark scripts: run each case in its own process (so its peak RSS
and CPU time are its own), repeat, print a table with ratios, write JSON.

A case is either a shell command (the raw limit: dd, cat) or a Python function in the calling
script, run as ``python script.py --case NAME`` in a child process that prints one JSON line
``{"seconds": ..., "bytes": ..., "baseline_rss": ...}`` for the timed section.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
MiB = 1 << 20


def rss_now() -> int:
    """Current resident set size of this process, in bytes (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def report(seconds: float, nbytes: int, baseline_rss: int, **extra: object) -> None:
    """Called by a child case: print its measurement as the last line of stdout."""
    print(
        json.dumps({"seconds": seconds, "bytes": nbytes, "baseline_rss": baseline_rss, **extra}),
        flush=True,
    )


@dataclass
class Result:
    name: str
    group: str
    seconds: float
    nbytes: int
    cpu_seconds: float
    peak_rss: int
    baseline_rss: int = 0
    runs: list[float] = field(default_factory=list)
    note: str = ""
    #: CPU seconds of the timed section alone (a Python case's figure without its start-up)
    cpu_section: float | None = None

    @property
    def mb_per_s(self) -> float:
        return self.nbytes / self.seconds / 1e6 if self.seconds else float("inf")

    @property
    def cpu_per_gb(self) -> float:
        return self.cpu_seconds / (self.nbytes / 1e9) if self.nbytes else 0.0

    @property
    def section_cpu_per_gb(self) -> float:
        """CPU s/GB of the timed section (a command's whole CPU: it has no start-up to speak of)."""
        cpu = self.cpu_seconds if self.cpu_section is None else self.cpu_section
        return cpu / (self.nbytes / 1e9) if self.nbytes else 0.0


def _wait(proc: subprocess.Popen[bytes]) -> tuple[int, float, int]:
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024


def run_command(argv: Sequence[str], *, stdout_to: str | None = None) -> tuple[float, float, int]:
    """Run a shell-level command; returns (wall seconds, cpu seconds, peak rss)."""
    out = open(stdout_to, "wb") if stdout_to else subprocess.DEVNULL  # noqa: SIM115
    try:
        t0 = time.perf_counter()
        proc = subprocess.Popen(list(argv), stdout=out, stderr=subprocess.PIPE)
        code, cpu, rss = _wait(proc)
        wall = time.perf_counter() - t0
    finally:
        if stdout_to:
            out.close()  # type: ignore[union-attr]
    if code != 0:
        raise RuntimeError(
            f"{argv} failed with {code}: {proc.stderr.read() if proc.stderr else ''}"
        )
    return wall, cpu, rss


def run_case(script: str, case: str, *args: str, env: dict[str, str] | None = None) -> dict:  # type: ignore[type-arg]
    """Run ``python script --case case args...``; returns its JSON plus cpu and peak rss."""
    proc = subprocess.Popen(
        [sys.executable, script, "--case", case, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out = proc.stdout.read() if proc.stdout else b""
    err = proc.stderr.read() if proc.stderr else b""
    code, cpu, rss = _wait(proc)
    if code != 0:
        raise RuntimeError(f"case {case} failed ({code}):\n{err.decode(errors='replace')[-3000:]}")
    data: dict = json.loads(out.decode().strip().splitlines()[-1])  # type: ignore[type-arg]
    data["cpu"] = cpu
    data["peak_rss"] = rss
    return data


def median_result(name: str, group: str, runs: list[dict], note: str = "") -> Result:  # type: ignore[type-arg]
    """The median run of ``runs`` (by seconds) as a Result; every run's time is kept too."""
    mid = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]
    return Result(
        name=name,
        group=group,
        seconds=mid["seconds"],
        nbytes=mid["bytes"],
        cpu_seconds=mid["cpu"],
        peak_rss=mid["peak_rss"],
        baseline_rss=mid.get("baseline_rss", 0),
        runs=[r["seconds"] for r in runs],
        note=note,
        cpu_section=mid.get("cpu_section"),
    )


def best_of(
    name: str,
    group: str,
    repeat: int,
    fn: Callable[[], dict],  # type: ignore[type-arg]
    note: str = "",
) -> Result:
    """Run ``fn`` ``repeat`` times; keep the median run (times of all runs are kept too)."""
    return median_result(name, group, [fn() for _ in range(repeat)], note)


def interleaved(
    group: str,
    cases: list[tuple[str, Callable[[], dict], str]],  # type: ignore[type-arg]
    repeat: int,
    before_each: Callable[[], None] | None = None,
) -> list[Result]:
    """Run the cases of one group round-robin, ``repeat`` rounds, and keep each one's median
    run. Interleaving spreads drifting machine state (page cache, dirty pages, other load) over
    all cases instead of favouring whichever ran first."""
    runs: dict[str, list[dict]] = {name: [] for name, _, _ in cases}  # type: ignore[type-arg]
    for _ in range(repeat):
        for name, fn, _ in cases:
            if before_each is not None:
                before_each()
            runs[name].append(fn())
    return [median_result(name, group, runs[name], note) for name, _, note in cases]


def print_table(title: str, results: list[Result], reference: dict[str, str]) -> list[dict]:  # type: ignore[type-arg]
    """Print results grouped, each with its ratio of throughput to the group's reference."""
    print(f"\n{title}")
    timed = any(r.cpu_section is not None for r in results)  # a column only if cases report it
    header = f"{'case':<44} {'MB/s':>9} {'ratio':>7} {'CPU s/GB':>9} "
    header += f"{'timed':>6} {'peak RSS':>10}  note" if timed else f"{'peak RSS':>10}  note"
    print(header)
    print("-" * len(header))
    rows = []
    for group in dict.fromkeys(r.group for r in results):
        members = [r for r in results if r.group == group]
        ref = next((r for r in members if r.name == reference.get(group)), members[0])
        for r in members:
            ratio = r.mb_per_s / ref.mb_per_s if ref.mb_per_s else float("nan")
            section = f"{r.section_cpu_per_gb:>6.2f} " if timed else ""
            print(
                f"{r.name:<44} {r.mb_per_s:>9.0f} {ratio:>6.2f}x {r.cpu_per_gb:>9.2f} "
                f"{section}{r.peak_rss / MiB:>8.0f}Mi  {r.note}"
            )
            rows.append(
                {
                    **asdict(r),
                    "mb_per_s": r.mb_per_s,
                    "ratio_to_reference": ratio,
                    "reference": ref.name,
                    "cpu_s_per_gb": r.cpu_per_gb,
                    "section_cpu_s_per_gb": r.section_cpu_per_gb,
                }
            )
        print()
    return rows


def write_json(name: str, payload: dict) -> Path:  # type: ignore[type-arg]
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "loadavg_at_end": os.getloadavg(),
        },
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **payload,
    }
    path.write_text(json.dumps(payload, indent=2))
    print(f"wrote {path}")
    return path


def median(values: list[float]) -> float:
    return statistics.median(values)
