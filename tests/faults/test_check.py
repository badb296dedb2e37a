"""The checks of the fault-injection suite, on hand-made records: a clean run passes, and each
kind of broken run is caught (so a green fault trial means something)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from swath.store.base import (
    ErrorInfo,
    JobInfo,
    JobState,
    ProgressInfo,
    TaskInfo,
    TaskState,
)
from tests.faults import check, records
from tests.faults.plan import Node, Plan, expect, value

LEASE = 1.5
T = 1_000_000.0  # an arbitrary epoch for the made-up times


def small_plan() -> Plan:
    """The root fans out to 1 and 2; 3 depends on both."""
    nodes = [
        Node(0, -1, sync=False, children=[1, 2, 3]),
        Node(1, 0, sync=False),
        Node(2, 0, sync=True),
        Node(3, 0, sync=False, deps=[1, 2]),
    ]
    return Plan("test", nodes)


@dataclass
class World:
    """A trial's results, as the harness would collect them; clean until a test breaks it."""

    lines: dict[int, list[str]] = field(default_factory=dict)  # pid -> record lines
    states: dict[int, TaskState] = field(default_factory=dict)
    errors: dict[int, ErrorInfo] = field(default_factory=dict)
    job_state: JobState = JobState.COMPLETED
    progress: int = 4
    values: dict[str, bytes | Exception] = field(default_factory=dict)
    events: check.Events = field(default_factory=check.Events)

    def run(self, pid: int, node: int, start: float, end: float | None, how: str = "ok") -> None:
        """One execution of ``node`` in ``pid``, its claim just before it, its commit after."""
        out = self.lines.setdefault(pid, [])
        n = sum(1 for line in out if line.startswith("S ")) + 1
        exec_id = f"{pid}-{n}"
        out.append(f"Q {start - 0.002!r} {start - 0.001!r} task{node}")
        out.append(f"S {exec_id} {node} task{node} 0 {pid} {start!r}")
        if node == 0 and how == "ok":
            out += [f"C {exec_id} {c} task{c}" for c in (1, 2, 3)]
        if end is not None:
            out.append(f"E {exec_id} {end!r} {how}")
            if how == "ok":
                out.append(f"K {end + 0.001!r} r task{node}:0:ok")

    def result(self, tmp: Path) -> check.Outcome:
        for pid, lines in self.lines.items():
            (tmp / f"exec-{pid}.log").write_text("".join(f"{line}\n" for line in lines))
        recs = records.read(tmp)
        tasks = [
            TaskInfo(
                id=f"task{i}", job_id="job", parent_id=None if i == 0 else "task0",
                cluster="default", name="AsyncNode", version="v0.0", display="",
                state=self.states.get(i, TaskState.COMPLETED), retry_count=0, max_retries=0,
                optional=False, lost_count=0, created_at=T, started_at=T, finished_at=T,
                error=self.errors.get(i),
            )
            for i in range(4)
        ]  # fmt: skip
        job = JobInfo(
            "job", "faults", "default", self.job_state, T, T, T, "task0",
            progress=[ProgressInfo("nodes", 0, self.progress)],
        )  # fmt: skip
        plan = small_plan()
        return check.check(plan, expect(plan), job, tasks, recs, self.values, self.events, LEASE)


def clean(node_1_runs: bool = True) -> World:
    w = World()
    w.events.spawned = {100: T, 200: T}
    w.events.exited = {100: (T + 10, 0), 200: (T + 10, 0)}
    w.events.end = T + 10
    w.run(100, 0, T + 1.0, T + 1.01)
    if node_1_runs:
        w.run(100, 1, T + 1.1, T + 1.11)
    w.run(200, 2, T + 1.1, T + 1.12)
    w.run(200, 3, T + 1.2, T + 1.21)
    w.values = {str(i): value(i, 64) for i in range(4)}
    return w


def test_a_clean_run_passes(tmp_path: Path) -> None:
    """Every task ran once, in order, its value whole: no violation."""
    out = clean().result(tmp_path)
    assert out.violations == []
    assert out.executions == 4


def _overlap(w: World) -> None:
    w.run(200, 1, T + 1.105, T + 1.2)


def _rerun(w: World) -> None:
    w.run(200, 1, T + 3.0, T + 3.01)


def _torn(w: World) -> None:
    w.values["2"] = value(2, 64)[:30]


def _missing_value(w: World) -> None:
    del w.values["1"]


def _dependency_unwritten(w: World) -> None:
    w.lines[200].append("D 200-2 3 1")


def _left_running(w: World) -> None:
    w.states[2] = TaskState.RUNNING


def _wrong_error(w: World) -> None:
    w.states[2] = TaskState.FAILED
    w.errors[2] = ErrorInfo("RunnerLostError", "lost 11 times", "")
    w.job_state = JobState.FAILED


def _counted_twice(w: World) -> None:
    w.progress = 5


def _crashed_runner(w: World) -> None:
    w.events.exited[200] = (T + 10, 1)


def _accepted_twice(w: World) -> None:
    w.lines[200].append(f"K {T + 5!r} r task1:0:ok")


def _never_ran(w: World) -> None:
    w.lines[200] = [line for line in w.lines[200] if " 3 task3 " not in line]


def _task_code_error(w: World) -> None:
    w.lines[100][-2] = w.lines[100][-2].replace(" ok", " error OSError: disk full")


BROKEN: dict[str, tuple[Callable[[World], None], str]] = {
    "overlap": (_overlap, "ran twice at the same time"),
    "rerun without a lost runner": (_rerun, "ran 2 times"),
    "torn value": (_torn, "torn or foreign"),
    "missing value": (_missing_value, "not in the cache"),
    "dependency not written": (_dependency_unwritten, "started before the values"),
    "left running": (_left_running, "left RUNNING"),
    "wrong error": (_wrong_error, "not its planned failure"),
    "progress counted twice": (_counted_twice, "progress 'nodes' counted 5"),
    "runner crashed": (_crashed_runner, "exited with code 1"),
    "outcome accepted twice": (_accepted_twice, "accepted 2 times"),
    "never ran": (_never_ran, "never ran"),
    "task code error": (_task_code_error, "failed unexpectedly: OSError"),
}


@pytest.mark.parametrize("name", BROKEN)
def test_each_broken_run_is_caught(name: str, tmp_path: Path) -> None:
    """A run broken in one way yields a violation that says so."""
    breaks, says = BROKEN[name]
    world = clean()
    breaks(world)
    out = world.result(tmp_path)
    assert any(says in v for v in out.violations), out.violations


def test_a_rerun_after_a_kill_is_explained(tmp_path: Path) -> None:
    """A task whose runner was SIGKILLed while it ran (no end record) may run again elsewhere;
    its death ends the first run, so the two do not overlap."""
    w = clean(node_1_runs=False)
    w.run(100, 1, T + 1.1, None)
    w.events.killed[100] = T + 1.15
    w.events.exited[100] = (T + 1.16, -9)
    w.run(200, 1, T + 3.0, T + 3.01)
    out = w.result(tmp_path)
    assert out.violations == []
    assert out.reruns == {"runner SIGKILLed": 1}


def test_a_frozen_run_overlapping_its_takeover_is_a_zombie(tmp_path: Path) -> None:
    """A run whose process was SIGSTOPped past its lease goes on after SIGCONT beside the run
    that took over: counted as a zombie, not a violation."""
    w = clean(node_1_runs=False)
    w.run(100, 1, T + 1.1, None)
    w.lines[100].append(f"E 100-2 {T + 4.2!r} ok")  # after SIGCONT, refused by the store
    w.events.stopped[100].append((T + 1.105, T + 4.1))
    w.run(200, 1, T + 3.0, T + 4.3)
    out = w.result(tmp_path)
    assert out.violations == []
    assert out.zombies == 1
    assert out.reruns == {"runner SIGSTOPped past its lease": 1}


def test_a_stalled_heartbeat_explains_a_rerun(tmp_path: Path) -> None:
    """A runner whose heartbeat call waited past its lease (the store was down or locked) lost
    the lease; a run elsewhere afterwards is legitimate."""
    w = clean()
    w.lines[100].append(f"H {T + 1.3!r} {T + 3.5!r} ok")
    w.run(200, 1, T + 3.0, T + 3.01)
    w.lines[100] = [line for line in w.lines[100] if not line.startswith("K ")]
    out = w.result(tmp_path)
    assert out.violations == []
    assert out.reruns == {"lease lapsed: a heartbeat stalled (store unreachable or locked)": 1}


def test_a_start_after_a_freeze_between_claim_and_start_is_a_zombie(tmp_path: Path) -> None:
    """A runner frozen right after its claim starts the task when it wakes, though the task ran
    elsewhere meanwhile: no check can close that window, so it counts as a zombie run."""
    w = clean()
    w.run(300, 1, T + 4.0, T + 4.01)  # claimed at T + 3.998, frozen from T + 3.999 to T + 4.0
    w.lines[300] = [line for line in w.lines[300] if not line.startswith("K ")]
    w.events.stopped[300].append((T + 3.999, T + 4.0))
    out = w.result(tmp_path)
    assert out.violations == []
    assert out.reruns == {"zombie start: its runner was frozen between claim and start": 1}


def test_a_starved_event_loop_explains_a_lapse(tmp_path: Path) -> None:
    """A runner whose event loop did not run for a second (an overloaded machine) could not
    renew its leases: a run elsewhere afterwards is legitimate."""
    w = clean()
    w.lines[100] = [line for line in w.lines[100] if not line.startswith("K ")]
    w.lines[100].append(f"L {T + 1.2!r} {T + 2.9!r}")
    w.run(200, 1, T + 3.0, T + 3.01)
    out = w.result(tmp_path)
    assert out.violations == []
    assert list(out.reruns) == [
        "lease lapsed: its runner's event loop stalled (the machine was overloaded)"
    ]


def _lapsed_while_running(node: int, cause: str) -> World:
    """``node`` runs in pid 200 from T + 1.1 to T + 4 without committing; its runner's lease
    lapses by ``cause`` (a heartbeat call stuck from T + 1.3 to T + 3.5, or the event loop
    starved as long); pid 100 runs it again at T + 3.0, while the first run still goes on."""
    w = World()
    w.events.spawned = {100: T, 200: T}
    w.events.exited = {100: (T + 10, 0), 200: (T + 10, 0)}
    w.events.end = T + 10
    w.run(100, 0, T + 1.0, T + 1.01)
    w.run(200, node, T + 1.1, T + 4.0)
    w.lines[200] = [line for line in w.lines[200] if not line.startswith("K ")]
    w.lines[200].append(
        f"H {T + 1.3!r} {T + 3.5!r} ok" if cause == "heartbeat" else f"L {T + 1.3!r} {T + 3.5!r}"
    )
    w.run(100, node, T + 3.0, T + 3.01)
    for other in (1, 2):
        if other != node:
            w.run(100, other, T + 3.1, T + 3.11)
    w.run(100, 3, T + 4.1, T + 4.11)
    w.values = {str(i): value(i, 64) for i in range(4)}
    return w


@pytest.mark.parametrize(("node", "cause"), [(2, "heartbeat"), (2, "loop"), (1, "loop")])
def test_a_run_that_cannot_be_fenced_overlapping_its_rerun_is_a_zombie(
    tmp_path: Path, node: int, cause: str
) -> None:
    """A task whose runner lost its lease while it ran may overlap its next run when its runner
    could not stop it: a sync task's thread cannot be stopped at all, and a starved event loop
    fences nothing. Counted as a zombie run, not a violation."""
    out = _lapsed_while_running(node, cause).result(tmp_path)
    assert out.violations == []
    assert out.zombies == 1


def test_an_async_run_its_live_runner_did_not_fence_is_a_violation(tmp_path: Path) -> None:
    """An async task whose runner's event loop ran, but whose heartbeat was stuck past the lease,
    must have been fenced (cancelled at 2/3 of the lease): still running beside its next run is a
    violation."""
    out = _lapsed_while_running(1, "heartbeat").result(tmp_path)
    assert any("ran twice at the same time" in v for v in out.violations), out.violations


def test_a_heartbeat_during_the_tasks_own_failed_completion_renewed_nothing(
    tmp_path: Path,
) -> None:
    """A heartbeat that ran while a completion reporting the task was in flight did not renew
    the task (the completion holds its row; PostgreSQL's heartbeat skips locked rows). When that
    completion fails (the database went away) and the next heartbeat waits past the lease, a
    rerun elsewhere is legitimate; the same heartbeat outside any completion would have kept the
    lease, and the rerun is a violation."""

    def world(completing: bool) -> World:
        w = clean()
        w.lines[100] = [line for line in w.lines[100] if not line.startswith("K ")]
        if completing:
            w.lines[100].append(f"M {T + 1.12!r} {T + 2.9!r} task1")
        w.lines[100].append(f"H {T + 1.2!r} {T + 1.21!r} ok")  # renews until T + 2.7, if at all
        w.lines[100].append(f"H {T + 1.8!r} {T + 3.5!r} ok")  # waits out the outage
        w.run(200, 1, T + 2.65, T + 2.66)
        return w

    out = world(completing=True).result(tmp_path)
    assert out.violations == []
    assert out.reruns == {"lease lapsed: a heartbeat stalled (store unreachable or locked)": 1}
    (tmp_path / "b").mkdir()
    out = world(completing=False).result(tmp_path / "b")
    assert any("ran 2 times" in v for v in out.violations), out.violations


def test_a_heartbeat_still_waiting_when_its_runner_was_killed_stalled(tmp_path: Path) -> None:
    """A heartbeat call that began but never ended (the database was down, and the runner was
    SIGKILLed while the call waited) stalled past the lease: a rerun elsewhere before the kill
    is legitimate. Without the record of its beginning, the same rerun is a violation."""

    def world(begun: bool) -> World:
        w = clean()
        w.lines[100] = [line for line in w.lines[100] if not line.startswith("K ")]
        w.lines[100].append(f"m {T + 1.12!r} task1")  # the completion of task1, never ended
        if begun:
            w.lines[100].append(f"h {T + 1.6!r}")  # never ended either
        w.run(200, 1, T + 2.9, T + 2.91)
        w.events.killed[100] = T + 3.0
        w.events.exited[100] = (T + 3.0, -9)
        return w

    out = world(begun=True).result(tmp_path)
    assert out.violations == []
    assert out.reruns == {"lease lapsed: a heartbeat stalled (store unreachable or locked)": 1}
    (tmp_path / "b").mkdir()
    out = world(begun=False).result(tmp_path / "b")
    assert any("ran 2 times" in v for v in out.violations), out.violations


def test_a_completion_held_up_across_the_deadline_explains_a_lapse(tmp_path: Path) -> None:
    """The task's own completion was in flight for seconds (the database went down twice and
    the runner kept retrying it): the heartbeats meanwhile may have found the task's row locked
    by one of its attempts, so the lease may lapse with nothing renewing it. A rerun after the
    completion finally failed is legitimate. A completion of a few milliseconds across the
    deadline explains nothing."""

    def world(completion_end: float) -> World:
        w = clean()
        w.lines[100] = [line for line in w.lines[100] if not line.startswith("K ")]
        w.lines[100].append(f"M {T + 1.12!r} {completion_end!r} task1")
        w.lines[100].append(f"H {T + 1.6!r} {T + 1.61!r} ok")  # its row locked: not renewed
        w.run(200, 1, T + 3.0, T + 3.01)
        return w

    out = world(T + 4.0).result(tmp_path)
    assert out.violations == []
    assert out.reruns == {
        "lease lapsed: its completion was held up (store unreachable or locked)": 1
    }
    (tmp_path / "b").mkdir()
    out = world(T + 1.13).result(tmp_path / "b")
    assert any("ran 2 times" in v for v in out.violations), out.violations
