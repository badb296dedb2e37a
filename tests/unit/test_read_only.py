"""Read-only stores and caches (the ``read_only=True`` constructor option the CLI's reading
commands use): they create nothing, migrate nothing and refuse writes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from swath import Client, LocalFileSystemCache, NotFoundError, ReadOnlyError
from swath.cache import cache_from_url
from swath.store.sqlite import SQLiteJobStore
from tests.unit.test_task_helpers import Noop


async def test_read_only_local_cache_creates_nothing_and_refuses_writes(tmp_path: Path) -> None:
    """A read-only local cache whose root is missing is a NotFoundError ("no cache at ...")
    and creates no directory; on an existing cache it reads, and put, put_stream, open_write,
    put_file, delete and clear raise ReadOnlyError before any I/O (nothing changes)."""
    missing = tmp_path / "typo" / "deeper"
    with pytest.raises(NotFoundError, match="no cache at"):
        async with LocalFileSystemCache(missing, read_only=True):
            pass
    assert not (tmp_path / "typo").exists()

    root = tmp_path / "cache"
    async with LocalFileSystemCache(root) as writable:
        await writable.put("g/k", b"v")
    before = sorted(os.walk(root))
    async with cache_from_url(str(root), read_only=True) as cache:
        assert await cache.get("g/k") == b"v"
        assert [g async for g in cache.groups()] == ["g"]
        source = tmp_path / "src"
        source.write_bytes(b"x")
        for write in (
            lambda: cache.put("g/k2", b"x"),
            lambda: cache.put_stream("g/k2", [b"x"]),
            lambda: cache.put_file("g/k2", source),
            lambda: cache.delete("g/k"),
            lambda: cache.group("g").clear(),
        ):
            with pytest.raises(ReadOnlyError):
                await write()
        with pytest.raises(ReadOnlyError):
            cache.open_write("g/k2")
    assert sorted(os.walk(root)) == before


async def test_read_only_sqlite_store_creates_nothing_and_refuses_writes(tmp_path: Path) -> None:
    """A read-only SQLite store of a missing file is NotFoundError and creates neither the file
    nor its directory; of an existing one it reads jobs, and a write is ReadOnlyError."""
    missing = tmp_path / "sub" / "new.db"
    with pytest.raises(NotFoundError, match="no database at"):
        async with Client(store=SQLiteJobStore(missing, read_only=True)):
            pass
    assert not (tmp_path / "sub").exists()

    db = tmp_path / "jobs.db"
    async with Client(str(db)) as client:
        job = await client.jobs().submit("kept", Noop())
    async with Client(store=SQLiteJobStore(db, read_only=True)) as reader:
        assert [j.id for j in await reader.jobs().query()] == [job.id]
        with pytest.raises(ReadOnlyError):
            await reader.jobs().submit("refused", Noop())
        with pytest.raises(ReadOnlyError):
            await reader.jobs().cancel(job.id)
    async with Client(str(db)) as client:
        assert [j.name for j in await client.jobs().query()] == ["kept"]
