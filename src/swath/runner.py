"""The task runner: claims leased batches of tasks from a job store, runs them on one event loop
(async tasks) or in worker threads (sync tasks), and completes them in batches.

Three coroutines cooperate inside :meth:`Runner._run`:

* the **claim loop** leases up to ``max_concurrency - in flight`` ready tasks at a time and starts
  them; when nothing is ready it waits on the store's wake-up signal for its cluster (set at once
  by submissions in this process), with a polling back-off for work from other processes;
* the **flusher** commits finished tasks (successes with their subtasks and progress, failures)
  in one store transaction per batch; whatever finished while a commit was running forms the next
  batch;
* the **heartbeat** renews this runner's leases every ``lease / 3`` seconds.

Stopping (cancellation, :meth:`Runner.stop`, or SIGINT/SIGTERM when ``handle_signals``): no new
claims, in-flight tasks get ``grace`` seconds to finish, the rest are cancelled and released back
to the queue without counting a failure. The runner keeps no global state and installs no signal
handlers unless asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
import traceback
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import msgspec

from swath.cache import Cache
from swath.context import ExecutionContext
from swath.errors import SwathError
from swath.store.base import (
    ClaimedTask,
    ErrorInfo,
    JobState,
    JobStore,
    TaskFailure,
    TaskOutcome,
    TaskSuccess,
    UnknownClusterError,
)
from swath.task import Task, TaskRegistry, decode_input

log = logging.getLogger("swath.runner")

#: A completion batch smaller than this waits up to FLUSH_LINGER seconds for more outcomes
#: while other tasks are still running.
FLUSH_BATCH = 256
FLUSH_LINGER = 0.002
#: A runner gives up (raises) after this many consecutive failed claims.
MAX_STORE_FAILURES = 10


class UnknownTaskError(SwathError, LookupError):
    """The runner has no task class for this identifier (or only an older minor version)."""


class TaskInputError(SwathError, ValueError):
    """The stored input of a task does not decode into its task class."""


@dataclass
class RunnerStats:
    """Counters of one runner (since it was made)."""

    claimed: int = 0
    succeeded: int = 0
    failed: int = 0
    released: int = 0
    lost: int = 0  # outcomes the store refused: the lease had expired


class Runner:
    """Made by :meth:`swath.Client.runner`; see there for the options."""

    def __init__(
        self,
        store: JobStore,
        tasks: Iterable[type[Task]],
        cache: Cache,
        *,
        cluster: str = "default",
        max_concurrency: int = 64,
        context: Any = None,
        lease: float = 30.0,
        grace: float = 30.0,
        retry_delay: float = 1.0,
        max_retry_delay: float = 300.0,
        poll_interval: tuple[float, float] = (0.05, 2.0),
        handle_signals: bool = False,
        delete_job_cache: bool = False,
        max_threads: int | None = None,
    ) -> None:
        if not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise ValueError(f"max_concurrency must be a positive int, not {max_concurrency!r}")
        if lease <= 0 or grace < 0 or retry_delay < 0:
            raise ValueError("lease must be positive; grace and retry_delay non-negative")
        self.store = store
        self.registry = TaskRegistry(tasks)
        self.cache = cache
        self.cluster = cluster
        self.max_concurrency = max_concurrency
        self.user_context = context
        self.lease = float(lease)
        self.grace = float(grace)
        self.retry_delay = float(retry_delay)
        self.max_retry_delay = float(max_retry_delay)
        self.poll_interval = poll_interval
        self.handle_signals = handle_signals
        self.delete_job_cache = delete_job_cache
        self.max_threads = max_threads or min(max_concurrency, 32)
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.stats = RunnerStats()
        self._stopping: asyncio.Event | None = None
        self._running = False

    # -- public ------------------------------------------------------------------------------------
    async def run_all(self) -> None:
        """Run until no runnable work for this cluster remains (tasks queued, retrying after a
        back-off, or running elsewhere and so able to submit more)."""
        await self._run(until_idle=True)

    async def run_forever(self) -> None:
        """Run until cancelled or :meth:`stop` is called."""
        await self._run(until_idle=False)

    def stop(self) -> None:
        """Ask for a graceful stop: no new claims; in-flight tasks get the grace period."""
        if self._stopping is not None:
            self._stopping.set()

    # -- the loop ----------------------------------------------------------------------------------
    async def _run(self, *, until_idle: bool) -> None:
        if self._running:
            raise RuntimeError("this runner is already running")
        self._running = True
        loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        try:
            if await self.store.get_cluster(self.cluster) is None:
                raise UnknownClusterError(f"unknown cluster {self.cluster!r}")
            async with contextlib.AsyncExitStack() as stack:
                if hasattr(self.cache, "__aenter__"):
                    await stack.enter_async_context(self.cache)  # type: ignore[arg-type]
                user = self.user_context
                if hasattr(user, "__aenter__") and hasattr(user, "__aexit__"):
                    user = await stack.enter_async_context(user)
                if self.handle_signals:
                    for sig in (signal.SIGINT, signal.SIGTERM):
                        loop.add_signal_handler(sig, self.stop)
                        stack.callback(loop.remove_signal_handler, sig)
                threads = ThreadPoolExecutor(self.max_threads, thread_name_prefix="swath-task")
                stack.callback(threads.shutdown, wait=False, cancel_futures=True)
                await _Loop(self, loop, threads, user, until_idle).run()
        finally:
            self._running = False


class _Loop:
    """One run of a runner (the state that lives only while it runs)."""

    def __init__(
        self,
        runner: Runner,
        loop: asyncio.AbstractEventLoop,
        threads: ThreadPoolExecutor,
        user_context: Any,
        until_idle: bool,
    ) -> None:
        self.r = runner
        self.store = runner.store
        self.loop = loop
        self.threads = threads
        self.user_context = user_context
        self.until_idle = until_idle
        self.signal = runner.store.work_signal(runner.cluster)
        self.inflight: dict[asyncio.Task[None], ClaimedTask] = {}
        self.pending: list[TaskOutcome] = []
        self.pending_jobs: set[str] = set()
        self.flush_wanted = asyncio.Event()
        self.flushing = 0  # commits in progress
        self.known_clusters: set[str] = {runner.cluster}
        assert runner._stopping is not None
        self.stopping = runner._stopping

    async def run(self) -> None:
        flusher = asyncio.create_task(self._flusher(), name="swath-flusher")
        heartbeat = asyncio.create_task(self._heartbeat(), name="swath-heartbeat")
        shutdown: asyncio.Task[None] | None = None
        try:
            try:
                await self._claim_loop()
            finally:
                # stopped, idle, cancelled or failed: in-flight tasks get their grace period and
                # every outcome is committed; a cancellation does not cut this short
                shutdown = asyncio.create_task(self._shutdown())
                await asyncio.shield(shutdown)
        finally:
            if shutdown is not None and not shutdown.done():
                with contextlib.suppress(BaseException):
                    await asyncio.shield(shutdown)
            # the flusher is idle now (a commit in progress is never cut off)
            heartbeat.cancel()
            flusher.cancel()
            await asyncio.gather(heartbeat, flusher, return_exceptions=True)

    async def _shutdown(self) -> None:
        await self._drain(self.r.grace)
        await self._flush_all()

    async def _drain(self, grace: float) -> None:
        """Wait up to ``grace`` for in-flight tasks; cancel and release the rest."""
        if self.inflight:
            await asyncio.wait(list(self.inflight), timeout=grace)
        leftover = dict(self.inflight)
        for task in leftover:
            task.cancel()
        if leftover:
            await asyncio.gather(*leftover, return_exceptions=True)
            released = await self.store.release(self.r.id, [t.id for t in leftover.values()])
            self.r.stats.released += released
            log.info("runner %s released %d unfinished tasks", self.r.id, released)

    async def _claim_loop(self) -> None:
        low, high = self.r.poll_interval
        backoff = low
        failures = 0
        stop_wait: asyncio.Task[bool] | None = None
        try:
            stop_wait = asyncio.create_task(self.stopping.wait())
            while not self.stopping.is_set():
                self.signal.clear()
                free = self.r.max_concurrency - len(self.inflight)
                if free > 0:
                    try:
                        claimed = await self._claim(free)
                        failures = 0
                    except Exception:
                        # a store that is briefly unreachable or locked: back off and try again,
                        # but do not spin forever on a store that stays broken
                        failures += 1
                        if failures >= MAX_STORE_FAILURES:
                            raise
                        log.exception("runner %s: claim failed (%d in a row)", self.r.id, failures)
                        await asyncio.sleep(min(high, low * 2**failures))
                        continue
                    if claimed:
                        backoff = low
                        self.r.stats.claimed += len(claimed)
                        for c in claimed:
                            self._start(c)
                        continue
                    timeout = backoff
                    if self.until_idle and not self.inflight and not self._unflushed():
                        ready = await self.store.next_ready(self.r.cluster)
                        if ready is None:
                            return
                        timeout = min(backoff, max(0.001, ready - time.time()))
                    backoff = min(high, backoff * 2)
                else:
                    timeout = high  # a finishing task sets the signal
                signal_wait = asyncio.create_task(self.signal.wait(timeout))
                await asyncio.wait({signal_wait, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                if not signal_wait.done():
                    signal_wait.cancel()
        finally:
            if stop_wait is not None:
                stop_wait.cancel()

    async def _claim(self, limit: int) -> list[ClaimedTask]:
        """Claim up to ``limit`` tasks; if we are cancelled meanwhile, the claim still finishes
        and what it took is given back at once (rather than left to lease expiry)."""
        claim = asyncio.ensure_future(
            self.store.claim(self.r.cluster, self.r.id, limit, self.r.lease)
        )
        try:
            return await asyncio.shield(claim)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                taken = await claim
                await self.store.release(self.r.id, [t.id for t in taken])
            raise

    def _unflushed(self) -> bool:
        return bool(self.pending) or self.flushing > 0

    def _start(self, claimed: ClaimedTask) -> None:
        task = self.loop.create_task(self._execute(claimed))
        self.inflight[task] = claimed
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.inflight.pop(task, None)
        self.signal.set()  # a slot is free

    # -- one task ----------------------------------------------------------------------------------
    async def _execute(self, claimed: ClaimedTask) -> None:
        context: ExecutionContext | None = None
        try:
            found = self.r.registry.find(claimed.name, claimed.version)
            if found is None:
                raise UnknownTaskError(
                    f"no task {claimed.name} {claimed.version} is registered with this runner "
                    f"(it knows: {', '.join(self.r.registry.identifiers()) or 'nothing'})"
                )
            cls, run_async = found
            try:
                task = decode_input(cls, claimed.input)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                raise TaskInputError(
                    f"the input of {claimed.name} {claimed.version} does not decode into "
                    f"{cls.__qualname__}: {exc}"
                ) from exc
            context = ExecutionContext(
                claimed,
                self.r.cache,
                runner_context=self.user_context,
                loop=self.loop,
                blocking=not run_async,
            )
            if not run_async:
                await self.loop.run_in_executor(self.threads, task.execute, context)
            else:
                result = task.execute(context)
                if result is not None:
                    await result
            subtasks, progress = context._collected()
            if subtasks:
                await self._check_clusters({s.cluster for s in subtasks})
            outcome: TaskOutcome = TaskSuccess(claimed.id, context._display(), subtasks, progress)
            self.r.stats.succeeded += 1
        except asyncio.CancelledError:
            raise  # stopping: the task goes back to the queue
        except Exception as exc:
            self.r.stats.failed += 1
            delay = min(self.r.max_retry_delay, self.r.retry_delay * 2**claimed.retry_count)
            display = context._display() if context is not None else claimed.display
            error = ErrorInfo(
                type=type(exc).__qualname__,
                message=str(exc),
                traceback="".join(traceback.format_exception(exc)),
            )
            outcome = TaskFailure(claimed.id, error, delay, display)
            log.warning(
                "task %s %s (%s) of job %s failed: %s: %s",
                claimed.name,
                claimed.version,
                claimed.id,
                claimed.job_id,
                error.type,
                error.message,
            )
        self.pending.append(outcome)
        self.pending_jobs.add(claimed.job_id)
        self.flush_wanted.set()

    async def _check_clusters(self, clusters: set[str]) -> None:
        for cluster in clusters - self.known_clusters:
            if await self.store.get_cluster(cluster) is None:
                raise UnknownClusterError(
                    f"subtask submitted to unknown cluster {cluster!r}: create it first"
                )
            self.known_clusters.add(cluster)

    # -- completions -------------------------------------------------------------------------------
    async def _flusher(self) -> None:
        while True:
            await self.flush_wanted.wait()
            self.flush_wanted.clear()
            if len(self.pending) < FLUSH_BATCH and len(self.inflight) > len(self.pending):
                # more tasks are about to finish: let them join this batch (one transaction)
                await asyncio.sleep(FLUSH_LINGER)
            await self._flush_once()

    async def _flush_once(self) -> None:
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        jobs, self.pending_jobs = self.pending_jobs, set()
        self.flushing += 1
        try:
            accepted = await self.store.complete(self.r.id, batch)
        except Exception:
            log.exception("runner %s could not complete %d tasks", self.r.id, len(batch))
            # the leases run out and the tasks are retried elsewhere; report each one alone so
            # a single bad outcome cannot take the rest with it
            accepted = 0
            for outcome in batch:
                with contextlib.suppress(Exception):
                    accepted += await self.store.complete(self.r.id, [outcome])
        finally:
            self.flushing -= 1
            self.signal.set()
        self.r.stats.lost += len(batch) - accepted
        if self.r.delete_job_cache:
            await self._delete_finished_job_caches(jobs)

    async def _flush_all(self) -> None:
        while self.pending or self.flushing:
            if self.flushing:
                await asyncio.sleep(0.001)
            else:
                await self._flush_once()

    async def _delete_finished_job_caches(self, jobs: set[str]) -> None:
        for job_id in jobs:
            job = await self.store.get_job(job_id)
            if job is not None and job.state == JobState.COMPLETED:
                with contextlib.suppress(Exception):
                    await self.r.cache.group(job_id).clear()

    # -- leases ------------------------------------------------------------------------------------
    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.r.lease / 3)
            if self.inflight or self.pending or self.flushing:
                try:
                    await self.store.heartbeat(self.r.id, self.r.lease)
                except Exception:
                    log.exception("runner %s: heartbeat failed", self.r.id)
