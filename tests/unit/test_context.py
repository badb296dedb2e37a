"""ExecutionContext on its own: subtask submission rules, depends_on checks, progress."""

from __future__ import annotations

import pytest

from swath import ExecutionContext, InMemoryCache, Task
from swath.store import ClaimedTask


class Leaf(Task):
    n: int = 0

    async def execute(self, context: ExecutionContext) -> None:
        pass


def make_context(cluster: str = "default") -> ExecutionContext:
    claimed = ClaimedTask(
        id="task-1", job_id="job-1", job_name="job", parent_id=None, cluster=cluster,
        name="Leaf", version="v0.0", input=b"{}", display="", retry_count=2, max_retries=3,
        optional=False,
    )  # fmt: skip
    return ExecutionContext(claimed, InMemoryCache())


def test_submit_collects_subtasks_with_options() -> None:
    """submit_subtask(s) returns FutureTasks and records input, cluster (default: the parent's),
    retries, optional and dependencies."""
    ctx = make_context("gpu")
    first = ctx.submit_subtask(Leaf(1))
    rest = ctx.submit_subtasks([Leaf(2), Leaf(3)], depends_on=first, max_retries=2, optional=True)
    other = ctx.submit_subtask(Leaf(4), depends_on=rest, cluster="cpu")
    subtasks, _ = ctx._collected()
    assert [s.input for s in subtasks] == [b'{"n":1}', b'{"n":2}', b'{"n":3}', b'{"n":4}']
    assert [s.cluster for s in subtasks] == ["gpu", "gpu", "gpu", "cpu"]
    assert subtasks[1].depends_on == [first.id]
    assert (subtasks[1].max_retries, subtasks[1].optional) == (2, True)
    assert subtasks[3].depends_on == [r.id for r in rest]
    assert [f.index for f in [first, *rest, other]] == [0, 1, 2, 3]


def test_depends_on_a_task_of_another_context_is_an_error() -> None:
    """depends_on with a FutureTask from another context is a ValueError; nothing is submitted."""
    mine, theirs = make_context(), make_context()
    foreign = theirs.submit_subtask(Leaf())
    with pytest.raises(ValueError, match="another task's context"):
        mine.submit_subtask(Leaf(), depends_on=[foreign])
    assert mine._collected()[0] == []


def test_bad_submissions_are_clear_errors() -> None:
    """Non-tasks, non-FutureTask dependencies and negative retries are rejected."""
    ctx = make_context()
    with pytest.raises(TypeError, match="Task instance"):
        ctx.submit_subtask("not a task")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="FutureTasks"):
        ctx.submit_subtask(Leaf(), depends_on=["an id"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="max_retries"):
        ctx.submit_subtask(Leaf(), max_retries=-1)
    assert ctx._collected()[0] == []


def test_progress_and_current_task() -> None:
    """progress(label) accumulates add/done; current_task carries ids, names and retry count."""
    ctx = make_context()
    ctx.progress("tiles").add(64)
    ctx.progress("tiles").done(3)
    ctx.progress("unused")
    assert ctx._collected()[1] == {"tiles": (64, 3)}
    with pytest.raises(ValueError, match="non-negative"):
        ctx.progress("tiles").done(-1)
    task = ctx.current_task
    assert (task.job.id, task.job.name, task.retry_count, task.id) == ("job-1", "job", 2, "task-1")
    task.display = "shown"
    assert ctx.current_task.display == "shown"


async def test_job_cache_is_the_job_group() -> None:
    """job_cache is the runner cache's group named by the job id."""
    ctx = make_context()
    await ctx.job_cache.put("k", b"v")
    assert await ctx._cache.get("job-1/k") == b"v"
