"""Four runner processes share one PostgreSQL store: 20,000 tasks, each executed exactly once."""

from __future__ import annotations

import collections
from pathlib import Path

from swath import Client, JobState, LocalFileSystemCache
from tests.integration._postgres_worker import Spread, read_logs, spawn_runner, wait_all

TASKS = 20_000
RUNNERS = 4


async def test_four_runner_processes_run_20000_tasks_exactly_once(
    postgres_dsn: str, tmp_path: Path
) -> None:
    """4 runner processes, 20,000 tasks (fanned out by 21 parents), each task writes its own key
    into the job cache: every key is present exactly once, every task (parents too) executed
    exactly once across all processes, and the job COMPLETED. The work is spread (every runner
    took some), which proves the claims really competed."""
    cache_dir = tmp_path / "cache"
    async with Client(postgres_dsn) as client:
        job = await client.jobs().submit("exactly-once", Spread(0, TASKS, chunk=1000))
        logs = [tmp_path / f"runner{i}.log" for i in range(RUNNERS)]
        procs = [spawn_runner(postgres_dsn, cache_dir, log, concurrency=64) for log in logs]
        wait_all(procs, logs, timeout=240)

        done = await client.jobs().find(job.id)
        assert done.state == JobState.COMPLETED
        tasks = await client.jobs().tasks(job.id)

    executions = read_logs(logs)
    puts = [e for e in executions if e.name == "Put"]
    per_task = collections.Counter(e.task_id for e in executions)
    twice = {t: n for t, n in per_task.items() if n != 1}
    assert not twice, f"{len(twice)} tasks ran more than once"
    assert len(per_task) == len(tasks) == TASKS + 21
    assert set(per_task) == {t.id for t in tasks}
    assert sorted(e.key for e in puts) == sorted(f"k{i}" for i in range(TASKS))
    by_runner = collections.Counter(e.pid for e in executions)
    assert len(by_runner) == RUNNERS, f"work per runner: {dict(by_runner)}"

    async with LocalFileSystemCache(cache_dir) as cache:
        keys = [key async for key in cache.group(job.id)]
        assert len(keys) == TASKS
        assert set(keys) == {f"k{i}" for i in range(TASKS)}
        assert await cache.group(job.id).get("k12345") == b"12345"
    print(f"executions per runner process: {sorted(by_runner.values())}")
