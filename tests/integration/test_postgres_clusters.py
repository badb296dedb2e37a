"""Runners of different clusters share one PostgreSQL database and never take each other's work."""

from __future__ import annotations

import collections
import signal
from pathlib import Path

from swath import Client, JobState
from tests.integration._postgres_worker import Spread, read_logs, spawn_runner, wait_all

TASKS = 300


async def test_two_clusters_never_take_each_others_work(postgres_dsn: str, tmp_path: Path) -> None:
    """Runner processes for clusters ``alpha`` and ``beta`` run side by side on one database
    while three jobs run: one on each cluster, and one on ``alpha`` whose 300 leaf tasks are
    sent to ``beta``. Every task is executed exactly once, always by the runner of its own
    cluster: the alpha runner runs nothing of beta's and the reverse, and the cross-cluster
    subtasks are run by the beta runner."""
    cache_dir = tmp_path / "cache"
    logs = {c: tmp_path / f"{c}.log" for c in ("alpha", "beta")}
    async with Client(postgres_dsn) as client:
        await client.clusters().create("alpha")
        await client.clusters().create("beta")
        procs = {
            c: spawn_runner(postgres_dsn, cache_dir, log, cluster=c, concurrency=32, forever=True)
            for c, log in logs.items()
        }
        try:
            jobs = [
                await client.jobs().submit("on-alpha", Spread(0, TASKS), cluster="alpha"),
                await client.jobs().submit("on-beta", Spread(0, TASKS), cluster="beta"),
                await client.jobs().submit(
                    "alpha-to-beta", Spread(0, TASKS, put_cluster="beta"), cluster="alpha"
                ),
            ]
            for job in jobs:
                done = await client.jobs().wait(job.id, timeout=120)
                assert done.state == JobState.COMPLETED, done
            tasks = {t.id: t for job in jobs for t in await client.jobs().tasks(job.id)}
        finally:
            for proc in procs.values():
                proc.send_signal(signal.SIGTERM)
            wait_all(list(procs.values()), list(logs.values()), timeout=30)

    runs: collections.Counter[str] = collections.Counter()
    for cluster, log in logs.items():
        executions = read_logs([log])
        assert executions, f"the {cluster} runner ran nothing"
        for e in executions:
            runs[e.task_id] += 1
            assert e.cluster == cluster, f"the {cluster} runner ran a task of {e.cluster}"
            assert tasks[e.task_id].cluster == cluster
    assert set(runs) == set(tasks)
    assert max(runs.values()) == 1
    cross = [t for t in tasks.values() if t.job_id == jobs[2].id and t.name == "Put"]
    assert len(cross) == TASKS
    assert all(t.cluster == "beta" for t in cross)
    beta_runs = {e.task_id for e in read_logs([logs["beta"]])}
    assert {t.id for t in cross} <= beta_runs
