"""What only the PostgreSQL store has to get right: concurrent migrations, concurrent claims,
notification channels. (Everything else is the store conformance suite in tests/store.)"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import asyncpg
import pytest

from swath.store import JobState, NewTask, TaskState, TaskSuccess, new_id
from swath.store.machine import SQLJobStore
from swath.store.postgres import PostgresJobStore, channel_for


async def test_many_stores_opening_at_once_migrate_once(postgres_dsn: str) -> None:
    """Eight stores (eight pools, as eight runners starting together) open one empty database at
    the same moment: all succeed, the schema is at one version, recorded once, and ``default``
    exists once."""
    stores = [PostgresJobStore(postgres_dsn) for _ in range(8)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        conn = await asyncpg.connect(postgres_dsn)
        try:
            versions = await conn.fetch("SELECT version FROM swath_schema")
            assert len(versions) == 1
            assert versions[0]["version"] >= 1
            assert await conn.fetchval("SELECT count(*) FROM clusters WHERE slug='default'") == 1
        finally:
            await conn.close()
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_concurrent_claims_never_overlap(postgres_dsn: str) -> None:
    """Six stores claim batches of 25 from 1,500 ready tasks as fast as they can, concurrently:
    every task is claimed exactly once (FOR UPDATE SKIP LOCKED), and every store got some."""
    stores = [PostgresJobStore(postgres_dsn) for _ in range(6)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        job_id = new_id()
        root = NewTask(new_id(), "Root", "v0.0", b"{}", "default")
        await stores[0].submit_job(job_id, "claims", "default", root)
        [claimed_root] = await stores[0].claim("default", "r0", 1, 30.0)
        leaves = [NewTask(new_id(), "Leaf", "v0.0", b"{}", "default") for _ in range(1500)]
        assert await stores[0].complete("r0", [TaskSuccess(claimed_root.id, subtasks=leaves)]) == 1

        async def drain(i: int) -> list[str]:
            got: list[str] = []
            while batch := await stores[i].claim("default", f"runner{i}", 25, 30.0):
                got += [t.id for t in batch]
                await asyncio.sleep(0)
            return got

        results = await asyncio.gather(*(drain(i) for i in range(len(stores))))
        counts = collections.Counter(t for got in results for t in got)
        assert set(counts) == {leaf.id for leaf in leaves}
        assert max(counts.values()) == 1
        assert all(results), [len(r) for r in results]
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_channel_names_match_the_database(postgres_dsn: str) -> None:
    """The listener's channel name for a cluster is the one the NOTIFY trigger uses, for short
    and for long (hashed, 63-byte limit) cluster names."""
    store = PostgresJobStore(postgres_dsn)
    await store.open()
    try:
        conn = await asyncpg.connect(postgres_dsn)
        try:
            for cluster in ("default", "gpu-a100", "x" * 63):
                assert await conn.fetchval("SELECT swath_channel($1)", cluster) == channel_for(
                    cluster
                )
                assert len(channel_for(cluster).encode()) <= 63
        finally:
            await conn.close()
    finally:
        await store.close()


async def test_notify_reaches_another_store_for_its_cluster_only(postgres_dsn: str) -> None:
    """A submission through one store object wakes a runner signal of another store object (as
    on another machine) via LISTEN/NOTIFY, for that cluster only."""
    a, b = PostgresJobStore(postgres_dsn), PostgresJobStore(postgres_dsn)
    await a.open()
    await b.open()
    try:
        await a.create_cluster("other")
        mine, theirs = b.work_signal("default"), b.work_signal("other")
        async with asyncio.timeout(10):
            while not b.listening:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # both channels are listened to once the connection is up
        mine.clear()
        theirs.clear()
        await a.submit_job(
            new_id(), "n", "default", NewTask(new_id(), "T", "v0.0", b"{}", "default")
        )
        assert await mine.wait(2.0)
        assert not await theirs.wait(0.2)
    finally:
        await a.close()
        await b.close()


async def test_lost_replies_are_retried_without_harm(
    postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the connection drops after a transaction committed but before its reply arrived (here
    simulated by raising a connection error right after the real call), the retry does no harm:
    a submission finds its job instead of failing or submitting twice, a claim gives back what
    the lost attempt leased and claims it again (instead of leaving it leased to a runner that
    never got it), and a completion accepts nothing twice."""
    store = PostgresJobStore(postgres_dsn)
    await store.open()
    try:
        lose_next: set[str] = set()

        def losing(name: str) -> Any:
            real = getattr(SQLJobStore, name)

            async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
                result = await real(self, *args, **kwargs)
                if name in lose_next:
                    lose_next.discard(name)
                    raise asyncpg.ConnectionDoesNotExistError("reply lost (simulated)")
                return result

            return wrapper

        for name in ("submit_job", "claim", "complete"):
            monkeypatch.setattr(SQLJobStore, name, losing(name))

        job_id = new_id()
        root = NewTask(new_id(), "Root", "v0.0", b"{}", "default")
        lose_next.add("submit_job")
        job = await store.submit_job(job_id, "lost", "default", root)
        assert job.id == job_id
        assert len(await store.query_jobs(name="lost")) == 1

        lose_next.add("claim")
        claimed = await store.claim("default", "r1", 10, 30.0)
        assert [t.id for t in claimed] == [root.id]
        [info] = await store.list_tasks(job_id)
        assert info.state == TaskState.RUNNING
        assert info.lost_count == 0

        lose_next.add("complete")
        assert await store.complete("r1", [TaskSuccess(root.id)]) == 0  # the retry: already done
        assert (await store.get_job(job_id)).state == JobState.COMPLETED  # type: ignore[union-attr]
    finally:
        await store.close()


def test_client_dispatches_postgresql_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    """``Client("postgresql://...")``, ``postgres://`` and ``$SWATH_DATABASE_URL`` all make a
    PostgreSQL store (nothing connects before it is opened); its URL is shown redacted."""
    from swath import Client

    direct = Client("postgresql://u:pw1@127.0.0.1:5432/db").store
    assert isinstance(direct, PostgresJobStore)
    assert direct.url == "postgresql://u:***@127.0.0.1:5432/db"
    assert isinstance(Client("postgres://u@127.0.0.1/db").store, PostgresJobStore)
    monkeypatch.setenv("SWATH_DATABASE_URL", "postgresql://u:pw2@127.0.0.1/db")
    from_env = Client().store
    assert isinstance(from_env, PostgresJobStore)
    assert "pw2" not in from_env.url


async def test_runner_polls_when_it_cannot_listen(
    postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no LISTEN connection at all (the listener never connects), a runner still finds work
    another store object submitted, by polling with back-off: notifications only make it faster."""
    from swath import Client, InMemoryCache
    from tests.integration._postgres_worker import Put

    async def never_listen(self: PostgresJobStore) -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(PostgresJobStore, "_listen_forever", never_listen)
    async with Client(postgres_dsn) as deaf, Client(postgres_dsn) as submitter:
        runner = deaf.runner([Put], InMemoryCache(), poll_interval=(0.05, 0.5))
        running = asyncio.create_task(runner.run_forever())
        try:
            await asyncio.sleep(0.3)  # the runner is idle, backing off
            job = await submitter.jobs().submit("polled", Put(1))
            done = await submitter.jobs().wait(job.id, timeout=10)
            assert done.state == JobState.COMPLETED
            assert isinstance(deaf.store, PostgresJobStore)
            assert not deaf.store.listening
        finally:
            runner.stop()
            await running


def failing_and_counting(batch: list[Any], i: int) -> list[Any]:
    """Outcomes for a claimed batch: every 7th a final failure, the rest successes that bump
    two progress counters."""
    from swath.store import ErrorInfo, TaskFailure

    error = ErrorInfo("ValueError", "boom", "")
    return [
        TaskFailure(t.id, error)
        if (i + k) % 7 == 0
        else TaskSuccess(t.id, progress={"p": (1, 1), "q": (1, 0)})
        for k, t in enumerate(batch)
    ]


async def test_completions_that_fail_a_job_do_not_deadlock(postgres_dsn: str) -> None:
    """Eight stores complete the 200 subtasks of one job at once, each batch with progress
    upserts and some with a final failure of a non-optional task (which fails the job): no
    transaction deadlocks (pg_stat_database counts none). Before, a failing completion took the
    job row's lock as shared and upgraded it to fail the job, while another held the progress
    row and waited for the job row: PostgreSQL broke the cycle after a second each time, and
    heartbeats queued behind it."""
    stores = [PostgresJobStore(postgres_dsn) for _ in range(8)]
    await asyncio.gather(*(s.open() for s in stores))
    conn = await asyncpg.connect(postgres_dsn)
    try:
        before = await conn.fetchval(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
        )
        for round_ in range(3):
            job_id = new_id()
            root = NewTask(new_id(), "Root", "v0.0", b"{}", "default")
            await stores[0].submit_job(job_id, f"deadlocks-{round_}", "default", root)
            [claimed_root] = await stores[0].claim("default", "r0", 1, 30.0)
            subtasks = [NewTask(new_id(), "Leaf", "v0.0", b"{}", "default") for _ in range(200)]
            await stores[0].complete("r0", [TaskSuccess(claimed_root.id, subtasks=subtasks)])
            batches = [await s.claim("default", f"r{i}", 25, 30.0) for i, s in enumerate(stores)]
            completions = [
                s.complete(f"r{i}", failing_and_counting(b, i))
                for i, (s, b) in enumerate(zip(stores, batches, strict=True))
            ]
            await asyncio.gather(*completions)
            assert await stores[0].get_job(job_id) is not None
        after = await conn.fetchval(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
        )
        assert after - before == 0
    finally:
        await conn.close()
        await asyncio.gather(*(s.close() for s in stores))


async def test_a_completion_waiting_for_a_lock_leaves_the_runners_other_leases_renewable(
    postgres_dsn: str,
) -> None:
    """A runner holds A and B; its completion of A waits for the parent's row, which another
    connection holds locked (as a process frozen inside its own completion of a sibling would).
    Meanwhile the runner's heartbeat still renews B's lease: the completion locks only the tasks
    it reports. (Before: it locked every lease of the runner, the heartbeat skipped them all,
    B's lease lapsed and B ran a second time. Found by the fault-injection trials on PostgreSQL,
    seed 1 trials 1, 7 and 13.) Once the lock is released, A's completion commits."""
    store = PostgresJobStore(postgres_dsn)
    await store.open()
    frozen = await asyncpg.connect(postgres_dsn)
    try:
        job_id = new_id()
        root = NewTask(new_id(), "Root", "v0.0", b"{}", "default")
        await store.submit_job(job_id, "locks", "default", root)
        [claimed_root] = await store.claim("default", "r1", 1, 30.0)
        a, b = (NewTask(new_id(), n, "v0.0", b"{}", "default") for n in ("A", "B"))
        assert await store.complete("r1", [TaskSuccess(claimed_root.id, subtasks=[a, b])]) == 1
        assert {t.id for t in await store.claim("default", "r1", 2, 1.0)} == {a.id, b.id}

        frozen_tx = frozen.transaction()
        await frozen_tx.start()
        await frozen.execute("SELECT 1 FROM tasks WHERE id = $1 FOR UPDATE", root.id)
        completing = asyncio.create_task(store.complete("r1", [TaskSuccess(a.id)]))
        await asyncio.sleep(0.3)
        assert not completing.done()  # it waits for the parent's row
        assert await store.heartbeat("r1", 30.0) == 1  # B's lease (A's row is locked)
        expires = await frozen.fetchval("SELECT lease_expires FROM tasks WHERE id = $1", b.id)
        await asyncio.sleep(1.0)  # past the claim's 1-second lease
        assert await store.claim("default", "r2", 10, 30.0) == []  # B is still r1's
        await frozen_tx.rollback()
        assert await asyncio.wait_for(completing, 10) == 1
        assert expires > (await frozen.fetchval("SELECT extract(epoch FROM now())")) + 20
        tasks = {t.name: t.state for t in await store.list_tasks(job_id)}
        assert tasks == {
            "Root": TaskState.COMPUTED,
            "A": TaskState.COMPLETED,
            "B": TaskState.RUNNING,
        }
    finally:
        await frozen.close()
        await store.close()
