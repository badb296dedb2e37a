"""Tasks for the SIGKILL test: run by ``swath runner`` in a subprocess.

Each ``Slow`` task records every start under ``ran/<i>/<unique>`` and, once done,
``done/<i>`` in the job cache (a local-disk cache shared by the processes)."""

from __future__ import annotations

import asyncio
import os
import uuid

from swath import ExecutionContext, Task


class FanOutSlow(Task):
    n: int
    seconds: float

    async def execute(self, context: ExecutionContext) -> None:
        context.submit_subtasks([Slow(i, self.seconds) for i in range(self.n)])


class Slow(Task):
    i: int
    seconds: float

    async def execute(self, context: ExecutionContext) -> None:
        context.current_task.display = f"slow {self.i}"
        ran = context.job_cache.group("ran").group(str(self.i))
        await ran.put(f"{os.getpid()}-{uuid.uuid4().hex[:8]}", b"")
        await asyncio.sleep(self.seconds)
        await context.job_cache.group("done").put(str(self.i), str(os.getpid()).encode())
