"""Run one case in a child process of its own and measure it from outside.

A case is ``(workload, system, variant, label, params)``; the child runs
``python -m benchmarks.peers._child MODULE FUNCTION PARAMS_JSON`` and prints one JSON line (its
own timings and figures). The parent samples, 10 times a second with psutil, the resident set of
the child and of every process below it (Dask's workers) and of every service process the case
uses (PostgreSQL and its backends, redis-server, the Prefect server, rclone, fake-gcs-server),
and kills the child's process group when the case's time limit passes ("timed out at X s").
CPU seconds: the child's (with the children it waited for, from ``wait4``) plus the CPU the
services spent during the case.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Case:
    workload: str  # W1..W5
    system: str  # "swath (memory)", "Dask (threads)", ...
    variant: str  # "tuned" or "default"
    label: str  # the size: "1k", "256 x 16 MiB", ...
    module: str  # benchmarks.peers.<module>
    function: str
    params: dict[str, Any]
    timeout: float
    services: tuple[str, ...] = ()
    x: float = 0.0  # the size as a number, for charts (tasks, total bytes, ...)
    #: run after every other workload's cases (a large optional size), so that the run's time
    #: budget cuts it first
    last: bool = False


@dataclass
class Outcome:
    case: Case
    status: str  # ok | timeout | error
    result: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0
    cpu_s: float = 0.0  # the child and everything it waited for
    service_cpu_s: float = 0.0
    peak_rss: int = 0  # the child's process tree, summed, at its highest sample
    service_peak_rss: int = 0  # the services' processes, summed, at their highest sample
    peak_rss_by_process: dict[str, int] = field(default_factory=dict)
    error: str = ""

    def as_json(self) -> dict[str, Any]:
        c = self.case
        return {
            "workload": c.workload,
            "system": c.system,
            "variant": c.variant,
            "label": c.label,
            "x": c.x,
            "params": c.params,
            "timeout_s": c.timeout,
            "status": self.status,
            "wall_s": self.wall_s,
            "cpu_s": self.cpu_s,
            "service_cpu_s": self.service_cpu_s,
            "peak_rss": self.peak_rss,
            "service_peak_rss": self.service_peak_rss,
            "peak_rss_total": self.peak_rss + self.service_peak_rss,
            "peak_rss_by_process": self.peak_rss_by_process,
            "error": self.error,
            **self.result,
        }


def _tree(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return []


def _name(p: psutil.Process) -> str:
    try:
        cmd = p.cmdline()
    except psutil.Error:
        return "?"
    if not cmd:
        return "?"
    exe = Path(cmd[0]).name
    if exe.startswith("python") and len(cmd) > 1:
        rest = [a for a in cmd[1:] if not a.startswith("-")]
        return f"python {Path(rest[0]).name if rest else cmd[1]}"[:60]
    return exe[:60]


def _cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


class Sampler(threading.Thread):
    """Samples the RSS of a process tree and of the service trees until stopped."""

    def __init__(self, pid: int, service_pids: list[int], interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.services = [psutil.Process(p) for p in service_pids if psutil.pid_exists(p)]
        self.interval = interval
        self.peak = 0
        self.service_peak = 0
        self.by_process: dict[str, int] = {}
        self._halt = threading.Event()

    def _sample(self, procs: list[psutil.Process]) -> int:
        total = 0
        for p in procs:
            try:
                rss = int(p.memory_info().rss)
            except psutil.Error:
                continue
            total += rss
            key = f"{_name(p)} [{p.pid}]"
            self.by_process[key] = max(self.by_process.get(key, 0), rss)
        return total

    def run(self) -> None:
        while not self._halt.is_set():
            self.peak = max(self.peak, self._sample(_tree(self.root)))
            svc: list[psutil.Process] = []
            for s in self.services:
                svc += _tree(s)
            self.service_peak = max(self.service_peak, self._sample(svc))
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def run(case: Case, env: dict[str, str], service_pids: list[int], log: Path) -> Outcome:
    """Run one case in a child process, sampled; never raises for a failed case."""
    argv = [
        sys.executable,
        "-m",
        "benchmarks.peers._child",
        case.module,
        case.function,
        json.dumps(case.params),
    ]
    services = [psutil.Process(p) for p in service_pids if psutil.pid_exists(p)]

    def service_cpu() -> float:
        procs: list[psutil.Process] = []
        for s in services:
            procs += _tree(s)
        return _cpu(procs)

    svc_cpu0 = service_cpu()
    out_path = log.with_suffix(".out")
    with open(log, "ab") as err, open(out_path, "wb") as out:
        err.write(f"\n==== {case.workload} {case.system} {case.variant} {case.label}\n".encode())
        err.flush()
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env={
                **os.environ,
                **env,
                "PYTHONPATH": str(ROOT),
                "PEERS_SERVICE_PIDS": ",".join(map(str, service_pids)),
            },
            start_new_session=True,
        )
        sampler = Sampler(proc.pid, service_pids)
        sampler.start()
        timed_out = False
        deadline = t0 + case.timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                timed_out = True
                with contextlib.suppress(OSError, psutil.Error):
                    os.killpg(proc.pid, signal.SIGKILL)
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        wall = time.perf_counter() - t0
        sampler.stop()
        # Dask's workers and the like, if the child died before they did
        for p in _tree(sampler.root)[1:]:
            with contextlib.suppress(OSError, psutil.Error):
                p.kill()
        with contextlib.suppress(OSError, psutil.Error):
            os.killpg(proc.pid, signal.SIGKILL)
    code = os.waitstatus_to_exitcode(status)
    outcome = Outcome(
        case,
        status="ok",
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        service_cpu_s=max(0.0, service_cpu() - svc_cpu0),
        peak_rss=sampler.peak,  # ru_maxrss starts at the parent's RSS at fork: unusable
        service_peak_rss=sampler.service_peak,
        peak_rss_by_process=sampler.by_process,
    )
    if timed_out:
        outcome.status = "timeout"
        outcome.error = f"timed out at {case.timeout:.0f} s"
        return outcome
    lines = out_path.read_text(errors="replace").strip().splitlines()
    if code != 0 or not lines:
        outcome.status = "error"
        tail = log.read_text(errors="replace")[-1500:]
        outcome.error = f"exit {code}: {tail.strip().splitlines()[-1] if tail.strip() else ''}"
        return outcome
    try:
        outcome.result = json.loads(lines[-1])
        outcome.peak_rss = max(outcome.peak_rss, int(outcome.result.get("own_peak_rss", 0)))
    except json.JSONDecodeError:
        outcome.status = "error"
        outcome.error = f"no result line: {lines[-1][:200]}"
    return outcome
