"""The job state machine, written once for every SQL job store.

:class:`SQLJobStore` implements the whole :class:`~swath.store.base.JobStore` protocol on top of
two things a concrete store supplies: transactions (:meth:`SQLJobStore._transaction`, yielding a
:class:`Tx`) and the named queries of its dialect (``store/sql/<dialect>/queries.sql``). The
rules (claiming, lease expiry, subtree completion, dependencies, optional failures, job failure,
retries, cancel) live here and only here; a dialect's SQL says *how* to touch rows, not *when*.

Every public method is one transaction. Batches stay batches: a completion of N tasks costs a
fixed number of statements plus one per distinct parent and per depended-on task.
"""

from __future__ import annotations

import abc
import functools
import json
import logging
import re
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from importlib import resources
from typing import Any, Protocol, TypeVar

import msgspec

from swath.store.base import (
    DEFAULT_CLUSTER,
    MAX_JOB_LOGS,
    MAX_LOST,
    MAX_TASK_LOGS,
    ROOTS_TASK,
    RUNNER_EXPIRY,
    STOPPED_SIGNAL,
    AutomationInfo,
    ClaimedTask,
    ClusterInfo,
    ErrorInfo,
    ExecutionStats,
    Firing,
    JobInfo,
    JobState,
    LeaseInfo,
    NewTask,
    ProgressInfo,
    RunnerInfo,
    Signals,
    StoreError,
    StoreOpenError,
    TaskFailure,
    TaskInfo,
    TaskKind,
    TaskLogRecord,
    TaskOutcome,
    TaskState,
    UnknownAutomationError,
    UnknownClusterError,
    UnknownJobError,
    WorkSignal,
    decode_trigger,
    new_id,
)

S = TypeVar("S", bound=msgspec.Struct)


class Row(Protocol):
    """A result row, read by column name (``sqlite3.Row``, asyncpg's ``Record``)."""

    def __getitem__(self, column: str, /) -> Any: ...

    def keys(self) -> Iterable[str]: ...

    def __iter__(self) -> Iterator[Any]: ...


Params = Mapping[str, Any]

#: Subtasks are inserted this many at a time (one statement each, in the same transaction).
INSERT_SLICE = 2000

_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_VERSION = re.compile(r"v([0-9]{1,9})\.([0-9]{1,9})")


@functools.lru_cache(maxsize=1024)
def version_numbers(version: str) -> tuple[int, int]:
    """``"v1.2"`` -> ``(1, 2)``: the columns a claim compares; ValueError for anything else."""
    m = _VERSION.fullmatch(version)
    if m is None:
        raise ValueError(f"invalid task version {version!r}: expected 'vMAJOR.MINOR'")
    return int(m.group(1)), int(m.group(2))


def known_json(tasks: Sequence[TaskKind] | None) -> str | None:
    """The ``:known`` parameter of ``claim`` and ``next_ready``."""
    if tasks is None:
        return None
    return json.dumps([{"n": n, "ma": major, "mi": minor} for n, major, minor in tasks])


def load_queries(dialect: str) -> dict[str, str]:
    """Parse ``sql/<dialect>/queries.sql`` into ``{name: sql}`` (blocks start ``-- name: x``)."""
    text = resources.files("swath.store").joinpath("sql", dialect, "queries.sql").read_text()
    queries: dict[str, str] = {}
    name: str | None = None
    lines: list[str] = []
    for line in text.splitlines():
        if line.startswith("-- name:"):
            if name:
                queries[name] = "\n".join(lines).strip()
            name, lines = line.split(":", 1)[1].strip(), []
        elif name is not None and not line.startswith("--"):
            lines.append(line)
    if name:
        queries[name] = "\n".join(lines).strip()
    return queries


def load_migrations(dialect: str) -> list[tuple[int, str]]:
    """``(version, sql)`` for each ``sql/<dialect>/migrations/NNNN_*.sql``, in order."""
    folder = resources.files("swath.store").joinpath("sql", dialect, "migrations")
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append((int(entry.name.split("_", 1)[0]), entry.read_text()))
    return sorted(found)


class Tx(Protocol):
    """One open transaction; queries are named (see ``queries.sql``)."""

    async def execute(self, query: str, params: Params) -> int:
        """Run a statement; returns the number of rows it changed."""

    async def executemany(self, query: str, rows: Sequence[Params]) -> None: ...

    async def fetchall(self, query: str, params: Params) -> list[Row]: ...


def check_slug(slug: str) -> str:
    if not isinstance(slug, str) or not _SLUG.match(slug):
        raise ValueError(
            f"invalid cluster name {slug!r}: 1-63 characters of a-z, 0-9, '-', '_', "
            "starting with a letter or digit"
        )
    return slug


class SQLJobStore(abc.ABC):
    """The JobStore protocol for any SQL store; subclasses supply transactions."""

    url: str

    def __init__(self) -> None:
        self._signals = Signals()

    # -- what a concrete store supplies ----------------------------------------------------------
    @abc.abstractmethod
    def _transaction(self) -> AbstractAsyncContextManager[Tx]:
        """A write transaction (serialized with other writers; committed on clean exit)."""

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> SQLJobStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _migrate(self, tx: Tx, migrations: Iterable[tuple[int, str]]) -> int:
        """Bring the schema to the newest version; called by ``open`` inside a transaction that
        excludes other processes. Returns the version."""
        await tx.execute("schema_version_table", {})
        rows = await tx.fetchall("schema_version", {})
        current = rows[0]["version"] if rows else 0
        if not rows:
            await tx.execute("schema_version_insert", {"version": 0})
        migrations = list(migrations)
        newest = max((number for number, _ in migrations), default=0)
        if current > newest:
            raise StoreError(
                f"the job store's schema is version {current}, newer than this swath knows "
                f"({newest}): upgrade swath"
            )
        version = current
        for number, sql in migrations:
            if number > current:
                await self._run_script(tx, sql)
                version = number
        if version != current:
            await tx.execute("schema_version_set", {"version": version})
        await tx.execute(
            "cluster_insert", {"slug": DEFAULT_CLUSTER, "name": "Default", "now": time.time()}
        )
        return int(version)

    async def _check_schema(self, tx: Tx, migrations: Iterable[tuple[int, str]]) -> None:
        """What a read-only open does instead of ``_migrate``: the schema must be there and
        current (its version table is read; a missing table is the caller's "no database")."""
        rows = await tx.fetchall("schema_version", {})
        current = rows[0]["version"] if rows else 0
        newest = max((number for number, _ in migrations), default=0)
        if current > newest:
            raise StoreOpenError(
                f"the job store's schema is version {current}, newer than this swath knows "
                f"({newest}): upgrade swath"
            )
        if current < newest:
            raise StoreOpenError(
                f"the job store's schema is version {current}, older than this swath's "
                f"({newest}): a runner or a writing command upgrades it when it opens it"
            )

    @abc.abstractmethod
    async def _run_script(self, tx: Tx, sql: str) -> None:
        """Run a migration script (several statements)."""

    # -- where dialects differ: named hooks ------------------------------------------------------
    async def _start_jobs(self, tx: Tx, job_ids: set[str], now: float) -> None:
        """The jobs of tasks just claimed move from QUEUED to RUNNING. (PostgreSQL's claim
        statement does it itself, one round trip fewer.)"""
        for job_id in job_ids:
            await tx.execute("job_start", {"id": job_id, "now": now})

    async def _count_off(self, tx: Tx, parents: Mapping[str, int], now: float) -> list[Row]:
        """Count ``n`` finished subtasks off each parent, and complete the parents whose last
        subtasks these were; returns those (``id, job_id, parent_id, has_dependents``).
        (PostgreSQL does both in one statement per parent, in id order.)"""
        if not parents:
            return []
        await tx.executemany("parent_decrement", [{"id": p, "n": n} for p, n in parents.items()])
        completed: list[Row] = []
        for parent in parents:
            completed += await tx.fetchall("parent_complete", {"id": parent, "now": now})
        return completed

    def _announce(self, job_ids: set[str]) -> None:
        """A transaction just committed changed tasks (states, progress) of these jobs. Whoever
        follows jobs (the dashboard) learns it from the store on PostgreSQL (its NOTIFY); a
        SQLite dashboard polls, so here it is nothing. Job submissions and job state changes
        are announced by the database itself (triggers), not through this hook."""
        return None

    # -- wake-ups --------------------------------------------------------------------------------
    def work_signal(self, cluster: str) -> WorkSignal:
        return self._signals.new(cluster)

    def _notify(self, clusters: set[str] | None) -> None:
        self._signals.notify(clusters)

    # -- clusters --------------------------------------------------------------------------------
    async def create_cluster(self, slug: str, name: str = "") -> ClusterInfo:
        check_slug(slug)
        now = time.time()
        async with self._transaction() as tx:
            if not await tx.execute(
                "cluster_insert", {"slug": slug, "name": name or slug, "now": now}
            ):
                raise ValueError(f"cluster {slug!r} already exists")
        return ClusterInfo(slug, name or slug, now)

    async def rename_cluster(self, slug: str, name: str) -> ClusterInfo | None:
        async with self._transaction() as tx:
            await tx.execute("cluster_rename", {"slug": slug, "name": name})
            rows = await tx.fetchall("cluster_get", {"slug": slug})
        return _cluster(rows[0]) if rows else None

    async def get_cluster(self, slug: str) -> ClusterInfo | None:
        async with self._transaction() as tx:
            rows = await tx.fetchall("cluster_get", {"slug": slug})
        return _cluster(rows[0]) if rows else None

    async def list_clusters(self) -> list[ClusterInfo]:
        async with self._transaction() as tx:
            rows = await tx.fetchall("cluster_list", {})
        return [_cluster(row) for row in rows]

    async def delete_cluster(self, slug: str) -> bool:
        if slug == DEFAULT_CLUSTER:
            raise ValueError("the cluster 'default' always exists and cannot be deleted")
        async with self._transaction() as tx:
            return bool(await tx.execute("cluster_delete", {"slug": slug}))

    # -- jobs ------------------------------------------------------------------------------------
    async def submit_job(
        self, job_id: str, name: str, cluster: str, root: NewTask | Sequence[NewTask]
    ) -> JobInfo:
        roots = [root] if isinstance(root, NewTask) else list(root)
        if not roots:
            raise ValueError("a job needs at least one root task")
        if any(r.depends_on for r in roots):
            raise ValueError("root tasks cannot depend on other tasks")
        # several roots: a group task, never executed, is their parent (see task_group_of_roots)
        now = time.time()
        async with self._transaction() as tx:
            top = await self._insert_job(tx, job_id, name, cluster, roots, now)
        self._notify({r.cluster for r in roots})
        return JobInfo(job_id, name, cluster, JobState.QUEUED, now, None, None, top, [])

    async def _insert_job(
        self,
        tx: Tx,
        job_id: str,
        name: str,
        cluster: str,
        roots: Sequence[NewTask],
        now: float,
        trigger: str | None = None,
    ) -> str:
        """Insert a QUEUED job and its root task(s); returns the id of its top task."""
        # several roots: a group task, never executed, is their parent (see task_group_of_roots)
        group = NewTask(new_id(), ROOTS_TASK, "v0.0", b"{}", cluster) if len(roots) > 1 else None
        top = group or roots[0]
        await self._check_clusters(tx, {cluster, *(r.cluster for r in roots)})
        await tx.execute(
            "job_insert",
            {
                "id": job_id,
                "name": name,
                "cluster": cluster,
                "root_task_id": top.id,
                "now": now,
                "trigger_json": trigger,
            },
        )
        await self._insert_tasks(tx, job_id, None, [top], now)
        if group is not None:
            await self._insert_tasks(tx, job_id, group.id, roots, now)
            await tx.execute("task_group_of_roots", {"id": group.id, "n": len(roots)})
        return top.id

    async def _check_clusters(self, tx: Tx, clusters: set[str]) -> None:
        for cluster in clusters:
            if not await tx.fetchall("cluster_get", {"slug": cluster}):
                raise UnknownClusterError(
                    f"unknown cluster {cluster!r}: create it with clusters().create({cluster!r})"
                )

    async def get_job(self, job_id: str, *, stats: bool = False) -> JobInfo | None:
        async with self._transaction() as tx:
            rows = await tx.fetchall("job_get", {"id": job_id})
            if not rows:
                return None
            progress = await tx.fetchall("job_progress", {"id": job_id})
            counts = await tx.fetchall("job_execution_stats", {"id": job_id}) if stats else []
        return _job(rows[0], progress, counts)

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
        params = {
            "states": None if states is None else json.dumps([JobState(s).value for s in states]),
            "name": name,
            "since": since,
            "until": until,
            "limit": int(limit),
            "before_at": None if before is None else float(before[0]),
            "before_id": None if before is None else str(before[1]),
        }
        async with self._transaction() as tx:
            rows = await tx.fetchall("job_query", params)
            return [
                _job(
                    row,
                    await tx.fetchall("job_progress", {"id": row["id"]}),
                )
                for row in rows
            ]

    async def cancel_job(self, job_id: str) -> int:
        async with self._transaction() as tx:
            if not await tx.fetchall("job_state_for_update", {"id": job_id}):
                raise UnknownJobError(f"no job with id {job_id!r}")
            if not await tx.execute("job_cancel", {"id": job_id, "now": time.time()}):
                return 0
            canceled = await tx.execute("job_cancel_queued", {"id": job_id})
        self._notify({STOPPED_SIGNAL})  # runners holding its tasks cancel them
        return canceled

    async def retry_job(self, job_id: str) -> int:
        now = time.time()
        async with self._transaction() as tx:
            state = await tx.fetchall("job_state_for_update", {"id": job_id})
            if not state:
                raise UnknownJobError(f"no job with id {job_id!r}")
            if state[0]["state"] not in (JobState.FAILED.value, JobState.CANCELED.value):
                return 0  # nothing to retry in a job that is active or completed
            failed = await tx.execute("job_retry_failed", {"id": job_id, "now": now})
            await tx.execute("job_requeue_stopped", {"id": job_id, "now": now})
            await tx.execute("job_requeue", {"id": job_id})
        self._notify(None)
        return failed

    async def list_tasks(self, job_id: str) -> list[TaskInfo]:
        async with self._transaction() as tx:
            rows = await tx.fetchall("job_tasks", {"id": job_id})
            deps = await tx.fetchall("job_deps", {"id": job_id})
        depends: dict[str, list[str]] = {}
        for d in deps:
            depends.setdefault(d["task_id"], []).append(d["depends_on"])
        tasks = []
        for r in rows:
            error = (
                ErrorInfo(r["error_type"], r["error_message"] or "", r["error_traceback"] or "")
                if r["error_type"] is not None
                else None
            )
            tasks.append(
                TaskInfo(
                    id=r["id"], job_id=r["job_id"], parent_id=r["parent_id"], cluster=r["cluster"],
                    name=r["name"], version=r["version"], display=r["display"],
                    state=TaskState(r["state"]), retry_count=r["retry_count"],
                    max_retries=r["max_retries"], optional=bool(r["optional"]),
                    lost_count=r["lost_count"], created_at=r["created_at"],
                    started_at=r["started_at"], finished_at=r["finished_at"], error=error,
                    depends_on=sorted(depends.get(r["id"], [])),
                )
            )  # fmt: skip
        return tasks

    # -- runners ---------------------------------------------------------------------------------
    async def claim(
        self,
        cluster: str,
        runner_id: str,
        limit: int,
        lease: float,
        tasks: Sequence[TaskKind] | None = None,
    ) -> list[ClaimedTask]:
        if limit <= 0:
            return []
        began = time.time()
        async with self._transaction() as tx:
            # Two times, for two fairnesses. Other runners' leases are judged by the time this
            # call began: while it waited for the store's locks (or its process was frozen
            # holding them), they could not renew, so that wait never counts against them. New
            # leases start once the locks are held, so a lease never runs out before the claim
            # takes effect.
            now = time.time()
            requeued = await self._expire_leases(tx, began)
            rows = await tx.fetchall(
                "claim",
                {
                    "cluster": cluster,
                    "runner": runner_id,
                    "expires": now + lease,
                    "now": now,
                    "limit": limit,
                    "known": known_json(tasks),
                },
            )
            if rows:
                await self._start_jobs(tx, {r["job_id"] for r in rows}, now)
            claimed = records(rows, ClaimedTask)
        if requeued:
            self._announce(requeued)
        claimed.sort(key=lambda t: t.id)
        return claimed

    async def heartbeat(self, runner_id: str, lease: float) -> int:
        began = time.time()  # a lease alive when the call began is renewed (see claim)
        async with self._transaction() as tx:
            now = time.time()
            return await tx.execute(
                "heartbeat", {"runner": runner_id, "expires": now + lease, "now": began}
            )

    async def renew(self, runner_id: str, task_ids: Sequence[str], lease: float) -> list[str]:
        began = time.time()
        async with self._transaction() as tx:
            now = time.time()
            held = []
            for task_id in task_ids:
                params = {"id": task_id, "runner": runner_id, "expires": now + lease, "now": began}
                if await tx.execute("task_renew", params):
                    held.append(task_id)
            return held

    async def release(self, runner_id: str, task_ids: Sequence[str]) -> int:
        if not task_ids:
            return 0
        async with self._transaction() as tx:
            jobs: list[str] = []
            for task_id in task_ids:
                params = {"id": task_id, "runner": runner_id}
                jobs += [r["job_id"] for r in await tx.fetchall("task_release", params)]
        self._notify(None)
        self._announce(set(jobs))
        return len(jobs)

    async def stop_requested(self, runner_id: str) -> list[str]:
        async with self._transaction() as tx:
            return [r["id"] for r in await tx.fetchall("stop_requested", {"runner": runner_id})]

    async def next_ready(
        self, cluster: str, tasks: Sequence[TaskKind] | None = None
    ) -> float | None:
        async with self._transaction() as tx:
            rows = await tx.fetchall("next_ready", {"cluster": cluster, "known": known_json(tasks)})
        ready_at = rows[0]["ready_at"] if rows else None
        return None if ready_at is None else float(ready_at)

    async def complete(self, runner_id: str, outcomes: Sequence[TaskOutcome]) -> int:
        if not outcomes:
            return 0
        wake: set[str] | None = set()
        async with self._transaction() as tx:
            now = time.time()
            # one outcome per task: a runner that re-claimed its own expired lease may report
            # two executions of a task at once; the later one ran under the live lease
            latest = {o.task_id: o for o in outcomes}
            ids = json.dumps(sorted(latest))
            held = {
                r["id"]: _Held.of(r)
                for r in await tx.fetchall("held_tasks", {"runner": runner_id, "ids": ids})
            }
            accepted = [
                o
                for o in latest.values()
                if o.task_id in held and o.attempt in (None, held[o.task_id].retry_count)
            ]
            if not accepted:
                return 0
            job_active = {}
            job_canceled = set()
            # a job this batch may fail (a final failure of a non-optional task) is locked for
            # update at once: taking a shared lock and upgrading it later to fail the job
            # deadlocks against another completion doing the same (PostgreSQL)
            may_fail = {
                held[o.task_id].job_id
                for o in accepted
                if isinstance(o, TaskFailure)
                and not held[o.task_id].optional
                and held[o.task_id].retry_count >= held[o.task_id].max_retries
            }
            for job_id in sorted({held[o.task_id].job_id for o in accepted}):
                query = "job_state_for_update" if job_id in may_fail else "job_state"
                rows = await tx.fetchall(query, {"id": job_id})
                job_active[job_id] = bool(rows) and rows[0]["state"] in ("QUEUED", "RUNNING")
                if rows and rows[0]["state"] == JobState.CANCELED.value:
                    job_canceled.add(job_id)

            finished: list[dict[str, Any]] = []
            progress: list[dict[str, Any]] = []
            done: list[_Done] = []
            failures: list[tuple[_Held, TaskFailure]] = []
            logged = False
            for outcome in accepted:
                task = held[outcome.task_id]
                if outcome.logs or outcome.logs_dropped:
                    logged = True
                if isinstance(outcome, TaskFailure):
                    failures.append((task, outcome))
                    continue
                active = job_active[task.job_id]
                subtasks = outcome.subtasks if active else []
                if subtasks:
                    await self._insert_tasks(tx, task.job_id, task.id, subtasks, now)
                    assert wake is not None
                    wake.update(s.cluster for s in subtasks)
                if active:
                    for label, (total, n_done) in outcome.progress.items():
                        progress.append(
                            {"job_id": task.job_id, "label": label, "total": total, "done": n_done}
                        )
                if subtasks:
                    state = TaskState.COMPUTED
                elif outcome.subtasks:
                    # the job stopped meanwhile and this task's subtasks were dropped: its subtree
                    # is not done, so a retry of the job must run it again
                    state = TaskState.CANCELED if task.job_id in job_canceled else TaskState.SKIPPED
                else:
                    state = TaskState.COMPLETED
                finished.append(
                    {
                        "id": task.id,
                        "state": state.value,
                        "pending_children": len(subtasks),
                        "display": outcome.display,
                        "now": now,
                    }
                )
                if state == TaskState.COMPLETED:
                    done.append(_Done(task.id, task.job_id, task.parent_id, task.has_dependents))
            if finished:
                await tx.executemany("task_finish", finished)
            if progress:
                await tx.executemany("progress_add", progress)
            failed_done, failed_jobs = await self._apply_failures(tx, failures, job_active, now)
            done += failed_done
            if await self._cascade(tx, done, now):
                wake = None
            for job_id in failed_jobs:
                await tx.execute("job_fail", {"id": job_id, "now": now})
                await tx.execute("job_skip_queued", {"id": job_id})
            if logged:
                await self._save_logs(tx, runner_id, accepted, held)
        self._announce({held[o.task_id].job_id for o in accepted})
        if wake is None or wake:
            self._notify(wake)
        if failed_jobs:
            self._notify({STOPPED_SIGNAL})  # runners holding their tasks cancel them
        return len(accepted)

    # -- logs ------------------------------------------------------------------------------------
    #: the bounds of the kept log records (see ``swath.store.base.MAX_TASK_LOGS``)
    max_task_logs: int = MAX_TASK_LOGS
    max_job_logs: int = MAX_JOB_LOGS

    async def _save_logs(
        self,
        tx: Tx,
        runner_id: str,
        outcomes: Sequence[TaskOutcome],
        held: Mapping[str, _Held],
    ) -> None:
        """Insert the log records of accepted outcomes, then drop the oldest records of their
        tasks and jobs beyond the bounds, counting the drops per task (the marker records)."""
        rows = []
        drops: Counter[tuple[str, str]] = Counter()
        for outcome in outcomes:
            task = held[outcome.task_id]
            if outcome.logs_dropped:
                drops[task.id, task.job_id] += outcome.logs_dropped
            rows += [
                {
                    "job_id": task.job_id,
                    "task_id": task.id,
                    "runner": runner_id,
                    "created_at": e.created_at,
                    "level": e.level,
                    "message": e.message,
                    "fields": e.fields,
                }
                for e in outcome.logs
            ]
        await tx.executemany("log_insert", rows)
        jobs: set[str] = set()
        for outcome in outcomes:
            if outcome.logs:
                task = held[outcome.task_id]
                jobs.add(task.job_id)
                params = {"task_id": task.id, "keep": self.max_task_logs}
                dropped = await tx.execute("log_trim_task", params)
                if dropped:
                    drops[task.id, task.job_id] += dropped
        for job_id in sorted(jobs):
            params = {"job_id": job_id, "keep": self.max_job_logs}
            for r in await tx.fetchall("log_trim_job", params):
                drops[r["task_id"], job_id] += 1
        await tx.executemany(
            "log_drops_add",
            [
                {"task_id": task_id, "job_id": job_id, "dropped": n}
                for (task_id, job_id), n in sorted(drops.items())
            ],
        )

    async def task_logs(
        self,
        job_id: str,
        *,
        task_id: str | None = None,
        level: int = 0,
        after: int = 0,
        limit: int = 100_000,
    ) -> list[TaskLogRecord]:
        params = {
            "job_id": job_id,
            "task_id": task_id,
            "level": int(level),
            "after": int(after),
            "limit": int(limit),
        }
        async with self._transaction() as tx:
            rows = await tx.fetchall("log_query", params)
            drops = await tx.fetchall("log_drops", params) if after <= 0 else []
        records = [
            TaskLogRecord(
                id=int(r["id"]), job_id=r["job_id"], task_id=r["task_id"], task_name=r["name"],
                task_version=r["version"], runner_id=r["runner"],
                created_at=float(r["created_at"]), level=int(r["level"]), message=r["message"],
                fields=_fields(r["fields"]),
            )
            for r in rows
        ]  # fmt: skip
        if not drops or level > logging.WARNING:
            return records
        first: dict[str, int] = {}
        for i, record in enumerate(records):
            first.setdefault(record.task_id, i)
        markers: list[tuple[int, TaskLogRecord]] = []
        for d in drops:
            at = first.get(d["task_id"], len(records))
            created = records[at].created_at if at < len(records) else 0.0
            n = int(d["dropped"])
            markers.append(
                (
                    at,
                    TaskLogRecord(
                        id=0, job_id=job_id, task_id=d["task_id"], task_name=d["name"],
                        task_version=d["version"], runner_id="", created_at=created,
                        level=logging.WARNING,
                        message=f"{n} older log record{'s' if n != 1 else ''} of this task "
                        "dropped (a store keeps the newest "
                        f"{self.max_task_logs} per task and {self.max_job_logs} per job)",
                        dropped=n,
                    ),
                )
            )  # fmt: skip
        for at, marker in sorted(markers, key=lambda m: m[0], reverse=True):
            records.insert(at, marker)
        return records

    # -- runners ---------------------------------------------------------------------------------
    async def runner_alive(self, runner: RunnerInfo) -> None:
        now = time.time()
        params = {
            "id": runner.id,
            "cluster": runner.cluster,
            "host": runner.host,
            "pid": int(runner.pid),
            "concurrency": int(runner.concurrency),
            "lease": float(runner.lease),
            "started_at": float(runner.started_at),
            "tasks": int(runner.tasks),
            "now": now,
        }
        async with self._transaction() as tx:
            await tx.execute("runner_upsert", params)
            await tx.execute("runners_expire", {"before": now - RUNNER_EXPIRY})

    async def runner_stopped(self, runner_id: str) -> None:
        async with self._transaction() as tx:
            await tx.execute("runner_delete", {"id": runner_id})

    async def list_runners(self) -> list[RunnerInfo]:
        async with self._transaction() as tx:
            return records(await tx.fetchall("runner_list", {}), RunnerInfo)

    async def list_leases(self, limit: int = 1000) -> list[LeaseInfo]:
        async with self._transaction() as tx:
            return records(await tx.fetchall("lease_list", {"limit": int(limit)}), LeaseInfo)

    async def queue_depth(self) -> dict[str, int]:
        async with self._transaction() as tx:
            rows = await tx.fetchall("queue_depth", {})
        return {r["cluster"]: int(r["queued"]) for r in rows}

    # -- automations -----------------------------------------------------------------------------
    async def create_automation(self, automation: AutomationInfo) -> AutomationInfo:
        async with self._transaction() as tx:
            await self._check_clusters(tx, {automation.cluster})
            params = msgspec.structs.asdict(automation)
            params["paused"] = int(automation.paused)
            if not await tx.execute("automation_insert", params):
                raise ValueError(f"an automation named {automation.name!r} exists already")
        return automation

    async def get_automation(self, key: str) -> AutomationInfo | None:
        async with self._transaction() as tx:
            rows = await tx.fetchall("automation_get", {"key": key})
        return _automation(rows[0]) if rows else None

    async def list_automations(self) -> list[AutomationInfo]:
        async with self._transaction() as tx:
            rows = await tx.fetchall("automation_list", {})
        return [_automation(row) for row in rows]

    async def pause_automation(self, automation_id: str, paused: bool) -> AutomationInfo | None:
        async with self._transaction() as tx:
            rows = await tx.fetchall("automation_lock", {"id": automation_id})
            if not rows:
                return None
            await tx.execute("automation_set_paused", {"id": automation_id, "paused": int(paused)})
            if not paused and rows[0]["paused"] and rows[0]["kind"] == "cron":
                # the ticks of the pause are skipped, not caught up
                await tx.execute("automation_advance", {"id": automation_id, "cursor": time.time()})
            found = await tx.fetchall("automation_get", {"key": automation_id})
        return _automation(found[0]) if found else None

    async def delete_automation(self, automation_id: str) -> bool:
        async with self._transaction() as tx:
            await tx.execute("automation_firings_delete", {"id": automation_id})
            return bool(await tx.execute("automation_delete", {"id": automation_id}))

    async def fired_keys(self, automation_id: str, keys: Sequence[str]) -> set[str]:
        if not keys:
            return set()
        async with self._transaction() as tx:
            rows = await tx.fetchall(
                "automation_fired", {"id": automation_id, "keys": json.dumps(list(keys))}
            )
        return {r["key"] for r in rows}

    async def fire_automation(
        self, automation_id: str, firings: Sequence[Firing], cursor: float | None = None
    ) -> list[str]:
        now = time.time()
        submitted: list[str] = []
        clusters: set[str] = set()
        async with self._transaction() as tx:
            rows = await tx.fetchall("automation_lock", {"id": automation_id})
            if not rows:
                raise UnknownAutomationError(f"no automation with id {automation_id!r}")
            if rows[0]["paused"]:
                return []
            current = float(rows[0]["cursor"])
            for firing in firings:
                if firing.at is not None and firing.at <= current:
                    continue  # a tick decided already (fired, or skipped by the catch-up policy)
                params = {
                    "automation_id": automation_id,
                    "key": firing.key,
                    "job_id": firing.job_id,
                    "now": now,
                }
                if not await tx.execute("automation_firing_insert", params):
                    continue  # fired already, by this process or another
                root = firing.root
                await self._insert_job(
                    tx, firing.job_id, firing.name, root.cluster, [root], now, firing.trigger
                )
                submitted.append(firing.job_id)
                clusters.add(root.cluster)
            if cursor is not None:
                await tx.execute("automation_advance", {"id": automation_id, "cursor": cursor})
        if clusters:
            self._notify(clusters)
        return submitted

    # -- the rules -------------------------------------------------------------------------------
    async def _insert_tasks(
        self, tx: Tx, job_id: str, parent_id: str | None, tasks: Sequence[NewTask], now: float
    ) -> None:
        depended = {dep for t in tasks for dep in t.depends_on}
        ids = {t.id for t in tasks}
        unknown = depended - ids
        if unknown:
            raise ValueError(f"depends_on names tasks outside this batch: {sorted(unknown)}")
        await self._check_clusters(tx, {t.cluster for t in tasks})
        versions = {v: version_numbers(v) for v in {t.version for t in tasks}}
        # In slices: the rows of 100,000 subtasks at once took 120 MiB (a dict per row) and the
        # garbage collector's full passes over them; a slice's rows die young.
        for first in range(0, len(tasks), INSERT_SLICE):
            await self._insert_slice(
                tx, job_id, parent_id, tasks[first : first + INSERT_SLICE], depended, versions, now
            )
        deps = [
            {"task_id": t.id, "depends_on": d} for t in tasks for d in sorted(set(t.depends_on))
        ]
        if deps:
            await tx.executemany("dep_insert", deps)

    async def _insert_slice(
        self,
        tx: Tx,
        job_id: str,
        parent_id: str | None,
        tasks: Sequence[NewTask],
        depended: set[str],
        versions: Mapping[str, tuple[int, int]],
        now: float,
    ) -> None:
        await tx.executemany(
            "task_insert",
            [
                {
                    "id": t.id,
                    "job_id": job_id,
                    "parent_id": parent_id,
                    "cluster": t.cluster,
                    "name": t.name,
                    "version": t.version,
                    "version_major": versions[t.version][0],
                    "version_minor": versions[t.version][1],
                    "timeout": t.timeout,
                    "traceparent": t.traceparent,
                    "input": t.input,
                    "display": t.display,
                    "max_retries": t.max_retries,
                    "optional": int(t.optional),
                    "pending_deps": len(set(t.depends_on)),
                    "has_dependents": int(t.id in depended),
                    "now": now,
                }
                for t in tasks
            ],
        )

    async def _apply_failures(
        self,
        tx: Tx,
        failures: Sequence[tuple[_Held, TaskFailure]],
        job_active: Mapping[str, bool],
        now: float,
    ) -> tuple[list[_Done], set[str]]:
        """Retry, FAILED_OPTIONAL or FAILED (+ the job) for each failure. Returns the tasks that
        count as done (optional failures) and the jobs that fail."""
        done: list[_Done] = []
        failed_jobs: set[str] = set()
        for task, failure in failures:
            err = {
                "id": task.id,
                "display": failure.display,
                "error_type": failure.error.type,
                "error_message": failure.error.message,
                "error_traceback": failure.error.traceback,
                "now": now,
            }
            active = job_active.get(task.job_id, True)
            if active and task.retry_count < task.max_retries:
                await tx.execute(
                    "task_retry_later", {**err, "run_after": now + failure.retry_delay}
                )
            elif active and task.optional:
                await tx.execute("task_fail", {**err, "state": TaskState.FAILED_OPTIONAL.value})
                done.append(_Done(task.id, task.job_id, task.parent_id, task.has_dependents))
            elif active and await tx.fetchall("optional_ancestor", {"id": task.id}):
                # inside an optional subtask's subtree the failure stops at that branch (as in
                # Tilebox): recorded FAILED_OPTIONAL, what depended on it SKIPPED, the job goes on
                await tx.execute("task_fail", {**err, "state": TaskState.FAILED_OPTIONAL.value})
                done.append(_Done(task.id, task.job_id, task.parent_id, False))
                for skipped in await self._skip_dependents(tx, task.id, now):
                    done.append(_Done(skipped, task.job_id, task.parent_id, False))
            else:
                await tx.execute("task_fail", {**err, "state": TaskState.FAILED.value})
                if active:
                    failed_jobs.add(task.job_id)
        return done, failed_jobs

    async def _skip_dependents(self, tx: Tx, task_id: str, now: float) -> list[str]:
        """SKIP every queued task that depends on ``task_id``, directly or through other
        dependents (all are its siblings: ``depends_on`` names tasks of one batch)."""
        skipped: list[str] = []
        todo = [task_id]
        while todo:
            for row in await tx.fetchall("dependents_of", {"id": todo.pop()}):
                dependent = row["task_id"]
                if await tx.execute("task_skip", {"id": dependent, "now": now}):
                    skipped.append(dependent)
                    todo.append(dependent)
        return skipped

    async def _cascade(self, tx: Tx, done: list[_Done], now: float) -> bool:
        """Tasks in ``done`` finished their subtree: release their dependents, count them off
        their parents, and complete parents (and jobs) whose last subtask this was, recursively.
        Returns True if dependents were released (some task may have become ready)."""
        released = False
        while done:
            with_dependents = [{"id": d.id} for d in done if d.has_dependents]
            if with_dependents:
                await tx.executemany("dependents_release", with_dependents)
                released = True
            roots = [{"id": d.job_id, "now": now} for d in done if d.parent_id is None]
            if roots:
                await tx.executemany("job_complete", roots)
            parents = Counter(d.parent_id for d in done if d.parent_id is not None)
            done = [
                _Done(r["id"], r["job_id"], r["parent_id"], bool(r["has_dependents"]))
                for r in await self._count_off(tx, parents, now)
            ]
        return released

    async def _expire_leases(self, tx: Tx, now: float) -> set[str]:
        """Re-queue (or, lost too often, fail) the tasks whose lease ran out before ``now``;
        returns their jobs."""
        rows = await tx.fetchall("expired_leases", {"now": now})
        if not rows:
            return set()
        lost: list[tuple[_Held, TaskFailure]] = []
        requeue = []
        job_active: dict[str, bool] = {}
        for r in rows:
            lost_count = r["lost_count"]
            if lost_count + 1 > MAX_LOST:  # lost more than MAX_LOST times
                held = _Held.of(r, retries=False)  # lost too often: it fails, no retry
                error = ErrorInfo(
                    "RunnerLostError",
                    f"the runner of this task was lost {lost_count + 1} times (lease expired)",
                    "",
                )
                lost.append((held, TaskFailure(held.id, error)))
                states = await tx.fetchall("job_state_for_update", {"id": held.job_id})
                job_active[held.job_id] = bool(states) and states[0]["state"] in (
                    "QUEUED",
                    "RUNNING",
                )
            else:
                requeue.append({"id": r["id"], "lost": 1})
        if requeue:
            await tx.executemany("task_requeue_lost", requeue)
        if lost:
            for held, _ in lost:
                await tx.execute("task_requeue_lost", {"id": held.id, "lost": 1})
            done, failed_jobs = await self._apply_failures(tx, lost, job_active, now)
            await self._cascade(tx, done, now)
            for job_id in failed_jobs:
                await tx.execute("job_fail", {"id": job_id, "now": now})
                await tx.execute("job_skip_queued", {"id": job_id})
        return {r["job_id"] for r in rows}


class _Held:
    __slots__ = (
        "cluster",
        "has_dependents",
        "id",
        "job_id",
        "max_retries",
        "optional",
        "parent_id",
        "retry_count",
    )

    def __init__(
        self,
        id: str,
        job_id: str,
        parent_id: str | None,
        cluster: str,
        retry_count: int,
        max_retries: int,
        optional: int,
        has_dependents: int,
    ) -> None:
        self.id = id
        self.job_id = job_id
        self.parent_id = parent_id
        self.cluster = cluster
        self.retry_count = retry_count
        self.max_retries = max_retries
        self.optional = bool(optional)
        self.has_dependents = bool(has_dependents)

    @classmethod
    def of(cls, r: Row, *, retries: bool = True) -> _Held:
        """From a ``held_tasks`` row, or (``retries=False``) an ``expired_leases`` row, which has
        no retry columns: a task lost too often fails without a retry."""
        return cls(
            r["id"], r["job_id"], r["parent_id"], r["cluster"],
            r["retry_count"] if retries else 0,
            r["max_retries"] if retries else 0,
            r["optional"], r["has_dependents"],
        )  # fmt: skip


class _Done:
    __slots__ = ("has_dependents", "id", "job_id", "parent_id")

    def __init__(self, id: str, job_id: str, parent_id: str | None, has_dependents: bool) -> None:
        self.id = id
        self.job_id = job_id
        self.parent_id = parent_id
        self.has_dependents = has_dependents


def _stats(rows: Iterable[Row]) -> ExecutionStats:
    by_state: dict[TaskState, int] = {}
    starts: list[float] = []
    stops: list[float] = []
    compute = 0.0
    for r in rows:
        first, last, seconds = r["first_start"], r["last_stop"], r["compute"]
        by_state[TaskState(r["state"])] = int(r["tasks"])
        if first is not None:
            starts.append(float(first))
        if last is not None:
            stops.append(float(last))
        if seconds is not None:
            compute += max(0.0, float(seconds))
    return ExecutionStats(
        total_tasks=sum(by_state.values()),
        tasks_by_state=dict(sorted(by_state.items())),
        first_task_started_at=min(starts, default=None),
        last_task_stopped_at=max(stops, default=None),
        compute_time=compute,
    )


def records(rows: Sequence[Row], cls: type[S]) -> list[S]:
    """``rows`` as ``cls`` records (msgspec structs), matched by column name: the columns must
    be the struct's fields, in order (checked once per result), so each row is then built
    without a lookup per column: the claim's hot path."""
    if not rows:
        return []
    fields = cls.__struct_fields__
    if tuple(rows[0].keys()) != fields:
        raise StoreError(f"columns {tuple(rows[0].keys())} do not make a {cls.__name__} {fields}")
    return [cls(*row) for row in rows]


def _fields(text: str) -> dict[str, object]:
    try:
        found = json.loads(text)
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _cluster(row: Row) -> ClusterInfo:
    return ClusterInfo(row["slug"], row["name"], row["created_at"])


def _automation(row: Row) -> AutomationInfo:
    return AutomationInfo(
        id=row["id"], name=row["name"], kind=row["kind"], cluster=row["cluster"],
        task_name=row["task_name"], task_version=row["task_version"], input=bytes(row["input"]),
        max_retries=int(row["max_retries"]), timeout=row["timeout"], schedule=row["schedule"],
        timezone=row["timezone"], catch_up=row["catch_up"], url=row["url"], glob=row["glob"],
        paused=bool(row["paused"]), cursor=float(row["cursor"]),
        created_at=float(row["created_at"]),
    )  # fmt: skip


def _job(row: Row, progress: Iterable[Row], stats: Iterable[Row] = ()) -> JobInfo:
    return JobInfo(
        id=row["id"],
        name=row["name"],
        cluster=row["cluster"],
        state=JobState(row["state"]),
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        root_task_id=row["root_task_id"],
        progress=[ProgressInfo(p["label"], p["total"], p["done"]) for p in progress],
        execution_stats=_stats(stats),
        trigger=decode_trigger(row["trigger_json"]),
    )


__all__ = ["SQLJobStore", "Tx", "load_migrations", "load_queries"]
