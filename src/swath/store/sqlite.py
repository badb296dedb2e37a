"""The embedded job store: SQLite through aiosqlite, in WAL mode.

One connection per store object; its transactions are serialized by an asyncio lock and, across
processes, by SQLite's own write lock (``BEGIN IMMEDIATE`` with a busy timeout), so several runner
processes on one machine can share the file. All rules live in :mod:`swath.store.machine`; this
file only opens the database, migrates it and runs named queries.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import aiosqlite

from swath.store.base import RefusedError
from swath.store.machine import Params, Row, SQLJobStore, Tx, load_migrations, load_queries

_QUERIES = load_queries("sqlite")
_MIGRATIONS = load_migrations("sqlite")
#: How long a writer waits for another process's transaction before failing.
BUSY_TIMEOUT_MS = 60_000
#: Page cache of each connection, KiB (the default 2 MiB thrashes on large jobs).
CACHE_KIB = 64 << 10


class _SQLiteTx:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def execute(self, query: str, params: Params) -> int:
        cursor = await self._conn.execute(_QUERIES[query], params)
        count = cursor.rowcount
        await cursor.close()
        return int(count)

    async def executemany(self, query: str, rows: Sequence[Params]) -> None:
        await self._conn.executemany(_QUERIES[query], rows)

    async def fetchall(self, query: str, params: Params) -> list[Row]:
        return list(await self._conn.execute_fetchall(_QUERIES[query], params))


class SQLiteJobStore(SQLJobStore):
    """``SQLiteJobStore("swath.db")`` or ``SQLiteJobStore(":memory:")`` (one process only)."""

    def __init__(self, path: str | os.PathLike[str] = "swath.db") -> None:
        super().__init__()
        self.path = os.fspath(path)
        self.url = ":memory:" if self.path == ":memory:" else f"sqlite:///{self.path}"
        self._conn: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self._users = 0

    async def open(self) -> None:
        self._users += 1
        if self._conn is not None:
            return
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = await aiosqlite.connect(self.path, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            self._users -= 1
            raise OSError(f"cannot open the job store {self.url}: {exc}") from exc
        conn._thread.name = "swath-sqlite"  # readable thread dumps
        try:
            await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if self.path != ":memory:":
                await conn.execute("PRAGMA journal_mode = WAL")
            await conn.execute("PRAGMA synchronous = NORMAL")
            await conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
            self._conn = conn
            async with self._transaction() as tx:
                await self._migrate(tx, _MIGRATIONS)
        except BaseException:
            self._conn = None
            self._users -= 1
            await conn.close()
            raise

    async def close(self) -> None:
        self._users = max(0, self._users - 1)
        if self._users or self._conn is None:
            return
        conn, self._conn = self._conn, None
        async with self._lock:
            await conn.close()

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Tx]:
        conn = self._conn
        if conn is None:
            raise RuntimeError("the job store is not open (use `async with Client(...)`)")
        # Statements run in aiosqlite's thread in the order they were queued, and a statement
        # queued before a cancellation still runs. So whatever interrupts us (an error, or a
        # cancellation even during BEGIN), a ROLLBACK queued behind it closes the transaction
        # before the next one can begin; and a COMMIT, once queued, completes.
        async with self._lock:
            try:
                await conn.execute("BEGIN IMMEDIATE")
                yield _SQLiteTx(conn)
            except _REFUSALS as exc:
                await asyncio.shield(_rollback(conn))
                raise RefusedError(
                    f"job store {self.url} refused a value: {type(exc).__name__}: {exc}"
                ) from exc
            except BaseException:
                await asyncio.shield(_rollback(conn))
                raise
            await asyncio.shield(conn.commit())

    async def _run_script(self, tx: Tx, sql: str) -> None:
        # executescript would COMMIT our transaction first; run statement by statement instead.
        assert self._conn is not None
        for statement in _split_statements(sql):
            await self._conn.execute(statement)


#: values SQLite or its driver cannot take (an int beyond 64 bits, a lone surrogate, a duplicate
#: id): raised as RefusedError
_REFUSALS: tuple[type[BaseException], ...] = (
    OverflowError,
    UnicodeError,
    sqlite3.IntegrityError,
    sqlite3.DataError,
)


async def _rollback(conn: aiosqlite.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):  # nothing to roll back if BEGIN itself failed
        await conn.rollback()


def _split_statements(sql: str) -> list[str]:
    statements: list[str] = []
    current: list[str] = []
    for line in sql.splitlines():
        stripped = line.split("--", 1)[0].rstrip()
        if not stripped:
            continue
        current.append(stripped)
        if stripped.endswith(";") and sqlite3.complete_statement("\n".join(current)):
            statements.append("\n".join(current))
            current = []
    if current:
        statements.append("\n".join(current))
    return statements


__all__ = ["SQLiteJobStore"]
