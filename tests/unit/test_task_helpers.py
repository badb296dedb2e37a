"""Small task classes shared by unit tests."""

from __future__ import annotations

from swath import ExecutionContext, Task


class Noop(Task):
    async def execute(self, context: ExecutionContext) -> None:
        pass
