"""CPU seconds of the timed section, measured inside a case: this process and every process
below it (Dask's workers), plus the servers the case uses (their process ids come in
``PEERS_SERVICE_PIDS``)."""

from __future__ import annotations

import os

import psutil


def _tree_cpu(root: psutil.Process) -> float:
    total = 0.0
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    for p in procs:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def cpu_now() -> tuple[float, float]:
    """(this process tree's CPU seconds, the services' CPU seconds) so far."""
    own = _tree_cpu(psutil.Process())
    services = 0.0
    for pid in filter(None, os.environ.get("PEERS_SERVICE_PIDS", "").split(",")):
        try:
            services += _tree_cpu(psutil.Process(int(pid)))
        except psutil.Error:
            continue
    return own, services


def cpu_since(start: tuple[float, float]) -> dict[str, float]:
    own, services = cpu_now()
    return {"timed_cpu_s": own - start[0], "timed_service_cpu_s": services - start[1]}
