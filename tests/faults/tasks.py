"""The tasks of a trial: one class per flavour of ``execute`` (async, sync), both playing a node of
the trial's plan (:mod:`tests.faults.plan`), which they read from the file named in their input.

An execution records its start first of all (so a SIGKILL right after still shows it), checks
that the values of everything it depends on are in the cache, works a few ms, raises on the
attempts the plan says fail, submits its children, writes its value to the job cache (async
nodes stream it in chunks, sync nodes use the blocking mapping), counts itself in the progress
indicator ``nodes`` and records how it ended.
"""

from __future__ import annotations

import asyncio
import os
import time
import traceback

from swath import ExecutionContext, FutureTask, Task
from tests.faults import plan as plans
from tests.faults import records

CHUNK = 16 << 10


class PlannedFailure(Exception):
    """The failure a node's plan asks for on this attempt."""


class AsyncNode(Task):
    plan: str
    node: int

    async def execute(self, context: ExecutionContext) -> None:
        run = _Run(self.plan, self.node, context)
        try:
            cache = context.job_cache.group("v")
            missing = [n for n in run.must_see if not await cache.contains(str(n))]
            run.check(missing)
            await asyncio.sleep(run.spec.work)
            run.submit(AsyncNode, SyncNode)
            data = plans.value(self.node, run.spec.size)
            async with cache.open_write(str(self.node)) as w:
                for i in range(0, len(data), CHUNK):
                    await w.write(data[i : i + CHUNK])
                    await asyncio.sleep(0)
            run.succeeded()
        except asyncio.CancelledError:
            run.end("cancel")
            raise
        except BaseException as exc:
            run.end("raise" if isinstance(exc, PlannedFailure) else "error", exc)
            raise
        run.end("ok")


class SyncNode(Task):
    plan: str
    node: int

    def execute(self, context: ExecutionContext) -> None:
        run = _Run(self.plan, self.node, context)
        try:
            cache = context.blocking_job_cache.group("v")
            missing = [n for n in run.must_see if str(n) not in cache]
            run.check(missing)
            time.sleep(run.spec.work + run.spec.hang)
            run.submit(AsyncNode, SyncNode)
            cache[str(self.node)] = plans.value(self.node, run.spec.size)
            run.succeeded()
        except BaseException as exc:
            run.end("raise" if isinstance(exc, PlannedFailure) else "error", exc)
            raise
        run.end("ok")


class _Run:
    """One execution of a node: its records and the plan's decisions for it."""

    def __init__(self, plan_path: str, node: int, context: ExecutionContext) -> None:
        self.exec_id = records.new_exec_id()
        task = context.current_task
        self.attempt = task.retry_count
        records.write("S", self.exec_id, node, task.id, self.attempt, os.getpid(), records.now())
        self.path = plan_path
        self.plan = plans.load(plan_path)
        self.spec = self.plan.nodes[node]
        self.must_see = plans.must_see_cached(plan_path).get(node, [])
        self.context = context

    def check(self, missing: list[int]) -> None:
        if missing:
            records.write("D", self.exec_id, self.spec.idx, ",".join(map(str, missing)))
        if self.attempt < self.spec.fail_attempts:
            raise PlannedFailure(f"node {self.spec.idx} fails attempt {self.attempt} (planned)")

    def submit(self, async_cls: type[Task], sync_cls: type[Task]) -> None:
        futures: dict[int, FutureTask] = {}
        for c in self.spec.children:
            child = self.plan.nodes[c]
            cls = sync_cls if child.sync else async_cls
            future = self.context.submit_subtask(
                cls(self.path, c),  # type: ignore[call-arg]
                depends_on=[futures[d] for d in child.deps],
                optional=child.optional,
                max_retries=child.max_retries,
            )
            futures[c] = future
            records.write("C", self.exec_id, c, future.id)

    def succeeded(self) -> None:
        self.context.progress("nodes").done(1)
        self.context.current_task.display = f"node {self.spec.idx}"

    def end(self, how: str, exc: BaseException | None = None) -> None:
        if how == "error" and exc is not None:
            frames = traceback.extract_tb(exc.__traceback__)
            where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
            what = " ".join(f"{type(exc).__name__}: {exc}{where}".split())[:400]
            records.write("E", self.exec_id, records.now(), how, what)
        else:
            records.write("E", self.exec_id, records.now(), how)
