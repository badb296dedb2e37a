"""A runner bounds the subtasks it holds in memory: while the outcomes waiting for their commit
carry ``SUBTASK_BUDGET`` subtasks or more, tasks about to start wait for the next commit (a root
fanning out 100 tasks of 10,000 subtasks each held all 1,000,000 new tasks before the first
commit, 416 MiB)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import swath.runner as runner
from swath import Client, ExecutionContext, InMemoryCache, JobState, Task

PARENTS, CHILDREN, BUDGET = 10, 300, 600


class Leaf(Task):
    async def execute(self, context: ExecutionContext) -> None:
        pass


class Parent(Task):
    async def execute(self, context: ExecutionContext) -> None:
        context.runner_context.append(time.time())
        context.submit_subtasks([Leaf() for _ in range(CHILDREN)])


class Root(Task):
    async def execute(self, context: ExecutionContext) -> None:
        context.submit_subtasks([Parent() for _ in range(PARENTS)])


async def test_tasks_wait_while_too_many_subtasks_await_their_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ten parents claimed together, each submitting 300 subtasks, with a budget of 600: the
    later parents start only after the first parents' subtasks were committed (without the
    budget all ten run, one after another, before the first commit); every task completes."""
    monkeypatch.setattr(runner, "SUBTASK_BUDGET", BUDGET)
    started: list[float] = []
    async with Client(f"sqlite:///{tmp_path}/jobs.db") as client:
        job = await client.jobs().submit("tree", Root())
        await client.runner(
            [Root, Parent, Leaf], InMemoryCache(), context=started, max_concurrency=100
        ).run_all()
        assert (await client.jobs().find(job.id)).state == JobState.COMPLETED
        tasks = await client.jobs().tasks(job.id)
    assert len(tasks) == 1 + PARENTS + PARENTS * CHILDREN
    first_leaf_committed = min(t.created_at for t in tasks if t.name == "Leaf")
    assert len(started) == PARENTS
    assert max(started) > first_leaf_committed
    later = [s for s in started if s > first_leaf_committed]
    assert len(later) >= PARENTS - BUDGET // CHILDREN - 1
