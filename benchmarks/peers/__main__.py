"""swath against the tools users would pick instead, side by side on one machine in one run.

    .venv/bin/python -m benchmarks.peers                  # the full run (under 25 minutes, 2 cores)
    .venv/bin/python -m benchmarks.peers --smoke          # tiny sizes, under a minute (CI)
    .venv/bin/python -m benchmarks.peers --only W1,W4     # some workloads

Workloads (docs/benchmarks.md says what each measures, the sizes and how each peer is tuned):
W1 dispatch, W2 shared blobs, W3 one large blob, W4 a diamond DAG with a retry, W5 the imagery
pipeline of ``swath demo``. Every case runs in a process of its own, sampled from outside
(peak RSS of it, its children and the servers it uses; CPU seconds). Writes ``peers.json``,
``peers.md`` (the table, also printed) and one PNG chart per workload into ``--out``
(``docs/benchmarks/`` for the full run, ``benchmarks/results/peers-smoke/`` for the smoke run).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.peers import _report
from benchmarks.peers._harness import ROOT, Case, run
from benchmarks.peers._services import Services

WORKLOADS = {
    "W1": "w1_dispatch",
    "W2": "w2_blobs",
    "W3": "w3_blob",
    "W4": "w4_dag",
    "W5": "w5_imagery",
}

RUN_ORDER = ["W4", "W5", "W1", "W2", "W3"]

PACKAGES = ("swath", "dask", "distributed", "prefect", "procrastinate", "arq", "redis",
            "tilebox-workflows", "obstore", "numpy", "matplotlib")  # fmt: skip


def versions() -> dict[str, str]:
    found: dict[str, str] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    for tool, argv in (
        ("redis-server", ["redis-server", "--version"]),
        ("postgresql", ["bash", "-c", "ls /usr/lib/postgresql"]),
    ):
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
            found[tool] = out.split()[2].removeprefix("v=") if tool == "redis-server" else out
            found[tool] = found[tool].strip()
        except (OSError, IndexError, subprocess.TimeoutExpired):
            found[tool] = "not installed"
    return found


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "cpus": os.cpu_count()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        keep = ("Model name", "CPU(s)", "Thread(s) per core", "Core(s) per socket", "CPU MHz",
                "Hypervisor vendor", "L2 cache", "L3 cache")  # fmt: skip
        info["lscpu"] = {
            k.strip(): v.strip()
            for k, _, v in (line.partition(":") for line in lscpu.splitlines())
            if k.strip() in keep
        }
    except OSError:
        pass
    with open("/proc/meminfo") as f:
        info["memory_gib"] = round(int(f.readline().split()[1]) / 2**20, 1)
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (CI), under a minute")
    parser.add_argument("--only", default="", help="comma-separated workloads, e.g. W1,W3")
    parser.add_argument("--systems", default="", help="comma-separated system name prefixes")
    parser.add_argument("--out", type=Path, help="output folder")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="replace, in the output folder's peers.json of an earlier run, the rows of the "
        "cases this invocation runs (same workload, system, variant and size), and note it",
    )
    parser.add_argument(
        "--budget",
        type=float,
        help="seconds; cases that would start later are reported as not run "
        "(default: 1,380 for the full run, none for the smoke run)",
    )
    args = parser.parse_args(argv)
    chosen = [w.strip().upper() for w in args.only.split(",") if w.strip()] or list(WORKLOADS)
    unknown = [w for w in chosen if w not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s) {unknown}; choose from {list(WORKLOADS)}")
    out = args.out or (
        ROOT / "benchmarks" / "results" / "peers-smoke"
        if args.smoke
        else ROOT / "docs" / "benchmarks"
    )
    out.mkdir(parents=True, exist_ok=True)

    started = time.time()  # the plan counts too: it computes the digests W2 and W3 check
    cases: list[Case] = []
    # the cheap workloads first, so that a time budget running out cuts the costly tails
    for w in sorted(chosen, key=RUN_ORDER.index):
        cases += importlib.import_module(f"benchmarks.peers.{WORKLOADS[w]}").plan(args.smoke)
    cases.sort(key=lambda c: c.last)  # stable: the order above, then the large optional tails
    if args.systems:
        prefixes = [s.strip().lower() for s in args.systems.split(",")]
        cases = [c for c in cases if c.system.lower().startswith(tuple(prefixes))]

    budget = args.budget if args.budget is not None else (None if args.smoke else 1380.0)
    load0 = os.getloadavg()
    services = Services()
    rows: list[dict[str, Any]] = []
    log = services.root.parent / f"swath-peers-{os.getpid()}.log"
    print(f"{len(cases)} cases; child output in {log}", flush=True)
    timed_out: dict[tuple[str, str, str], str] = {}  # a larger size of these is not run
    try:
        for i, case in enumerate(cases, 1):
            key = (case.workload, case.system, case.variant)
            if budget is not None and time.time() - started > budget:
                why = f"not run: the run's {budget:.0f} s budget was spent"
                rows.append(_report.not_run(case, why))
                print(f"[{i}/{len(cases)}] {case.workload} {case.system} {case.label}: {why}")
                continue
            if key in timed_out:
                rows.append(_report.not_run(case, f"not run: {timed_out[key]}"))
                print(f"[{i}/{len(cases)}] {case.workload} {case.system} {case.label}: not run "
                      f"({timed_out[key]})", flush=True)  # fmt: skip
                continue
            env: dict[str, str] = {}
            pids: list[int] = []
            try:
                for name in case.services:
                    service = services.get(name)
                    env.update(service.env)
                    pids += service.pids
            except Exception as exc:  # a server that cannot start (not installed): say so, go on
                why = f"not run: its service did not start ({type(exc).__name__}: {exc})"
                rows.append(_report.not_run(case, why))
                print(f"[{i}/{len(cases)}] {case.workload} {case.system} {case.label}: {why}",
                      flush=True)  # fmt: skip
                continue
            case.params["scratch"] = str(services.scratch())
            outcome = run(case, env, pids, log)
            row = outcome.as_json()
            row["params"] = {k: v for k, v in row["params"].items() if k != "scratch"}
            rows.append(row)
            if outcome.status == "timeout":
                timed_out[key] = f"{case.label} timed out at {case.timeout:.0f} s"
            subprocess.run(["rm", "-rf", case.params["scratch"]], check=False)
            print(f"[{i}/{len(cases)} {time.time() - started:5.0f} s] {_report.one_line(row)}",
                  flush=True)  # fmt: skip
    finally:
        services.close()
    rows.sort(key=lambda r: list(WORKLOADS).index(r["workload"]))  # W1..W5, in run order within
    payload = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "mode": "smoke" if args.smoke else "full",
        "total_s": time.time() - started,
        "loadavg_at_start": load0,
        "loadavg_at_end": os.getloadavg(),
        "machine": machine(),
        "versions": versions(),
        "rows": rows,
    }
    took = payload["total_s"]  # this invocation's, also when merged into an earlier run
    if args.merge:
        payload = _merged(json.loads((out / "peers.json").read_text()), payload)
    (out / "peers.json").write_text(json.dumps(payload, indent=2) + "\n")
    table = _report.markdown(payload)
    (out / "peers.md").write_text(table)
    charts = _report.charts(payload, out)
    print()
    print(table)
    print(f"wrote {out / 'peers.json'}, {out / 'peers.md'} and {len(charts)} charts "
          f"in {took:.0f} s", file=sys.stderr)  # fmt: skip
    return 0


def _merged(earlier: dict[str, Any], now: dict[str, Any]) -> dict[str, Any]:
    """``earlier`` with the rows of ``now`` in place of its rows of the same cases, and a note
    of this invocation (``merged_runs``), for the table's footer."""

    def key(r: dict[str, Any]) -> tuple[str, str, str, str]:
        return (r["workload"], r["system"], r["variant"], r["label"])

    replaced = {key(r): r for r in now["rows"]}
    rows = [replaced.pop(key(r), r) for r in earlier["rows"]] + list(replaced.values())
    rows.sort(key=lambda r: list(WORKLOADS).index(r["workload"]))
    note = {
        "when": now["when"],
        "total_s": now["total_s"],
        "loadavg_at_start": now["loadavg_at_start"],
        "cases": sorted({f"{r['workload']} {r['system']}" for r in now["rows"]}),
    }
    return {**earlier, "rows": rows, "merged_runs": [*earlier.get("merged_runs", []), note]}


if __name__ == "__main__":
    sys.exit(main())
