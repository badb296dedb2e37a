"""The per-process record files of a trial, and reading them back.

Every runner process appends lines to its own file ``<dir>/exec-<pid>.log``, each line with one
``os.write`` on an ``O_APPEND`` descriptor, so a line is whole even if the process is killed right
after, and lines of one process stay in order. Times are ``time.time()`` (comparable across the
processes of one machine). The lines:

``S exec node task_id attempt pid t``  an execution of a task starts (before it does anything)
``E exec t how [error]``               it ends: ``ok``, ``raise`` (planned), ``cancel``, ``error``
                                       (then the exception, on one line)
``C exec child_node child_task_id``    it submitted a subtask (committed only if accepted)
``D exec node missing``                a value it depends on was missing when it started
``Q t0 t1 task_id ...``                 a claim call, from t0 to t1, leased these tasks
``H t0 t1 ok|fail|poll``               a heartbeat call, from t0 to t1, renewed the leases or not
                                       (``poll``: the heartbeat loop's ``stop_requested`` call)
``m t0 task_id ...``                    a ``complete`` call begins (``M`` when it ends)
``M t0 t1 task_id ...``                 a ``complete`` call, from t0 to t1, reported these tasks
``h t0``                               a call of the heartbeat loop begins (``H`` when it ends)
``K t runner id:attempt:ok|fail ...``  the store accepted every outcome of one ``complete``
``P t runner accepted/sent``           it accepted only some (which ones is not known)
``F t op n when``                      the fault injector failed call ``n`` of ``op``
A call whose begin has no end (its process was killed in it) counts as lasting for ever
(``t1 = inf``): it stalled until the process died.
``L t0 t1``                            the runner's event loop did not run from t0 to t1 (a
                                       starved process, as good as frozen)
"""

from __future__ import annotations

import itertools
import math
import os
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

_fd: int | None = None
_counter = itertools.count(1)
_lock = threading.Lock()


def open_log(directory: str | os.PathLike[str]) -> None:
    """Open this process's record file in ``directory`` (once, in the runner process)."""
    global _fd
    path = os.path.join(os.fspath(directory), f"exec-{os.getpid()}.log")
    _fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)


def write(*fields: object) -> None:
    if _fd is None:
        raise RuntimeError("records.open_log() was not called in this process")
    os.write(_fd, (" ".join(str(f) for f in fields) + "\n").encode())


def new_exec_id() -> str:
    with _lock:
        return f"{os.getpid()}-{next(_counter)}"


def now() -> str:
    return repr(time.time())


# -- reading --------------------------------------------------------------------------------------
@dataclass
class Execution:
    id: str
    node: int
    task_id: str
    attempt: int
    pid: int
    start: float
    end: float | None = None
    how: str | None = None  # None: no end record (the process died, or is still running)
    error: str = ""  # for ``how == "error"``: the exception
    children: dict[int, str] = field(default_factory=dict)
    missing: list[int] = field(default_factory=list)

    def describe(self) -> str:
        end = f"{self.end:.3f} ({self.how})" if self.end is not None else "no end record"
        return (
            f"exec {self.id} of node {self.node} (task {self.task_id}, attempt {self.attempt}) "
            f"in pid {self.pid}: {self.start:.3f} .. {end}"
        )


@dataclass
class Records:
    executions: list[Execution] = field(default_factory=list)
    #: (task_id, attempt) -> pids whose store accepted that outcome
    accepted: dict[tuple[str, int], list[tuple[int, str, float]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    #: (task_id, attempt) -> its executions, in start order
    by_attempt: dict[tuple[str, int], list[Execution]] = field(
        default_factory=lambda: defaultdict(list)
    )
    partial: int = 0
    faults: list[tuple[int, float, str, int, str]] = field(default_factory=list)
    #: (pid, task_id) -> the claim calls (t0, t1) that leased that task to that process
    claims: dict[tuple[int, str], list[tuple[float, float]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    #: (pid, task_id) -> the ``complete`` calls (t0, t1) that reported that task
    completions: dict[tuple[int, str], list[tuple[float, float]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    #: pid -> the spans its event loop did not run (t0, t1)
    stalls: dict[int, list[tuple[float, float]]] = field(default_factory=lambda: defaultdict(list))
    #: pid -> the store calls of its heartbeat loop (t0, t1, "ok" | "fail" | "poll")
    heartbeats: dict[int, list[tuple[float, float, str]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    bad_lines: list[str] = field(default_factory=list)


def read(directory: Path) -> Records:
    out = Records()
    by_id: dict[str, Execution] = {}
    for path in sorted(directory.glob("exec-*.log")):
        pid = int(path.stem.split("-")[1])
        # calls begun and not (yet) seen to end: heartbeat-loop calls, and completions by t0
        open_beats: set[float] = set()
        open_completions: dict[float, list[str]] = {}
        for line in path.read_text(errors="replace").splitlines():
            f = line.split()
            if not f:
                continue
            try:
                kind = f[0]
                if kind == "S":
                    e = Execution(f[1], int(f[2]), f[3], int(f[4]), int(f[5]), float(f[6]))
                    by_id[e.id] = e
                    out.executions.append(e)
                elif kind == "E":
                    e = by_id[f[1]]
                    e.end, e.how = float(f[2]), f[3]
                    e.error = " ".join(f[4:])
                elif kind == "C":
                    by_id[f[1]].children[int(f[2])] = f[3]
                elif kind == "D":
                    by_id[f[1]].missing = [int(x) for x in f[3].split(",")]
                elif kind == "K":
                    t = float(f[1])
                    for item in f[3:]:
                        task_id, attempt, how = item.split(":")
                        out.accepted[(task_id, int(attempt))].append((pid, how, t))
                elif kind == "Q":
                    span = (float(f[1]), float(f[2]))
                    for task_id in f[3:]:
                        out.claims[(pid, task_id)].append(span)
                elif kind == "m":
                    open_completions[float(f[1])] = f[2:]
                elif kind == "M":
                    span = (float(f[1]), float(f[2]))
                    open_completions.pop(span[0], None)
                    for task_id in f[3:]:
                        out.completions[(pid, task_id)].append(span)
                elif kind == "h":
                    open_beats.add(float(f[1]))
                elif kind == "H":
                    open_beats.discard(float(f[1]))
                    out.heartbeats[pid].append((float(f[1]), float(f[2]), f[3]))
                elif kind == "L":
                    out.stalls[pid].append((float(f[1]), float(f[2])))
                elif kind == "P":
                    out.partial += 1
                elif kind == "F":
                    out.faults.append((pid, float(f[1]), f[2], int(f[3]), f[4]))
                else:
                    out.bad_lines.append(f"{path.name}: {line}")
            except (IndexError, KeyError, ValueError):
                # a line cut short can only be the last one of a killed process
                out.bad_lines.append(f"{path.name}: {line}")
        for t0 in open_beats:
            out.heartbeats[pid].append((t0, math.inf, "open"))
        for t0, task_ids in open_completions.items():
            for task_id in task_ids:
                out.completions[(pid, task_id)].append((t0, math.inf))
    for e in sorted(out.executions, key=lambda e: e.start):
        out.by_attempt[(e.task_id, e.attempt)].append(e)
    return out


def count_starts(
    directory: Path, offsets: dict[Path, int], found: dict[str, tuple[int, int]]
) -> int:
    """Read what was appended since ``offsets`` (updated): the number of new ``S`` lines; every
    start and end seen is kept in ``found`` (exec id -> (pid, node), removed at its end)."""
    new = 0
    for path in directory.glob("exec-*.log"):
        offset = offsets.get(path, 0)
        with open(path, "rb") as f:
            f.seek(offset)
            chunk = f.read()
        cut = chunk.rfind(b"\n") + 1
        offsets[path] = offset + cut
        for line in chunk[:cut].decode(errors="replace").splitlines():
            fields = line.split()
            if fields and fields[0] == "S" and len(fields) >= 7:
                new += 1
                found[fields[1]] = (int(fields[5]), int(fields[2]))
            elif fields and fields[0] == "E" and len(fields) >= 2:
                found.pop(fields[1], None)
    return new
