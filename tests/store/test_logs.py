"""Per-task logs (issue 14, item 1), end to end on every store in ``STORES``: what tasks write
with ``context.logger`` is committed with their outcomes, read back with ``jobs().logs`` and
``swath jobs logs``, bounded per task and per job with a marker record, and shown beside a failed
task's traceback by ``swath jobs show``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from click.testing import CliRunner

from swath import BlockingClient, Client, ExecutionContext, InMemoryCache, JobState, Task
from swath.cli import main
from swath.store.machine import SQLJobStore

from .stores import StoreFactory


class Chatty(Task):
    """Logs ``n`` INFO lines with structured fields, one warning, then fails if asked."""

    n: int = 3
    fail: bool = False

    async def execute(self, context: ExecutionContext) -> None:
        for i in range(self.n):
            context.logger.info("tile %d done", i, scene_id="S2A", ms=12)
        context.logger.debug("not kept: below the runner's log level")
        context.logger.warning("almost out of \x00 memory\ud800", free=1)
        if self.fail:
            try:
                raise KeyError("the-missing-tile")
            except KeyError:
                context.logger.exception("lookup failed")
            raise RuntimeError("the tile server said no")


class SyncChatty(Task):
    def execute(self, context: ExecutionContext) -> None:
        context.logger.info("from a worker thread", thread=True)


class FanOut(Task):
    async def execute(self, context: ExecutionContext) -> None:
        context.logger.info("fanning out")
        context.submit_subtasks([Chatty(n=2), SyncChatty()])


@pytest.fixture
async def client(store_factory: StoreFactory) -> AsyncIterator[Client]:
    async with Client(store=store_factory.make()) as c:
        yield c


async def run_job(client: Client, task: Task, **options: Any) -> str:
    job = await client.jobs().submit("logs", task, **options)
    runner = client.runner([Chatty, SyncChatty, FanOut], InMemoryCache(), retry_delay=0.0)
    await runner.run_all()
    return job.id


async def test_logs_of_a_failed_task_are_kept_with_its_failure(client: Client) -> None:
    """A task that logs and fails (once retried): ``jobs().logs`` returns the records of both
    executions in order, with job, task, identifier, runner, level, fields, the traceback of
    ``logger.exception``, and text the store can hold (NUL, lone surrogate escaped); the DEBUG
    record stays out; ``level=`` and ``task=`` filter. (Before: ``jobs().logs`` did not exist.)"""
    job_id = await run_job(client, Chatty(n=2, fail=True), max_retries=1)
    assert (await client.jobs().find(job_id)).state == JobState.FAILED
    [task] = await client.jobs().tasks(job_id)
    records = await client.jobs().logs(job_id)
    messages = [r.message.splitlines()[0] for r in records]
    one = ["tile 0 done", "tile 1 done", records[2].message, "lookup failed"]
    assert messages == one + one
    assert "\x00" not in records[2].message
    assert "memory" in records[2].message
    first = records[0]
    assert (first.job_id, first.task_id, first.task_name) == (job_id, task.id, "Chatty")
    assert first.task_version == "v0.0"
    assert first.runner_id
    assert first.levelname == "INFO"
    assert first.fields == {"scene_id": "S2A", "ms": 12}
    assert "KeyError: 'the-missing-tile'" in records[3].message
    assert records[3].level == logging.ERROR
    assert [r.id for r in records] == sorted(r.id for r in records)

    errors = await client.jobs().logs(job_id, level="ERROR")
    assert [r.message.splitlines()[0] for r in errors] == ["lookup failed"] * 2
    assert await client.jobs().logs(job_id, task=task.id, level=logging.WARNING) == records[
        2:4
    ] + list(records[6:8])
    newer = await client.jobs().logs(job_id, after=records[3].id)
    assert newer == records[4:]


async def test_logs_of_subtasks_and_sync_tasks(client: Client) -> None:
    """Records of a parent, its async and its sync subtask are all kept, each with its own
    task id and identifier."""
    job_id = await run_job(client, FanOut())
    records = await client.jobs().logs(job_id)
    by_task = {(r.task_name, r.message) for r in records}
    assert ("FanOut", "fanning out") in by_task
    assert ("SyncChatty", "from a worker thread") in by_task
    assert sum(1 for r in records if r.task_name == "Chatty") == 3
    assert len({r.task_id for r in records}) == 3


async def test_logs_are_bounded_per_task_and_per_job_with_a_marker(
    client: Client, store_factory: StoreFactory
) -> None:
    """With at most 5 records per task and 8 per job, the oldest go first and a marker record
    (WARNING, ``dropped``) stands where they were, saying how many. (Before: no bound.)"""
    store = client.store
    assert isinstance(store, SQLJobStore)
    store.max_task_logs = 5
    store.max_job_logs = 8
    job_id = await run_job(client, Chatty(n=9))  # 10 records
    records = await client.jobs().logs(job_id)
    assert records[0].dropped == 5
    assert records[0].level == logging.WARNING
    assert "5 older log records" in records[0].message
    assert [r.message for r in records[1:5]] == [f"tile {i} done" for i in range(5, 9)]
    assert records[5].message.startswith("almost out of")

    second = await run_job(client, FanOut())  # 1 + 3 + 1 records: within both bounds
    assert all(r.dropped == 0 for r in await client.jobs().logs(second))
    store.max_job_logs = 3
    third = await run_job(client, FanOut())  # 5 records, the job keeps 3
    records = await client.jobs().logs(third)
    kept = [r for r in records if not r.dropped]
    markers = [r for r in records if r.dropped]
    assert len(kept) == 3
    assert sum(m.dropped for m in markers) == 2
    assert all(
        records.index(m) < records.index(k) for m in markers for k in kept if k.task_id == m.task_id
    )
    assert await client.jobs().logs(third, level="ERROR") == []  # markers are WARNINGs


async def test_logs_of_an_unknown_job_is_an_error(client: Client) -> None:
    """``jobs().logs`` of a job that does not exist raises ``UnknownJobError``; a job without
    records gives an empty list."""
    from swath import UnknownJobError

    with pytest.raises(UnknownJobError):
        await client.jobs().logs("no-such-job")
    job = await client.jobs().submit("quiet", SyncChatty())
    assert await client.jobs().logs(job.id) == []


# -- the command line, on the stores a second process can open ------------------------------------
@pytest.fixture(params=["sqlite_file", "postgres"])
def shared_store(request: pytest.FixtureRequest) -> StoreFactory:
    factory = request.getfixturevalue(f"store_factory_{request.param}")
    assert isinstance(factory, StoreFactory)
    return factory


def swath(url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--database", url, *args], catch_exceptions=False)
    return result.exit_code, result.output


def test_cli_jobs_logs_and_show(shared_store: StoreFactory) -> None:
    """``swath jobs logs`` prints a failed job's records (``--task``, ``--level``, ``--follow``
    of a finished job ends), user text escaped; ``swath jobs show`` prints the failed task's
    last log lines beside its traceback. (Before: no ``jobs logs``; ``show`` had no logs.)"""
    with BlockingClient(store=shared_store.make()) as c:
        job = c.jobs().submit("cli-logs", Chatty(n=2, fail=True))
        c.runner([Chatty], InMemoryCache()).run_all()
        [task] = c.jobs().tasks(job.id)
        assert len(c.jobs().logs(job.id)) == 4
    url = shared_store.url
    code, out = swath(url, "jobs", "logs", job.id)
    assert code == 0, out
    assert "tile 0 done" in out
    assert "scene_id='S2A'" in out
    assert "ms=12" in out
    assert "KeyError: 'the-missing-tile'" in out
    assert "\\x00" in out  # the NUL (stored escaped) is printed as an escape, not raw
    code, out = swath(url, "jobs", "logs", job.id, "--level", "warning", "--task", task.id)
    assert code == 0, out
    assert "tile 0 done" not in out
    assert "lookup failed" in out
    assert "almost out of" in out
    code, out = swath(url, "jobs", "logs", job.id, "--follow", "--interval", "0.01")
    assert code == 0
    assert "lookup failed" in out
    code, out = swath(url, "jobs", "show", job.id)
    assert code == 0, out
    assert "RuntimeError: the tile server said no" in out
    assert "last 4 log lines" in out
    assert "lookup failed" in out


def test_cli_jobs_logs_follow_prints_records_as_they_come(shared_store: StoreFactory) -> None:
    """``swath jobs logs --follow`` of a running job prints records committed after it started
    and returns when the job ends."""

    async def scenario() -> str:
        async with Client(store=shared_store.make()) as c:
            job = await c.jobs().submit("follow", Chatty(n=1))
            follower = asyncio.create_task(
                asyncio.to_thread(swath, shared_store.url, "jobs", "logs", job.id, "-f")
            )
            await asyncio.sleep(1.0)
            assert not follower.done()
            await c.runner([Chatty], InMemoryCache()).run_all()
            async with asyncio.timeout(30):
                code, out = await follower
            assert code == 0
            return out

    out = asyncio.run(scenario())
    assert "tile 0 done" in out
    assert "almost out of" in out
