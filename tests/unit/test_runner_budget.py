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


class _SlowCommits:
    """A store whose commits take ``delay`` seconds and whose heartbeats fail: the leases of
    tasks waiting for a commit go unrenewed meanwhile. Counts ``renew`` calls."""

    def __init__(self, inner: object, delay: float) -> None:
        self._inner = inner
        self.delay = delay
        self.renewed: list[str] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    async def complete(self, runner_id: str, outcomes: object) -> int:
        import asyncio

        await asyncio.sleep(self.delay)
        return await self._inner.complete(runner_id, outcomes)  # type: ignore[attr-defined, no-any-return]

    async def heartbeat(self, runner_id: str, lease: float) -> int:
        raise ConnectionError("heartbeats fail in this test")

    async def renew(self, runner_id: str, task_ids: list[str], lease: float) -> list[str]:
        self.renewed += task_ids
        return await self._inner.renew(runner_id, task_ids, lease)  # type: ignore[attr-defined, no-any-return]


async def test_a_task_that_waited_for_a_commit_checks_its_lease_before_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parents that waited for the commit of their siblings' subtasks longer than a third of the
    lease, with no heartbeat renewing it meanwhile, renew their lease before they start, as a
    task whose claim is that old does (without the check they started on a lease that may have
    passed to another runner); the job still completes."""
    from swath.store.sqlite import SQLiteJobStore

    monkeypatch.setattr(runner, "SUBTASK_BUDGET", BUDGET)
    store = _SlowCommits(SQLiteJobStore(tmp_path / "jobs.db"), delay=0.5)
    started: list[float] = []
    async with Client(store=store) as client:  # type: ignore[arg-type]
        job = await client.jobs().submit("tree", Root())
        await client.runner(
            [Root, Parent, Leaf], InMemoryCache(), context=started, max_concurrency=100, lease=3.0
        ).run_all()
        assert (await client.jobs().find(job.id)).state == JobState.COMPLETED
        tasks = await client.jobs().tasks(job.id)
    parents = {t.id for t in tasks if t.name == "Parent"}
    assert parents & set(store.renewed), "no parent renewed its lease after waiting"
