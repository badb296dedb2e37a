"""The client: jobs, clusters and runners over one job store (API.md section 4)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Iterable, Sequence
from typing import Any, Self

from swath._validate import check_text
from swath.cache import Cache
from swath.runner import Runner
from swath.store.base import (
    DEFAULT_CLUSTER,
    ClusterInfo,
    JobInfo,
    JobState,
    JobStore,
    NewTask,
    TaskInfo,
    TaskState,
    UnknownClusterError,
    UnknownJobError,
    new_id,
    store_from_url,
)
from swath.task import Task, encode_input

Job = JobInfo
Cluster = ClusterInfo
FINISHED_JOB_STATES = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELED})


def _job_id(job: Job | str) -> str:
    return job.id if isinstance(job, JobInfo) else str(job)


def _timestamp(value: float | dt.datetime | None) -> float | None:
    if value is None or isinstance(value, int | float):
        return value
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.astimezone()
        return value.timestamp()
    raise TypeError(f"expected a datetime or Unix seconds, not {type(value).__name__}")


class Client:
    """``Client()`` (``$SWATH_DATABASE_URL`` or ``./swath.db``), ``Client("sqlite:///path.db")``,
    ``Client(":memory:")``, ``Client("postgresql://...")``, or ``Client(store=...)``.

    Use it as an async context manager (``async with Client() as client``); it also opens its
    store on first use."""

    def __init__(self, url: str | None = None, *, store: JobStore | None = None) -> None:
        if store is not None and url is not None:
            raise ValueError("pass a URL or a store, not both")
        self.store: JobStore = store if store is not None else store_from_url(url)
        self._open = False
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> Self:
        await self._ensure_open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _ensure_open(self) -> JobStore:
        if not self._open:
            async with self._lock:
                if not self._open:
                    await self.store.open()
                    self._open = True
        return self.store

    async def close(self) -> None:
        if self._open:
            self._open = False
            await self.store.close()

    def jobs(self) -> JobClient:
        return JobClient(self)

    def clusters(self) -> ClusterClient:
        return ClusterClient(self)

    def runner(
        self,
        tasks: Iterable[type[Task]],
        cache: Cache,
        cluster: str = DEFAULT_CLUSTER,
        max_concurrency: int = 64,
        context: Any = None,
        lease: float = 30.0,
        **options: Any,
    ) -> Runner:
        """A runner for ``cluster`` that executes ``tasks`` with ``cache`` as the runner cache
        (each job's cache is its group named by the job id). ``context`` is exposed to tasks as
        ``context.runner_context`` (an async context manager is entered once for the runner's
        lifetime). Options: ``grace`` (seconds in-flight tasks get on stop, 30),
        ``retry_delay`` (first retry back-off, doubled each retry, 1.0), ``poll_interval``
        (``(min, max)`` polling back-off, ``(0.05, 2.0)``), ``handle_signals`` (stop on
        SIGINT/SIGTERM, False), ``delete_job_cache`` (clear a job's cache once it completed,
        False), ``max_threads`` (for sync tasks)."""
        return _OpeningRunner(
            self,
            tasks,
            cache,
            cluster=cluster,
            max_concurrency=max_concurrency,
            context=context,
            lease=lease,
            **options,
        )


class _OpeningRunner(Runner):
    """A runner that opens its client's store before it runs."""

    def __init__(self, client: Client, *args: Any, **kwargs: Any) -> None:
        super().__init__(client.store, *args, **kwargs)
        self._client = client

    async def _run(self, *, until_idle: bool) -> None:
        await self._client._ensure_open()
        await super()._run(until_idle=until_idle)


class JobClient:
    """``client.jobs()``."""

    def __init__(self, client: Client) -> None:
        self._client = client

    async def submit(
        self,
        name: str,
        task: Task,
        cluster: str = DEFAULT_CLUSTER,
        max_retries: int = 0,
    ) -> Job:
        """Submit a job whose root task is ``task``; ``UnknownClusterError`` if ``cluster`` does
        not exist, ``TypeError`` if the task's input cannot be serialized."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a job name is a non-empty str, not {name!r}")
        check_text(name, "a job name")  # NUL or a lone surrogate: InvalidTextError
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
            raise ValueError(f"max_retries must be a non-negative int, not {max_retries!r}")
        data = encode_input(task)
        task_name, version = type(task).identifier()
        store = await self._client._ensure_open()
        root = NewTask(new_id(), task_name, version, data, cluster, max_retries=max_retries)
        return await store.submit_job(new_id(), name, cluster, root)

    async def find(self, job: Job | str) -> Job:
        """The job as it is now; ``UnknownJobError`` if there is none."""
        store = await self._client._ensure_open()
        found = await store.get_job(_job_id(job))
        if found is None:
            raise UnknownJobError(f"no job with id {_job_id(job)!r}")
        return found

    async def query(
        self,
        *,
        state: JobState | str | Sequence[JobState | str] | None = None,
        name: str | None = None,
        since: float | dt.datetime | None = None,
        until: float | dt.datetime | None = None,
        limit: int = 100,
    ) -> list[Job]:
        """Jobs newest first, by state(s), exact name and creation time in ``[since, until)``."""
        states = None
        if state is not None:
            items = [state] if isinstance(state, str) else list(state)
            states = [JobState(s) for s in items]
        store = await self._client._ensure_open()
        return await store.query_jobs(
            states=states, name=name, since=_timestamp(since), until=_timestamp(until), limit=limit
        )

    async def cancel(self, job: Job | str) -> int:
        """Stop queued work of the job (running tasks finish; their subtasks are dropped);
        returns how many queued tasks were canceled."""
        store = await self._client._ensure_open()
        return await store.cancel_job(_job_id(job))

    async def retry(self, job: Job | str) -> int:
        """Re-queue the job's failed tasks (and what their failure skipped); returns how many
        failed tasks were re-queued."""
        store = await self._client._ensure_open()
        return await store.retry_job(_job_id(job))

    async def wait(
        self,
        job: Job | str,
        timeout: float | None = None,  # noqa: ASYNC109
        poll_interval: float = 0.05,
    ) -> Job:
        """Wait until the job is COMPLETED, FAILED or CANCELED and return it (``TimeoutError``
        after ``timeout`` seconds)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = poll_interval
        while True:
            found = await self.find(job)
            if found.state in FINISHED_JOB_STATES:
                return found
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {found.id} is still {found.state} after {timeout} s")
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    async def tasks(self, job: Job | str) -> list[TaskInfo]:
        """The job's task tree: every task in creation order (the root first), each with its
        ``parent_id``, ``depends_on``, state, timings, retries and error (type, message, full
        traceback)."""
        store = await self._client._ensure_open()
        job_id = _job_id(job)
        tasks = await store.list_tasks(job_id)
        if not tasks and await store.get_job(job_id) is None:
            raise UnknownJobError(f"no job with id {job_id!r}")
        return tasks

    async def diagram(self, job: Job | str) -> str:
        """The job's task graph as Mermaid text: parent -> subtask edges, dotted dependency
        edges, one node per task labelled with its name (or display) and state."""
        return mermaid(await self.tasks(job))


_STATE_CLASS = {
    TaskState.COMPLETED: "done",
    TaskState.COMPUTED: "running",
    TaskState.RUNNING: "running",
    TaskState.FAILED: "failed",
    TaskState.FAILED_OPTIONAL: "optional",
    TaskState.SKIPPED: "stopped",
    TaskState.CANCELED: "stopped",
    TaskState.QUEUED: "queued",
}


#: characters a Mermaid label may hold as they are (inside "..."); any other is an entity
_MERMAID_SAFE = frozenset(" .,:_-/()+*=!?@%$'~^|")


def mermaid_text(text: str) -> str:
    """``text`` for a quoted Mermaid label: letters, digits and harmless punctuation as they
    are, every other character as an entity code (``#34;``), so that a task's name or display
    cannot close the label, start a line, add nodes or edges, or bring in HTML."""
    return "".join(
        ch if (ch.isalnum() and ch.isprintable()) or ch in _MERMAID_SAFE else f"#{ord(ch)};"
        for ch in text
    )


def mermaid(tasks: Sequence[TaskInfo]) -> str:
    """Mermaid flowchart text for a list of tasks (see ``JobClient.diagram``)."""
    index = {t.id: f"t{i}" for i, t in enumerate(tasks)}
    lines = ["graph TD"]
    for t in tasks:
        label = mermaid_text(t.display or t.name)
        lines.append(f'    {index[t.id]}["{label}<br/>{t.state.value}"]:::{_STATE_CLASS[t.state]}')
    for t in tasks:
        if t.parent_id in index:
            lines.append(f"    {index[t.parent_id]} --> {index[t.id]}")
        for dep in t.depends_on:
            if dep in index:
                lines.append(f"    {index[dep]} -.-> {index[t.id]}")
    lines += [
        "    classDef done fill:#d4edda,stroke:#28a745",
        "    classDef running fill:#fff3cd,stroke:#ffc107",
        "    classDef failed fill:#f8d7da,stroke:#dc3545",
        "    classDef optional fill:#fde2c8,stroke:#fd7e14",
        "    classDef stopped fill:#e2e3e5,stroke:#6c757d",
        "    classDef queued fill:#ffffff,stroke:#6c757d",
    ]
    return "\n".join(lines) + "\n"


class ClusterClient:
    """``client.clusters()``. The cluster ``default`` always exists."""

    def __init__(self, client: Client) -> None:
        self._client = client

    async def create(self, slug: str, name: str = "") -> Cluster:
        store = await self._client._ensure_open()
        return await store.create_cluster(slug, name)

    async def all(self) -> list[Cluster]:
        store = await self._client._ensure_open()
        return await store.list_clusters()

    async def find(self, slug: str) -> Cluster:
        store = await self._client._ensure_open()
        found = await store.get_cluster(slug)
        if found is None:
            raise UnknownClusterError(f"unknown cluster {slug!r}")
        return found

    async def delete(self, slug: str) -> bool:
        store = await self._client._ensure_open()
        return await store.delete_cluster(slug)
