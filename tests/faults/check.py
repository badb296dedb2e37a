"""The invariants checked after each trial. Each violation is one line saying what broke.

1. The job ends in the state the rules give (:func:`tests.faults.plan.expect`), and so does every
   task: nothing QUEUED or RUNNING; every failure recorded is the planned one (never a
   ``RunnerLostError`` or a store error in place of the task's own).
2. Every task that must run ran, with exactly the planned attempts; a task skipped by the rules
   never ran.
3. A task (one attempt of it) ran more than once only if an earlier run's runner was killed
   (SIGKILL) or stopped (SIGSTOP) after that run started, or that run was cancelled by a graceful
   stop and given back; a result the store accepted is never run again, and never accepted twice.
4. No two executions of one task overlapped in time, except with a run frozen by SIGSTOP past its
   lease (a *zombie*: counted, reported, not a violation; see docs/reliability.md).
5. Every value in the job cache is whole (its bytes are the ones its node writes); every
   COMPLETED task's value is there; a task started only after every value it depends on was
   written; the progress counter counted each success once.
6. Every runner process exited 0, except those killed.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from swath.store.base import JobInfo, TaskInfo
from tests.faults.plan import Expectation, Plan, Run, value
from tests.faults.records import Execution, Records


@dataclass
class Events:
    """What the harness did to the runner processes, and when (``time.time()``)."""

    spawned: dict[int, float] = field(default_factory=dict)
    killed: dict[int, float] = field(default_factory=dict)
    stopped: dict[int, list[tuple[float, float | None]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    terminated: dict[int, float] = field(default_factory=dict)
    exited: dict[int, tuple[float, int]] = field(default_factory=dict)
    outputs: dict[int, Path] = field(default_factory=dict)
    store_faults: dict[int, str] = field(default_factory=dict)
    restarts: list[tuple[float, float]] = field(default_factory=list)
    restart_errors: list[str] = field(default_factory=list)
    end: float = 0.0

    def to_json(self) -> str:
        """For the person debugging a kept trial directory."""
        data = {k: v for k, v in vars(self).items() if k != "outputs"}
        return json.dumps(data, indent=1, default=str)

    def death(self, pid: int) -> float:
        """When the process stopped running anything: killed, exited, or the end of the trial."""
        if pid in self.killed:
            return self.killed[pid]
        if pid in self.exited:
            return self.exited[pid][0]
        return self.end


@dataclass
class Outcome:
    violations: list[str] = field(default_factory=list)
    zombies: int = 0  # overlaps with a run frozen by SIGSTOP
    reruns: Counter[str] = field(default_factory=Counter)  # explained re-executions, by cause
    executions: int = 0

    def bad(self, message: str) -> None:
        self.violations.append(message)


def check(
    plan: Plan,
    exp: Expectation,
    job: JobInfo,
    tasks: list[TaskInfo],
    recs: Records,
    values: dict[str, bytes | Exception],
    events: Events,
    lease: float,
) -> Outcome:
    out = Outcome(executions=len(recs.executions))
    for line in recs.bad_lines:
        out.bad(f"unreadable record: {line}")
    _check_processes(events, out)

    # -- the job and its tasks
    by_id = {t.id: t for t in tasks}
    if job.state.value != exp.job_state:
        failed = [t for t in tasks if t.error is not None and t.state.value == "FAILED"]
        why = "; ".join(f"{t.display or t.id}: {t.error.type}: {t.error.message}"
                        for t in failed[:3] if t.error)  # fmt: skip
        out.bad(
            f"job ended {job.state.value}, expected {exp.job_state}"
            + (f" ({why})" if why else "")
            + "; task states not checked one by one (they follow from the job's)"
        )
    node_of = {job.root_task_id: 0}
    for e in recs.executions:
        for child, task_id in e.children.items():
            node_of[task_id] = child
    task_of: dict[int, TaskInfo] = {}
    for t in tasks:
        if t.state.value in ("QUEUED", "RUNNING"):
            out.bad(f"task {t.id} ({t.display}) left {t.state.value}")
        n = node_of.get(t.id)
        if n is None:
            out.bad(f"task {t.id} ({t.name}) is in the store but no execution submitted it")
            continue
        if n in task_of:
            out.bad(f"node {n} has two tasks: {task_of[n].id} and {t.id}")
        task_of[n] = t
        if t.error is not None and t.error.type != "PlannedFailure":
            out.bad(
                f"node {n} ({t.state.value}) failed with {t.error.type}: {t.error.message} "
                "(not its planned failure)"
            )

    runs: dict[str, list[Execution]] = defaultdict(list)
    for e in recs.executions:
        runs[e.task_id].append(e)
        if e.task_id not in by_id:
            out.bad(f"{e.describe()}: the store has no such task")
        if e.how == "error":
            out.bad(f"{e.describe()}: the task's code failed unexpectedly: {e.error}")
        if e.missing:
            out.bad(
                f"{e.describe()}: started before the values of {e.missing} were in the cache, "
                "though it depends on them"
            )

    for idx, want in exp.nodes.items() if job.state.value == exp.job_state else ():
        node = plan.nodes[idx]
        task = task_of.get(idx)
        if task is None:
            if want.exists == Run.MUST:
                out.bad(f"node {idx} was never submitted ({want.why or 'must complete'})")
            continue
        if want.exists == Run.NEVER:
            out.bad(f"node {idx} exists as task {task.id} ({task.state.value}); it cannot")
            continue
        state = task.state.value
        if state not in want.states:
            out.bad(
                f"node {idx} ended {state}, expected {' or '.join(sorted(want.states))}"
                + (f" ({want.why})" if want.why else "")
            )
        done = runs.get(task.id, [])
        if want.run == Run.MUST and not done:
            out.bad(f"node {idx} ({state}) never ran")
        if want.run == Run.NEVER and done:
            out.bad(f"node {idx} ran {len(done)} times, though the rules skip it ({want.why})")
        if want.strict and done:
            attempts = sorted({e.attempt for e in done})
            if attempts != list(range(node.attempts)):
                out.bad(
                    f"node {idx} ran attempts {attempts}, planned {list(range(node.attempts))} "
                    f"(fails {node.fail_attempts}, max_retries {node.max_retries})"
                )
            if task.retry_count != node.attempts - 1:
                out.bad(
                    f"node {idx} has retry_count {task.retry_count}, planned {node.attempts - 1}"
                )
        if state == "COMPLETED" and not any(e.how == "ok" for e in done):
            out.bad(f"node {idx} is COMPLETED but no execution of it succeeded")

    # -- executions
    _check_reruns(runs, recs, events, lease, out)
    _check_overlaps(runs, recs, events, lease, out, {n.idx: n.sync for n in plan.nodes})
    for (task_id, attempt), accepted in recs.accepted.items():
        if len(accepted) > 1:
            out.bad(f"task {task_id} attempt {attempt}: outcome accepted {len(accepted)} times")

    # -- the cache
    for key, data in values.items():
        if isinstance(data, Exception):
            out.bad(f"cache value v/{key} cannot be read: {type(data).__name__}: {data}")
            continue
        if not key.isdigit() or int(key) >= len(plan.nodes):
            out.bad(f"cache key v/{key} belongs to no node")
            continue
        node = plan.nodes[int(key)]
        if data != value(node.idx, node.size):
            out.bad(
                f"cache value v/{key} is torn or foreign ({len(data)} bytes, {node.size} planned)"
            )
    for idx, task in task_of.items():
        if task.state.value == "COMPLETED" and str(idx) not in values:
            out.bad(f"node {idx} is COMPLETED but its value v/{idx} is not in the cache")

    # -- progress: each accepted success counted once
    if exp.job_state == "COMPLETED" and job.state.value == "COMPLETED":
        done_count = {p.label: p.done for p in job.progress}.get("nodes", 0)
        succeeded = sum(1 for t in tasks if t.state.value == "COMPLETED")
        if done_count != succeeded:
            out.bad(
                f"progress 'nodes' counted {done_count} successes, but {succeeded} tasks "
                "completed (each success counts once, when it is committed)"
            )
    return out


def _check_processes(events: Events, out: Outcome) -> None:
    for pid, (_, code) in sorted(events.exited.items()):
        if pid in events.killed:
            continue
        if code != 0:
            tail = _tail(events.outputs.get(pid))
            out.bad(f"runner {pid} exited with code {code}; its output ends:\n{tail}")


def _tail(path: Path | None, n: int = 1500) -> str:
    if path is None:
        return "(no output)"
    try:
        return "    " + path.read_text(errors="replace")[-n:].replace("\n", "\n    ")
    except OSError:
        return "(no output)"


def _why_rerun(
    e: Execution, later: Execution, recs: Records, events: Events, lease: float
) -> str | None:
    """Why ``later`` may run the attempt ``e`` ran (``e``'s runner lost its lease), or None."""
    if _committed(e, recs):
        return None  # its result was committed: nothing may run this attempt again
    kill = events.killed.get(e.pid)
    if kill is not None and e.start <= kill <= later.start:
        return "runner SIGKILLed"
    held_from = _claimed_at(e, recs)[0]
    if any(held_from <= t <= later.start for t, _ in events.stopped.get(e.pid, [])):
        return "runner SIGSTOPped past its lease"
    if e.how == "cancel":
        return "cancelled by a graceful stop and given back"
    return _lapsed(e, later, recs, lease)


def _frozen_before_start(e: Execution, recs: Records, events: Events, lease: float) -> bool:
    """Whether ``e``'s process was frozen (SIGSTOP, or its event loop starved) between the claim
    that leased it the task and the start: it may have checked its lease just before the freeze
    and started the task after it. No check can close that window (a freeze may fall between the
    check and the start), so such a run is a zombie like one frozen while it ran."""
    t0, _ = _claimed_at(e, recs)
    if any(t0 <= t <= e.start for t, _ in events.stopped.get(e.pid, [])):
        return True
    return any(
        s0 < e.start and s1 > t0 and s1 - s0 >= lease / 3 for s0, s1 in recs.stalls.get(e.pid, [])
    )


def _committed(e: Execution, recs: Records) -> bool:
    """Whether the store accepted ``e``'s outcome: its process recorded an accepted outcome of
    that attempt after ``e`` ended, and ran that attempt only once (with two runs in one process,
    which one the accepted outcome came from is unknown, and neither counts as committed)."""
    if e.how not in ("ok", "raise") or e.end is None:
        return False
    same = [x for x in recs.by_attempt.get((e.task_id, e.attempt), []) if x.pid == e.pid]
    if len(same) > 1:
        return False
    accepted = recs.accepted.get((e.task_id, e.attempt), [])
    return any(pid == e.pid and t >= e.end for pid, _, t in accepted)


def _claimed_at(e: Execution, recs: Records) -> tuple[float, float]:
    """The claim call (start, end) that leased ``e``'s task to its process (``e.start`` twice if
    none is recorded)."""
    claims = [c for c in recs.claims.get((e.pid, e.task_id), []) if c[0] <= e.start]
    return max(claims) if claims else (e.start, e.start)


def _lapsed(e: Execution, later: Execution, recs: Records, lease: float) -> str | None:
    """Whether ``e``'s lease may have lapsed before ``later`` started although its runner kept
    trying to renew it: a claim or heartbeat call that took so long (the store was down, or
    waited behind a lock) or failed so that no renewal reached the store in time.

    A claim call from t0 to t1 leases the task from the moment it holds the store's locks
    (between t0 and t1), and a runner whose claim took more than a third of the lease renews the
    lease before it starts the task (and does not start it if the lease is gone): so a started
    task's lease runs at least until max(t0 + lease, t1 + 2/3 lease). A heartbeat call renews
    from its start. The lease may lapse at a moment no renewal covers; it counts as lost only if a
    renewal had been attempted in time (started before the lease ran out) and was late or failed,
    or the heartbeat loop was held up in its other store call (``stop_requested``) past the
    deadline. If the runner simply stopped renewing a lease it held, that is not a loss but a
    bug.

    A heartbeat that ran while a ``complete`` call reporting the task was in flight renewed
    nothing for it: that call holds the task's row locked, and PostgreSQL's heartbeat skips
    locked rows rather than wait behind a completion that may itself wait. If that call then
    fails, the lease runs from the renewal before it; and a completion held up across the
    deadline (retried through an outage, or waiting for a lock) while heartbeats ran explains a
    lapse. (SQLite's heartbeat waits for the completion instead of skipping: there the rule is
    merely lenient.)"""
    t0, t1 = _claimed_at(e, recs)
    completing = recs.completions.get((e.pid, e.task_id), [])
    skipped = False  # a heartbeat ran while the task's own completion held its row
    until = max(t0 + lease, t1 + lease * 2 / 3)
    for s0, s1 in recs.stalls.get(e.pid, []):
        if s0 < later.start and s1 > t0 and s1 - s0 >= lease / 3:
            return "lease lapsed: its runner's event loop stalled (the machine was overloaded)"
    failed = False
    for h0, h1, how in sorted(recs.heartbeats.get(e.pid, [])):
        if h1 < t0:
            continue
        if h0 > until or until >= later.start:
            break
        if h1 > until and how != "fail":
            # a renewal, or the heartbeat loop's other store call, was still waiting at the
            # deadline (it may have begun before the claim: the loop is one call at a time)
            return "lease lapsed: a heartbeat stalled (store unreachable or locked)"
        if how == "fail":
            failed = True
        elif how == "ok" and h0 >= t0:
            if any(c0 <= h1 and h0 <= c1 for c0, c1 in completing):
                skipped = True
                continue  # the task's row was locked by its own completion: not renewed
            until = max(until, h0 + lease)
    if until < later.start and failed:
        return "lease lapsed: heartbeats failed"
    if (
        until < later.start
        and skipped
        and any(c0 <= until <= c1 and c1 - c0 >= lease / 3 for c0, c1 in completing)
    ):
        # the task's own completion was held up (by a lock, or retried while the database was
        # down) across the deadline: the heartbeats meanwhile found its row locked, and the
        # completion then failed, leaving a lease nothing had renewed
        return "lease lapsed: its completion was held up (store unreachable or locked)"
    return None


def _check_reruns(
    runs: dict[str, list[Execution]], recs: Records, events: Events, lease: float, out: Outcome
) -> None:
    for executions in runs.values():
        by_attempt: dict[int, list[Execution]] = defaultdict(list)
        for e in sorted(executions, key=lambda e: e.start):
            by_attempt[e.attempt].append(e)
        for attempt, same in by_attempt.items():
            for i, later in enumerate(same[1:], 1):
                reasons = [_why_rerun(e, later, recs, events, lease) for e in same[:i]]
                found = [r for r in reasons if r]
                if not found and _frozen_before_start(later, recs, events, lease):
                    found = ["zombie start: its runner was frozen between claim and start"]
                if found:
                    out.reruns[found[0]] += 1
                    continue
                history = "; ".join(e.describe() for e in same[: i + 1])
                out.bad(
                    f"node {later.node} attempt {attempt} ran {i + 1} times, but no earlier "
                    f"run's runner lost its lease (killed, stopped, or its renewals stalled): "
                    f"{history}" + _hint(same[0], later, recs, events, lease)
                )


def _hint(first: Execution, later: Execution, recs: Records, events: Events, lease: float) -> str:
    """What else happened between two runs of a task that may explain the second."""
    hints = []
    for e in (first, later):
        t0, t1 = _claimed_at(e, recs)
        if t1 - t0 > lease:
            frozen = any(t0 <= t <= t1 for t, _ in events.stopped.get(e.pid, []))
            why = "its process was frozen (SIGSTOP) during the call" if frozen else "a slow store"
            hints.append(
                f"the claim that leased it to pid {e.pid} took {t1 - t0:.2f} s ({t0:.3f} to "
                f"{t1:.3f}), longer than the {lease} s lease ({why}); the runner renews such a "
                "claim's leases before it starts their tasks"
            )
    failed = [
        f"{op} call {n} ({when})"
        for pid, t, op, n, when in recs.faults
        if pid == first.pid and op == "complete" and first.start <= t <= later.start
    ]
    if failed:
        hints.append(
            f"the first run's runner had store errors injected into {', '.join(failed)}: "
            "a runner that drops an outcome on a transient store error, instead of keeping it "
            "and trying again while it holds the lease, sends the task round again"
        )
    t0, _ = _claimed_at(later, recs)
    for t_stop, t_cont in events.stopped.get(later.pid, []):
        if t0 <= t_stop <= later.start:
            hints.append(
                f"the later run's runner (pid {later.pid}) was SIGSTOPped from {t_stop:.3f} to "
                f"{t_cont or events.end:.3f}, between its claim ({t0:.3f}) and the start: it "
                "started a task whose lease had run out meanwhile (a runner should check how old "
                "its claim is right before it starts a task)"
            )
    for pid, spans in events.stopped.items():
        for t_stop, t_cont in spans:
            if pid != first.pid and t_stop <= later.start and (t_cont or events.end) >= first.start:
                hints.append(
                    f"another runner (pid {pid}) was SIGSTOPped from {t_stop:.3f} to "
                    f"{t_cont or events.end:.3f}: a process frozen inside a store transaction "
                    "keeps its locks (SQLite's write lock, PostgreSQL's row locks) and the "
                    "others wait behind it"
                )
    for t0, t1 in events.restarts:
        if t0 <= later.start and t1 >= first.start:
            hints.append(f"PostgreSQL restarted from {t0:.3f} to {t1:.3f}")
    if first.pid in events.terminated:
        hints.append(
            f"the first run's runner was sent SIGTERM at {events.terminated[first.pid]:.3f}"
        )
    return f" [{'; '.join(hints)}]" if hints else ""


def _check_overlaps(
    runs: dict[str, list[Execution]],
    recs: Records,
    events: Events,
    lease: float,
    out: Outcome,
    sync: Mapping[int, bool],
) -> None:
    for executions in runs.values():
        for a, b in itertools.combinations(sorted(executions, key=lambda e: e.start), 2):
            a_end = a.end if a.end is not None else events.death(a.pid)
            if b.start >= a_end:
                continue
            # a overlaps b: fine only if a's process was frozen (SIGSTOP) before b started, or
            # b's process was frozen between b's claim and its start (a zombie either way)
            frozen = [s for s, _ in events.stopped.get(a.pid, []) if a.start <= s <= b.start]
            if frozen or _frozen_before_start(b, recs, events, lease):
                out.zombies += 1
                continue
            # a's runner lost the lease while a ran: a starved event loop cannot fence anything,
            # and a sync task's thread cannot be stopped at all (its runner fences only async
            # tasks), so either may still run when the task's next run starts
            lapsed = _lapsed(a, b, recs, lease)
            if lapsed is not None and (sync.get(a.node, False) or "event loop" in lapsed):
                out.zombies += 1
                continue
            out.bad(
                f"node {a.node} ran twice at the same time: {a.describe()} and {b.describe()}"
                + _hint(a, b, recs, events, lease)
            )
