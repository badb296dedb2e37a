"""What a runner does with a task's input: decode it as JSON into the registered class, and
nothing else; never log it, never put it in a recorded error."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from swath import Client, ExecutionContext, InMemoryCache, Task

SECRET = "tok-9f3b2a71-secret-input"


class Leaky(Task):
    token: str

    async def execute(self, context: ExecutionContext) -> None:
        raise RuntimeError("the service refused")


class Count(Task):
    n: int

    async def execute(self, context: ExecutionContext) -> None:
        pass


class CountAsText(Task):
    n: str

    @classmethod
    def identifier(cls) -> tuple[str, str]:
        return "Count", "v0.0"

    async def execute(self, context: ExecutionContext) -> None:
        pass


async def test_inputs_never_reach_logs_or_recorded_errors(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A task whose input holds a secret fails, and another's stored input does not decode
    into the runner's class for its identifier: with every logger at DEBUG, the secret is in no
    record of swath's loggers, and neither it nor the undecodable input is in the recorded
    error (type, message, traceback)."""
    caplog.set_level(logging.DEBUG)
    async with Client(f"sqlite:///{tmp_path}/jobs.db") as client:
        failed = await client.jobs().submit("leaky", Leaky(SECRET))
        mismatch = await client.jobs().submit("mismatch", CountAsText(SECRET))
        await client.runner([Leaky, Count], InMemoryCache()).run_all()
        recorded = []
        for job in (failed, mismatch):
            [task] = await client.jobs().tasks(job.id)
            assert task.error is not None
            recorded += [task.error.type, task.error.message, task.error.traceback]
        assert recorded[0] == "RuntimeError"
        assert recorded[3] == "TaskInputError"
    # swath's own loggers; aiosqlite at DEBUG logs every statement with its parameters (see
    # docs/security.md)
    mine = [r for r in caplog.records if r.name.startswith("swath")]
    logged = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in mine)
    assert "the service refused" in logged  # the failure was logged, without its input
    for text in [logged, *recorded]:
        assert SECRET not in text
