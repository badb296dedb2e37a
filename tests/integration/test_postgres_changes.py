"""PostgreSQL announces job changes (``CHANGED_SIGNAL``, ``job_signal(id)``) to every store
object that listens, whichever process made them: what the dashboard follows jobs by."""

from __future__ import annotations

import asyncio

from swath.store import NewTask, TaskSuccess, new_id
from swath.store.base import CHANGED_SIGNAL, WorkSignal, job_signal
from swath.store.postgres import PostgresJobStore


async def _told(signal: WorkSignal, seconds: float = 10.0) -> bool:
    told = await signal.wait(seconds)
    signal.clear()
    return told


async def test_job_changes_are_announced_to_other_store_objects(postgres_dsn: str) -> None:
    """A store object that watches jobs is told, by NOTIFY through the database, when another
    store object submits a job, completes its task and so the job (a job's signal for that job
    only), but not when the other one only claims a task or renews its leases (a runner's hot
    path stays without notifications). The watcher is read-only, as `swath dashboard
    --read-only` opens it: LISTEN needs no write."""
    async with (
        PostgresJobStore(postgres_dsn) as store,
        PostgresJobStore(postgres_dsn, read_only=True) as watcher,  # `swath dashboard --read-only`
    ):
        any_job = watcher.work_signal(CHANGED_SIGNAL)
        this_job = watcher.work_signal(job_signal("not-yet"))  # listening starts
        for _ in range(200):
            if watcher.listening:
                break
            await asyncio.sleep(0.05)
        job_id = new_id()
        this_job = watcher.work_signal(job_signal(job_id))
        other_job = watcher.work_signal(job_signal(new_id()))
        await asyncio.sleep(0.5)  # the listener has LISTENed on the channel
        any_job.clear()
        await store.submit_job(
            job_id, "watched", "default", NewTask(new_id(), "T", "v0.0", b"{}", "default")
        )
        assert await _told(any_job)
        assert await _told(this_job)
        [claimed] = await store.claim("default", "r1", 1, 30.0)
        await store.heartbeat("r1", 30.0)
        # the claim started the job (QUEUED -> RUNNING): told once, then nothing more
        assert await _told(this_job)
        assert not await _told(this_job, 1.0)
        await store.complete("r1", [TaskSuccess(claimed.id)])
        assert await _told(this_job)
        assert await _told(any_job)
        assert not other_job._event.is_set()
