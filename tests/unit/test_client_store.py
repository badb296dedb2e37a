"""Client construction (URLs, defaults, environment), the SQLite store's schema versioning and
migrations, and how a runner treats the cache it is given."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from swath import (
    Client,
    ExecutionContext,
    InMemoryCache,
    LocalFileSystemCache,
    StoreError,
    Task,
    UnknownClusterError,
)
from swath.store.machine import load_migrations
from swath.store.sqlite import SQLiteJobStore


class Hello(Task):
    async def execute(self, context: ExecutionContext) -> None:
        await context.job_cache.put("hello", b"world")


class Broken(Task):
    async def execute(self, context: ExecutionContext) -> None:
        await context.job_cache.put("partial", b"result")
        raise RuntimeError("broken")


def schema_version(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT version FROM swath_schema").fetchone()[0])


async def test_client_urls_and_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Client() uses ./swath.db, SWATH_DATABASE_URL overrides it, sqlite:/// URLs and plain
    paths work, :memory: needs no file, and unknown schemes are refused."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SWATH_DATABASE_URL", raising=False)
    async with Client() as client:
        await client.jobs().submit("default-location", Hello())
    assert (tmp_path / "swath.db").is_file()

    monkeypatch.setenv("SWATH_DATABASE_URL", f"sqlite:///{tmp_path}/env.db")
    async with Client() as client:
        await client.jobs().submit("from-env", Hello())
    assert (tmp_path / "env.db").is_file()
    monkeypatch.delenv("SWATH_DATABASE_URL")

    async with Client("sqlite:///relative/jobs.db") as client:
        assert client.store.url == "sqlite:///relative/jobs.db"
    assert (tmp_path / "relative" / "jobs.db").is_file()
    async with Client(str(tmp_path / "plain.db")):
        pass
    assert (tmp_path / "plain.db").is_file()
    async with Client(":memory:") as client:
        assert [j.name for j in await client.jobs().query()] == []
    for bad in ("mysql://x", "sqlite://"):
        with pytest.raises(ValueError, match="URL"):
            Client(bad)


async def test_submit_refuses_bad_input_before_the_store(tmp_path: Path) -> None:
    """An unserializable input or a non-task is a TypeError at submit; no job is created."""

    class Loose(Task):
        value: Any

        async def execute(self, context: ExecutionContext) -> None:
            pass

    async with Client(":memory:") as client:
        with pytest.raises(TypeError):
            await client.jobs().submit("bad", Loose(object()))
        with pytest.raises(TypeError):
            await client.jobs().submit("bad", "not a task")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="job name"):
            await client.jobs().submit("", Hello())
        assert await client.jobs().query() == []


async def test_schema_is_versioned_and_migrated_on_open(tmp_path: Path) -> None:
    """Opening creates the schema at the newest migration's version; a later migration is applied
    to an existing database on open; a database newer than the code is refused."""
    path = tmp_path / "jobs.db"
    newest = load_migrations("sqlite")[-1][0]
    store = SQLiteJobStore(path)
    await store.open()
    await store.close()
    assert schema_version(path) == newest

    extra = (
        newest + 1,
        "CREATE TABLE added_later (x INTEGER);\nINSERT INTO added_later VALUES (7);",
    )
    store = SQLiteJobStore(path)
    await store.open()
    async with store._transaction() as tx:
        assert await store._migrate(tx, [*load_migrations("sqlite"), extra]) == newest + 1
        assert await store._migrate(tx, [*load_migrations("sqlite"), extra]) == newest + 1
    await store.close()
    assert schema_version(path) == newest + 1
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT x FROM added_later").fetchall() == [(7,)]

    store = SQLiteJobStore(path)
    with pytest.raises(StoreError, match="newer than this swath"):
        await store.open()


async def test_runner_leaves_the_cache_as_it_found_it(tmp_path: Path) -> None:
    """A runner enters a closed cache for its run and closes it again; a cache the caller has
    entered stays open."""
    cache = LocalFileSystemCache(tmp_path / "cache")
    async with Client(":memory:") as client:
        job = await client.jobs().submit("hello", Hello())
        await client.runner([Hello], cache).run_all()
        assert not cache.is_open
        async with cache:
            assert await cache.group(job.id).get("hello") == b"world"
            await client.jobs().submit("hello", Hello())
            await client.runner([Hello], cache).run_all()
            assert cache.is_open


async def test_runner_refuses_unknown_cluster_and_bad_options() -> None:
    """A runner for a cluster that does not exist fails at start; nonsense options are
    ValueErrors at construction."""
    async with Client(":memory:") as client:
        with pytest.raises(LookupError, match="unknown cluster"):
            await client.runner([Hello], InMemoryCache(), cluster="nowhere").run_all()
        with pytest.raises(ValueError, match="max_concurrency"):
            client.runner([Hello], InMemoryCache(), max_concurrency=0)
        with pytest.raises(ValueError, match="lease"):
            client.runner([Hello], InMemoryCache(), lease=0)


async def test_cleanup_option_clears_finished_jobs_caches() -> None:
    """cleanup="on-success" clears the cache of a job that completed, "always" also of one that
    failed, "never" (the default) neither (left for `swath cache gc`); a bad value is a
    ValueError at construction."""
    cache = InMemoryCache()
    async with Client(":memory:") as client:
        runs = {}
        for cleanup in ("never", "on-success", "always"):
            good = await client.jobs().submit("good", Hello())
            bad = await client.jobs().submit("bad", Broken())
            await client.runner([Hello, Broken], cache, cleanup=cleanup).run_all()  # type: ignore[arg-type]
            runs[cleanup] = (good.id, bad.id)
        with pytest.raises(ValueError, match="cleanup"):
            client.runner([Hello], cache, cleanup="sometimes")  # type: ignore[arg-type]

    async def kept(job_id: str) -> bool:
        return [k async for k in cache.group(job_id)] != []

    assert [await kept(j) for j in runs["never"]] == [True, True]
    assert [await kept(j) for j in runs["on-success"]] == [False, True]
    assert [await kept(j) for j in runs["always"]] == [False, False]


async def test_cleanup_finishes_before_run_all_returns() -> None:
    """The clearing of a finished job's cache is not cut off when run_all returns: with a
    clear() that takes 200 ms, the job's cache is gone once run_all has returned (5 of 5)."""

    class SlowClear(InMemoryCache):
        async def _clear(self, prefix: Path) -> None:  # type: ignore[override]
            await asyncio.sleep(0.2)
            await super()._clear(prefix)

    for _ in range(5):
        cache = SlowClear()
        async with Client(":memory:") as client:
            job = await client.jobs().submit("good", Hello())
            await client.runner([Hello], cache, cleanup="on-success").run_all()
            assert [k async for k in cache.group(job.id)] == []


async def test_signal_handlers_only_when_asked() -> None:
    """A runner installs no signal handler by default; with handle_signals=True, SIGTERM stops
    it gracefully (run_forever returns) and the previous handler is back afterwards."""
    loop = asyncio.get_running_loop()
    before = signal.getsignal(signal.SIGTERM)
    async with Client(":memory:") as client:
        quiet = client.runner([Hello], InMemoryCache())
        task = asyncio.create_task(quiet.run_forever())
        await asyncio.sleep(0.1)
        assert signal.getsignal(signal.SIGTERM) == before
        quiet.stop()
        await task

        handled = client.runner([Hello], InMemoryCache(), handle_signals=True)
        task = asyncio.create_task(handled.run_forever())
        await asyncio.sleep(0.1)
        loop.call_soon(os.kill, os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(task, 10)
    assert signal.getsignal(signal.SIGTERM) == before


async def test_clusters_client() -> None:
    """clusters(): create, all, find (UnknownClusterError when missing), delete."""
    async with Client(":memory:") as client:
        clusters = client.clusters()
        await clusters.create("gpu", "GPU machines")
        assert (await clusters.find("gpu")).name == "GPU machines"
        assert [c.slug for c in await clusters.all()] == ["default", "gpu"]
        assert await clusters.delete("gpu") is True
        with pytest.raises(UnknownClusterError):
            await clusters.find("gpu")


class FlakyStore(SQLiteJobStore):
    """A real SQLite store whose first claims fail, as a briefly unreachable store would."""

    def __init__(self, failures: int) -> None:
        super().__init__(":memory:")
        self.failures = failures

    async def claim(
        self, cluster: str, runner_id: str, limit: int, lease: float, tasks: Any = None
    ) -> list[Any]:
        if self.failures:
            self.failures -= 1
            raise OSError("store briefly unreachable")
        return await super().claim(cluster, runner_id, limit, lease, tasks)


async def test_runner_rides_out_transient_store_errors() -> None:
    """A few failed claims are logged and retried with back-off; a store that keeps failing makes
    the runner raise instead of spinning."""
    async with Client(store=FlakyStore(failures=3)) as client:
        job = await client.jobs().submit("hello", Hello())
        await client.runner([Hello], InMemoryCache(), poll_interval=(0.01, 0.05)).run_all()
        assert (await client.jobs().find(job.id)).state == "COMPLETED"
    async with Client(store=FlakyStore(failures=100)) as client:
        with pytest.raises(OSError, match="unreachable"):
            await client.runner([Hello], InMemoryCache(), poll_interval=(0.01, 0.02)).run_all()
