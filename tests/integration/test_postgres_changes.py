"""PostgreSQL announces job changes (``CHANGED_SIGNAL``, ``job_signal(id)``) to every store
object that listens, whichever process made them: what the dashboard follows jobs by."""

from __future__ import annotations

import asyncio
import time

import asyncpg

from swath.store import NewTask, TaskSuccess, new_id
from swath.store.base import CHANGED_SIGNAL, WorkSignal, job_signal
from swath.store.postgres import ANNOUNCE_GAP, PostgresJobStore, channel_for


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


async def test_task_changes_are_announced_after_commit_and_throttled(postgres_dsn: str) -> None:
    """Task changes that leave the job's state alone (a subtask completing, its progress
    moving, a release) are announced too, but by the store after the commit, at most once per
    ``ANNOUNCE_GAP`` per store object and job: 200 completions of one job in a row produce a
    handful of NOTIFYs, not 200 (each in its own commit, which PostgreSQL serializes under its
    global notification lock), and the last of them is still announced. With the row triggers of
    schema version 4 this sees one NOTIFY per completion and fails."""
    n = 200
    async with (
        PostgresJobStore(postgres_dsn) as store,
        PostgresJobStore(postgres_dsn, read_only=True) as watcher,
    ):
        job_id = new_id()
        this_job = watcher.work_signal(job_signal(job_id))
        for _ in range(200):
            if watcher.listening:
                break
            await asyncio.sleep(0.05)
        # a second listener counts the NOTIFYs themselves (the signals coalesce them)
        heard: list[tuple[float, str]] = []
        conn = await asyncpg.connect(postgres_dsn)
        try:
            await conn.add_listener(
                channel_for(CHANGED_SIGNAL),
                lambda _c, _pid, _ch, payload: heard.append((time.monotonic(), payload)),
            )
            root = NewTask(new_id(), "Root", "v0.0", b"{}", "default")
            await store.submit_job(job_id, "burst", "default", root)
            [claimed] = await store.claim("default", "r1", 1, 30.0)
            subtasks = [NewTask(new_id(), "Leaf", "v0.0", b"{}", "default") for _ in range(n)]
            await store.complete("r1", [TaskSuccess(claimed.id, subtasks=subtasks)])
            leaves = await store.claim("default", "r1", n, 30.0)
            assert len(leaves) == n
            await asyncio.sleep(0.5)
            this_job.clear()
            heard.clear()
            began = time.monotonic()
            # a subtask completes with progress: the job stays RUNNING, and is told
            await store.complete("r1", [TaskSuccess(leaves[0].id, progress={"tiles": (n, 1)})])
            assert await _told(this_job)
            for leaf in leaves[1:-1]:  # one transaction each
                await store.complete("r1", [TaskSuccess(leaf.id)])
            burst = time.monotonic() - began
            await asyncio.sleep(1.0)
            assert heard
            assert {payload for _, payload in heard} == {job_id}
            # the first at once, then at most one per gap (and one after the burst)
            assert len(heard) <= burst / ANNOUNCE_GAP + 2, (len(heard), burst)
            assert len(heard) < n / 2  # whatever the gap: far from one per completion
            assert heard[-1][0] > began + burst - 0.1  # the burst's last changes were told
            # a release puts a task back in the queue: told as well
            heard.clear()
            this_job.clear()
            assert await store.release("r1", [leaves[-1].id]) == 1
            assert await _told(this_job)
            for _ in range(100):  # the counting connection hears it a moment later, maybe
                if heard:
                    break
                await asyncio.sleep(0.05)
            assert [payload for _, payload in heard] == [job_id]
        finally:
            await conn.close()
