"""The PostgreSQL job store: many runners on many machines share one database.

``Client("postgresql://user:pass@host:port/db")`` (extra ``swath[postgres]``, asyncpg). All
rules live in :mod:`swath.store.machine`; this file supplies connections, transactions and the
PostgreSQL dialect of the named queries (``sql/postgres/``), plus what only a server store has:

* **a connection pool** (asyncpg) for transactions, and one dedicated connection that LISTENs;
* **migrations on open** in one transaction under an advisory lock, so runners that start at the
  same moment migrate once;
* **claims** with ``FOR UPDATE SKIP LOCKED`` (see ``queries.sql`` for the locking rules that
  replace SQLite's serialized writers);
* **wake-ups**: a trigger NOTIFYs a cluster's channel whenever a statement leaves tasks of it
  ready; the listener sets this process's work signals of that cluster. If the listening
  connection is lost, it reconnects with back-off, listens again and wakes every runner once
  (notifications sent meanwhile are not replayed); runners poll with back-off until then;
* **reconnects**: an operation that fails because the connection or the server went away (a
  restart, a failover, a deadlock victim) is retried as a whole transaction with back-off, for up
  to ``retry_for`` seconds;
* **no password leaks**: :attr:`url` and every message carry the DSN with its password masked.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import asyncpg

from swath._urls import parse_url, redact, scrub
from swath.errors import NotFoundError
from swath.store.base import (
    CHANGED_SIGNAL,
    AutomationInfo,
    ClaimedTask,
    ClusterInfo,
    Firing,
    JobInfo,
    JobState,
    NewTask,
    RefusedError,
    StoreError,
    TaskInfo,
    TaskKind,
    TaskOutcome,
    WorkSignal,
    job_signal,
)
from swath.store.machine import Params, Row, SQLJobStore, Tx, load_migrations, load_queries

log = logging.getLogger("swath.store.postgres")

T = TypeVar("T")

#: advisory-lock key that serializes schema migrations (a constant unique to swath)
MIGRATION_LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"swath schema migrations").digest()[:8], "big", signed=True
)


#: how long ``open`` retries a database it cannot reach (seconds)
OPEN_RETRY_FOR = 10.0
#: the least time between two announcements of a job's changes by one store object (seconds):
#: the first change is announced at once, the ones after it in one statement at the end of the
#: gap (a dashboard reads a job at most every 0.25 s however often it is told)
ANNOUNCE_GAP = 0.25


# -- SQL: :named parameters -> $n ---------------------------------------------------------------
_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


class _Query:
    """A named query compiled for asyncpg: ``$n`` placeholders and the parameter order."""

    __slots__ = ("names", "sql")

    def __init__(self, sql: str) -> None:
        names: list[str] = []

        def number(m: re.Match[str]) -> str:
            name = m.group(1)
            if name not in names:
                names.append(name)
            return f"${names.index(name) + 1}"

        self.sql = _PARAM.sub(number, sql)
        self.names = tuple(names)

    def args(self, params: Params) -> list[Any]:
        try:
            return [params[name] for name in self.names]
        except KeyError as exc:  # a programming error: the machine and the SQL disagree
            raise StoreError(f"query parameter {exc} missing") from None


_QUERIES = {name: _Query(sql) for name, sql in load_queries("postgres").items()}
_MIGRATIONS = load_migrations("postgres")


def _rowcount(status: str) -> int:
    """Rows changed, from a command tag such as ``UPDATE 3`` or ``INSERT 0 1``."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


class _PgTx:
    """One transaction on one pooled connection, running named queries.

    A batch (``executemany``) runs as the query's ``<name>__bulk`` form when ``queries.sql`` has
    one (one statement: each parameter an array of the rows' values), else row by row; rows with
    an ``id`` go in id order, so two transactions that lock the same rows (the parent of many
    subtasks) wait for each other and never deadlock."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def execute(self, query: str, params: Params) -> int:
        q = _QUERIES[query]
        return _rowcount(await self._conn.execute(q.sql, *q.args(params)))

    async def executemany(self, query: str, rows: Sequence[Params]) -> None:
        if not rows:
            return
        bulk = _QUERIES.get(f"{query}__bulk")
        if bulk is not None and len(rows) > 1:
            await self._conn.execute(bulk.sql, *([r[n] for r in rows] for n in bulk.names))
            return
        q = _QUERIES[query]
        if len(rows) == 1:
            await self._conn.execute(q.sql, *q.args(rows[0]))
            return
        if "id" in rows[0]:
            rows = sorted(rows, key=lambda r: str(r["id"]))
        await self._conn.executemany(q.sql, [q.args(r) for r in rows])

    async def fetchall(self, query: str, params: Params) -> list[Row]:
        q = _QUERIES[query]
        return list(await self._conn.fetch(q.sql, *q.args(params)))


class _NoSchema(Exception):
    """A read-only open found no swath tables."""


class DatabaseError(StoreError, OSError):
    """The database refused or could not be reached (after retrying for ``retry_for`` seconds).
    The message names the database by its URL with the password masked."""


# -- passwords ----------------------------------------------------------------------------------
def redact_dsn(dsn: str) -> str:
    """``dsn`` with its password (in the authority or a ``password=`` parameter) replaced by
    ``***``: the only form of a DSN that swath logs, raises or prints (see :mod:`swath._urls`
    for how a DSN is split: the way libpq splits it)."""
    return redact(dsn)


# -- errors worth retrying ----------------------------------------------------------------------
_TRANSIENT: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.TransactionRollbackError,  # serialization failure, deadlock victim
    asyncpg.InterfaceError,  # "connection is closed", a connection lost mid-operation
    asyncpg.InternalClientError,  # a connection left mid-protocol by a lost operation
    ConnectionError,
    TimeoutError,
    OSError,  # connection refused while the server restarts
)


#: errors after which a connection is not reused
_BROKEN: tuple[type[BaseException], ...] = (
    asyncio.CancelledError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
)


#: values the database or the driver cannot take: not retried (the same value would fail again)
_REFUSALS: tuple[type[BaseException], ...] = (
    asyncpg.DataError,  # SQLSTATE class 22: out of range, bad encoding (NUL in text), ...
    asyncpg.IntegrityConstraintViolationError,  # class 23: a duplicate id
    asyncpg.exceptions._base.DataError,  # the driver's own: "invalid input for query argument"
    UnicodeError,
    OverflowError,
)


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, (asyncpg.exceptions.ClientConfigurationError, *_REFUSALS)):
        return False
    return isinstance(exc, _TRANSIENT)


def channel_for(cluster: str) -> str:
    """The LISTEN/NOTIFY channel of a cluster: the same name as the SQL ``swath_channel``."""
    name = f"swath:{cluster}"
    if len(name.encode()) <= 63:
        return name
    return "swath:" + hashlib.sha256(cluster.encode()).hexdigest()[:40]


class PostgresJobStore(SQLJobStore):
    """``PostgresJobStore("postgresql://user:pass@host:5432/db")``.

    ``pool_min_size``/``pool_max_size`` size the connection pool (a runner batches its claims,
    completions and heartbeats, so a few connections serve any concurrency; connections open on
    demand); ``retry_for`` is how long an operation keeps retrying while the database is
    unreachable; ``connect_timeout`` bounds one connection attempt; ``keepalive_interval`` is
    how often the idle LISTEN connection is checked (a dead socket is noticed within it).
    ``read_only=True`` migrates nothing (a database without swath's tables is a
    :class:`~swath.errors.NotFoundError`) and its sessions refuse writes
    (``default_transaction_read_only``)."""

    def __init__(
        self,
        dsn: str,
        *,
        pool_min_size: int = 0,
        pool_max_size: int = 8,
        retry_for: float = 60.0,
        connect_timeout: float = 10.0,
        keepalive_interval: float = 5.0,
        read_only: bool = False,
    ) -> None:
        super().__init__()
        self.read_only = read_only
        parsed = parse_url(dsn)  # URLError (a ValueError) that quotes none of the DSN
        if parsed.scheme not in ("postgresql", "postgres"):
            raise ValueError(f"not a PostgreSQL URL: {parsed.redacted()!r}")
        parsed.hosts()  # ports checked here: asyncpg's int() would quote what it found
        self.url = parsed.redacted()
        self._secrets = parsed.secrets()
        # asyncpg gets the DSN without any secret, re-encoded so that it splits it as we did,
        # and the password on its own
        self._password = parsed.password
        if self._password is None:
            self._password = next((v for k, v in parsed.query if k == "password"), None)
        self._dsn = parsed.without_secrets().build()
        self._pool_min = max(0, pool_min_size)
        self._pool_max = max(1, pool_max_size, self._pool_min)
        self._retry_for = retry_for
        self._connect_timeout = connect_timeout
        self._keepalive = keepalive_interval
        self._pool: Any = None
        self._users = 0
        self._opening = asyncio.Lock()
        # listening
        self._listen_clusters: set[str] = set()
        self._listen_changed: asyncio.Event | None = None
        self._listener_task: asyncio.Task[None] | None = None
        self._listening = False
        self._channels: dict[str, str] = {}
        self._listened_before: set[str] = set()
        #: how many times the LISTEN connection was established (reconnects are the rest)
        self.listen_connections = 0
        # announcing job changes (see _announce)
        self._unannounced: set[str] = set()
        self._announce_wanted: asyncio.Event | None = None
        self._announcer_task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"PostgresJobStore({self.url!r})"

    # -- errors without passwords ----------------------------------------------------------------
    def _scrub(self, text: str) -> str:
        return scrub(text, self._secrets)

    def _error(self, what: str, exc: BaseException) -> StoreError:
        return DatabaseError(f"{what} ({self.url}): {type(exc).__name__}: {self._scrub(str(exc))}")

    # -- connections -----------------------------------------------------------------------------
    def _server_settings(self) -> dict[str, str]:
        # shown in pg_stat_activity; a name given in the URL wins
        settings = {} if "application_name=" in self._dsn else {"application_name": "swath"}
        if self.read_only:  # the server refuses every write of this store's sessions
            settings["default_transaction_read_only"] = "on"
        return settings

    async def open(self) -> None:
        async with self._opening:
            self._users += 1
            if self._pool is not None:
                return
            try:
                # a database never reached is more likely a wrong URL than a restart: give up
                # sooner than an open store does
                within = min(self._retry_for, OPEN_RETRY_FOR)
                self._pool = await self._retrying("open", self._create_pool, within)
                try:
                    await self._retrying("open", self._migrate_once, within)
                except _NoSchema:
                    raise NotFoundError(f"no swath database at {self.url}") from None
            except BaseException:
                self._users -= 1
                pool, self._pool = self._pool, None
                if pool is not None:
                    pool.terminate()
                raise
            self._listen_changed = asyncio.Event()
            self._listener_task = asyncio.create_task(
                self._listen_forever(), name="swath-postgres-listener"
            )
            self._announce_wanted = asyncio.Event()
            self._announcer_task = asyncio.create_task(
                self._announce_forever(self._announce_wanted), name="swath-postgres-announcer"
            )
            log.debug("opened job store %s", self.url)

    async def _create_pool(self) -> Any:
        return await asyncpg.create_pool(
            self._dsn,
            password=self._password,
            min_size=self._pool_min,
            max_size=self._pool_max,
            timeout=self._connect_timeout,
            server_settings=self._server_settings(),
            reset=_keep_session,
        )

    async def _migrate_once(self) -> None:
        if self.read_only:
            async with self._transaction() as tx:
                try:
                    await self._check_schema(tx, _MIGRATIONS)
                except asyncpg.exceptions.UndefinedTableError:
                    raise _NoSchema from None
            return
        async with self._transaction() as tx:
            await tx.execute("migration_lock", {"key": MIGRATION_LOCK_KEY})
            version = await self._migrate(tx, _MIGRATIONS)
        log.debug("schema at version %d", version)

    async def close(self) -> None:
        async with self._opening:
            self._users = max(0, self._users - 1)
            if self._users or self._pool is None:
                return
            pool, self._pool = self._pool, None
            task, self._listener_task = self._listener_task, None
            announcer, self._announcer_task = self._announcer_task, None
            self._announce_wanted = None
        tasks = [t for t in (task, announcer) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self._unannounced:  # the last changes, not yet told (a gap was running)
            await self._announce_now(pool, within=2.0)
        try:
            await asyncio.wait_for(pool.close(), timeout=10)
        except Exception:  # the server is gone: drop the sockets
            pool.terminate()

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Tx]:
        pool = self._pool
        if pool is None:
            raise RuntimeError("the job store is not open (use `async with Client(...)`)")
        async with pool.acquire() as conn:
            try:
                async with conn.transaction():
                    yield _PgTx(conn)
            except _REFUSALS:
                raise  # the statement was refused; the connection is fine
            except _BROKEN:
                # the connection may be mid-protocol or dead: never hand it out again
                with contextlib.suppress(asyncpg.InterfaceError):
                    conn.terminate()
                raise

    async def _run_script(self, tx: Tx, sql: str) -> None:
        assert isinstance(tx, _PgTx)
        await tx._conn.execute(sql)  # simple-query protocol: several statements

    # -- the dialect's hooks (see SQLJobStore) ----------------------------------------------------
    async def _start_jobs(self, tx: Tx, job_ids: set[str], now: float) -> None:
        """Nothing: the claim statement started the jobs (``queries.sql``: ``claim``)."""

    async def _count_off(self, tx: Tx, parents: Mapping[str, int], now: float) -> list[Row]:
        """One ``parent_decrement_complete`` per parent, in id order: the parent's row (which
        every runner of a big fan-out updates) is locked one round trip before COMMIT, and
        transactions lock parents in one order."""
        completed: list[Row] = []
        for parent in sorted(parents):
            params = {"id": parent, "n": parents[parent], "now": now}
            completed += await tx.fetchall("parent_decrement_complete", params)
        return completed

    def _announce(self, job_ids: set[str]) -> None:
        """Tell whoever follows jobs (the dashboard: ``work_signal(CHANGED_SIGNAL)`` and
        ``job_signal(id)``, in any process) that tasks of these jobs changed, by NOTIFY after the
        commit rather than in it: a transaction that NOTIFYs commits under PostgreSQL's global
        notification lock, so the completions of every runner would queue there. At most one
        announcement per ``ANNOUNCE_GAP`` (the first at once, later ones batched at its end)."""
        if job_ids and self._announce_wanted is not None:
            self._unannounced |= job_ids
            self._announce_wanted.set()

    async def _announce_forever(self, wanted: asyncio.Event) -> None:
        while True:
            await wanted.wait()
            wanted.clear()
            await self._announce_now(self._pool, within=self._connect_timeout)
            await asyncio.sleep(ANNOUNCE_GAP)

    async def _announce_now(self, pool: Any, within: float) -> None:
        """One NOTIFY per job changed since the last announcement. A hint, not a record: when it
        fails (the server restarts) it is dropped, and followers notice the changes by polling."""
        ids, self._unannounced = sorted(self._unannounced), set()
        if not ids or pool is None:
            return
        try:
            async with asyncio.timeout(within), pool.acquire() as conn:
                q = _QUERIES["jobs_changed"]
                await conn.execute(q.sql, *q.args({"ids": ids}))
        except (Exception, TimeoutError) as exc:
            log.debug("job store %s: could not announce job changes: %s", self.url, exc)

    async def _retrying(
        self, what: str, op: Callable[[], Awaitable[T]], within: float | None = None
    ) -> T:
        """Run ``op`` (a whole transaction), retrying transient failures with back-off for up to
        ``retry_for`` seconds; then raise a :class:`StoreError` without the password."""
        deadline = time.monotonic() + (self._retry_for if within is None else within)
        delay = 0.05
        warned = False
        while True:
            try:
                result = await op()
            except _REFUSALS as exc:
                raise RefusedError(
                    f"job store {what} ({self.url}) refused a value: {type(exc).__name__}: "
                    f"{self._scrub(str(exc))}"
                ) from None
            except _TRANSIENT as exc:
                if not _transient(exc) or time.monotonic() + delay > deadline:
                    raise self._error(f"job store {what} failed", exc) from None
                if not warned and not isinstance(exc, asyncpg.exceptions.TransactionRollbackError):
                    log.warning(
                        "job store %s: %s (%s); retrying",
                        self.url,
                        type(exc).__name__,
                        self._scrub(str(exc)),
                    )
                    warned = True
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 2.0)
                continue
            except asyncpg.PostgresError as exc:
                raise self._error(f"job store {what} failed", exc) from None
            if warned:
                log.warning("job store %s: reconnected", self.url)
            return result

    # -- every protocol method is a retried transaction ------------------------------------------
    async def create_cluster(self, slug: str, name: str = "") -> ClusterInfo:
        attempts = 0

        async def op() -> ClusterInfo:
            nonlocal attempts
            attempts += 1
            try:
                return await SQLJobStore.create_cluster(self, slug, name)
            except ValueError:
                # a retry after a commit whose reply was lost finds its own cluster
                existing = await SQLJobStore.get_cluster(self, slug) if attempts > 1 else None
                if existing is not None:
                    return existing
                raise

        return await self._retrying("create_cluster", op)

    async def get_cluster(self, slug: str) -> ClusterInfo | None:
        return await self._retrying("get_cluster", lambda: SQLJobStore.get_cluster(self, slug))

    async def list_clusters(self) -> list[ClusterInfo]:
        return await self._retrying("list_clusters", lambda: SQLJobStore.list_clusters(self))

    async def rename_cluster(self, slug: str, name: str) -> ClusterInfo | None:
        return await self._retrying(
            "rename_cluster", lambda: SQLJobStore.rename_cluster(self, slug, name)
        )

    async def delete_cluster(self, slug: str) -> bool:
        return await self._retrying(
            "delete_cluster", lambda: SQLJobStore.delete_cluster(self, slug)
        )

    async def submit_job(
        self, job_id: str, name: str, cluster: str, root: NewTask | Sequence[NewTask]
    ) -> JobInfo:
        attempts = 0

        async def op() -> JobInfo:
            nonlocal attempts
            attempts += 1
            if attempts > 1:
                # the previous attempt may have committed before its reply was lost
                existing = await SQLJobStore.get_job(self, job_id)
                if existing is not None:
                    return existing
            return await SQLJobStore.submit_job(self, job_id, name, cluster, root)

        return await self._retrying("submit_job", op)

    async def get_job(self, job_id: str, *, stats: bool = False) -> JobInfo | None:
        return await self._retrying(
            "get_job", lambda: SQLJobStore.get_job(self, job_id, stats=stats)
        )

    async def query_jobs(
        self,
        *,
        states: Sequence[JobState] | None = None,
        name: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 100,
        before: tuple[float, str] | None = None,
    ) -> list[JobInfo]:
        return await self._retrying(
            "query_jobs",
            lambda: SQLJobStore.query_jobs(
                self,
                states=states,
                name=name,
                since=since,
                until=until,
                limit=limit,
                before=before,
            ),
        )

    async def cancel_job(self, job_id: str) -> int:
        return await self._retrying("cancel_job", lambda: SQLJobStore.cancel_job(self, job_id))

    async def retry_job(self, job_id: str) -> int:
        return await self._retrying("retry_job", lambda: SQLJobStore.retry_job(self, job_id))

    async def list_tasks(self, job_id: str) -> list[TaskInfo]:
        return await self._retrying("list_tasks", lambda: SQLJobStore.list_tasks(self, job_id))

    async def claim(
        self,
        cluster: str,
        runner_id: str,
        limit: int,
        lease: float,
        tasks: Sequence[TaskKind] | None = None,
    ) -> list[ClaimedTask]:
        since = time.time()
        unknown_outcome = False

        async def op() -> list[ClaimedTask]:
            nonlocal unknown_outcome
            if unknown_outcome:
                # a claim whose reply was lost may have leased tasks this runner never got
                async with self._transaction() as tx:
                    await tx.execute("claim_orphans_release", {"runner": runner_id, "since": since})
            unknown_outcome = True
            claimed = await SQLJobStore.claim(self, cluster, runner_id, limit, lease, tasks)
            unknown_outcome = False
            return claimed

        return await self._retrying("claim", op)

    async def heartbeat(self, runner_id: str, lease: float) -> int:
        return await self._retrying(
            "heartbeat", lambda: SQLJobStore.heartbeat(self, runner_id, lease)
        )

    async def complete(self, runner_id: str, outcomes: Sequence[TaskOutcome]) -> int:
        # idempotent: a retry after a lost reply finds the tasks no longer held and accepts none
        return await self._retrying(
            "complete", lambda: SQLJobStore.complete(self, runner_id, outcomes)
        )

    async def release(self, runner_id: str, task_ids: Sequence[str]) -> int:
        return await self._retrying(
            "release", lambda: SQLJobStore.release(self, runner_id, task_ids)
        )

    async def renew(self, runner_id: str, task_ids: Sequence[str], lease: float) -> list[str]:
        return await self._retrying(
            "renew", lambda: SQLJobStore.renew(self, runner_id, task_ids, lease)
        )

    async def stop_requested(self, runner_id: str) -> list[str]:
        return await self._retrying(
            "stop_requested", lambda: SQLJobStore.stop_requested(self, runner_id)
        )

    async def next_ready(
        self, cluster: str, tasks: Sequence[TaskKind] | None = None
    ) -> float | None:
        return await self._retrying(
            "next_ready", lambda: SQLJobStore.next_ready(self, cluster, tasks)
        )

    # -- automations -----------------------------------------------------------------------------
    async def create_automation(self, automation: AutomationInfo) -> AutomationInfo:
        attempts = 0

        async def op() -> AutomationInfo:
            nonlocal attempts
            attempts += 1
            try:
                return await SQLJobStore.create_automation(self, automation)
            except ValueError:
                # a retry after a commit whose reply was lost finds its own automation
                if attempts > 1:
                    existing = await SQLJobStore.get_automation(self, automation.id)
                    if existing is not None:
                        return existing
                raise

        return await self._retrying("create_automation", op)

    async def get_automation(self, key: str) -> AutomationInfo | None:
        return await self._retrying("get_automation", lambda: SQLJobStore.get_automation(self, key))

    async def list_automations(self) -> list[AutomationInfo]:
        return await self._retrying("list_automations", lambda: SQLJobStore.list_automations(self))

    async def pause_automation(self, automation_id: str, paused: bool) -> AutomationInfo | None:
        return await self._retrying(
            "pause_automation", lambda: SQLJobStore.pause_automation(self, automation_id, paused)
        )

    async def delete_automation(self, automation_id: str) -> bool:
        return await self._retrying(
            "delete_automation", lambda: SQLJobStore.delete_automation(self, automation_id)
        )

    async def fired_keys(self, automation_id: str, keys: Sequence[str]) -> set[str]:
        return await self._retrying(
            "fired_keys", lambda: SQLJobStore.fired_keys(self, automation_id, keys)
        )

    async def fire_automation(
        self, automation_id: str, firings: Sequence[Firing], cursor: float | None = None
    ) -> list[str]:
        # a retry after a lost reply finds the keys fired and submits nothing twice (it then
        # leaves out of its answer the jobs the lost attempt submitted)
        return await self._retrying(
            "fire_automation",
            lambda: SQLJobStore.fire_automation(self, automation_id, firings, cursor),
        )

    # -- wake-ups --------------------------------------------------------------------------------
    def work_signal(self, cluster: str) -> WorkSignal:
        signal = super().work_signal(cluster)
        if cluster.startswith(CHANGED_SIGNAL + ":"):  # a job's changes: told on CHANGED_SIGNAL's
            cluster = CHANGED_SIGNAL
        if cluster not in self._listen_clusters:
            self._listen_clusters.add(cluster)
            if self._listen_changed is not None:
                self._listen_changed.set()
        return signal

    @property
    def listening(self) -> bool:
        """True while the LISTEN connection is up (runners then need not poll often)."""
        return self._listening

    def _on_notification(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        cluster = self._channels.get(channel)
        if cluster == CHANGED_SIGNAL and payload:  # the job that changed
            self._signals.notify({cluster, job_signal(payload)})
        elif cluster is not None:
            self._signals.notify({cluster})

    async def _listen_forever(self) -> None:
        """Keep one connection LISTENing on the channels of every cluster a runner of this store
        waits on; reconnect with back-off when it is lost."""
        assert self._listen_changed is not None
        changed = self._listen_changed
        delay = 0.05
        while True:
            if not self._listen_clusters:
                changed.clear()
                await changed.wait()
                continue
            conn: Any = None
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(
                    self._dsn,
                    password=self._password,
                    timeout=self._connect_timeout,
                    server_settings=self._server_settings(),
                )
                conn.add_termination_listener(_setter(lost))
                listening: set[str] = set()
                while True:
                    changed.clear()
                    new = set(self._listen_clusters) - listening
                    for cluster in sorted(new):
                        channel = channel_for(cluster)
                        self._channels[channel] = cluster
                        await conn.add_listener(channel, self._on_notification)
                    listening |= new
                    if new:
                        if not self._listening:
                            self.listen_connections += 1
                            if self.listen_connections > 1:
                                log.warning("job store %s: listening again", self.url)
                        self._listening = True
                        delay = 0.05
                        # after a reconnect, work made ready while nobody listened was never
                        # announced: wake those runners once to look
                        missed = new & self._listened_before
                        if missed:
                            self._signals.notify(missed)
                        self._listened_before |= new
                    await self._wait_listening(conn, lost, changed)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._listening:
                    log.warning(
                        "job store %s: lost the LISTEN connection (%s); runners poll until it "
                        "is back",
                        self.url,
                        self._scrub(f"{type(exc).__name__}: {exc}"),
                    )
                self._listening = False
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 2.0)
            finally:
                self._listening = False
                if conn is not None:
                    conn.terminate()

    async def _wait_listening(self, conn: Any, lost: asyncio.Event, changed: asyncio.Event) -> None:
        """Return when clusters were added; raise when the connection is lost or stops
        answering (a keep-alive query every ``keepalive_interval`` seconds)."""
        while True:
            waiters = [asyncio.ensure_future(lost.wait()), asyncio.ensure_future(changed.wait())]
            try:
                await asyncio.wait(waiters, timeout=self._keepalive, return_when="FIRST_COMPLETED")
            finally:
                for w in waiters:
                    w.cancel()
            if lost.is_set() or conn.is_closed():
                raise ConnectionError("the LISTEN connection was closed")
            if changed.is_set():
                return
            await conn.fetchval("SELECT 1", timeout=self._keepalive)


async def _keep_session(conn: Any) -> None:
    """How a pooled connection is reset when it is released: not at all. asyncpg's default
    (``UNLISTEN *; RESET ALL; CLOSE ALL; SELECT pg_advisory_unlock_all()``) costs a round trip
    per transaction, and this store leaves nothing of that kind behind on its pooled connections:
    it LISTENs on a connection of its own, sets no session settings (those of the URL are the
    session's defaults), opens no cursors and takes advisory locks for a transaction only. An
    open transaction is still rolled back by asyncpg before this is called."""


def _setter(event: asyncio.Event) -> Callable[[Any], None]:
    return lambda _conn: event.set()


__all__ = ["DatabaseError", "PostgresJobStore", "channel_for", "redact_dsn"]
