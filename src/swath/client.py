"""The client: jobs, clusters and runners over one job store (docs/jobs.md).

Every method that talks to the store is a coroutine: use it with ``await`` in async code, or use
:class:`swath.BlockingClient` (the same methods, blocking) in scripts and notebooks. Calling one
where no event loop runs (a script that forgot ``await``, or Tilebox code ported as it is) is a
clear ``RuntimeError`` at once, not a coroutine that is never run.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import os
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, Self, TypeVar, overload

from swath import _observe
from swath._validate import check_text
from swath.cache import Cache, LocalFileSystemCache, cache_from_url
from swath.context import check_max_retries, task_timeout
from swath.diagram import DiagramFormat, JobDiagram, render
from swath.diagram import mermaid as mermaid
from swath.runner import Cleanup, Runner
from swath.store.base import (
    DEFAULT_CLUSTER,
    ClusterInfo,
    ExecutionStats,
    JobInfo,
    JobState,
    JobStore,
    LeaseInfo,
    NewTask,
    RunnerInfo,
    TaskInfo,
    TaskLogRecord,
    UnknownClusterError,
    UnknownJobError,
    new_id,
    store_from_url,
)
from swath.task import Task, encode_input

if TYPE_CHECKING:
    from swath.automations import AutomationClient

Job = JobInfo
Cluster = ClusterInfo
FINISHED_JOB_STATES = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELED})
#: Tilebox's job state names, as swath calls them
TILEBOX_JOB_STATES = {"SUBMITTED": JobState.QUEUED, "STARTED": JobState.RUNNING}
#: The runner cache when neither the client nor ``$SWATH_CACHE_URL`` names one
DEFAULT_CACHE_ROOT = "cache"

P = ParamSpec("P")
T = TypeVar("T")


def needs_event_loop(
    method: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """Make a coroutine method refuse, at the call, to be called where no event loop runs."""

    @functools.wraps(method)
    def call(*args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, T]:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            name = method.__qualname__
            raise RuntimeError(
                f"{name}() is a coroutine of the async swath.Client and no event loop is "
                f"running here: write `await ...{method.__name__}(...)` inside async code (run "
                "with asyncio.run), or use swath.BlockingClient, whose methods block, in "
                "scripts and notebooks"
            ) from None
        return method(*args, **kwargs)

    return call


def _job_id(job: Job | str) -> str:
    return job.id if isinstance(job, JobInfo) else str(job)


def _log_level(level: int | str | None) -> int:
    """A ``logging`` level number from a number or a name (``"info"``, ``"WARNING"``)."""
    if level is None:
        return 0
    if isinstance(level, bool):
        raise TypeError(f"a log level is a logging level number or name, not {level!r}")
    if isinstance(level, int):
        return level
    if isinstance(level, str):
        found = logging.getLevelNamesMapping().get(level.strip().upper())
        if found is not None:
            return found
    raise ValueError(
        f"unknown log level {level!r}: use DEBUG, INFO, WARNING, ERROR, CRITICAL or a number"
    )


def _slug(cluster: Cluster | str) -> str:
    return cluster.slug if isinstance(cluster, ClusterInfo) else cluster


def _timestamp(value: float | dt.date | str | None) -> float | None:
    if value is None or isinstance(value, int | float):
        return value
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.astimezone()
        return value.timestamp()
    if isinstance(value, dt.date):
        return dt.datetime.combine(value, dt.time()).astimezone().timestamp()
    raise TypeError(f"expected a datetime or Unix seconds, not {type(value).__name__}")


TimeLike = float | dt.datetime | dt.date | str


def _extent(extent: object) -> tuple[float | None, float | None]:
    """Tilebox's ``temporal_extent``: ``(start, end)`` meaning ``[start, end)``, an object with
    ``.start`` and ``.end`` (Tilebox's TimeInterval), or one datetime/date: that whole instant or
    day."""
    if extent is None:
        return None, None
    if isinstance(extent, tuple | list) and len(extent) == 2:
        return _timestamp(extent[0]), _timestamp(extent[1])
    start, end = getattr(extent, "start", None), getattr(extent, "end", None)
    if start is not None and end is not None:
        return _timestamp(start), _timestamp(end)
    if isinstance(extent, dt.date) and not isinstance(extent, dt.datetime):
        day = _timestamp(extent)
        assert day is not None
        return day, _timestamp(extent + dt.timedelta(days=1))
    instant = _timestamp(extent)  # type: ignore[arg-type]
    return instant, None if instant is None else instant + 1e-6


def _job_states(states: object) -> list[JobState] | None:
    if states is None:
        return None
    items = [states] if isinstance(states, str) else list(states)  # type: ignore[call-overload]
    out = []
    for item in items:
        name = getattr(item, "name", item) if not isinstance(item, str) else item
        name = str(name).upper()
        out.append(TILEBOX_JOB_STATES.get(name) or JobState(name))
    return out


class Client:
    """``Client()`` (``$SWATH_DATABASE_URL`` or ``./swath.db``), ``Client("sqlite:///path.db")``,
    ``Client(":memory:")``, ``Client("postgresql://...")``, or ``Client(store=...)``.

    ``cache`` is the runner cache of runners made without one: a backend, or its URL; by default
    ``$SWATH_CACHE_URL``, else the local directory ``./cache``.

    Use it as an async context manager (``async with Client() as client``); it also opens its
    store on first use. In scripts and notebooks use :class:`swath.BlockingClient`."""

    def __init__(
        self,
        url: str | None = None,
        *,
        store: JobStore | None = None,
        cache: Cache | str | None = None,
    ) -> None:
        if store is not None and url is not None:
            raise ValueError("pass a URL or a store, not both")
        self.store: JobStore = store if store is not None else store_from_url(url)
        self._cache: Cache | None = cache_from_url(cache) if isinstance(cache, str) else cache
        self._open = False
        self._lock = asyncio.Lock()

    @property
    def cache(self) -> Cache:
        """The runner cache of runners made without one (made on first use)."""
        if self._cache is None:
            url = os.environ.get("SWATH_CACHE_URL")
            self._cache = cache_from_url(url) if url else LocalFileSystemCache(DEFAULT_CACHE_ROOT)
        return self._cache

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

    def automations(self) -> AutomationClient:
        """Cron schedules and storage-event triggers that submit jobs (swath.automations)."""
        from swath.automations import AutomationClient

        return AutomationClient(self)

    @overload
    def runner(
        self,
        tasks: Iterable[type[Task]],
        cache: Cache | None = None,
        cluster: Cluster | str = DEFAULT_CLUSTER,
        max_concurrency: int = 64,
        context: Any = None,
        lease: float = 30.0,
        *,
        grace: float = 30.0,
        retry_delay: float = 1.0,
        max_retry_delay: float = 300.0,
        poll_interval: tuple[float, float] = (0.05, 2.0),
        handle_signals: bool = False,
        cleanup: Cleanup = "never",
        max_threads: int | None = None,
        automations: bool = False,
    ) -> Runner: ...

    @overload
    def runner(
        self,
        cluster: Cluster | str | None = None,
        tasks: Iterable[type[Task]] | None = None,
        cache: Cache | None = None,
        context: Any = None,
        *,
        max_concurrency: int = 64,
        lease: float = 30.0,
        grace: float = 30.0,
        retry_delay: float = 1.0,
        max_retry_delay: float = 300.0,
        poll_interval: tuple[float, float] = (0.05, 2.0),
        handle_signals: bool = False,
        cleanup: Cleanup = "never",
        max_threads: int | None = None,
        automations: bool = False,
    ) -> Runner: ...

    def runner(self, *args: Any, **options: Any) -> Runner:
        """A runner for ``cluster`` that executes ``tasks`` with ``cache`` as the runner cache
        (each job's cache is its group named by the job id; by default the client's cache).

        Two call forms: swath's ``runner(tasks, cache, cluster="default", ...)`` and Tilebox's
        ``runner("cluster-slug", tasks=[...], cache=cache)``. ``context`` is exposed to tasks as
        ``context.runner_context`` (an async context manager is entered once for the runner's
        lifetime). Options: ``max_concurrency`` (tasks at once, 64), ``lease`` (seconds without
        a heartbeat after which another runner may take a task, 30), ``grace`` (seconds
        in-flight tasks get on stop, 30), ``retry_delay`` (first retry back-off, doubled each
        retry, 1.0) up to ``max_retry_delay`` (300), ``poll_interval`` (``(min, max)`` polling
        back-off, ``(0.05, 2.0)``), ``handle_signals`` (stop on SIGINT/SIGTERM, False),
        ``cleanup`` (clear a job's cache when it ends: ``"never"``, ``"on-success"``,
        ``"always"``), ``max_threads`` (worker threads for sync tasks), ``automations``
        (evaluate the automations of its cluster while it runs, False: see
        docs/automations.md)."""
        tilebox_form = bool(args) and isinstance(args[0], str | ClusterInfo | None)
        if not args and "tasks" not in options:
            tilebox_form = True
        bound = (_tilebox_runner_args if tilebox_form else _runner_args)(*args, **options)
        cache = bound.pop("cache")
        tasks = bound.pop("tasks")
        cluster = bound.pop("cluster")
        return _OpeningRunner(
            self,
            [] if tasks is None else tasks,
            self.cache if cache is None else cache,
            cluster=DEFAULT_CLUSTER if cluster is None else _slug(cluster),
            **bound,
        )


def _runner_args(
    tasks: Iterable[type[Task]],
    cache: Cache | None = None,
    cluster: Cluster | str = DEFAULT_CLUSTER,
    max_concurrency: int = 64,
    context: Any = None,
    lease: float = 30.0,
    *,
    grace: float = 30.0,
    retry_delay: float = 1.0,
    max_retry_delay: float = 300.0,
    poll_interval: tuple[float, float] = (0.05, 2.0),
    handle_signals: bool = False,
    cleanup: Cleanup = "never",
    max_threads: int | None = None,
    automations: bool = False,
) -> dict[str, Any]:
    return dict(locals())


def _tilebox_runner_args(
    cluster: Cluster | str | None = None,
    tasks: Iterable[type[Task]] | None = None,
    cache: Cache | None = None,
    context: Any = None,
    *,
    max_concurrency: int = 64,
    lease: float = 30.0,
    grace: float = 30.0,
    retry_delay: float = 1.0,
    max_retry_delay: float = 300.0,
    poll_interval: tuple[float, float] = (0.05, 2.0),
    handle_signals: bool = False,
    cleanup: Cleanup = "never",
    max_threads: int | None = None,
    automations: bool = False,
) -> dict[str, Any]:
    return dict(locals())


class _OpeningRunner(Runner):
    """A runner that opens its client's store before it runs."""

    def __init__(self, client: Client, *args: Any, **kwargs: Any) -> None:
        super().__init__(client.store, *args, **kwargs)
        self._client = client

    @needs_event_loop
    async def run_all(self) -> None:
        """Run until no runnable work for this cluster remains (tasks queued, retrying after a
        back-off, or running elsewhere and so able to submit more)."""
        await super().run_all()

    @needs_event_loop
    async def run_forever(self) -> None:
        """Run until cancelled or :meth:`stop` is called."""
        await super().run_forever()

    async def _run(self, *, until_idle: bool) -> None:
        await self._client._ensure_open()
        await super()._run(until_idle=until_idle)


class JobClient:
    """``client.jobs()``."""

    def __init__(self, client: Client) -> None:
        self._client = client

    @needs_event_loop
    async def submit(
        self,
        name: str,
        task: Task | Sequence[Task],
        cluster: Cluster | str | Sequence[Cluster | str] | None = DEFAULT_CLUSTER,
        max_retries: int = 0,
        timeout: float | None = None,  # noqa: ASYNC109 (a time limit for the task, not this call)
    ) -> Job:
        """Submit a job whose root task is ``task``, or whose root tasks are ``task`` (a list,
        as in Tilebox: the job completes when all of them have). ``cluster`` is one cluster for
        every root task (None is ``default``) or a list with one per root task. ``timeout``
        (seconds; default: each task class's) fails an execution of a root task that runs
        longer. ``UnknownClusterError`` if a cluster does not exist, ``TypeError`` if an input
        cannot be serialized."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a job name is a non-empty str, not {name!r}")
        check_text(name, "a job name")  # NUL or a lone surrogate: InvalidTextError
        check_max_retries(max_retries)
        tasks = list(task) if isinstance(task, Sequence) else [task]
        if not tasks:
            raise ValueError("submit needs at least one root task")
        if cluster is None or isinstance(cluster, str | ClusterInfo):
            clusters = [DEFAULT_CLUSTER if cluster is None else _slug(cluster)] * len(tasks)
        else:
            clusters = [_slug(c) for c in cluster]
            if len(clusters) != len(tasks):
                raise ValueError(
                    f"{len(clusters)} clusters for {len(tasks)} root tasks: give one cluster, "
                    "or one per root task"
                )
        roots = []
        otel = _observe.otel()
        traceparent = None if otel is None else otel.current_traceparent()
        for root, slug in zip(tasks, clusters, strict=True):
            data = encode_input(root)  # TypeError for non-tasks and unserializable inputs
            task_name, version = type(root).identifier()
            limit = task_timeout(root, timeout)
            roots.append(
                NewTask(
                    new_id(),
                    task_name,
                    version,
                    data,
                    slug,
                    max_retries=max_retries,
                    timeout=limit,
                    traceparent=traceparent,
                )
            )
        store = await self._client._ensure_open()
        return await store.submit_job(new_id(), name, clusters[0], roots)

    @needs_event_loop
    async def find(self, job: Job | str, *, execution_stats: bool = True) -> Job:
        """The job as it is now, with its ``execution_stats`` (as Tilebox's ``find``; they take
        a scan of all its tasks: pass ``execution_stats=False`` to poll a large job);
        ``UnknownJobError`` if there is none."""
        store = await self._client._ensure_open()
        found = await store.get_job(_job_id(job), stats=execution_stats)
        if found is None:
            raise UnknownJobError(f"no job with id {_job_id(job)!r}")
        return found

    @needs_event_loop
    async def query(
        self,
        temporal_extent: tuple[TimeLike, TimeLike] | dt.date | Any | None = None,
        *,
        job_states: JobState | str | Sequence[JobState | str] | None = None,
        state: JobState | str | Sequence[JobState | str] | None = None,
        name: str | None = None,
        since: TimeLike | None = None,
        until: TimeLike | None = None,
        limit: int = 100,
        before: Job | tuple[float, str] | None = None,
    ) -> list[Job]:
        """Jobs newest first, by state(s), exact name and creation time.

        Tilebox's form: ``temporal_extent`` is ``(start, end)`` for ``[start, end)`` (datetimes,
        dates, ISO strings or Unix seconds), an object with ``.start`` and ``.end``, or one
        date (that day); ``job_states`` takes Tilebox's names too (``SUBMITTED`` is QUEUED,
        ``STARTED`` is RUNNING). swath's form: ``state=``, ``since=``, ``until=``.

        Paging: pass a page's last job as ``before`` for the next page (the jobs after it in
        this order, newest first and then by id: none lost or repeated, even among jobs created
        at the same instant)."""
        if job_states is not None and state is not None:
            raise ValueError("pass job_states or state, not both")
        if temporal_extent is not None and (since is not None or until is not None):
            raise ValueError("pass temporal_extent or since/until, not both")
        states = _job_states(job_states if job_states is not None else state)
        if temporal_extent is not None:
            start, end = _extent(temporal_extent)
        else:
            start, end = _timestamp(since), _timestamp(until)
        if isinstance(before, JobInfo):
            before = (before.created_at, before.id)
        elif before is not None:
            before = (float(before[0]), str(before[1]))
        store = await self._client._ensure_open()
        return await store.query_jobs(
            states=states, name=name, since=start, until=end, limit=limit, before=before
        )

    @needs_event_loop
    async def cancel(self, job: Job | str) -> int:
        """Stop queued work of the job (running tasks finish; their subtasks are dropped);
        returns how many queued tasks were canceled."""
        store = await self._client._ensure_open()
        return await store.cancel_job(_job_id(job))

    @needs_event_loop
    async def retry(self, job: Job | str) -> int:
        """Re-queue the job's failed tasks (and what their failure skipped); returns how many
        failed tasks were re-queued."""
        store = await self._client._ensure_open()
        return await store.retry_job(_job_id(job))

    @needs_event_loop
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
            found = await self.find(job, execution_stats=False)
            if found.state in FINISHED_JOB_STATES:
                return await self.find(job)
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {found.id} is still {found.state} after {timeout} s")
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    @needs_event_loop
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

    @needs_event_loop
    async def diagram(self, job: Job | str, format: DiagramFormat = "mermaid") -> str:
        """The job's task graph: parent -> subtask edges, dotted dependency edges, one node per
        task labelled with its name (or display) and state. ``format``: ``"mermaid"`` (text),
        ``"dot"`` (Graphviz text) or ``"svg"`` (rendered by Graphviz's ``dot`` program, which
        must be installed)."""
        tasks = await self.tasks(job)
        if format == "svg":
            return await asyncio.to_thread(render, tasks, format)
        return render(tasks, format)

    @needs_event_loop
    async def display(self, job: Job | str) -> JobDiagram:
        """The job's task graph as an object notebooks display (SVG with Graphviz, else the
        Mermaid text), as Tilebox's ``jobs().display``."""
        return JobDiagram(await self.tasks(job))

    @needs_event_loop
    async def logs(
        self,
        job: Job | str,
        task: TaskInfo | str | None = None,
        level: int | str | None = None,
        *,
        after: int = 0,
        limit: int = 100_000,
    ) -> list[TaskLogRecord]:
        """The log records the job's tasks wrote with ``context.logger`` (of ``task`` only, a
        task or its id, when given), at ``level`` or above (a ``logging`` level number or name:
        ``"WARNING"``), in the order they were committed (with their task's outcome). ``after``
        (a record's ``id``) gives only newer records, to follow a running job or page through
        its records ``limit`` at a time. Where the store
        dropped a task's oldest records (it keeps the newest per task and per job), a marker
        record (``dropped`` > 0) says how many. ``UnknownJobError`` if there is no such job."""
        job_id = _job_id(job)
        task_id = task.id if isinstance(task, TaskInfo) else task
        store = await self._client._ensure_open()
        records = await store.task_logs(
            job_id, task_id=task_id, level=_log_level(level), after=after, limit=limit
        )
        if not records and after <= 0 and await store.get_job(job_id) is None:
            raise UnknownJobError(f"no job with id {job_id!r}")
        return records

    @needs_event_loop
    async def execution_stats(self, job: Job | str) -> ExecutionStats:
        """``(await find(job)).execution_stats``."""
        return (await self.find(job)).execution_stats


class ClusterClient:
    """``client.clusters()``. The cluster ``default`` always exists."""

    def __init__(self, client: Client) -> None:
        self._client = client

    @needs_event_loop
    async def create(self, slug: str, name: str = "") -> Cluster:
        """Create a cluster named by ``slug`` (its display ``name`` defaults to the slug)."""
        store = await self._client._ensure_open()
        return await store.create_cluster(slug, name)

    @needs_event_loop
    async def update(self, cluster: Cluster | str, name: str | None = None) -> Cluster:
        """Change a cluster's display name (None leaves it); ``UnknownClusterError`` if there
        is no such cluster."""
        store = await self._client._ensure_open()
        slug = _slug(cluster)
        found = (
            await store.get_cluster(slug)
            if name is None
            else await store.rename_cluster(slug, check_text(name, "a cluster name"))
        )
        if found is None:
            raise UnknownClusterError(f"unknown cluster {slug!r}")
        return found

    @needs_event_loop
    async def all(self) -> list[Cluster]:
        store = await self._client._ensure_open()
        return await store.list_clusters()

    @needs_event_loop
    async def find(self, slug: Cluster | str) -> Cluster:
        store = await self._client._ensure_open()
        slug = _slug(slug)
        found = await store.get_cluster(slug)
        if found is None:
            raise UnknownClusterError(f"unknown cluster {slug!r}")
        return found

    @needs_event_loop
    async def delete(self, slug: Cluster | str) -> bool:
        store = await self._client._ensure_open()
        return await store.delete_cluster(_slug(slug))

    @needs_event_loop
    async def runners(self, cluster: Cluster | str | None = None) -> list[RunnerInfo]:
        """The runners that reported themselves (at start and with each heartbeat, every
        ``lease / 3`` seconds, busy or idle) and have not stopped, of ``cluster`` or of all:
        host, process, concurrency, ``last_heartbeat`` and how many tasks each held then. A
        runner silent for longer than its ``lease`` is probably gone (its leases run out and
        other runners take its tasks); its row goes after a day."""
        store = await self._client._ensure_open()
        found = await store.list_runners()
        if cluster is not None:
            slug = _slug(cluster)
            found = [r for r in found if r.cluster == slug]
        return found

    @needs_event_loop
    async def leases(self, limit: int = 1000) -> list[LeaseInfo]:
        """Which runner holds which task: every RUNNING task with its runner's id, its job and
        when its lease runs out, by runner (at most ``limit``)."""
        store = await self._client._ensure_open()
        return await store.list_leases(limit)
