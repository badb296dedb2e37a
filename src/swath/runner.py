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
from collections.abc import AsyncIterator, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from swath import _observe
from swath._validate import storable_text
from swath.cache import Cache
from swath.context import ExecutionContext
from swath.errors import SwathError
from swath.store.base import (
    STOPPED_SIGNAL,
    ClaimedTask,
    ErrorInfo,
    JobState,
    JobStore,
    RunnerInfo,
    TaskFailure,
    TaskOutcome,
    TaskSuccess,
    UnknownClusterError,
    report_interval,
)
from swath.task import Task, TaskRegistry, decode_input

log = logging.getLogger("swath.runner")

#: A completion batch smaller than this waits up to FLUSH_LINGER seconds for more outcomes
#: while other tasks are still running.
FLUSH_BATCH = 256
FLUSH_LINGER = 0.002
#: While the outcomes waiting to be committed carry this many subtasks or more, tasks about to
#: start wait for the next commit: memory stays bounded when many tasks fan out at once (a root
#: of 100 tasks of 10,000 subtasks each held all 1,000,000 new tasks before the first commit).
SUBTASK_BUDGET = 100_000
#: A runner gives up (raises) after this many consecutive failed claims.
MAX_STORE_FAILURES = 10
#: A runner that could not renew its leases for this fraction of the lease cancels its async
#: tasks before the leases can run out and another runner start them: a task never runs in two
#: places at once, even when the store is unreachable for one runner only. (A sync task's thread
#: cannot be stopped; its outcome counts only if the store still finds its lease.)
FENCE_AFTER = 2 / 3
#: A finished task's outcome is committed in this many attempts at most (after transient store
#: errors), the first retry after COMMIT_RETRY_DELAY seconds, each next one four times later.
COMMIT_ATTEMPTS = 4
COMMIT_RETRY_DELAY = 0.05
#: how long a stopping runner tries to remove its row (``runner_stopped``) before leaving it to
#: expire
STOPPED_REPORT_TIMEOUT = 2.0

Cleanup = Literal["never", "on-success", "always"]
#: the job states after which ``cleanup`` clears a job's cache
_CLEANUP_STATES: dict[str, frozenset[JobState]] = {
    "never": frozenset(),
    "on-success": frozenset({JobState.COMPLETED}),
    "always": frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELED}),
}


class UnknownTaskError(SwathError, LookupError):
    """The runner has no task class for this identifier (or only an older minor version)."""


class TaskInputError(SwathError, ValueError):
    """The stored input of a task does not decode into its task class."""


class TaskTimeoutError(SwathError, TimeoutError):
    """An execution ran longer than the task's ``timeout``."""


def error_info(exc: BaseException) -> ErrorInfo:
    """What a store records of a failure: type, message, traceback, as text every store can
    hold (a NUL or a lone surrogate in a message is escaped, never a reason to lose it)."""
    return ErrorInfo(
        type=storable_text(type(exc).__qualname__),
        message=storable_text(str(exc)),
        traceback=storable_text("".join(traceback.format_exception(exc))),
    )


def _refused(exc: BaseException) -> bool:
    """Whether a store error is a refusal of the data (out of range, text it cannot hold, a
    dependency it cannot resolve) rather than an outage: stores raise those as ValueError,
    TypeError or OverflowError (see ``JobStore.complete``)."""
    return isinstance(exc, ValueError | TypeError | OverflowError | UnknownClusterError)


@dataclass(eq=False, slots=True)
class _Flight:
    """A task this runner holds, while it runs."""

    claimed: ClaimedTask
    #: when the claim that leased it began (``time.monotonic()``)
    leased_at: float
    context: ExecutionContext | None = None
    sync: bool = False
    #: its job stopped (canceled or failed): cancelled, and released rather than completed
    abandoned: bool = False
    #: its lease could not be renewed in time: cancelled, as another runner may take it
    fenced: bool = False
    #: with OpenTelemetry: the execution's span, and how the execution ended
    span: Any = None
    outcome: str = "released"
    error: BaseException | None = None


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

    #: ``context.logger`` records at this level or above are kept in the job store
    log_level: int = logging.INFO

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
        cleanup: Cleanup = "never",
        max_threads: int | None = None,
        automations: bool = False,
    ) -> None:
        if not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise ValueError(f"max_concurrency must be a positive int, not {max_concurrency!r}")
        if lease <= 0 or grace < 0 or retry_delay < 0:
            raise ValueError("lease must be positive; grace and retry_delay non-negative")
        if cleanup not in _CLEANUP_STATES:
            raise ValueError(f"cleanup must be 'never', 'on-success' or 'always', not {cleanup!r}")
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
        self.cleanup: Cleanup = cleanup
        self.max_threads = max_threads or min(max_concurrency, 32)
        #: evaluate the automations of this cluster while running (swath.automations)
        self.automations = bool(automations)
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.stats = RunnerStats()
        self._stopping: asyncio.Event | None = None
        self._stop_requested = False
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
        """Ask for a graceful stop: no new claims; in-flight tasks get the grace period. Called
        before the run starts, the run stops at once (it claims nothing)."""
        self._stop_requested = True
        if self._stopping is not None:
            self._stopping.set()

    # -- the loop ----------------------------------------------------------------------------------
    async def _run(self, *, until_idle: bool) -> None:
        if self._running:
            raise RuntimeError("this runner is already running")
        self._running = True
        loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        if self._stop_requested:
            self._stopping.set()
        try:
            if await self.store.get_cluster(self.cluster) is None:
                raise UnknownClusterError(
                    f"unknown cluster {self.cluster!r}: create it first "
                    f"(swath clusters create {self.cluster}, or client.clusters().create)"
                )
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
                if self.automations:
                    await stack.enter_async_context(self._evaluating())
                run = _Loop(self, loop, threads, user, until_idle)
                await run.run()
                if run.fatal is not None:
                    # a task raised KeyboardInterrupt or SystemExit: it was recorded as that
                    # task's failure and the runner stopped gracefully; now let it through
                    raise run.fatal
        finally:
            self._running = False
            self._stop_requested = False
            self._stopping = None

    @contextlib.asynccontextmanager
    async def _evaluating(self) -> AsyncIterator[None]:
        """Evaluate the automations of this runner's cluster while the block runs."""
        from swath.automations import AutomationEvaluator

        evaluator = AutomationEvaluator(self.store, cluster=self.cluster)
        task = asyncio.create_task(evaluator.run(), name="swath-automations")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


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
        self.kinds = runner.registry.kinds()
        self.signal = runner.store.work_signal(runner.cluster)
        self.stop_signal = runner.store.work_signal(STOPPED_SIGNAL)
        self.inflight: dict[asyncio.Task[None], _Flight] = {}
        #: the tasks this runner executes or has outcomes of not yet committed: id -> attempt
        #: (``retry_count``)
        self.running: dict[str, int] = {}
        self.pending: list[TaskOutcome] = []
        self.pending_jobs: set[str] = set()
        self.to_release: list[str] = []
        self.flush_wanted = asyncio.Event()
        #: subtasks in ``pending`` and in commits in progress; set after each commit
        self.unflushed_subtasks = 0
        self.committed = asyncio.Event()
        self.flushing = 0  # commits in progress
        self.cleanups: set[asyncio.Task[None]] = set()
        self.known_clusters: set[str] = {runner.cluster}
        self.fatal: BaseException | None = None
        self.claim_began = time.monotonic()
        otel = _observe.otel()
        #: spans and metrics (swath._otel) when this process uses OpenTelemetry, else None
        self.tel = None if otel is None else otel.Telemetry(runner.id, runner.cluster)
        #: when the last heartbeat that renewed this runner's leases began
        self.renewed_at = float("-inf")
        self.started_at = time.time()
        assert runner._stopping is not None
        self.stopping = runner._stopping

    async def run(self) -> None:
        self.started_at = time.time()
        flusher = asyncio.create_task(self._flusher(), name="swath-flusher")
        heartbeat = asyncio.create_task(self._heartbeat(), name="swath-heartbeat")
        reporter = asyncio.create_task(self._reporter(), name="swath-reporter")
        depth = None
        if self.tel is not None:
            depth = asyncio.create_task(self._watch_queue_depth(), name="swath-queue-depth")
        cancelled = False
        try:
            await self._claim_loop()
        except asyncio.CancelledError:
            cancelled = True
        finally:
            # stopped, idle, cancelled or failed: in-flight tasks get their grace period and
            # every outcome is committed. No cancellation cuts this short (however many come):
            # the cache and the store stay open until it is done.
            shutdown = asyncio.create_task(self._shutdown(), name="swath-shutdown")
            while not shutdown.done():
                try:
                    await asyncio.shield(shutdown)
                except asyncio.CancelledError:
                    cancelled = True
            # the flusher is idle now (a commit in progress is never cut off)
            helpers = [heartbeat, flusher, reporter] + ([] if depth is None else [depth])
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
        shutdown.result()
        try:  # bounded: a store that is down must not hold up the stop (the row expires)
            async with asyncio.timeout(STOPPED_REPORT_TIMEOUT):
                await self.store.runner_stopped(self.r.id)
        except asyncio.CancelledError:
            cancelled = True
        except Exception:  # a store without runner rows, or unreachable: the row expires
            log.debug("runner %s: removing its runner row failed", self.r.id, exc_info=True)
        if cancelled:
            raise asyncio.CancelledError

    async def _shutdown(self) -> None:
        await self._drain(self.r.grace)
        await self._flush_all()
        while self.cleanups:
            await asyncio.gather(*self.cleanups, return_exceptions=True)

    async def _drain(self, grace: float) -> None:
        """Wait up to ``grace`` for in-flight tasks; cancel the rest and give them back. A sync
        task's thread cannot be stopped: its task keeps its lease (heartbeats go on) until the
        thread returns, and then its real outcome is committed."""
        if self.inflight:
            await asyncio.wait(list(self.inflight), timeout=grace)
        leftover = list(self.inflight)
        for task in leftover:
            task.cancel()
        if leftover:
            await asyncio.gather(*leftover, return_exceptions=True)
        await self._release()

    async def _release(self) -> None:
        ids, self.to_release = self.to_release, []
        for task_id in ids:
            self.running.pop(task_id, None)
        if ids:
            released = await self.store.release(self.r.id, ids)
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
                        ready = await self.store.next_ready(self.r.cluster, self.kinds)
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
        if self.tel is None:
            return await self._claim_leased(limit)
        attributes = {"swath.cluster": self.r.cluster, "swath.claim.limit": limit}
        with self.tel.span("swath.claim", **attributes) as span:
            claimed = await self._claim_leased(limit)
            span.set_attribute("swath.claim.claimed", len(claimed))
        self.tel.claimed(len(claimed))
        return claimed

    async def _claim_leased(self, limit: int) -> list[ClaimedTask]:
        """Claim up to ``limit`` tasks this runner can execute; if we are cancelled meanwhile,
        the claim still finishes and what it took is given back at once (rather than left to
        lease expiry)."""
        began = self.claim_began = time.monotonic()
        claim = asyncio.ensure_future(
            self.store.claim(self.r.cluster, self.r.id, limit, self.r.lease, self.kinds)
        )
        try:
            claimed = await asyncio.shield(claim)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                taken = await claim
                await self.store.release(self.r.id, [t.id for t in taken])
            raise
        if claimed and time.monotonic() - began > self.r.lease / 3:
            # the claim took as long as a heartbeat period (a locked store, a frozen process):
            # its leases may have run out and gone to another runner meanwhile; start only the
            # tasks still ours, their leases renewed
            self.claim_began = time.monotonic()
            held = set(await self.store.renew(self.r.id, [t.id for t in claimed], self.r.lease))
            if len(held) < len(claimed):
                log.warning(
                    "runner %s: %d claimed tasks were no longer leased to it after a slow claim",
                    self.r.id,
                    len(claimed) - len(held),
                )
            claimed = [t for t in claimed if t.id in held]
        return claimed

    def _unflushed(self) -> bool:
        return bool(self.pending) or self.flushing > 0

    def _start(self, claimed: ClaimedTask) -> None:
        if self.running.get(claimed.id) == claimed.retry_count:
            # our own lease had expired (a stalled store, a frozen process) and we claimed the
            # same attempt again: the execution in flight, or its outcome waiting to be
            # committed, carries on under the new lease; never a second execution beside it.
            # (A later attempt means the earlier one's outcome was committed: it is started.)
            log.info("runner %s re-claimed task %s it still holds", self.r.id, claimed.id)
            return
        self.running[claimed.id] = claimed.retry_count
        flight = _Flight(claimed, self.claim_began)
        if self.tel is None:
            task = self.loop.create_task(self._execute(flight))
        else:
            task = self.loop.create_task(self._execute_traced(flight))
        self.inflight[task] = flight
        task.add_done_callback(self._finished)

    def _forget(self, task_id: str, attempt: int | None) -> None:
        if self.running.get(task_id) == attempt:
            del self.running[task_id]

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.inflight.pop(task, None)
        self.signal.set()  # a slot is free

    # -- one task ----------------------------------------------------------------------------------
    async def _execute_traced(self, flight: _Flight) -> None:
        """``_execute`` inside a span of its own (OpenTelemetry in use)."""
        tel = self.tel
        assert tel is not None
        flight.span = tel.start_task(flight.claimed)
        try:
            with tel.current(flight.span):
                await self._execute(flight)
        finally:
            tel.end_task(flight.span, flight.claimed, flight.outcome, flight.error)

    async def _execute(self, flight: _Flight) -> None:
        claimed = flight.claimed
        context: ExecutionContext | None = None
        if time.monotonic() - flight.leased_at > self.r.lease / 3 and not await self._still_ours(
            flight
        ):
            return
        try:
            waited = False
            while self.unflushed_subtasks >= SUBTASK_BUDGET:
                # the lease is kept by heartbeats meanwhile (and fenced if they fail), as for a
                # task that runs long
                waited = True
                self.committed.clear()
                self.flush_wanted.set()
                await self.committed.wait()
            if waited:
                renewed = max(flight.leased_at, self.renewed_at)
                if time.monotonic() - renewed > self.r.lease / 3 and not await self._still_ours(
                    flight
                ):
                    return  # the lease is checked right before the start, as after a claim
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
            context = flight.context = ExecutionContext(
                claimed,
                self.r.cache,
                runner_context=self.user_context,
                loop=self.loop,
                blocking=not run_async,
                runner_id=self.r.id,
                log_level=self.r.log_level,
                telemetry=None if flight.span is None else (self.tel, flight.span),
            )
            if not run_async:
                flight.sync = True
                await self._run_sync(task, context, flight)
            elif claimed.timeout is None:
                result = task.execute(context)
                if result is not None:
                    await result
            else:
                await self._run_async_limited(task, context, claimed.timeout)
            if flight.abandoned or flight.fenced:
                raise asyncio.CancelledError  # its job stopped, or its lease may be gone
            subtasks, progress = context._collected()
            if subtasks:
                await self._check_clusters({s.cluster for s in subtasks})
            outcome: TaskOutcome
            if context._book is None:  # nothing logged
                outcome = TaskSuccess(
                    claimed.id, context._display(), subtasks, progress, attempt=claimed.retry_count
                )
            else:
                logs, dropped = context._book.taken()
                outcome = TaskSuccess(
                    claimed.id,
                    context._display(),
                    subtasks,
                    progress,
                    logs,
                    dropped,
                    attempt=claimed.retry_count,
                )
            self.r.stats.succeeded += 1
            flight.outcome = "success"
        except asyncio.CancelledError:
            if flight.fenced:
                flight.outcome = "fenced"
                # its lease may be gone (the store could not be reached): no outcome, no
                # release; the store hands it out again once the lease has run out
                return
            # stopping, or its job stopped: back to the queue (or CANCELED/SKIPPED with its job)
            self.to_release.append(claimed.id)
            if flight.abandoned:
                flight.outcome = "abandoned"
                await self._release()
                return
            raise
        except BaseException as exc:
            if flight.fenced:
                flight.outcome = "fenced"
                return
            if flight.abandoned:
                flight.outcome = "abandoned"
                self.to_release.append(claimed.id)
                await self._release()
                return
            flight.outcome, flight.error = "failure", exc
            if not isinstance(exc, Exception):
                # KeyboardInterrupt or SystemExit from task code: record it as this task's
                # failure, stop the runner gracefully, and re-raise it from run_all
                self.fatal = self.fatal or exc
                self.r.stop()
            outcome = self._failure(claimed, exc, context)
        if isinstance(outcome, TaskSuccess):
            self.unflushed_subtasks += len(outcome.subtasks)
        self.pending.append(outcome)
        self.pending_jobs.add(claimed.job_id)
        self.flush_wanted.set()

    async def _still_ours(self, flight: _Flight) -> bool:
        """Renew the lease of a task whose claim is a heartbeat period old by the time it starts
        (its process was frozen, or the loop starved): start it only if it is still ours."""
        began = time.monotonic()
        try:
            held = await self.store.renew(self.r.id, [flight.claimed.id], self.r.lease)
        except Exception:
            log.exception("runner %s: could not renew task %s", self.r.id, flight.claimed.id)
            held = []
        if held:
            flight.leased_at = began
            return True
        log.warning(
            "runner %s: task %s was no longer leased to it when it was to start",
            self.r.id,
            flight.claimed.id,
        )
        self._forget(flight.claimed.id, flight.claimed.retry_count)
        return False

    def _failure(
        self, claimed: ClaimedTask, exc: BaseException, context: ExecutionContext | None
    ) -> TaskFailure:
        self.r.stats.failed += 1
        delay = min(self.r.max_retry_delay, self.r.retry_delay * 2**claimed.retry_count)
        display = context._display() if context is not None else claimed.display
        error = error_info(exc)
        log.warning(
            "task %s %s (%s) of job %s failed: %s: %s",
            claimed.name,
            claimed.version,
            claimed.id,
            claimed.job_id,
            error.type,
            error.message,
        )
        logs, dropped = context._logs() if context is not None else ((), 0)
        return TaskFailure(
            claimed.id, error, delay, display, logs, dropped, attempt=claimed.retry_count
        )

    async def _run_async_limited(
        self, task: Task, context: ExecutionContext, seconds: float
    ) -> None:
        try:
            async with asyncio.timeout(seconds) as limit:
                result = task.execute(context)
                if result is not None:
                    await result
        except TimeoutError:
            if limit.expired():
                context._cancel()
                raise TaskTimeoutError(
                    f"the task ran longer than its timeout of {seconds:g} s"
                ) from None
            raise

    async def _run_sync(self, task: Task, context: ExecutionContext, flight: _Flight) -> None:
        """Run a sync ``execute`` in a worker thread. A thread cannot be stopped: when the task
        times out, its job stops or the runner stops, ``context.cancelled`` is set and the task
        keeps its lease until the thread returns."""
        thread = self.loop.run_in_executor(self.threads, task.execute, context)
        seconds = flight.claimed.timeout
        try:
            await asyncio.wait_for(asyncio.shield(thread), seconds)
        except TimeoutError:
            if thread.done():
                raise  # the task's own TimeoutError
            context._cancel()
            await _wait_thread(thread)
            raise TaskTimeoutError(
                f"the task ran longer than its timeout of {seconds:g} s"
            ) from None
        except asyncio.CancelledError:
            if flight.abandoned:
                context._cancel()
            await _wait_thread(thread)
            if flight.abandoned:
                raise
            # the runner is stopping: the work is done, commit its real outcome
            thread.result()

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
            try:
                if self.tel is None:
                    accepted = await self._complete(batch)
                else:
                    with self.tel.span("swath.commit", **{"swath.commit.outcomes": len(batch)}):
                        accepted = await self._complete(batch)
            finally:
                for o in batch:
                    self._forget(o.task_id, o.attempt)
                    if isinstance(o, TaskSuccess):
                        self.unflushed_subtasks -= len(o.subtasks)
                self.committed.set()
            if self.r.cleanup != "never":
                cleanup = asyncio.create_task(self._cleanup(jobs))
                self.cleanups.add(cleanup)
                cleanup.add_done_callback(self.cleanups.discard)
        finally:
            self.flushing -= 1
            self.signal.set()
        self.r.stats.lost += len(batch) - accepted

    async def _complete(self, batch: list[TaskOutcome]) -> int:
        try:
            return await self.store.complete(self.r.id, batch)
        except Exception:
            log.exception("runner %s could not complete %d tasks", self.r.id, len(batch))
        # report each one alone, so a single bad outcome cannot take the rest with it
        accepted = 0
        for outcome in batch:
            accepted += await self._complete_one(outcome)
        return accepted

    async def _complete_one(self, outcome: TaskOutcome) -> int:
        """Commit one outcome, trying again after transient errors (the lease is ours and
        heartbeats keep it: a commit that gets through later saves a second execution). An
        outcome the store refuses becomes a failure of its task carrying the refusal (once:
        never a lost lease and another round). After COMMIT_ATTEMPTS the lease runs out and
        the task runs again elsewhere."""
        delay = COMMIT_RETRY_DELAY
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            try:
                return await self.store.complete(self.r.id, [outcome])
            except Exception as exc:
                if _refused(exc):
                    return await self._record_refusal(outcome, exc)
                if attempt == COMMIT_ATTEMPTS:
                    log.exception("runner %s could not complete task %s", self.r.id, outcome)
                    return 0
            await asyncio.sleep(delay)
            delay *= 4
        return 0  # not reached

    async def _record_refusal(self, outcome: TaskOutcome, refusal: Exception) -> int:
        log.error(
            "runner %s: the store refused the outcome of task %s (%s: %s); recording that as "
            "its failure",
            self.r.id,
            outcome.task_id,
            type(refusal).__name__,
            storable_text(str(refusal)),
        )
        failure = TaskFailure(
            outcome.task_id,
            error_info(refusal),
            self.r.retry_delay,
            storable_text(outcome.display),
            outcome.logs,  # already store-safe text (see TaskLogBook)
            outcome.logs_dropped,
            attempt=outcome.attempt,
        )
        try:
            return await self.store.complete(self.r.id, [failure])
        except Exception:
            log.exception("runner %s could not record the failure", self.r.id)
            return 0

    async def _flush_all(self) -> None:
        while self.pending or self.flushing:
            if self.flushing:
                await asyncio.sleep(0.001)
            else:
                await self._flush_once()

    async def _cleanup(self, jobs: set[str]) -> None:
        """Clear the caches of ``jobs`` that ended in a state the ``cleanup`` option names."""
        states = _CLEANUP_STATES[self.r.cleanup]
        for job_id in jobs:
            try:
                job = await self.store.get_job(job_id)
                if job is not None and job.state in states:
                    await self.r.cache.group(job_id).clear()
            except Exception:
                log.exception("runner %s: clearing the cache of job %s failed", self.r.id, job_id)

    async def _watch_queue_depth(self) -> None:
        """With OpenTelemetry: look up the queued tasks per cluster now and then, for the
        ``swath.queue.depth`` gauge."""
        assert self.tel is not None
        while True:
            try:
                self.tel.queue_depth(await self.store.queue_depth())
            except Exception:
                log.debug("runner %s: reading the queue depth failed", self.r.id, exc_info=True)
            await asyncio.sleep(self.tel.depth_interval)

    # -- leases ------------------------------------------------------------------------------------
    async def _heartbeat(self) -> None:
        """Renew this runner's leases every ``lease / 3`` seconds while it holds any; and when
        a job stops (at once when the store signals it, else with the heartbeat), cancel the
        tasks of it this runner holds."""
        interval = self.r.lease / 3
        next_beat = time.monotonic() + interval
        while True:
            self.stop_signal.clear()
            stopped = await self.stop_signal.wait(max(0.0, next_beat - time.monotonic()))
            busy = bool(self.inflight or self.pending or self.flushing)
            if not stopped:
                next_beat = time.monotonic() + interval
            if not busy:
                continue
            # a heartbeat that comes late (the process was starved of CPU, or frozen) may find
            # leases that can already be gone: their async tasks stop before it renews the rest
            self._fence()
            try:
                if not stopped:
                    began = time.monotonic()
                    await self.store.heartbeat(self.r.id, self.r.lease)
                    self.renewed_at = began
                if self.inflight:
                    self._abandon(set(await self.store.stop_requested(self.r.id)))
            except Exception:
                log.exception("runner %s: heartbeat failed", self.r.id)
                self._fence()

    async def _reporter(self) -> None:
        """Upsert this runner's row (``list_runners``: the dashboard's runners page) at once
        and then every heartbeat period (at least ``RUNNER_REPORT_MIN`` s), busy or idle: a
        task of its own, so the leases' renewal never waits for it; a failure costs nothing but
        the row's freshness."""
        interval = report_interval(self.r.lease)
        while True:
            await self._report_alive()
            await asyncio.sleep(interval)

    async def _report_alive(self) -> None:
        info = RunnerInfo(
            id=self.r.id,
            cluster=self.r.cluster,
            host=socket.gethostname(),
            pid=os.getpid(),
            concurrency=self.r.max_concurrency,
            lease=self.r.lease,
            started_at=self.started_at,
            tasks=len(self.running),
        )
        try:
            await self.store.runner_alive(info)
        except Exception:
            log.debug("runner %s: reporting itself failed", self.r.id, exc_info=True)

    def _fence(self) -> None:
        """Cancel the in-flight tasks whose leases were not renewed for FENCE_AFTER of the
        lease: another runner may soon take them."""
        now = time.monotonic()
        for task, flight in list(self.inflight.items()):
            renewed = max(flight.leased_at, self.renewed_at)
            if flight.sync or flight.fenced or flight.abandoned:
                continue
            if now - renewed < self.r.lease * FENCE_AFTER:
                continue
            flight.fenced = True
            self._forget(flight.claimed.id, flight.claimed.retry_count)  # a new claim restarts it
            log.warning(
                "runner %s: the lease of task %s was not renewed for %.1f s; cancelling it",
                self.r.id,
                flight.claimed.id,
                now - renewed,
            )
            if flight.context is not None:
                flight.context._cancel()
            task.cancel()

    def _abandon(self, task_ids: set[str]) -> None:
        """Cancel the in-flight tasks ``task_ids`` (their job stopped)."""
        if not task_ids:
            return
        for task, flight in list(self.inflight.items()):
            if flight.claimed.id in task_ids and not flight.abandoned:
                flight.abandoned = True
                log.info(
                    "runner %s: the job of task %s stopped; cancelling it",
                    self.r.id,
                    flight.claimed.id,
                )
                if flight.context is not None:
                    flight.context._cancel()
                task.cancel()


async def _wait_thread(thread: asyncio.Future[Any]) -> None:
    """Wait for a worker thread's future to finish, whatever cancellations arrive meanwhile: a
    thread cannot be stopped, and its task keeps its lease until it returns."""
    while not thread.done():
        with contextlib.suppress(BaseException):
            await asyncio.shield(thread)
