"""A runner process killed with SIGKILL at a random moment: the others finish its work, and only
what it held runs twice."""

from __future__ import annotations

import asyncio
import collections
import os
import random
import signal
import subprocess
from pathlib import Path

from swath import Client, JobState, LocalFileSystemCache
from tests.integration._postgres_worker import Spread, read_logs, spawn_runner, wait_all

TRIALS = 10
TASKS = 400  # per trial; each sleeps SLEEP seconds, so a job lasts about a second
SLEEP = 0.05
CONCURRENCY = 8
LEASE = 1.5  # short, so the dead runner's tasks come back quickly


async def _appears(path: Path) -> None:
    """Return once ``path`` exists (wrap in ``asyncio.timeout``)."""
    while not os.path.exists(path):  # noqa: ASYNC110, ASYNC240 - made by another process
        await asyncio.sleep(0.02)


def _victim(
    dsn: str, cache_dir: Path, tmp_path: Path, trial: int
) -> tuple[subprocess.Popen[bytes], Path, Path, Path]:
    log, go, ready = (tmp_path / f"victim{trial}.{ext}" for ext in ("log", "go", "ready"))
    proc = spawn_runner(
        dsn, cache_dir, log, concurrency=CONCURRENCY, lease=LEASE, forever=True, ready=ready, go=go
    )
    return proc, log, go, ready


async def test_sigkill_one_of_three_runners_ten_trials(postgres_dsn: str, tmp_path: Path) -> None:
    """10 trials; in each, a job of 400 tasks runs on 3 runner processes (2 that live through
    all trials and a fresh one per trial), and the fresh one is killed with SIGKILL at a random
    moment. Every job completes, every task's key is in the job cache, and every task that ran
    twice was running in the killed process (its execution log says so, and the store counted
    its runner as lost). No task runs three times, and no task of a live runner runs twice.
    The counts are printed per trial."""
    rng = random.Random(int(os.environ.get("SWATH_TEST_SEED", "6")))
    cache_dir = tmp_path / "cache"
    survivor_logs = [tmp_path / "survivor0.log", tmp_path / "survivor1.log"]
    survivors = [
        spawn_runner(
            postgres_dsn, cache_dir, log, concurrency=CONCURRENCY, lease=LEASE, forever=True
        )
        for log in survivor_logs
    ]
    report: list[str] = []
    victims: list[tuple[subprocess.Popen[bytes], Path, Path, Path]] = []
    total_lost = total_twice = 0
    try:
        async with Client(postgres_dsn) as client, LocalFileSystemCache(cache_dir) as cache:
            # each trial's victim is started during the trial before, and waits for its "go"
            # file: the trials do not wait for a Python process to start
            victims.append(_victim(postgres_dsn, cache_dir, tmp_path, 0))
            for trial in range(TRIALS):
                victim, victim_log, go, ready = victims[trial]
                try:
                    go.touch()
                    async with asyncio.timeout(60):
                        await _appears(ready)
                    job = await client.jobs().submit(
                        f"sigkill-{trial}", Spread(0, TASKS, chunk=TASKS, sleep=SLEEP)
                    )
                    if trial + 1 < TRIALS:
                        victims.append(_victim(postgres_dsn, cache_dir, tmp_path, trial + 1))
                    await asyncio.sleep(rng.uniform(0.05, 1.0))
                    victim.send_signal(signal.SIGKILL)
                finally:
                    victim.kill()
                    victim.wait()
                done = await client.jobs().wait(job.id, timeout=60)
                assert done.state == JobState.COMPLETED, f"trial {trial}: {done.state}"

                tasks = await client.jobs().tasks(job.id)
                ids = {t.id for t in tasks}
                lost = {t.id for t in tasks if t.lost_count > 0}
                assert all(t.lost_count <= 1 for t in tasks)
                victim_runs = {e.task_id for e in read_logs([victim_log]) if e.task_id in ids}
                runs = collections.Counter(
                    e.task_id for e in read_logs([*survivor_logs, victim_log]) if e.task_id in ids
                )
                twice = {t for t, n in runs.items() if n > 1}
                assert max(runs.values()) <= 2, f"trial {trial}: a task ran three times"
                assert set(runs) == ids, f"trial {trial}: some task never ran"
                assert twice <= victim_runs, f"trial {trial}: a live runner's task ran twice"
                assert twice <= lost, f"trial {trial}: ran twice without its runner being lost"
                keys = {key async for key in cache.group(job.id)}
                assert keys == {f"k{i}" for i in range(TASKS)}, f"trial {trial}: keys missing"
                total_lost += len(lost)
                total_twice += len(twice)
                report.append(
                    f"trial {trial}: killed runner executed {len(victim_runs)}, held "
                    f"{len(lost)} when killed, {len(twice)} ran twice"
                )
    finally:
        for victim, *_ in victims:
            victim.kill()
            victim.wait()
        for proc in survivors:
            proc.send_signal(signal.SIGTERM)
        wait_all(survivors, survivor_logs, timeout=30)
    print("\n" + "\n".join(report))
    print(f"total: {total_lost} tasks held by killed runners, {total_twice} ran twice")
    # the trials must have killed runners that held work, or they proved nothing
    assert total_lost > 0
