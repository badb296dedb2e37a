"""Runs you can trust under faults (issue 9), end to end on every store in ``STORES``.

Each test reproduces one way the promise "each task runs, its result is recorded, and a fault
never turns into a duplicate run, a silent loop or a wrong error" used to break, and checks it
holds now: a sync task outliving the grace period, results a store cannot save, runners with
different task sets on one cluster, failures inside optional subtrees, lifecycle holes of the
runner, cancellation of running tasks and time limits.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from swath import Client, ExecutionContext, InMemoryCache, JobState, Task, TaskState
from swath.context import FutureTask
from swath.runner import Runner, TaskTimeoutError

from .stores import StoreFactory

# -- helpers ------------------------------------------------------------------------------------


class Tracker:
    """Counts executions per key and the peak number running at once (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.runs: dict[str, int] = {}
        self.active: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.seen_cancelled: set[str] = set()

    def enter(self, key: str) -> None:
        with self.lock:
            self.runs[key] = self.runs.get(key, 0) + 1
            self.active[key] = self.active.get(key, 0) + 1
            self.peak[key] = max(self.peak.get(key, 0), self.active[key])

    def leave(self, key: str) -> None:
        with self.lock:
            self.active[key] -= 1


def tracker(context: ExecutionContext) -> Tracker:
    found = context.runner_context
    assert isinstance(found, Tracker)
    return found


@pytest.fixture
async def client(store_factory: StoreFactory) -> AsyncIterator[Client]:
    async with Client(store=store_factory.make()) as c:
        yield c


async def until(check: Any, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def states(client: Client, job_id: str) -> dict[str, list[TaskState]]:
    found: dict[str, list[TaskState]] = {}
    for t in await client.jobs().tasks(job_id):
        found.setdefault(t.name, []).append(t.state)
    return found


# -- 1. a sync task outliving the grace period ----------------------------------------------------
class SlowSync(Task):
    seconds: float

    def execute(self, context: ExecutionContext) -> None:
        t = tracker(context)
        t.enter("slow")
        try:
            time.sleep(self.seconds)
            context.job_cache["written"] = b"by the first execution"
        finally:
            t.leave("slow")


async def test_sync_task_past_the_grace_keeps_its_lease_and_never_runs_twice_at_once(
    client: Client,
) -> None:
    """A runner with grace=0.2 stops while a sync task sleeps 1.5 s; a second runner starts at
    once. The thread cannot be stopped, so its task keeps its lease (heartbeats go on) until it
    returns and its real outcome is committed: it ran once, never two at a time, and the second
    runner found nothing to do. (Before: released at the grace, run again meanwhile, peak 2.)"""
    t = Tracker()
    job = await client.jobs().submit("slow", SlowSync(1.5))
    cache = InMemoryCache()
    first = client.runner([SlowSync], cache, context=t, grace=0.2, lease=0.6)
    first_run = asyncio.create_task(first.run_forever())

    async def started() -> bool:
        return t.runs.get("slow", 0) == 1

    await until(started)
    first.stop()
    second = client.runner([SlowSync], cache, context=t, lease=0.6, poll_interval=(0.01, 0.05))
    second_run = asyncio.create_task(second.run_forever())
    async with asyncio.timeout(20):
        await first_run
    assert (await client.jobs().find(job.id)).state == JobState.COMPLETED
    await asyncio.sleep(1.0)  # two lease periods: nothing may be claimed again
    second.stop()
    await second_run
    assert t.runs == {"slow": 1}
    assert t.peak == {"slow": 1}
    assert second.stats.claimed == 0
    assert first.stats.released == 0
    assert await cache.group(job.id).get("written") == b"by the first execution"


# -- 2. results a store cannot save -----------------------------------------------------------
class Bad(Task):
    how: str

    def execute(self, context: ExecutionContext) -> None:
        tracker(context).enter(self.how)
        if self.how == "progress":
            context.progress("p").add(2**64)
        elif self.how == "nul":
            raise ValueError("a\x00b")
        elif self.how == "surrogate-message":
            raise RuntimeError("lone \ud800 surrogate")
        elif self.how == "display":
            context.current_task.display = "a\ud800"
        elif self.how == "retries":
            context.submit_subtask(Noop(), max_retries=2**64)
        elif self.how == "forged":
            forged = FutureTask(context, 0, "forged-id", Noop())
            context.submit_subtask(Noop(), depends_on=[forged])


class Noop(Task):
    async def execute(self, context: ExecutionContext) -> None:
        pass


class Count(Task):
    n: int

    async def execute(self, context: ExecutionContext) -> None:
        tracker(context).enter(f"count-{self.n}")
        context.progress("p").add(self.n)


class CountTwice(Task):
    async def execute(self, context: ExecutionContext) -> None:
        first = context.submit_subtask(Count(2**63 - 1))
        context.submit_subtask(Count(1), depends_on=[first])


@pytest.mark.parametrize(
    ("how", "error_type", "message"),
    [
        ("progress", "ValueError", "more than a store can count"),
        ("nul", "ValueError", "a\\x00b"),
        ("surrogate-message", "RuntimeError", "lone \\ud800 surrogate"),
        ("display", "InvalidTextError", "lone surrogate"),
        ("retries", "ValueError", "max_retries"),
        ("forged", "ValueError", "not a subtask this execute submitted"),
    ],
)
async def test_a_result_no_store_can_save_fails_the_task_once_with_the_real_error(
    client: Client, how: str, error_type: str, message: str
) -> None:
    """What a task hands the context is checked where it is handed (and error text is made
    storable): the task fails once, at once, with the real error, never looping through lease
    expiry to a RunnerLostError. (Before: 11 runs, then RunnerLostError.)"""
    t = Tracker()
    job = await client.jobs().submit(how, Bad(how))
    started = time.monotonic()
    async with asyncio.timeout(30):
        await client.runner([Bad, Noop], InMemoryCache(), context=t, lease=0.5).run_all()
    assert time.monotonic() - started < 10
    assert (await client.jobs().find(job.id)).state == JobState.FAILED
    [task] = await client.jobs().tasks(job.id)
    assert task.state == TaskState.FAILED
    assert task.error is not None
    assert (task.error.type, task.lost_count, task.retry_count) == (error_type, 0, 0)
    assert message in task.error.message
    assert t.runs == {how: 1}


async def test_an_outcome_the_store_refuses_is_recorded_as_that_tasks_failure(
    client: Client,
) -> None:
    """Two tasks add 2**63 - 1 and then 1 to one progress indicator: each count is valid alone,
    but the sum is beyond what a store counts, so the store refuses the second completion. That
    task is failed once with the refusal (RefusedError) in place of its outcome; it is not
    sent round again."""
    t = Tracker()
    job = await client.jobs().submit("overflow", CountTwice())
    async with asyncio.timeout(30):
        await client.runner([CountTwice, Count], InMemoryCache(), context=t, lease=0.5).run_all()
    assert (await client.jobs().find(job.id)).state == JobState.FAILED
    tasks = {t.name + str(i): t for i, t in enumerate(await client.jobs().tasks(job.id))}
    refused = tasks["Count2"]
    assert refused.state == TaskState.FAILED
    assert refused.error is not None
    assert refused.error.type == "RefusedError"
    assert "out of range" in refused.error.message
    assert refused.lost_count == 0
    assert t.runs == {f"count-{2**63 - 1}": 1, "count-1": 1}
    [progress] = (await client.jobs().find(job.id)).progress
    assert (progress.total, progress.done) == (2**63 - 1, 0)


# -- 3. runners with different task sets ---------------------------------------------------------
class LeafA(Task):
    async def execute(self, context: ExecutionContext) -> None:
        tracker(context).enter("a")


class LeafB(Task):
    async def execute(self, context: ExecutionContext) -> None:
        tracker(context).enter("b")


class Root(Task):
    async def execute(self, context: ExecutionContext) -> None:
        context.submit_subtasks([LeafA(), LeafB(), LeafA()])


async def test_runners_with_different_task_sets_share_one_cluster(client: Client) -> None:
    """Runner A knows Root and LeafA, runner B only LeafB. A never claims LeafB (which waits,
    QUEUED, while the job stays RUNNING); B then runs it and the job completes. Nothing fails.
    (Before: A claimed LeafB, failed it with UnknownTaskError, and the job FAILED.)"""
    t = Tracker()
    cache = InMemoryCache()
    job = await client.jobs().submit("mixed", Root())
    async with asyncio.timeout(30):
        await client.runner([Root, LeafA], cache, context=t).run_all()
    assert (await client.jobs().find(job.id)).state == JobState.RUNNING
    assert await states(client, job.id) == {
        "Root": [TaskState.COMPUTED],
        "LeafA": [TaskState.COMPLETED, TaskState.COMPLETED],
        "LeafB": [TaskState.QUEUED],
    }
    async with asyncio.timeout(30):
        await client.runner([LeafB], cache, context=t).run_all()
    assert (await client.jobs().find(job.id)).state == JobState.COMPLETED
    assert t.runs == {"a": 2, "b": 1}


async def test_two_runners_with_different_task_sets_running_together(client: Client) -> None:
    """Both runners run at once on one cluster (20 jobs): every job completes, each leaf ran on
    the runner that knows it, once."""
    t = Tracker()
    cache = InMemoryCache()
    jobs = [await client.jobs().submit(f"mixed-{i}", Root()) for i in range(20)]
    a = client.runner([Root, LeafA], cache, context=t, poll_interval=(0.01, 0.05))
    b = client.runner([LeafB], cache, context=t, poll_interval=(0.01, 0.05))
    runs = [asyncio.create_task(a.run_forever()), asyncio.create_task(b.run_forever())]

    async def all_done() -> bool:
        found = [await client.jobs().find(j.id) for j in jobs]
        return all(j.state == JobState.COMPLETED for j in found)

    try:
        await until(all_done)
    finally:
        a.stop()
        b.stop()
        await asyncio.gather(*runs)
    assert t.runs == {"a": 40, "b": 20}
    assert (a.stats.failed, b.stats.failed) == (0, 0)


# -- 4. optional subtrees (Tilebox's OptionalSubbranch) ------------------------------------------
class FailingTask(Task):
    def execute(self, context: ExecutionContext) -> None:
        context.job_cache["failing_task"] = b"1"
        raise ValueError("This task always fails")


class SucceedingTask(Task):
    def execute(self, context: ExecutionContext) -> None:
        context.job_cache["succeeding_task"] = b"1"


class OptionalSubtasks(Task):
    failing_task_optional: bool

    def execute(self, context: ExecutionContext) -> None:
        f = context.submit_subtask(FailingTask(), optional=self.failing_task_optional)
        context.submit_subtask(SucceedingTask(), depends_on=[f])


class OptionalSubbranch(Task):
    def execute(self, context: ExecutionContext) -> None:
        context.submit_subtask(OptionalSubtasks(False), optional=True)
        context.submit_subtask(SucceedingTask())


BRANCH_TASKS = [OptionalSubbranch, OptionalSubtasks, FailingTask, SucceedingTask]


async def counts(client: Client, job_id: str) -> dict[TaskState, int]:
    found: dict[TaskState, int] = {}
    for t in await client.jobs().tasks(job_id):
        found[t.state] = found.get(t.state, 0) + 1
    return found


async def test_a_failure_inside_an_optional_subtree_stops_at_the_branch(client: Client) -> None:
    """Tilebox's OptionalSubbranch: a non-optional task failing inside the subtree of an optional
    subtask does not fail the job. It is recorded FAILED_OPTIONAL, the task that depended on it
    is SKIPPED, the rest completes, and so does the job. (Before: the job FAILED.)"""
    cache = InMemoryCache()
    job = await client.jobs().submit("optional-subbranch", OptionalSubbranch())
    async with asyncio.timeout(30):
        await client.runner(BRANCH_TASKS, cache).run_all()
    assert (await client.jobs().find(job.id)).state == JobState.COMPLETED
    assert await counts(client, job.id) == {
        TaskState.COMPLETED: 3,
        TaskState.FAILED_OPTIONAL: 1,
        TaskState.SKIPPED: 1,
    }
    named = {t.name: t.state for t in await client.jobs().tasks(job.id)}
    assert named["FailingTask"] == TaskState.FAILED_OPTIONAL
    assert named["OptionalSubtasks"] == TaskState.COMPLETED
    assert await cache.group(job.id).get("failing_task") == b"1"
    assert await cache.group(job.id).get("succeeding_task") == b"1"


async def test_an_optional_failing_subtask_lets_its_dependent_run(client: Client) -> None:
    """Tilebox's optional subtask case: the failing task itself is optional, so the task that
    depends on it still runs; the job completes."""
    job = await client.jobs().submit("optional-subtasks", OptionalSubtasks(True))
    async with asyncio.timeout(30):
        await client.runner(BRANCH_TASKS, InMemoryCache()).run_all()
    assert (await client.jobs().find(job.id)).state == JobState.COMPLETED
    assert await counts(client, job.id) == {TaskState.COMPLETED: 2, TaskState.FAILED_OPTIONAL: 1}


async def test_a_failure_outside_any_optional_subtree_still_fails_the_job(
    client: Client,
) -> None:
    """Without an optional ancestor the failure fails the job, as before: FAILED, dependents
    SKIPPED."""
    job = await client.jobs().submit("plain", OptionalSubtasks(False))
    async with asyncio.timeout(30):
        await client.runner(BRANCH_TASKS, InMemoryCache()).run_all()
    assert (await client.jobs().find(job.id)).state == JobState.FAILED
    named = {t.name: t.state for t in await client.jobs().tasks(job.id)}
    assert named["FailingTask"] == TaskState.FAILED
    assert named["SucceedingTask"] == TaskState.SKIPPED


# -- 5. lifecycle holes ---------------------------------------------------------------------------
class Wait(Task):
    seconds: float

    async def execute(self, context: ExecutionContext) -> None:
        tracker(context).enter("wait")
        await asyncio.sleep(self.seconds)
        await context.job_cache.put("done", b"1")


class Interrupt(Task):
    async def execute(self, context: ExecutionContext) -> None:
        raise KeyboardInterrupt


async def test_stop_before_the_run_starts_is_honoured(client: Client) -> None:
    """runner.stop() called before run_all: the run returns at once and claims nothing; the
    next run of the same runner works normally. (Before: the stop was lost.)"""
    t = Tracker()
    job = await client.jobs().submit("w", Wait(0.0))
    runner = client.runner([Wait], InMemoryCache(), context=t)
    runner.stop()
    async with asyncio.timeout(10):
        await runner.run_all()
    assert runner.stats.claimed == 0
    assert (await client.jobs().find(job.id)).state == JobState.QUEUED
    async with asyncio.timeout(10):
        await runner.run_all()
    assert (await client.jobs().find(job.id)).state == JobState.COMPLETED


class ClosingCache(InMemoryCache):
    """Records whether a write happened after the runner left the cache."""

    def __init__(self) -> None:
        super().__init__()
        self.closed = False
        self.late_writes = 0

    async def __aexit__(self, *exc: object) -> None:
        self.closed = True

    async def _put_bytes(self, path: Any, data: Any) -> None:  # type: ignore[override]
        if self.closed:
            self.late_writes += 1
        await super()._put_bytes(path, data)


async def test_repeated_cancellation_cannot_cut_the_graceful_shutdown(client: Client) -> None:
    """run_forever is cancelled three times while a task needs 0.6 s more: the shutdown still
    lets the task finish within the grace, commits it and only then leaves the cache; the run
    then raises CancelledError. (Before: a later cancellation abandoned the shielded shutdown
    while the cache was closed under it.)"""
    t = Tracker()
    cache = ClosingCache()
    job = await client.jobs().submit("w", Wait(0.6))
    run = asyncio.create_task(client.runner([Wait], cache, context=t).run_forever())

    async def started() -> bool:
        return t.runs.get("wait", 0) == 1

    await until(started)
    for _ in range(3):
        run.cancel()
        await asyncio.sleep(0.05)
    with pytest.raises(asyncio.CancelledError):
        await run
    assert cache.late_writes == 0
    assert (await client.jobs().find(job.id)).state == JobState.COMPLETED
    assert await cache.group(job.id).get("done") == b"1"


async def test_keyboard_interrupt_in_a_task_fails_it_and_propagates(client: Client) -> None:
    """A KeyboardInterrupt raised by task code fails that task (recorded, not left RUNNING), the
    runner stops gracefully, and run_all raises the KeyboardInterrupt."""
    job = await client.jobs().submit("ki", Interrupt())
    with pytest.raises(KeyboardInterrupt):
        async with asyncio.timeout(20):
            await client.runner([Interrupt], InMemoryCache()).run_all()
    [task] = await client.jobs().tasks(job.id)
    assert task.state == TaskState.FAILED
    assert task.error is not None
    assert task.error.type == "KeyboardInterrupt"


# -- 6. cancelling a job stops its running tasks; time limits --------------------------------------
class SleepAsync(Task):
    seconds: float

    async def execute(self, context: ExecutionContext) -> None:
        tracker(context).enter("async")
        await asyncio.sleep(self.seconds)


class PollSync(Task):
    seconds: float

    def execute(self, context: ExecutionContext) -> None:
        t = tracker(context)
        t.enter("sync")
        deadline = time.monotonic() + self.seconds
        while time.monotonic() < deadline:
            if context.cancelled:
                with t.lock:
                    t.seen_cancelled.add(context.current_task.id)
                return
            time.sleep(0.01)


class Both(Task):
    async def execute(self, context: ExecutionContext) -> None:
        context.submit_subtasks([SleepAsync(60.0), PollSync(60.0)])


async def test_cancelling_a_job_cancels_its_running_tasks(
    client: Client, store_factory: StoreFactory
) -> None:
    """A job is cancelled (through another store object, as another process would, when the
    store is shared) while an async task sleeps 60 s and a sync task polls: the runner learns it
    (heartbeat, or NOTIFY on PostgreSQL), cancels the async task, sets context.cancelled for the
    sync one; both end CANCELED within seconds, and the job is CANCELED."""
    t = Tracker()
    job = await client.jobs().submit("both", Both())
    runner = client.runner([Both, SleepAsync, PollSync], InMemoryCache(), context=t, lease=0.9)
    run = asyncio.create_task(runner.run_forever())

    async def both_running() -> bool:
        return t.runs.get("async") == 1 and t.runs.get("sync") == 1

    try:
        await until(both_running)
        if store_factory.shared:
            async with Client(store=store_factory.make()) as other:
                await other.jobs().cancel(job.id)
        else:
            await client.jobs().cancel(job.id)
        started = time.monotonic()

        async def stopped() -> bool:
            named = await states(client, job.id)
            return named["SleepAsync"] == named["PollSync"] == [TaskState.CANCELED]

        await until(stopped, seconds=10)
        assert time.monotonic() - started < 5
    finally:
        runner.stop()
        await run
    assert (await client.jobs().find(job.id)).state == JobState.CANCELED
    assert len(t.seen_cancelled) == 1
    assert runner.stats.succeeded == 1  # Both; the two leaves were released, not completed


class TooSlow(Task, timeout=0.3):
    async def execute(self, context: ExecutionContext) -> None:
        tracker(context).enter("too-slow")
        try:
            await asyncio.sleep(30)
        finally:
            tracker(context).leave("too-slow")


class TooSlowSync(Task):
    def execute(self, context: ExecutionContext) -> None:
        t = tracker(context)
        t.enter("too-slow-sync")
        while not context.cancelled:
            time.sleep(0.01)
        time.sleep(0.2)  # a thread that takes a while to notice: its retry must wait for it
        t.seen_cancelled.add("sync")
        t.leave("too-slow-sync")


class SlowParent(Task):
    async def execute(self, context: ExecutionContext) -> None:
        context.submit_subtask(TooSlowSync(), timeout=0.3, max_retries=1)


async def test_a_task_running_past_its_timeout_fails_with_timeout_error(client: Client) -> None:
    """timeout= (a class default here, a submission's there) fails an execution that runs
    longer with a TimeoutError, retried by max_retries: the async task is cancelled; the sync
    one sees context.cancelled, and its lease is kept until its thread returns."""
    t = Tracker()
    slow = await client.jobs().submit("slow", TooSlow(), max_retries=1)
    sync = await client.jobs().submit("slow-sync", SlowParent())
    async with asyncio.timeout(30):
        await client.runner(
            [TooSlow, TooSlowSync, SlowParent], InMemoryCache(), context=t, retry_delay=0.01
        ).run_all()
    for job in (slow, sync):
        assert (await client.jobs().find(job.id)).state == JobState.FAILED
    [task] = await client.jobs().tasks(slow.id)
    assert task.error is not None
    assert task.error.type == "TaskTimeoutError"
    assert "timeout of 0.3 s" in task.error.message
    assert task.retry_count == 1
    assert t.runs == {"too-slow": 2, "too-slow-sync": 2}
    assert t.peak == {"too-slow": 1, "too-slow-sync": 1}
    assert t.seen_cancelled == {"sync"}
    assert issubclass(TaskTimeoutError, TimeoutError)


def test_timeouts_are_checked_where_they_are_given() -> None:
    """A class timeout must be a positive number (TypeError at class definition)."""
    with pytest.raises(TypeError, match="timeout"):

        class Bad(Task, timeout=0):  # type: ignore[misc]
            async def execute(self, context: ExecutionContext) -> None:
                pass

    assert TooSlow._swath_timeout == 0.3
    assert isinstance(Runner, type)


class NoHeartbeatStore:
    """Wraps a store whose heartbeats fail (an unreachable store, for renewals only)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def heartbeat(self, runner_id: str, lease: float) -> int:
        raise OSError("heartbeat: store unreachable")


async def test_a_runner_never_runs_a_task_it_reclaimed_beside_itself(client: Client) -> None:
    """A runner whose heartbeats fail loses the lease of a task it runs (1.2 s, lease 0.3 s);
    its own next claim takes the task again. It must not start a second execution beside the
    one in flight: the task runs once and completes once."""
    t = Tracker()
    job = await client.jobs().submit("slow", SlowSync(1.2))
    runner = Runner(
        NoHeartbeatStore(client.store),  # type: ignore[arg-type]
        [SlowSync],
        InMemoryCache(),
        context=t,
        lease=0.3,
        poll_interval=(0.01, 0.05),
    )
    async with asyncio.timeout(20):
        await runner.run_all()
    assert t.runs == {"slow": 1}
    assert t.peak == {"slow": 1}
    assert (await client.jobs().find(job.id)).state == JobState.COMPLETED


class FlakyCompleteStore(NoHeartbeatStore):
    """Wraps a store whose first ``failures`` completions fail as a dropped connection would."""

    def __init__(self, inner: Any, failures: int) -> None:
        super().__init__(inner)
        self.failures = failures

    async def heartbeat(self, runner_id: str, lease: float) -> int:
        return int(await self._inner.heartbeat(runner_id, lease))

    async def complete(self, runner_id: str, outcomes: Any) -> int:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("complete: connection dropped")
        return int(await self._inner.complete(runner_id, outcomes))


async def test_an_outcome_is_committed_after_transient_store_errors(client: Client) -> None:
    """The first three completions fail as a dropped connection would: the runner commits the
    outcome on a later attempt (its lease is still its own), so the task runs once rather than
    again after its lease runs out."""
    t = Tracker()
    job = await client.jobs().submit("flaky", SlowSync(0.0))
    store = FlakyCompleteStore(client.store, failures=3)
    runner = Runner(store, [SlowSync], InMemoryCache(), context=t, lease=5.0)  # type: ignore[arg-type]
    async with asyncio.timeout(20):
        await runner.run_all()
    assert store.failures == 0
    assert t.runs == {"slow": 1}
    assert (await client.jobs().find(job.id)).state == JobState.COMPLETED
    [task] = await client.jobs().tasks(job.id)
    assert task.lost_count == 0


class SleepTracked(Task):
    seconds: float

    async def execute(self, context: ExecutionContext) -> None:
        t = tracker(context)
        t.enter("sleep")
        try:
            await asyncio.sleep(self.seconds)
        finally:
            t.leave("sleep")


async def test_a_runner_that_cannot_renew_its_leases_cancels_its_tasks_first(
    client: Client,
) -> None:
    """A runner whose heartbeats all fail cancels an async task before its lease (0.6 s) can
    run out, so no other runner could run it at the same time; a second runner with working
    heartbeats then runs it to the end. Never two executions at once."""
    t = Tracker()
    job = await client.jobs().submit("long", SleepTracked(1.5))
    cut_off = Runner(
        NoHeartbeatStore(client.store),  # type: ignore[arg-type]
        [SleepTracked],
        InMemoryCache(),
        context=t,
        lease=0.6,
        poll_interval=(0.01, 0.05),
    )
    run = asyncio.create_task(cut_off.run_forever())

    async def started() -> bool:
        return t.runs.get("sleep", 0) >= 1

    await until(started)
    await asyncio.sleep(0.5)  # FENCE_AFTER x lease = 0.4 s, plus a heartbeat period
    assert t.active["sleep"] == 0, "the task should have been cancelled by now"
    cut_off.stop()
    await run
    healthy = client.runner([SleepTracked], InMemoryCache(), context=t, lease=0.6)
    async with asyncio.timeout(20):
        await healthy.run_all()
    assert (await client.jobs().find(job.id)).state == JobState.COMPLETED
    assert t.peak == {"sleep": 1}
