"""swath.tasktree: a job's task tree with large fan-outs aggregated ("Leaf x 36"), linear and
without recursion, as the dashboard and ``swath jobs show`` draw it."""

from __future__ import annotations

import io
import time

import pytest

from swath.store.base import ErrorInfo, TaskInfo, TaskState
from swath.tasktree import flatten, task_tree

_n = 0


def task(
    name: str,
    parent: TaskInfo | None = None,
    state: TaskState = TaskState.COMPLETED,
    *,
    display: str = "",
    started: float | None = 10.0,
    finished: float | None = 11.0,
    error: str | None = None,
) -> TaskInfo:
    global _n
    _n += 1
    return TaskInfo(
        id=f"t{_n}",
        job_id="j",
        parent_id=None if parent is None else parent.id,
        cluster="default",
        name=name,
        version="v1.0",
        display=display,
        state=state,
        retry_count=0,
        max_retries=0,
        optional=False,
        lost_count=0,
        created_at=float(_n),
        started_at=started,
        finished_at=finished,
        error=None if error is None else ErrorInfo("RuntimeError", error, "Traceback ..."),
    )


def test_a_large_fan_out_is_one_node_with_state_counts() -> None:
    """36 sibling tiles are one node "NdviTile x 36" (counts by state, earliest start, latest
    end, the first failures as samples); their 36 x 2 subtasks are one node below it; a class
    with fewer siblings than the threshold keeps one node per task."""
    root = task("Pipeline", display="NDVI of S2")
    tiles = [
        task("NdviTile", root, TaskState.FAILED if i == 5 else TaskState.COMPLETED,
             started=10.0 + i, finished=20.0 + i, error="boom" if i == 5 else None)
        for i in range(36)
    ]  # fmt: skip
    reads = [task("ReadBand", tile) for tile in tiles for _ in range(2)]
    assemble = task("Assemble", root, TaskState.QUEUED, started=None, finished=None)
    rows = flatten(task_tree([root, *tiles, *reads, assemble]))
    assert [(d, n.label, n.count) for d, n in rows] == [
        (0, "NDVI of S2", 1),
        (1, "NdviTile x 36", 36),
        (2, "ReadBand x 72", 72),
        (1, "Assemble", 1),
    ]
    tiles_node = rows[1][1]
    assert tiles_node.states == {TaskState.COMPLETED: 35, TaskState.FAILED: 1}
    assert tiles_node.state == TaskState.FAILED  # the most telling state
    assert (tiles_node.started_at, tiles_node.ended_at) == (10.0, 55.0)
    assert [t.id for t in tiles_node.failures] == [tiles[5].id]
    assert rows[3][1].state == TaskState.QUEUED
    assert rows[3][1].ended_at is None
    few = flatten(task_tree([root, *tiles[:3]]))
    assert [n.label for _, n in few] == ["NDVI of S2", "NdviTile", "NdviTile", "NdviTile"]


def test_a_hundred_thousand_tasks_and_a_deep_chain() -> None:
    """100,000 subtasks aggregate into a handful of nodes quickly (well under a second
    unloaded; 10 s allowed), and a chain 20,000 deep does not hit the recursion limit."""
    root = task("Root")
    leaves = [task("Leaf", root) for _ in range(100_000)]
    started = time.perf_counter()
    rows = flatten(task_tree([root, *leaves]))
    assert time.perf_counter() - started < 10
    assert [(d, n.label) for d, n in rows] == [(0, "Root"), (1, "Leaf x 100000")]
    chain = [task("Step")]
    for _ in range(20_000):
        chain.append(task("Step", chain[-1]))
    deep = flatten(task_tree(chain))
    assert len(deep) == 20_001
    assert deep[-1][0] == 20_000


def test_fan_out_is_at_least_two() -> None:
    """A threshold below 2 is refused (1 would make every task an aggregate)."""
    with pytest.raises(ValueError, match="at least 2"):
        task_tree([], fan_out=1)


def test_jobs_show_draws_aggregates_with_their_failures() -> None:
    """`swath jobs show`'s tree: a fan-out of 20 with 5 failures is one line with its counts,
    the first 3 errors (each naming its task) and "... and 2 more failed"; with fan_out=None
    (--expand) every task is a line of its own, as before."""
    from rich.console import Console

    from swath.cli.jobs import task_tree as cli_tree
    from swath.store.base import JobInfo, JobState

    root = task("Root")
    leaves = [
        task("Leaf", root, TaskState.FAILED if i % 4 == 0 else TaskState.COMPLETED,
             display=f"leaf {i}", error=f"boom {i}" if i % 4 == 0 else None)
        for i in range(20)
    ]  # fmt: skip
    job = JobInfo("j", "job", "default", JobState.FAILED, 1.0, 1.0, 2.0, root.id)

    def draw(fan_out: int | None) -> str:
        console = Console(width=200, record=True, file=io.StringIO())
        console.print(cli_tree(job, [root, *leaves], tracebacks=False, fan_out=fan_out))
        return console.export_text()

    text = draw(10)
    assert "Leaf x 20 v1.0 COMPLETED 15 FAILED 5" in text
    assert "RuntimeError: boom 0 (leaf 0)" in text
    assert "RuntimeError: boom 8 (leaf 8)" in text
    assert "boom 12" not in text
    assert "... and 2 more failed" in text
    expanded = draw(None)
    assert expanded.count("leaf ") == 20
    assert "RuntimeError: boom 16" in expanded
