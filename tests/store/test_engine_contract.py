"""The workflow semantics (docs/guide.md) end to end: Client, runner, tasks and the
job cache, run against every store in ``STORES``.

Tasks record what they did in the job cache (an ``InMemoryCache`` shared by the test), so each
test can check what ran, how often and in which order without any global state.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from swath import (
    Client,
    ExecutionContext,
    InMemoryCache,
    JobState,
    Task,
    TaskState,
    UnknownClusterError,
)

from .stores import StoreFactory

# -- tasks --------------------------------------------------------------------------------------


async def mark(context: ExecutionContext, key: str) -> None:
    """Count an execution of ``key`` in the job cache group "ran"."""
    group = context.job_cache.group("ran")
    old = int(await group.get(key)) if await group.contains(key) else 0
    await group.put(key, str(old + 1).encode())


async def ran(cache: InMemoryCache, job_id: str) -> dict[str, int]:
    group = cache.group(job_id).group("ran")
    return {key: int(await group.get(key)) async for key in group}


class Write(Task):
    key: str

    async def execute(self, context: ExecutionContext) -> None:
        await context.job_cache.group("numbers").put(self.key, self.key.encode())
        context.progress("writes").done(1)


class FanOut(Task):
    n: int
    depth: int = 1

    async def execute(self, context: ExecutionContext) -> None:
        await mark(context, f"fanout-{self.depth}-{self.n}")
        context.progress("writes").add(self.n)
        if self.depth > 1:
            context.submit_subtasks(
                [FanOut(self.n, self.depth - 1) for _ in range(2)]
            )  # more writers, deeper in the subtree
        for i in range(self.n):
            context.submit_subtask(Write(f"{context.current_task.id}-{i}"))


class Sum(Task):
    async def execute(self, context: ExecutionContext) -> None:
        group = context.job_cache.group("numbers")
        keys = [key async for key in group]
        await context.job_cache.put("count", str(len(keys)).encode())


class ProduceThenSum(Task):
    n: int
    depth: int

    async def execute(self, context: ExecutionContext) -> None:
        producer = context.submit_subtask(FanOut(self.n, self.depth))
        context.submit_subtask(Sum(), depends_on=[producer])


class Fail(Task):
    message: str = "it broke"

    async def execute(self, context: ExecutionContext) -> None:
        await mark(context, "fail")
        inner_helper_that_raises(self.message)


def inner_helper_that_raises(message: str) -> None:
    raise ValueError(message)


class Mark(Task):
    key: str

    async def execute(self, context: ExecutionContext) -> None:
        await mark(context, self.key)


class ManyMarks(Task):
    n: int

    async def execute(self, context: ExecutionContext) -> None:
        context.submit_subtasks([Mark(f"m{i}") for i in range(self.n)])


class StashFuture(Task):
    """Keeps a FutureTask of its own context in the runner context (a user mistake)."""

    async def execute(self, context: ExecutionContext) -> None:
        context.runner_context["stash"] = context.submit_subtask(Mark("stashed"))


class UseForeignFuture(Task):
    async def execute(self, context: ExecutionContext) -> None:
        context.submit_subtask(Mark("foreign"), depends_on=[context.runner_context["stash"]])


class OptionalThenDependent(Task):
    async def execute(self, context: ExecutionContext) -> None:
        maybe = context.submit_subtask(Fail("optional"), optional=True)
        context.submit_subtask(Mark("after-optional"), depends_on=[maybe])


class FailThenMore(Task):
    async def execute(self, context: ExecutionContext) -> None:
        bad = context.submit_subtask(Fail())
        context.submit_subtask(Mark("never"), depends_on=[bad])


class Flaky(Task):
    """Fails until it has been retried ``succeed_on`` times."""

    succeed_on: int

    async def execute(self, context: ExecutionContext) -> None:
        await mark(context, "flaky")
        await context.job_cache.put(f"try-{context.current_task.retry_count}", b"%f" % time.time())
        if context.current_task.retry_count < self.succeed_on:
            raise RuntimeError(f"attempt {context.current_task.retry_count} fails")


class SubmitThenRaise(Task):
    async def execute(self, context: ExecutionContext) -> None:
        context.submit_subtasks([Mark("orphan") for _ in range(3)])
        raise RuntimeError("after submitting")


class Gate(Task):
    """Waits (at most 5 s) until the test puts the key "open" into the job cache."""

    async def execute(self, context: ExecutionContext) -> None:
        await mark(context, "gate")
        for _ in range(500):
            if await context.job_cache.contains("open"):
                break
            await asyncio.sleep(0.01)
        context.submit_subtask(Mark("after-gate"))


class GateAndSiblings(Task):
    async def execute(self, context: ExecutionContext) -> None:
        gate = context.submit_subtask(Gate())
        context.submit_subtasks([Mark(f"sibling-{i}") for i in range(3)], depends_on=[gate])


class Sleep(Task):
    seconds: float
    key: str = ""

    async def execute(self, context: ExecutionContext) -> None:
        await mark(context, self.key or "sleep")
        active = context.runner_context["active"]
        active[0] += 1
        active[1] = max(active[1], active[0])
        await asyncio.sleep(self.seconds)
        active[0] -= 1


class ManySleeps(Task):
    n: int
    seconds: float

    async def execute(self, context: ExecutionContext) -> None:
        context.submit_subtasks([Sleep(self.seconds) for _ in range(self.n)])


class SyncTask(Task):
    def execute(self, context: ExecutionContext) -> None:
        cache = context.job_cache
        assert threading.current_thread() is not threading.main_thread()
        cache["plain"] = b"value"
        group = cache.group("g")
        group["a"] = b"1"
        group["b"] = b"2"
        assert cache["plain"] == b"value"
        assert "plain" in cache
        assert "missing" not in cache
        assert sorted(group) == ["a", "b"]
        del group["a"]
        cache["seen"] = ",".join(sorted(group)).encode()
        context.progress("sync").add(1)
        context.progress("sync").done(1)
        context.current_task.display = "sync done"


class Describe(Task):
    async def execute(self, context: ExecutionContext) -> None:
        t = context.current_task
        context.current_task.display = f"job {t.job.name}"
        await context.job_cache.put("who", f"{t.job.id}|{t.job.name}|{t.retry_count}".encode())
        await context.job_cache.put("resource", str(context.runner_context).encode())
        context.logger.info("described", extra={"answer": 42})


class ToCluster(Task):
    cluster: str

    async def execute(self, context: ExecutionContext) -> None:
        context.submit_subtask(Mark(f"on-{self.cluster}"), cluster=self.cluster)


class Versioned(Task):
    @classmethod
    def identifier(cls) -> tuple[str, str]:
        return "versioned", "v1.2"

    async def execute(self, context: ExecutionContext) -> None:
        await mark(context, "v1.2")


class VersionedNewer(Task):
    @classmethod
    def identifier(cls) -> tuple[str, str]:
        return "versioned", "v1.3"

    async def execute(self, context: ExecutionContext) -> None:
        await mark(context, "v1.3")


class VersionedOlder(Task):
    @classmethod
    def identifier(cls) -> tuple[str, str]:
        return "versioned", "v1.1"

    async def execute(self, context: ExecutionContext) -> None:
        await mark(context, "v1.1")


class TypedInt(Task):
    value: int

    @classmethod
    def identifier(cls) -> tuple[str, str]:
        return "typed", "v0.0"

    async def execute(self, context: ExecutionContext) -> None:
        await mark(context, "int")


class TypedDate(Task):
    value: list[str]

    @classmethod
    def identifier(cls) -> tuple[str, str]:
        return "typed", "v0.0"

    async def execute(self, context: ExecutionContext) -> None:
        await mark(context, "list")


ALL = [
    Write, FanOut, Sum, ProduceThenSum, Fail, Mark, OptionalThenDependent, FailThenMore, Flaky,
    SubmitThenRaise, Gate, GateAndSiblings, Sleep, ManySleeps, SyncTask, Describe, ToCluster,
    ManyMarks, StashFuture, UseForeignFuture,
]  # fmt: skip


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture
async def client(store_factory: StoreFactory) -> AsyncIterator[Client]:
    async with Client(store=store_factory.make()) as c:
        yield c


@pytest.fixture
def cache() -> InMemoryCache:
    return InMemoryCache()


def runner_context() -> dict[str, Any]:
    return {"active": [0, 0]}


async def run(client: Client, cache: InMemoryCache, **options: Any) -> None:
    options.setdefault("retry_delay", 0.01)
    options.setdefault("context", runner_context())
    runner = client.runner(ALL, cache, **options)
    async with asyncio.timeout(30):
        await runner.run_all()


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 10.0) -> None:
    """Poll ``check`` every 2 ms until it is true; fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.002)
    raise AssertionError(f"condition not met within {seconds} s")


async def task_states(client: Client, job_id: str) -> dict[str, list[TaskState]]:
    found: dict[str, list[TaskState]] = {}
    for t in await client.jobs().tasks(job_id):
        found.setdefault(t.name, []).append(t.state)
    return found


async def _contains(counts: Awaitable[dict[str, int]], key: str) -> bool:
    return key in await counts


async def _gate_finished(client: Client, job_id: str) -> bool:
    return (await task_states(client, job_id))["Gate"] == [TaskState.CANCELED]


# -- subtrees and dependencies ------------------------------------------------------------------
async def test_reducer_sees_every_write_of_its_producers_subtree(
    client: Client, cache: InMemoryCache
) -> None:
    """depends_on waits for the producer's whole subtree (three levels of fan-out), so the
    reducer counts every key written below it; the job completes with all tasks COMPLETED."""
    job = await client.jobs().submit("reduce", ProduceThenSum(n=5, depth=3))
    await run(client, cache)
    # depth 3 fans out 1 + 2 + 4 FanOut tasks of 5 writers each
    assert await cache.group(job.id).get("count") == b"35"
    done = await client.jobs().find(job.id)
    assert done.state == JobState.COMPLETED
    assert {s for states in (await task_states(client, job.id)).values() for s in states} == {
        TaskState.COMPLETED
    }
    assert [(p.label, p.total, p.done) for p in done.progress] == [("writes", 35, 35)]


async def test_optional_failure_lets_dependents_run(client: Client, cache: InMemoryCache) -> None:
    """A failed optional subtask is FAILED_OPTIONAL, its dependent still runs and the job
    completes."""
    job = await client.jobs().submit("optional", OptionalThenDependent())
    await run(client, cache)
    assert (await client.jobs().find(job.id)).state == JobState.COMPLETED
    states = await task_states(client, job.id)
    assert states["Fail"] == [TaskState.FAILED_OPTIONAL]
    assert (await ran(cache, job.id))["after-optional"] == 1


async def test_failure_fails_the_job_and_nothing_more_of_it_runs(
    client: Client, cache: InMemoryCache
) -> None:
    """A non-optional failure without retries fails the job; its dependents never run (SKIPPED);
    other jobs are unaffected and the runner keeps going."""
    bad = await client.jobs().submit("bad", FailThenMore())
    good = await client.jobs().submit("good", Mark("good"))
    await run(client, cache)
    assert (await client.jobs().find(bad.id)).state == JobState.FAILED
    assert (await client.jobs().find(good.id)).state == JobState.COMPLETED
    assert "never" not in await ran(cache, bad.id)
    states = await task_states(client, bad.id)
    assert states["Mark"] == [TaskState.SKIPPED]
    assert states["Fail"] == [TaskState.FAILED]


async def test_failed_task_keeps_exception_type_message_and_traceback(
    client: Client, cache: InMemoryCache
) -> None:
    """The stored error has the exception's type, message and the full traceback, down to the
    frame that raised."""
    message = "a long message " * 200
    job = await client.jobs().submit("tb", Fail(message))
    await run(client, cache)
    [task] = await client.jobs().tasks(job.id)
    assert task.state == TaskState.FAILED
    assert task.error is not None
    assert task.error.type == "ValueError"
    assert task.error.message == message
    assert "inner_helper_that_raises" in task.error.traceback
    assert task.error.traceback.rstrip().endswith(f"ValueError: {message}".rstrip())


async def test_retries_with_backoff_then_success(client: Client, cache: InMemoryCache) -> None:
    """A task with max_retries is retried after a growing back-off and completes; retry_count is
    visible to the task."""
    job = await client.jobs().submit("flaky", Flaky(succeed_on=2), max_retries=2)
    await run(client, cache, retry_delay=0.1)
    assert (await client.jobs().find(job.id)).state == JobState.COMPLETED
    assert (await ran(cache, job.id))["flaky"] == 3
    group = cache.group(job.id)
    t0, t1, t2 = [float(await group.get(f"try-{i}")) for i in range(3)]
    assert t1 - t0 >= 0.1  # first back-off: retry_delay
    assert t2 - t1 >= 0.2  # then doubled
    [task] = await client.jobs().tasks(job.id)
    assert task.retry_count == 2


async def test_retries_exhausted_fail_the_job(client: Client, cache: InMemoryCache) -> None:
    """When every retry fails, the task is FAILED after 1 + max_retries executions."""
    job = await client.jobs().submit("flaky", Flaky(succeed_on=5), max_retries=1)
    await run(client, cache)
    assert (await client.jobs().find(job.id)).state == JobState.FAILED
    assert (await ran(cache, job.id))["flaky"] == 2


async def test_subtasks_are_committed_only_if_execute_returns(
    client: Client, cache: InMemoryCache
) -> None:
    """Subtasks submitted by an execute that then raises are never committed or run."""
    job = await client.jobs().submit("orphans", SubmitThenRaise())
    await run(client, cache)
    assert [t.name for t in await client.jobs().tasks(job.id)] == ["SubmitThenRaise"]
    assert await ran(cache, job.id) == {}


# -- cancel and retry ---------------------------------------------------------------------------
async def test_cancel_stops_queued_work_running_task_finishes_subtasks_dropped(
    client: Client, cache: InMemoryCache
) -> None:
    """Cancelling a job while a task runs: the task finishes (CANCELED, as its subtask is
    dropped), the queued dependents are CANCELED and never run."""
    job = await client.jobs().submit("cancel", GateAndSiblings())
    runner = client.runner(ALL, cache, context=runner_context())
    running = asyncio.create_task(runner.run_forever())
    try:
        await eventually(lambda: _contains(ran(cache, job.id), "gate"))
        assert await client.jobs().cancel(job.id) == 3
        await cache.group(job.id).put("open", b"")
        await eventually(lambda: _gate_finished(client, job.id))
    finally:
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
    assert (await client.jobs().find(job.id)).state == JobState.CANCELED
    states = await task_states(client, job.id)
    assert states["Mark"] == [TaskState.CANCELED] * 3  # the siblings; "after-gate" was dropped
    assert await ran(cache, job.id) == {"gate": 1}


async def test_retry_requeues_failed_tasks(client: Client, cache: InMemoryCache) -> None:
    """jobs().retry re-queues the failed task (returns 1) and what its failure skipped; after the
    cause is fixed the job completes."""
    job = await client.jobs().submit("retry-me", Flaky(succeed_on=1))
    await run(client, cache)
    assert (await client.jobs().find(job.id)).state == JobState.FAILED
    assert await client.jobs().retry(job.id) == 1
    assert await client.jobs().retry(job.id) == 0
    await run(client, cache)
    # retry_count restarts at 0 after a manual retry; Flaky(succeed_on=1) fails once more, so the
    # job fails again: a manual retry gives a fresh budget, not a success
    assert (await client.jobs().find(job.id)).state == JobState.FAILED
    assert (await ran(cache, job.id))["flaky"] == 2

    fixed = await client.jobs().submit("retry-fixed", FailThenMore())
    await run(client, cache)
    assert await client.jobs().retry(fixed.id) == 1
    assert (await client.jobs().find(fixed.id)).state == JobState.QUEUED
    await run(client, cache)
    assert (await ran(cache, fixed.id))["fail"] == 2


# -- runner behaviour ---------------------------------------------------------------------------
async def test_async_tasks_run_concurrently_up_to_max_concurrency(
    client: Client, cache: InMemoryCache
) -> None:
    """40 tasks that each sleep 0.3 s finish in about one sleep with max_concurrency=64, and at
    most max_concurrency run at once with max_concurrency=8."""
    ctx = runner_context()
    await client.jobs().submit("sleepy", ManySleeps(40, 0.3))
    started = time.perf_counter()
    await run(client, cache, max_concurrency=64, context=ctx)
    assert time.perf_counter() - started < 1.5
    assert ctx["active"][1] == 40

    ctx = runner_context()
    await client.jobs().submit("sleepy", ManySleeps(20, 0.05))
    await run(client, cache, max_concurrency=8, context=ctx)
    assert ctx["active"][1] == 8


async def test_sync_task_uses_the_blocking_job_cache(client: Client, cache: InMemoryCache) -> None:
    """A plain-def execute runs in a worker thread with the Tilebox-style blocking job cache
    (set, get, in, iteration, del, group); its progress and display are committed."""
    job = await client.jobs().submit("sync", SyncTask())
    await run(client, cache)
    found = await client.jobs().find(job.id)
    assert found.state == JobState.COMPLETED, await client.jobs().tasks(job.id)
    assert await cache.group(job.id).get("seen") == b"b"
    assert [(p.label, p.total, p.done) for p in found.progress] == [("sync", 1, 1)]
    [task] = await client.jobs().tasks(job.id)
    assert task.display == "sync done"


async def test_current_task_runner_context_and_logger(
    client: Client, cache: InMemoryCache, caplog: pytest.LogCaptureFixture
) -> None:
    """current_task exposes job id/name and retry count, display is stored, runner_context is
    the runner's object, and the logger tags records with job and task ids."""
    job = await client.jobs().submit("describe-me", Describe())
    with caplog.at_level(logging.INFO, logger="swath.task"):
        await run(client, cache, context="the-resource")
    assert await cache.group(job.id).get("who") == f"{job.id}|describe-me|0".encode()
    assert await cache.group(job.id).get("resource") == b"the-resource"
    [task] = await client.jobs().tasks(job.id)
    assert task.display == "job describe-me"
    [record] = [r for r in caplog.records if r.getMessage() == "described"]
    assert (record.job_id, record.task_id, record.answer) == (job.id, task.id, 42)  # type: ignore[attr-defined]


async def test_runner_context_async_context_manager_is_entered_once(
    client: Client, cache: InMemoryCache
) -> None:
    """An async context manager given as the runner context is entered once for the runner's
    run and exited after it; tasks see what __aenter__ returned."""
    events: list[str] = []

    class Resource:
        async def __aenter__(self) -> str:
            events.append("enter")
            return "entered-resource"

        async def __aexit__(self, *exc: object) -> None:
            events.append("exit")

    jobs = [await client.jobs().submit("d", Describe()) for _ in range(3)]
    await run(client, cache, context=Resource())
    assert events == ["enter", "exit"]
    for job in jobs:
        assert await cache.group(job.id).get("resource") == b"entered-resource"


async def test_clusters_isolate_work_and_unknown_clusters_are_errors(
    client: Client, cache: InMemoryCache
) -> None:
    """A runner only runs its cluster's tasks; submitting to an unknown cluster raises; a subtask
    for an unknown cluster fails its parent with a clear error."""
    await client.clusters().create("gpu")
    assert {c.slug for c in await client.clusters().all()} == {"default", "gpu"}
    with pytest.raises(UnknownClusterError, match="nowhere"):
        await client.jobs().submit("x", Mark("x"), cluster="nowhere")
    job = await client.jobs().submit("cross", ToCluster("gpu"))
    await run(client, cache)  # the default runner runs the parent only
    assert await ran(cache, job.id) == {}
    assert (await client.jobs().find(job.id)).state == JobState.RUNNING
    await run(client, cache, cluster="gpu")
    assert await ran(cache, job.id) == {"on-gpu": 1}
    assert (await client.jobs().find(job.id)).state == JobState.COMPLETED

    bad = await client.jobs().submit("bad", ToCluster("nowhere"))
    await run(client, cache)
    [task] = await client.jobs().tasks(bad.id)
    assert task.error is not None
    assert task.error.type == "UnknownClusterError"
    assert "nowhere" in task.error.message


async def test_a_task_no_runner_knows_waits_and_the_runner_keeps_going(
    client: Client, cache: InMemoryCache
) -> None:
    """A task whose identifier the runner did not register is never claimed by it: it stays
    QUEUED (for a runner that knows it), run_all still ends, and the other jobs complete."""
    unknown = await client.jobs().submit("unknown", Versioned())
    good = await client.jobs().submit("good", Mark("ok"))
    await run(client, cache)
    [task] = await client.jobs().tasks(unknown.id)
    assert (task.state, task.error, task.retry_count) == (TaskState.QUEUED, None, 0)
    assert (await client.jobs().find(unknown.id)).state == JobState.QUEUED
    assert (await client.jobs().find(good.id)).state == JobState.COMPLETED


async def test_version_matching_rule(client: Client, cache: InMemoryCache) -> None:
    """A runner with name v1.3 runs a task submitted as v1.2; one with only v1.1 leaves it
    queued for a runner that can."""
    older = client.runner([VersionedOlder], cache, retry_delay=0.01)
    job = await client.jobs().submit("v", Versioned())
    await older.run_all()
    assert (await client.jobs().find(job.id)).state == JobState.QUEUED
    await client.runner([VersionedNewer], cache).run_all()
    assert (await client.jobs().find(job.id)).state == JobState.COMPLETED
    assert await ran(cache, job.id) == {"v1.3": 1}


async def test_undecodable_input_fails_clearly(client: Client, cache: InMemoryCache) -> None:
    """A stored input that does not fit the runner's class for that identifier fails the task
    with TaskInputError; the runner keeps going."""
    job = await client.jobs().submit("typed", TypedInt(7))
    good = await client.jobs().submit("good", Mark("ok"))
    await client.runner([TypedDate, Mark], cache).run_all()
    [task] = await client.jobs().tasks(job.id)
    assert task.error is not None
    assert task.error.type == "TaskInputError"
    assert "TypedDate" in task.error.message
    assert (await client.jobs().find(good.id)).state == JobState.COMPLETED


async def test_idle_runner_wakes_within_milliseconds(client: Client, cache: InMemoryCache) -> None:
    """An idle run_forever runner starts a task submitted in the same process within a second
    (a few ms on an idle machine), although its polling back-off is 5 s: the wake-up signal
    works."""
    runner = client.runner(ALL, cache, poll_interval=(5.0, 5.0))
    background = asyncio.create_task(runner.run_forever())
    try:
        await asyncio.sleep(0.2)  # idle now
        submitted = time.perf_counter()
        job = await client.jobs().submit("wake", Mark("woke"))
        await eventually(lambda: cache.group(job.id).contains("ran/woke"))
        assert time.perf_counter() - submitted < 1.0  # the polling back-off is 5 s
    finally:
        runner.stop()
        await background


async def test_graceful_stop_releases_unfinished_tasks(
    client: Client, cache: InMemoryCache
) -> None:
    """On stop, in-flight tasks get the grace period; one that does not finish is released
    without a failure or retry counted, and a second runner completes it."""
    job = await client.jobs().submit("stop", Sleep(1.0, key="long"))
    runner = client.runner(ALL, cache, grace=0.1, context=runner_context())
    background = asyncio.create_task(runner.run_forever())
    await eventually(lambda: _contains(ran(cache, job.id), "long"))
    runner.stop()
    await background
    assert runner.stats.released == 1
    [task] = await client.jobs().tasks(job.id)
    assert (task.state, task.retry_count, task.lost_count) == (TaskState.QUEUED, 0, 0)
    await run(client, cache)
    assert (await client.jobs().find(job.id)).state == JobState.COMPLETED


async def test_cancelling_run_forever_is_a_graceful_stop(
    client: Client, cache: InMemoryCache
) -> None:
    """Cancelling the runner's task lets an in-flight task finish within the grace period and
    commits it."""
    job = await client.jobs().submit("stop", Sleep(0.2, key="short"))
    runner = client.runner(ALL, cache, grace=5.0, context=runner_context())
    background = asyncio.create_task(runner.run_forever())
    await eventually(lambda: _contains(ran(cache, job.id), "short"))
    background.cancel()
    with pytest.raises(asyncio.CancelledError):
        await background
    assert (await client.jobs().find(job.id)).state == JobState.COMPLETED


async def test_heartbeats_keep_a_long_task_from_running_twice(
    client: Client, cache: InMemoryCache
) -> None:
    """A task running three times longer than the lease is not handed to a second runner, since
    its runner's heartbeats renew the lease."""
    job = await client.jobs().submit("long", Sleep(0.9, key="long"))
    first = client.runner(ALL, cache, lease=0.3, context=runner_context())
    second = client.runner(ALL, cache, lease=0.3, context=runner_context())
    async with asyncio.timeout(10):
        await asyncio.gather(first.run_all(), second.run_all())
    assert await ran(cache, job.id) == {"long": 1}
    assert (await client.jobs().find(job.id)).state == JobState.COMPLETED


async def test_jobs_query_wait_diagram(client: Client, cache: InMemoryCache) -> None:
    """query filters by state and name, wait returns the finished job, diagram is Mermaid with
    subtask and dependency edges."""
    job = await client.jobs().submit("diagram", ProduceThenSum(n=1, depth=1))
    assert [j.id for j in await client.jobs().query(state="QUEUED", name="diagram")] == [job.id]
    runner_task = asyncio.create_task(run(client, cache))
    done = await client.jobs().wait(job.id, timeout=20)
    await runner_task
    assert done.state == JobState.COMPLETED
    assert [j.id for j in await client.jobs().query(state=[JobState.COMPLETED])] == [job.id]
    text = await client.jobs().diagram(job)
    lines = text.splitlines()
    assert lines[0] == "graph TD"
    assert sum("-->" in line for line in lines) == 3  # root->FanOut, root->Sum, FanOut->Write
    assert sum("-.->" in line for line in lines) == 1  # FanOut -.-> Sum
    assert text.count("COMPLETED") == 4


async def test_cancelling_mid_job_loses_no_outcome(client: Client, cache: InMemoryCache) -> None:
    """Cancelling a busy runner at an arbitrary moment commits every finished task (none is left
    leased and run again by the next runner): each of 300 tasks runs exactly once."""
    job = await client.jobs().submit("many", ManyMarks(300))
    runner = client.runner(ALL, cache, lease=1.0, max_concurrency=16)
    background = asyncio.create_task(runner.run_forever())
    await eventually(lambda: _ran_at_least(cache, job.id, 60))
    background.cancel()
    with pytest.raises(asyncio.CancelledError):
        await background
    await run(client, cache, lease=1.0)
    assert (await client.jobs().find(job.id)).state == JobState.COMPLETED
    counts = await ran(cache, job.id)
    assert len(counts) == 300
    assert set(counts.values()) == {1}


async def _ran_at_least(cache: InMemoryCache, job_id: str, n: int) -> bool:
    return len([key async for key in cache.group(job_id).group("ran")]) >= n


async def test_depends_on_a_future_of_another_context_fails_the_task(
    client: Client, cache: InMemoryCache
) -> None:
    """A task that passes another task's FutureTask to depends_on fails with a ValueError that
    says so; nothing it submitted is committed."""
    ctx = runner_context()
    first = await client.jobs().submit("stash", StashFuture())
    await run(client, cache, context=ctx)
    assert (await client.jobs().find(first.id)).state == JobState.COMPLETED
    job = await client.jobs().submit("foreign", UseForeignFuture())
    await run(client, cache, context=ctx)
    [task] = await client.jobs().tasks(job.id)
    assert task.state == TaskState.FAILED
    assert task.error is not None
    assert task.error.type == "ValueError"
    assert "another task's context" in task.error.message


async def test_a_runner_reports_itself_and_the_tasks_it_holds(
    client: Client, cache: InMemoryCache
) -> None:
    """A runner is listed (clusters().runners()) from its start with its host, process,
    concurrency and lease; its heartbeat (every lease / 3, here 0.2 s) refreshes last_heartbeat
    and the count of tasks it holds; clusters().leases() names it as the holder of each task it
    runs; once it stops, its row is gone."""
    import os
    import socket

    job = await client.jobs().submit("held", ManySleeps(3, 1.5))
    runner = client.runner(ALL, cache, lease=0.6, context=runner_context())
    running = asyncio.create_task(runner.run_all())
    try:

        async def holds_three() -> bool:
            leases = await client.clusters().leases()
            return len([lease for lease in leases if lease.name == "Sleep"]) == 3

        await eventually(holds_three)
        leases = await client.clusters().leases()
        assert {lease.runner_id for lease in leases} == {runner.id}
        assert {lease.job_id for lease in leases} == {job.id}
        first = (await client.clusters().runners())[0]

        async def beat_again() -> bool:
            [now] = await client.clusters().runners("default")
            return now.last_heartbeat > first.last_heartbeat and now.tasks == 3

        await eventually(beat_again, 10)
        [me] = await client.clusters().runners()
        assert (me.id, me.cluster, me.host, me.pid) == (
            runner.id, "default", socket.gethostname(), os.getpid(),
        )  # fmt: skip
        assert (me.concurrency, me.lease) == (64, 0.6)
        assert await client.clusters().runners("other-cluster") == []
    finally:
        async with asyncio.timeout(30):
            await running
    assert await client.clusters().runners() == []
    assert await client.clusters().leases() == []
