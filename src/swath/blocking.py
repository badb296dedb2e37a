"""``swath.BlockingClient``: the client for scripts and notebooks, where no event loop runs.

It has the methods of :class:`swath.Client`, blocking: each call runs the async client's
coroutine on an event loop of its own, in a background thread that lives as long as the client,
and waits for the result. So a Tilebox script ports as it is::

    client = BlockingClient()
    job = client.jobs().submit("fib", Fibonacci(7))
    runner = client.runner("default", tasks=[Fibonacci, Sum], cache=InMemoryCache())
    runner.run_all()
    print(client.jobs().find(job).state)

Sync tasks run in the runner's worker threads as they do under ``Client``; their blocking job
cache runs its I/O on the client's loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime as dt
import threading
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any, Self, TypeVar, overload

from swath.automations import Automation, CatchUp
from swath.cache import Backend, Cache
from swath.cache.blocking import BlockingCache
from swath.client import (
    Client,
    Cluster,
    Job,
    TimeLike,
    _runner_args,
    _tilebox_runner_args,
)
from swath.diagram import DiagramFormat, JobDiagram
from swath.runner import Cleanup, Runner, RunnerStats
from swath.store.base import (
    DEFAULT_CLUSTER,
    ExecutionStats,
    JobState,
    JobStore,
    TaskInfo,
    TaskLogRecord,
)
from swath.task import Task

T = TypeVar("T")


class _Loop:
    """An event loop running in a daemon thread until :meth:`close`."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="swath-blocking-client", daemon=True
        )
        self._thread.start()

    def call(self, fn: Callable[..., Coroutine[Any, Any, T]], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` on the loop and wait for its result."""
        if not self._thread.is_alive():
            raise RuntimeError("this BlockingClient is closed")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            raise RuntimeError("BlockingClient called from its own event loop (a deadlock)")

        async def run() -> T:
            return await fn(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result()

    def close(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join()
        if not self.loop.is_closed():
            self.loop.close()


class BlockingClient:
    """:class:`swath.Client` for code without an event loop: the same constructor and methods,
    blocking. Use it as a context manager (``with BlockingClient() as client``) or call
    :meth:`close` when done."""

    def __init__(
        self,
        url: str | None = None,
        *,
        store: JobStore | None = None,
        cache: Cache | str | None = None,
    ) -> None:
        self._loop = _Loop()
        self.client = Client(url, store=store, cache=cache)
        self._entered = contextlib.AsyncExitStack()

    @property
    def store(self) -> JobStore:
        return self.client.store

    @property
    def cache(self) -> Cache:
        """The runner cache of runners made without one."""
        return self.client.cache

    def __enter__(self) -> Self:
        self._loop.call(self.client._ensure_open)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def blocking_cache(self, cache: Cache | None = None) -> BlockingCache:
        """A cache (by default the client's) as the blocking, Tilebox-style mapping, for
        scripts: ``client.blocking_cache(cache).group(job.id)["result"]``. Its I/O runs on the
        client's loop, where a backend is entered once (its connections opened) and left again
        when the client closes."""
        target = self.cache if cache is None else cache
        if isinstance(target, Backend):

            async def enter() -> None:
                await self._entered.enter_async_context(target)

            self._loop.call(enter)
        return BlockingCache(target, self._loop.loop)

    def close(self) -> None:
        """Close the store and stop the client's thread; the client cannot be used after."""
        with contextlib.suppress(RuntimeError):  # closed already
            self._loop.call(self._entered.aclose)
        with contextlib.suppress(RuntimeError):  # closed already
            self._loop.call(self.client.close)
        self._loop.close()

    def jobs(self) -> BlockingJobClient:
        return BlockingJobClient(self)

    def clusters(self) -> BlockingClusterClient:
        return BlockingClusterClient(self)

    def automations(self) -> BlockingAutomationClient:
        return BlockingAutomationClient(self)

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
    ) -> BlockingRunner: ...

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
    ) -> BlockingRunner: ...

    def runner(self, *args: Any, **options: Any) -> BlockingRunner:
        """:meth:`swath.Client.runner`, whose ``run_all`` and ``run_forever`` block."""
        # the same two call forms, checked the same way
        tilebox = (bool(args) and isinstance(args[0], str | Cluster | None)) or (
            not args and "tasks" not in options
        )
        (_tilebox_runner_args if tilebox else _runner_args)(*args, **options)
        return BlockingRunner(self._loop, self.client.runner(*args, **options))


class BlockingRunner:
    """A runner whose ``run_all`` and ``run_forever`` block; Ctrl-C stops it gracefully (no new
    claims, in-flight tasks get the grace period), then raises ``KeyboardInterrupt``."""

    def __init__(self, loop: _Loop, runner: Runner) -> None:
        self._loop = loop
        self.runner = runner

    @property
    def stats(self) -> RunnerStats:
        return self.runner.stats

    def run_all(self) -> None:
        """Run until no runnable work for this cluster remains."""
        self._run(self.runner.run_all)

    def run_forever(self) -> None:
        """Run until :meth:`stop` (from another thread) or Ctrl-C."""
        self._run(self.runner.run_forever)

    def stop(self) -> None:
        """Ask for a graceful stop (safe from any thread)."""
        self._loop.loop.call_soon_threadsafe(self.runner.stop)

    def _run(self, fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
        async def run() -> None:
            await fn()

        future = asyncio.run_coroutine_threadsafe(run(), self._loop.loop)
        try:
            future.result()
        except KeyboardInterrupt:
            self.stop()
            with contextlib.suppress(concurrent.futures.CancelledError):
                future.result()
            raise


class BlockingJobClient:
    """``BlockingClient.jobs()``: :class:`swath.JobClient`, blocking."""

    def __init__(self, client: BlockingClient) -> None:
        self._call = client._loop.call
        self._jobs = client.client.jobs()

    def submit(
        self,
        name: str,
        task: Task | Sequence[Task],
        cluster: Cluster | str | Sequence[Cluster | str] | None = DEFAULT_CLUSTER,
        max_retries: int = 0,
        timeout: float | None = None,
    ) -> Job:
        return self._call(self._jobs.submit, name, task, cluster, max_retries, timeout)

    def find(self, job: Job | str, *, execution_stats: bool = True) -> Job:
        return self._call(self._jobs.find, job, execution_stats=execution_stats)

    def query(
        self,
        temporal_extent: tuple[TimeLike, TimeLike] | dt.date | Any | None = None,
        *,
        job_states: JobState | str | Sequence[JobState | str] | None = None,
        state: JobState | str | Sequence[JobState | str] | None = None,
        name: str | None = None,
        since: TimeLike | None = None,
        until: TimeLike | None = None,
        limit: int = 100,
    ) -> list[Job]:
        return self._call(
            self._jobs.query,
            temporal_extent,
            job_states=job_states,
            state=state,
            name=name,
            since=since,
            until=until,
            limit=limit,
        )

    def cancel(self, job: Job | str) -> int:
        return self._call(self._jobs.cancel, job)

    def retry(self, job: Job | str) -> int:
        return self._call(self._jobs.retry, job)

    def wait(
        self, job: Job | str, timeout: float | None = None, poll_interval: float = 0.05
    ) -> Job:
        return self._call(self._jobs.wait, job, timeout, poll_interval)

    def tasks(self, job: Job | str) -> list[TaskInfo]:
        return self._call(self._jobs.tasks, job)

    def diagram(self, job: Job | str, format: DiagramFormat = "mermaid") -> str:
        return self._call(self._jobs.diagram, job, format)

    def display(self, job: Job | str) -> JobDiagram:
        return self._call(self._jobs.display, job)

    def execution_stats(self, job: Job | str) -> ExecutionStats:
        return self._call(self._jobs.execution_stats, job)

    def logs(
        self,
        job: Job | str,
        task: TaskInfo | str | None = None,
        level: int | str | None = None,
        *,
        after: int = 0,
    ) -> list[TaskLogRecord]:
        """:meth:`swath.client.JobClient.logs`, blocking."""
        return self._call(self._jobs.logs, job, task, level, after=after)


class BlockingClusterClient:
    """``BlockingClient.clusters()``: :class:`swath.ClusterClient`, blocking."""

    def __init__(self, client: BlockingClient) -> None:
        self._call = client._loop.call
        self._clusters = client.client.clusters()

    def create(self, slug: str, name: str = "") -> Cluster:
        return self._call(self._clusters.create, slug, name)

    def update(self, cluster: Cluster | str, name: str | None = None) -> Cluster:
        return self._call(self._clusters.update, cluster, name)

    def all(self) -> list[Cluster]:
        return self._call(self._clusters.all)

    def find(self, slug: Cluster | str) -> Cluster:
        return self._call(self._clusters.find, slug)

    def delete(self, slug: Cluster | str) -> bool:
        return self._call(self._clusters.delete, slug)


class BlockingAutomationClient:
    """``BlockingClient.automations()``: :class:`swath.automations.AutomationClient`,
    blocking."""

    def __init__(self, client: BlockingClient) -> None:
        self._call = client._loop.call
        self._loop = client._loop
        self._automations = client.client.automations()

    def cron(
        self,
        name: str,
        schedule: str,
        task: Task,
        cluster: Cluster | str | None = DEFAULT_CLUSTER,
        max_retries: int = 0,
        *,
        timezone: str = "UTC",
        catch_up: CatchUp = "latest",
        timeout: float | None = None,
    ) -> Automation:
        return self._call(
            self._automations.cron,
            name,
            schedule,
            task,
            cluster,
            max_retries,
            timezone=timezone,
            catch_up=catch_up,
            timeout=timeout,
        )

    def storage_event(
        self,
        name: str,
        url: str,
        task: Task,
        glob: str = "*",
        cluster: Cluster | str | None = DEFAULT_CLUSTER,
        max_retries: int = 0,
        *,
        timeout: float | None = None,
    ) -> Automation:
        return self._call(
            self._automations.storage_event,
            name,
            url,
            task,
            glob,
            cluster,
            max_retries,
            timeout=timeout,
        )

    def all(self) -> list[Automation]:
        return self._call(self._automations.all)

    def find(self, automation: Automation | str) -> Automation:
        return self._call(self._automations.find, automation)

    def pause(self, automation: Automation | str) -> Automation:
        return self._call(self._automations.pause, automation)

    def resume(self, automation: Automation | str) -> Automation:
        return self._call(self._automations.resume, automation)

    def delete(self, automation: Automation | str) -> bool:
        return self._call(self._automations.delete, automation)

    def run(
        self,
        for_seconds: float | None = None,
        *,
        cluster: Cluster | str | None = None,
        poll_interval: float = 10.0,
        settle: float = 2.0,
    ) -> int:
        """Evaluate the automations (of ``cluster`` only, when given) for ``for_seconds``, or
        until Ctrl-C; returns how many jobs this evaluation submitted."""
        evaluator = self._automations.evaluator(
            cluster=cluster, poll_interval=poll_interval, settle=settle
        )
        future = asyncio.run_coroutine_threadsafe(evaluator.run(for_seconds), self._loop.loop)
        try:
            future.result()
        except KeyboardInterrupt:
            self._loop.loop.call_soon_threadsafe(evaluator.stop)
            with contextlib.suppress(concurrent.futures.CancelledError):
                future.result()
            raise
        return evaluator.fired
