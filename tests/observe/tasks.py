"""Tasks for the OpenTelemetry tests: a fan-out whose leaves use the job cache, and a reducer that
fails its first attempt (a retry, and a failure outcome, in the trace)."""

from __future__ import annotations

import asyncio

from swath import ExecutionContext, Task


class Split(Task):
    n: int
    seconds: float = 0.5

    async def execute(self, context: ExecutionContext) -> None:
        await context.job_cache.put("input", b"x" * 100)
        context.logger.info("splitting", n=self.n)
        leaves = context.submit_subtasks([Leaf(i, self.seconds) for i in range(self.n)])
        context.submit_subtask(Reduce(self.n), depends_on=leaves, max_retries=1)


class Leaf(Task):
    i: int
    seconds: float

    async def execute(self, context: ExecutionContext) -> None:
        assert await context.job_cache.get("input") == b"x" * 100
        await asyncio.sleep(self.seconds)
        await context.job_cache.put(f"leaf/{self.i}", b"y" * 1000)


class Reduce(Task):
    n: int

    async def execute(self, context: ExecutionContext) -> None:
        total = 0
        for i in range(self.n):
            async for chunk in context.job_cache.stream(f"leaf/{i}"):
                total += len(chunk)
        if context.current_task.retry_count == 0:
            raise RuntimeError("the first attempt fails")
        async with context.job_cache.open_write("sum") as w:
            await w.write(str(total).encode())


class SyncLeaf(Task):
    def execute(self, context: ExecutionContext) -> None:
        context.job_cache["sync"] = b"z" * 10
