"""The database restarts under running runners: they reconnect, listening resumes, jobs finish."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable
from pathlib import Path

from swath import Client, JobState, LocalFileSystemCache
from swath.store import NewTask, new_id
from swath.store.postgres import PostgresJobStore
from tests.integration._postgres_worker import Spread, read_logs, spawn_runner, wait_all
from tests.services.postgres import PostgresCluster

TASKS = 3000
SLEEP = 0.02


async def _until(predicate: Callable[[], bool], within: float) -> None:
    """Poll ``predicate`` (state of other processes or of the server) until true."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


def _output(log: Path) -> str:
    return Path(f"{log}.out").read_text()


def _puts(logs: list[Path]) -> int:
    return sum(1 for e in read_logs(logs) if e.name == "Put")


async def test_runners_survive_pg_ctl_restart_mid_job(
    postgres_cluster: PostgresCluster, postgres_dsn: str, tmp_path: Path
) -> None:
    """Two runner processes work through a 3,000-task job; the database is restarted with
    ``pg_ctl restart`` a sixth of the way through, and stopped for a second then started again
    at about half. Both runners reconnect (they say so on stderr), exit cleanly, the job
    COMPLETES with every key in its cache, and still no task ran twice: lost replies are handled
    without re-running anything."""
    cache_dir = tmp_path / "cache"
    logs = [tmp_path / "runner0.log", tmp_path / "runner1.log"]
    async with Client(postgres_dsn) as client:
        job = await client.jobs().submit("restart", Spread(0, TASKS, chunk=500, sleep=SLEEP))
    procs = [spawn_runner(postgres_dsn, cache_dir, log, concurrency=16) for log in logs]
    try:
        await _until(lambda: _puts(logs) >= TASKS // 6, within=120)
        await asyncio.to_thread(postgres_cluster.restart)
        restarted_at = _puts(logs)
        await _until(lambda: _puts(logs) >= TASKS // 2, within=120)
        await asyncio.to_thread(postgres_cluster.restart, 1.0)  # down for a second
        second_at = _puts(logs)
    finally:
        await asyncio.to_thread(wait_all, procs, logs, 240)
    assert restarted_at < TASKS, "the restart came after the job"
    assert second_at < TASKS, "the second restart came after the job"

    async with Client(postgres_dsn) as client:
        done = await client.jobs().find(job.id)
        assert done.state == JobState.COMPLETED
        tasks = await client.jobs().tasks(job.id)
    runs = collections.Counter(e.task_id for e in read_logs(logs))
    assert set(runs) == {t.id for t in tasks}
    assert max(runs.values()) == 1, "a task ran twice"
    async with LocalFileSystemCache(cache_dir) as cache:
        keys = {key async for key in cache.group(job.id)}
    assert keys == {f"k{i}" for i in range(TASKS)}
    outputs = [_output(log) for log in logs]
    assert all("reconnected" in out for out in outputs), outputs


async def test_listening_resumes_after_restart(
    postgres_cluster: PostgresCluster, postgres_dsn: str
) -> None:
    """A store's LISTEN connection is lost when the server restarts, comes back by itself, and
    then a submission made through another store object (as another machine would) wakes this
    store's runner signal again, within a second."""
    listener = PostgresJobStore(postgres_dsn)
    submitter = PostgresJobStore(postgres_dsn)
    await listener.open()
    await submitter.open()
    try:
        signal = listener.work_signal("default")
        await _until(lambda: listener.listening, within=10)

        async def submitted_wakes() -> float:
            signal.clear()
            started = time.perf_counter()
            root = NewTask(new_id(), "T", "v0.0", b"{}", "default")
            await submitter.submit_job(new_id(), "wake", "default", root)
            assert await signal.wait(5.0), "no wake-up from the other store's submission"
            return time.perf_counter() - started

        assert await submitted_wakes() < 1.0
        connections = listener.listen_connections
        await asyncio.to_thread(postgres_cluster.restart)
        await _until(lambda: listener.listen_connections > connections, within=30)
        assert listener.listening
        assert await submitted_wakes() < 1.0
    finally:
        await submitter.close()
        await listener.close()
