"""Tasks of the dashboard's tests (importable, so a runner in another process can run them)."""

from __future__ import annotations

import asyncio

from swath import ExecutionContext, Task


class Leaf(Task):
    index: int = 0
    sleep: float = 0.0

    async def execute(self, context: ExecutionContext) -> None:
        if self.sleep:
            await asyncio.sleep(self.sleep)
        context.logger.info("leaf %d done", self.index, index=self.index)
        context.progress("leaves").done(1)


class FanOut(Task):
    """``n`` Leaf subtasks (on ``cluster``, default: this task's), a display, a progress bar."""

    n: int = 12
    sleep: float = 0.0
    display: str = ""
    cluster: str = ""

    async def execute(self, context: ExecutionContext) -> None:
        if self.display:
            context.current_task.display = self.display
        context.progress("leaves").add(self.n)
        context.submit_subtasks(
            [Leaf(i, self.sleep) for i in range(self.n)], cluster=self.cluster or None
        )
        context.submit_subtask(Broken('a <b>bold</b> & "quoted" failure'), optional=True)


class Broken(Task):
    message: str = "broken"

    async def execute(self, context: ExecutionContext) -> None:
        context.logger.warning("about to fail: %s", self.message)
        raise RuntimeError(self.message)


class Hello(Task):
    async def execute(self, context: ExecutionContext) -> None:
        await context.job_cache.put("hello.txt", b"hello, world\n")
