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
from urllib.parse import quote

import aiosqlite

from swath.errors import NotFoundError, ReadOnlyError
from swath.store.base import RefusedError, StoreOpenError
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
    """``SQLiteJobStore("swath.db")`` or ``SQLiteJobStore(":memory:")`` (one process only).

    ``read_only=True`` opens an existing database for reading only: nothing is created (a
    missing file is a :class:`~swath.errors.NotFoundError` "no database at ..."), nothing is
    migrated, and a database file or directory without write permission can still be read."""

    def __init__(
        self, path: str | os.PathLike[str] = "swath.db", *, read_only: bool = False
    ) -> None:
        super().__init__()
        self.path = os.fspath(path)
        self.url = ":memory:" if self.path == ":memory:" else f"sqlite:///{self.path}"
        self.read_only = read_only
        self._conn: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self._users = 0

    async def open(self) -> None:
        self._users += 1
        if self._conn is not None:
            return
        try:
            if self.read_only:
                conn = await self._connect_read_only()
            else:
                if self.path != ":memory:":
                    Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                conn = await aiosqlite.connect(self.path, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            self._users -= 1
            if isinstance(exc, NotFoundError):
                raise
            raise StoreOpenError(f"cannot open the job store {self.url}: {exc}") from exc
        conn._thread.name = "swath-sqlite"  # readable thread dumps
        conn.row_factory = sqlite3.Row  # rows are read by column name
        try:
            await conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if self.path != ":memory:" and not self.read_only:
                await conn.execute("PRAGMA journal_mode = WAL")
            await conn.execute("PRAGMA synchronous = NORMAL")
            await conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
            self._conn = conn
            async with self._transaction() as tx:
                if self.read_only:
                    await self._check_schema(tx, _MIGRATIONS)
                else:
                    await self._migrate(tx, _MIGRATIONS)
        except sqlite3.DatabaseError as exc:  # not a database, corrupt, no swath tables
            self._conn = None
            self._users -= 1
            await conn.close()
            if self.read_only and "no such table" in str(exc):
                raise NotFoundError(f"no swath database at {self.path}") from exc
            raise StoreOpenError(f"cannot open the job store {self.url}: {exc}") from exc
        except BaseException:
            self._conn = None
            self._users -= 1
            await conn.close()
            raise

    async def _connect_read_only(self) -> aiosqlite.Connection:
        if self.path == ":memory:":
            return await aiosqlite.connect(self.path, isolation_level=None)
        uri = _read_only_uri(self.path)
        try:
            return await _connect_checked(uri)
        except sqlite3.OperationalError:
            # A database in WAL mode is read through its -shm file, which a reader must be able
            # to create when it is missing: in a directory without write permission it cannot.
            # Every swath writer that closes removes its -wal and -shm files, so a database
            # without them holds all its data in the main file: read it as immutable.
            if _has_wal(self.path):
                raise
            return await _connect_checked(uri + "&immutable=1")

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
                # a reader takes no write lock (and could not: its file may be read-only)
                await conn.execute("BEGIN" if self.read_only else "BEGIN IMMEDIATE")
                yield _SQLiteTx(conn)
            except sqlite3.OperationalError as exc:
                await asyncio.shield(_rollback(conn))
                if self.read_only and "readonly" in str(exc):
                    raise ReadOnlyError(f"the job store {self.url} is open read-only") from exc
                raise
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


async def _connect_checked(uri: str) -> aiosqlite.Connection:
    """A connection to ``uri`` that has read the schema (so a file that is not a database
    fails here); closed again if it fails."""
    conn = await aiosqlite.connect(uri, uri=True, isolation_level=None)
    try:
        await conn.execute("SELECT count(*) FROM sqlite_master")
    except BaseException:
        await conn.close()
        raise
    return conn


def _read_only_uri(path: str) -> str:
    if not os.path.isfile(path):
        raise NotFoundError(f"no database at {path}")
    return f"file:{quote(os.path.abspath(path))}?mode=ro"


def _has_wal(path: str) -> bool:
    return os.path.exists(path + "-wal")


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
