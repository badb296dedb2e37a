"""What only the PostgreSQL store has to get right: concurrent migrations, concurrent claims,
notification channels. (Everything else is the store conformance suite in tests/store.)"""

from __future__ import annotations

import asyncio
import collections

import asyncpg

from swath.store import NewTask, TaskSuccess, new_id
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
