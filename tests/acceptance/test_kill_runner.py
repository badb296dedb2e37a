"""A runner process killed with SIGKILL mid-job: its leases expire and a second runner process
finishes the job. Only the tasks the killed runner held run twice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from swath import Client, JobState, LocalFileSystemCache
from tests.acceptance.killable_tasks import FanOutSlow

from ..store.stores import StoreFactory

REPO = Path(__file__).resolve().parents[2]


def start_runner(
    env: dict[str, str], cache: Path, log: Path, *extra: str
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "swath.cli", "runner", "tests.acceptance.killable_tasks",
         "--cache", str(cache), "--lease", "1", "--concurrency", "4", *extra],
        cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip


async def test_sigkill_runner_then_second_runner_finishes(
    store_factory_sqlite_file: StoreFactory, tmp_path: Path
) -> None:
    """Kill a runner with SIGKILL while it holds leased tasks; a second runner (started right
    away) takes them over once the 1 s leases expire; the job completes, every task's effect is
    present, and exactly the tasks in flight at the kill ran twice."""
    factory = store_factory_sqlite_file
    env = {**factory.subprocess_env(), "PYTHONPATH": str(REPO)}
    cache_dir = tmp_path / "cache"
    async with Client(store=factory.make()) as client:
        job = await client.jobs().submit("killable", FanOutSlow(n=24, seconds=0.4))
        cache = LocalFileSystemCache(cache_dir)
        async with cache:
            first = start_runner(env, cache_dir, tmp_path / "first.log")
            ran = cache.group(job.id).group("ran")
            deadline = time.monotonic() + 30
            while len([g async for g in ran.groups()]) < 6:
                assert first.poll() is None, (tmp_path / "first.log").read_text()
                assert time.monotonic() < deadline, "the first runner never started tasks"
                await asyncio.sleep(0.02)
            os.kill(first.pid, signal.SIGKILL)
            first.wait()
            done_at_kill = {k async for k in cache.group(job.id).group("done")}
            started_at_kill = {g async for g in ran.groups()}
            in_flight = started_at_kill - done_at_kill
            assert in_flight, "the kill should catch tasks mid-flight"

            second = start_runner(env, cache_dir, tmp_path / "second.log", "--until-idle")
            assert second.wait(timeout=60) == 0, (tmp_path / "second.log").read_text()

            final = await client.jobs().find(job.id)
            assert final.state == JobState.COMPLETED
            done = {k async for k in cache.group(job.id).group("done")}
            assert done == {str(i) for i in range(24)}
            runs = {g: len([k async for k in ran.group(g)]) async for g in ran.groups()}
            twice = {g for g, count in runs.items() if count > 1}
            assert all(count <= 2 for count in runs.values())
            tasks = await client.jobs().tasks(job.id)
            # tasks leased by the killed runner: started, claimed but not started yet, or done
            # but not yet committed; only those may run again, and all that were mid-flight do
            lost = {t.display.removeprefix("slow ") for t in tasks if t.lost_count == 1}
            assert in_flight <= twice <= lost, (in_flight, twice, lost)
            assert all(t.lost_count <= 1 and t.retry_count == 0 for t in tasks)


async def test_two_runner_processes_share_one_sqlite_file(
    store_factory_sqlite_file: StoreFactory, tmp_path: Path
) -> None:
    """Two runner processes on one SQLite file (WAL, busy timeout) run a job together: every task
    runs exactly once and both processes do part of the work."""
    factory = store_factory_sqlite_file
    env = {**factory.subprocess_env(), "PYTHONPATH": str(REPO)}
    cache_dir = tmp_path / "cache"
    async with Client(store=factory.make()) as client:
        job = await client.jobs().submit("shared", FanOutSlow(n=200, seconds=0.05))
        runners = [
            start_runner(env, cache_dir, tmp_path / f"runner{i}.log", "--until-idle")
            for i in range(2)
        ]
        for i, proc in enumerate(runners):
            assert proc.wait(timeout=120) == 0, (tmp_path / f"runner{i}.log").read_text()
        assert (await client.jobs().find(job.id)).state == JobState.COMPLETED
        async with LocalFileSystemCache(cache_dir) as cache:
            ran = cache.group(job.id).group("ran")
            runs = {g: [k async for k in ran.group(g)] async for g in ran.groups()}
            done = {k: await cache.group(job.id).group("done").get(k) async for k in
                    cache.group(job.id).group("done")}  # fmt: skip
    assert sorted(runs, key=int) == [str(i) for i in range(200)]
    assert all(len(keys) == 1 for keys in runs.values())
    assert len(set(done.values())) == 2  # both processes completed tasks
