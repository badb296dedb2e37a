"""One trial: draw a job and its faults from the seed, run the job under several runner processes
while injecting the faults, then check the invariants (:mod:`tests.faults.check`).

Everything the trial does is a function of ``(store, seed, trial)`` except process timing: the
plan of the job (:mod:`tests.faults.plan`), which faults strike, at which point of the job's
progress (a fraction of the planned executions started), which runner they strike, and which
store calls fail in which runner process.

Faults:

``kill``        SIGKILL a runner that holds running tasks; start a replacement at once.
``stop``        SIGSTOP a runner that holds running tasks for longer than its lease, then SIGCONT.
``term_hang``   when the plan's hang node (a sync task sleeping longer than the grace period) runs,
                SIGTERM its runner (a graceful stop); start a replacement.
``store``       some runner processes get a job store wrapper that fails chosen claim, complete
                and heartbeat calls, before or after delegating (a lost reply).
``pg_restart``  ``pg_ctl restart`` of the PostgreSQL server mid-job (PostgreSQL only).
``pg_down``     PostgreSQL stopped for a second, then started.
``raise``       tasks raising (every plan has them: transient failures retried, optional and
                non-optional final failures).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from swath import Client, LocalFileSystemCache
from swath.errors import SwathError
from swath.store.base import JobInfo, TaskInfo
from tests.faults import check, records
from tests.faults.faultstore import format_spec
from tests.faults.plan import Plan, Run, Shape, expect, generate
from tests.faults.tasks import AsyncNode

REPO = Path(__file__).resolve().parents[2]

PROCESS_FAULTS = ("kill", "stop", "term_hang")
PG_FAULTS = ("pg_restart", "pg_down")
STORE_FAULT = "store"


@dataclass
class Settings:
    runners: int = 3
    concurrency: int = 4
    lease: float = 1.5
    grace: float = 0.3
    retry_delay: float = 0.05
    deadline: float = 120.0  # a trial that has not finished by then is a violation

    @property
    def stop_for(self) -> float:
        return self.lease + 1.0


@dataclass
class Fault:
    kind: str
    at: float  # fraction of the planned executions started
    pick: int  # which of the candidate runners (modulo their number)


@dataclass
class TrialSpec:
    store: str
    seed: int
    trial: int
    plan: Plan
    faults: list[Fault]
    store_faults: list[str]  # per runner process, in the order they are started

    def replay(self) -> str:
        return (
            f"python -m tests.faults --store {self.store} --seed {self.seed} --trial {self.trial}"
        )

    def describe(self) -> str:
        kinds = ", ".join(f"{f.kind}@{f.at:.2f}" for f in self.faults) or "none"
        store = sum(1 for s in self.store_faults if s)
        return (
            f"{len(self.plan.nodes)} tasks; faults: {kinds}; "
            f"store faults in {store} of the runner processes"
        )


@dataclass
class TrialResult:
    spec: TrialSpec
    violations: list[str]
    injected: Counter[str] = field(default_factory=Counter)
    zombies: int = 0
    reruns: Counter[str] = field(default_factory=Counter)
    executions: int = 0
    seconds: float = 0.0
    job_state: str = ""

    @property
    def ok(self) -> bool:
        return not self.violations

    def report(self) -> str:
        head = (
            f"{'ok  ' if self.ok else 'FAIL'} {self.spec.store} seed {self.spec.seed} trial "
            f"{self.spec.trial}: job {self.job_state}, {self.executions} executions, "
            f"{self.seconds:.1f} s; injected {dict(self.injected) or 'nothing'}"
        )
        if self.ok:
            return head
        lines = [head, f"  {self.spec.describe()}"]
        lines += [f"  - {v}" for v in self.violations[:30]]
        if len(self.violations) > 30:
            lines.append(f"  ... and {len(self.violations) - 30} more")
        lines.append(f"  replay: {self.spec.replay()}")
        return "\n".join(lines)


def draw(store: str, seed: int, trial: int, shape: Shape | None = None) -> TrialSpec:
    """The trial's job and faults, from ``(store, seed, trial)`` alone (and ``shape``, the
    default unless a test asks for another)."""
    rng = random.Random(f"swath-faults/{store}/{seed}/{trial}")
    kinds = [*PROCESS_FAULTS, STORE_FAULT, *(PG_FAULTS if store == "postgres" else ())]
    # every kind comes round in turn (so 20 trials try each), plus up to two drawn at random
    chosen = [kinds[trial % len(kinds)]]
    chosen += rng.sample(kinds, rng.randint(0, 2))
    hang = "term_hang" in chosen
    plan = generate(rng, f"{store}/{seed}/{trial}", hang=hang, shape=shape)
    faults = [
        Fault(kind, round(rng.uniform(0.05, 0.7), 3), rng.randrange(1000))
        for kind in chosen
        if kind != STORE_FAULT
    ]
    faults.sort(key=lambda f: f.at)
    store_faults = []
    for _ in range(16):  # the initial runners and their replacements
        if STORE_FAULT in chosen and rng.random() < 0.6:
            store_faults.append(format_spec(_draw_store_faults(rng)))
        else:
            store_faults.append("")
    return TrialSpec(store, seed, trial, plan, faults, store_faults)


def _draw_store_faults(rng: random.Random) -> dict[str, dict[int, str]]:
    faults: dict[str, dict[int, str]] = {}
    for _ in range(rng.randint(1, 4)):
        op = rng.choice(["claim", "complete", "heartbeat"])
        when = rng.choice(["before", "after"])
        if op == "claim":
            n = rng.randint(2, 30)
        elif op == "complete":
            n = rng.randint(1, 25)
        else:
            n = rng.randint(1, 5)
        calls = faults.setdefault(op, {})
        if op == "heartbeat" and (n - 1 in calls or n + 1 in calls):
            continue  # two heartbeats lost in a row would let a live lease lapse
        calls[n] = when
        if op == "complete" and rng.random() < 0.3:
            calls[n + 1] = "before"  # a blip that outlasts the runner's first retry
    return faults


# -- running one trial ---------------------------------------------------------------------------
class _Runners:
    """The runner processes of one trial."""

    def __init__(self, spec: TrialSpec, settings: Settings, url: str, work: Path) -> None:
        self.spec = spec
        self.settings = settings
        self.url = url
        self.work = work
        self.cache = work / "cache"
        self.records = work / "records"
        self.records.mkdir(parents=True, exist_ok=True)
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.events = check.Events()
        self.started = 0
        self.thaw_at: dict[int, float] = {}  # frozen runners: pid -> when to SIGCONT

    def spawn(self) -> int:
        i = self.started
        self.started += 1
        faults = self.spec.store_faults[i] if i < len(self.spec.store_faults) else ""
        s = self.settings
        argv = [
            sys.executable, "-m", "tests.faults.worker",
            "--cache", str(self.cache), "--records", str(self.records),
            "--concurrency", str(s.concurrency), "--lease", str(s.lease),
            "--grace", str(s.grace), "--retry-delay", str(s.retry_delay),
        ]  # fmt: skip
        if faults:
            argv += ["--faults", faults]
        env = {
            **os.environ,
            "SWATH_DATABASE_URL": self.url,
            "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "src")]),
        }
        output = self.work / f"runner-{i}.out"
        with open(output, "ab") as out:
            proc = subprocess.Popen(
                argv, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.procs[proc.pid] = proc
        self.events.spawned[proc.pid] = time.time()
        self.events.outputs[proc.pid] = output
        if faults:
            self.events.store_faults[proc.pid] = faults
        return proc.pid

    def alive(self) -> list[int]:
        return [pid for pid, p in self.procs.items() if p.poll() is None]

    def reap(self) -> None:
        for pid, p in self.procs.items():
            code = p.poll()
            if code is not None and pid not in self.events.exited:
                self.events.exited[pid] = (time.time(), code)

    def send(self, pid: int, sig: signal.Signals) -> bool:
        """Send ``sig``; False if the process is gone already."""
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return False
        return True

    def kill(self, pid: int) -> None:
        """SIGKILL, and a replacement at once."""
        if self.send(pid, signal.SIGKILL):
            self.events.killed[pid] = _settled(pid, "ZX")
            self.spawn()

    def freeze(self, pid: int, seconds: float) -> None:
        """SIGSTOP now, SIGCONT after ``seconds`` (by :meth:`thaw_due`)."""
        if self.send(pid, signal.SIGSTOP):
            self.events.stopped[pid].append((_settled(pid, "TtZX"), None))
            self.thaw_at[pid] = time.time() + seconds

    def thaw_due(self) -> None:
        for pid, at in list(self.thaw_at.items()):
            if time.time() >= at:
                spans = self.events.stopped[pid]
                spans[-1] = (spans[-1][0], time.time())  # before: it runs once it is sent
                self.send(pid, signal.SIGCONT)
                del self.thaw_at[pid]

    def terminate(self, pid: int) -> None:
        """SIGTERM (a graceful stop), and a replacement at once."""
        if self.send(pid, signal.SIGTERM):
            self.events.terminated[pid] = time.time()
            self.spawn()

    def frozen(self) -> set[int]:
        return set(self.thaw_at)

    def kill_all(self) -> None:
        for pid, p in self.procs.items():
            if p.poll() is None:
                self.send(pid, signal.SIGCONT)
                p.kill()
        for p in self.procs.values():
            p.wait()


def run_trial(
    spec: TrialSpec,
    work: Path,
    url: str,
    settings: Settings | None = None,
    restart: Callable[[float], None] | None = None,
) -> TrialResult:
    """Run one trial in the empty directory ``work`` against the fresh store at ``url``;
    ``restart(down_for)`` restarts the PostgreSQL server (PostgreSQL trials)."""
    s = settings or Settings()
    began = time.monotonic()
    work.mkdir(parents=True, exist_ok=True)
    plan_path = work / "plan.json"
    spec.plan.dump(plan_path)
    exp = expect(spec.plan)
    job_id = asyncio.run(_submit(url, str(plan_path)))

    runners = _Runners(spec, s, url, work)
    violations: list[str] = []
    injected: Counter[str] = Counter()
    pending = list(spec.faults)
    # progress is measured in executions started, against those the plan makes
    planned = sum(n.attempts for n in spec.plan.nodes if exp.nodes[n.idx].exists != Run.NEVER)
    offsets: dict[Path, int] = {}
    running: dict[str, tuple[int, int]] = {}  # open executions: exec id -> (pid, node)
    starts = 0
    hang_node = next((n.idx for n in spec.plan.nodes if n.hang), None)
    restarting: threading.Thread | None = None
    try:
        for _ in range(s.runners):
            runners.spawn()
        deadline = time.monotonic() + s.deadline
        while True:
            starts += records.count_starts(runners.records, offsets, running)
            runners.thaw_due()
            runners.reap()
            # runners holding running tasks (a fault should find something to break)
            busy = sorted({pid for pid, _ in running.values()} & set(runners.alive()))
            busy = [pid for pid in busy if pid not in runners.frozen()]
            for fault in list(pending):
                if fault.kind == "term_hang":
                    holders = [pid for pid, node in running.values() if node == hang_node]
                    targets = [pid for pid in holders if pid in busy]
                    if targets:
                        runners.terminate(targets[0])
                        injected[fault.kind] += 1
                        pending.remove(fault)
                    continue
                if starts < fault.at * planned:
                    continue
                if fault.kind in ("kill", "stop"):
                    if not busy:
                        continue  # wait for a runner that holds tasks
                    pid = busy.pop(fault.pick % len(busy))
                    if fault.kind == "kill":
                        runners.kill(pid)
                    else:
                        runners.freeze(pid, s.stop_for)
                elif fault.kind in PG_FAULTS:
                    if restart is None or (restarting is not None and restarting.is_alive()):
                        continue
                    down = 1.0 if fault.kind == "pg_down" else 0.0
                    restarting = _restart_in_background(restart, down, runners.events)
                injected[fault.kind] += 1
                pending.remove(fault)
            if not runners.alive() and not runners.thaw_at:
                break
            if time.monotonic() > deadline:
                violations.append(
                    f"the trial did not finish within {s.deadline:.0f} s (runners still alive: "
                    f"{runners.alive()}); see {work}"
                )
                break
            time.sleep(0.02)
    finally:
        runners.kill_all()
        runners.reap()
        if restarting is not None:
            restarting.join()
    runners.events.end = time.time()
    (work / "events.json").write_text(runners.events.to_json())
    violations += [f"PostgreSQL restart failed: {e}" for e in runners.events.restart_errors]
    for fault in pending:
        injected[f"{fault.kind} (not reached)"] += 1
    recs = records.read(runners.records)
    injected.update(f"store {op} {when}" for _, _, op, _, when in recs.faults)

    job, tasks, values = asyncio.run(_collect(url, job_id, runners.cache))
    outcome = check.check(spec.plan, exp, job, tasks, recs, values, runners.events, s.lease)
    return TrialResult(
        spec,
        violations + outcome.violations,
        injected,
        zombies=outcome.zombies,
        reruns=outcome.reruns,
        executions=outcome.executions,
        seconds=time.monotonic() - began,
        job_state=job.state.value,
    )


@contextlib.contextmanager
def server_log(log: Path, copy: Path) -> Iterator[None]:
    """Copy what the server writes to ``log`` meanwhile into ``copy`` (the PostgreSQL log of one
    trial, kept in its directory: deadlocks, lock waits and restarts show there)."""
    start = log.stat().st_size if log.exists() else 0
    try:
        yield
    finally:
        with contextlib.suppress(OSError), open(log, "rb") as f:
            f.seek(start)
            copy.write_bytes(f.read())


def _restart_in_background(
    restart: Callable[[float], None], down: float, events: check.Events
) -> threading.Thread:
    def go() -> None:
        t0 = time.time()
        try:
            restart(down)
        except Exception as exc:  # reported as a violation by the trial
            events.restart_errors.append(f"{type(exc).__name__}: {exc}")
        events.restarts.append((t0, time.time()))

    thread = threading.Thread(target=go, name="pg-restart", daemon=True)
    thread.start()
    return thread


async def _submit(url: str, plan_path: str) -> str:
    async with Client(url) as client:
        job = await client.jobs().submit("faults", AsyncNode(plan_path, 0))
        return job.id


async def _collect(
    url: str, job_id: str, cache_dir: Path
) -> tuple[JobInfo, list[TaskInfo], dict[str, bytes | Exception]]:
    async with Client(url) as client:
        job = await client.jobs().find(job_id)
        tasks = await client.jobs().tasks(job_id)
    values: dict[str, bytes | Exception] = {}
    async with LocalFileSystemCache(cache_dir) as cache:
        group = cache.group(job_id).group("v")
        async for key in group:
            try:
                values[key] = await group.get(key)
            except (SwathError, OSError, KeyError) as exc:
                values[key] = exc
    return job, tasks, values


def _settled(pid: int, states: str, within: float = 2.0) -> float:
    """The time by which every thread of ``pid`` is in one of ``states`` (``/proc``'s letters:
    T stopped, Z zombie, X dead) after a signal, or gone: a signal is delivered asynchronously,
    so the process may run (and write records) for a moment after ``kill()`` returns, and the
    moment the signal was sent would make those records look as if they came after it."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            threads = os.listdir(f"/proc/{pid}/task")
            letters = []
            for tid in threads:
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    letters.append(f.read().rsplit(")", 1)[1].split()[0])
        except (FileNotFoundError, ProcessLookupError):
            return time.time()
        if all(letter in states for letter in letters):
            return time.time()
        time.sleep(0.0005)
    return time.time()
