"""The JobStore contract (``swath.store.base``), run against every store in ``STORES``.

Tests drive the store directly, the way a runner does: claim, complete, fail, heartbeat,
release. Nothing here knows which store it runs on; rules about several store objects sharing
one database apply where the factory says the database is shared.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import msgspec
import pytest

from swath.store import (
    ClaimedTask,
    ErrorInfo,
    JobState,
    JobStore,
    NewTask,
    TaskFailure,
    TaskInfo,
    TaskState,
    TaskSuccess,
    UnknownClusterError,
    UnknownJobError,
    new_id,
)
from swath.store.base import MAX_LOST

from .stores import StoreFactory

LEASE = 30.0


def task(name: str = "T", *, cluster: str = "default", **kw: object) -> NewTask:
    return NewTask(new_id(), name, "v0.0", b'{"x": 1}', cluster, **kw)  # type: ignore[arg-type]


def err(message: str = "boom") -> ErrorInfo:
    return ErrorInfo("ValueError", message, f"Traceback ...\nValueError: {message}\n")


async def submit(store: JobStore, root: NewTask | None = None, name: str = "job") -> str:
    job_id = new_id()
    await store.submit_job(job_id, name, "default", root or task("Root"))
    return job_id


async def claim(store: JobStore, runner: str = "r1", limit: int = 100) -> list[ClaimedTask]:
    return await store.claim("default", runner, limit, LEASE)


async def states(store: JobStore, job_id: str) -> dict[str, TaskState]:
    return {t.name: t.state for t in await store.list_tasks(job_id)}


async def by_name(store: JobStore, job_id: str) -> dict[str, TaskInfo]:
    return {t.name: t for t in await store.list_tasks(job_id)}


async def job_state(store: JobStore, job_id: str) -> JobState:
    job = await store.get_job(job_id)
    assert job is not None
    return job.state


async def run_root_with(store: JobStore, subtasks: Sequence[NewTask]) -> str:
    """Submit a job and complete its root with ``subtasks``."""
    job_id = await submit(store)
    [root] = await claim(store)
    assert await store.complete("r1", [TaskSuccess(root.id, subtasks=list(subtasks))]) == 1
    return job_id


# -- schema, clusters ---------------------------------------------------------------------------
async def test_open_is_idempotent_and_default_cluster_exists(store_factory: StoreFactory) -> None:
    """A store opens twice (the schema migration is idempotent) and 'default' always exists."""
    first = store_factory.make()
    await first.open()
    await first.close()
    again = store_factory.make()
    await again.open()
    try:
        assert await again.get_cluster("default") is not None
        assert [c.slug for c in await again.list_clusters()] == ["default"]
    finally:
        await again.close()


async def test_clusters_create_find_list_delete(store: JobStore) -> None:
    """Clusters can be created, found, listed and deleted; duplicates, bad names and deleting
    'default' are ValueErrors."""
    created = await store.create_cluster("gpu-1", "GPU one")
    assert (created.slug, created.name) == ("gpu-1", "GPU one")
    assert (await store.get_cluster("gpu-1")) == created
    assert {c.slug for c in await store.list_clusters()} == {"default", "gpu-1"}
    with pytest.raises(ValueError, match="already exists"):
        await store.create_cluster("gpu-1")
    for bad in ("", "Has Space", "UPPER", "-x", "a" * 64, "a/b"):
        with pytest.raises(ValueError, match="invalid cluster name"):
            await store.create_cluster(bad)
    with pytest.raises(ValueError, match="default"):
        await store.delete_cluster("default")
    assert await store.delete_cluster("gpu-1") is True
    assert await store.delete_cluster("gpu-1") is False
    assert await store.get_cluster("gpu-1") is None


async def test_submit_to_unknown_cluster_is_an_error_and_inserts_nothing(store: JobStore) -> None:
    """Submitting to a cluster that does not exist raises UnknownClusterError; no job is left."""
    with pytest.raises(UnknownClusterError, match="nope"):
        await store.submit_job(new_id(), "j", "nope", task(cluster="nope"))
    assert await store.query_jobs() == []


# -- claiming -----------------------------------------------------------------------------------
async def test_claim_leases_a_task_once_and_starts_the_job(store: JobStore) -> None:
    """A claimed task is RUNNING and not claimable again; its job moves to RUNNING; the claim
    carries what a runner needs (names, input, retry budget)."""
    root = task("Root", max_retries=3, display="the root")
    job_id = await submit(store, root, name="my-job")
    assert await job_state(store, job_id) == JobState.QUEUED
    [claimed] = await claim(store)
    assert claimed.id == root.id
    assert (claimed.job_id, claimed.job_name, claimed.parent_id) == (job_id, "my-job", None)
    assert (claimed.name, claimed.version, claimed.input) == ("Root", "v0.0", b'{"x": 1}')
    assert (claimed.retry_count, claimed.max_retries, claimed.display) == (0, 3, "the root")
    assert await claim(store, "r2") == []
    assert (await states(store, job_id))["Root"] == TaskState.RUNNING
    job = await store.get_job(job_id)
    assert job is not None
    assert job.state == JobState.RUNNING
    assert job.started_at is not None


async def test_claim_respects_limit_order_and_cluster(store: JobStore) -> None:
    """claim takes at most ``limit`` tasks, oldest first, only from its cluster."""
    await store.create_cluster("other")
    subtasks = [task(f"T{i}") for i in range(5)] + [task("Elsewhere", cluster="other")]
    await run_root_with(store, subtasks)
    first = await claim(store, limit=2)
    assert [t.name for t in first] == ["T0", "T1"]
    rest = await claim(store, limit=100)
    assert [t.name for t in rest] == ["T2", "T3", "T4"]
    [other] = await store.claim("other", "r9", 10, LEASE)
    assert other.name == "Elsewhere"


async def test_concurrent_claims_never_overlap(store_factory: StoreFactory) -> None:
    """Many concurrent claims (from two store objects when the database is shared, as two
    processes would) hand out every task exactly once."""
    a = store_factory.make()
    await a.open()
    b = store_factory.make() if store_factory.shared else a
    if b is not a:
        await b.open()
    try:
        await run_root_with(a, [task(f"T{i}") for i in range(200)])
        results = await asyncio.gather(
            *(s.claim("default", f"r{i}", 7, LEASE) for i, s in enumerate([a, b] * 20))
        )
        ids = [t.id for batch in results for t in batch]
        assert len(ids) == len(set(ids)) == 200
    finally:
        await a.close()
        if b is not a:
            await b.close()


# -- completion ---------------------------------------------------------------------------------
async def test_task_completes_only_when_its_subtree_does(store: JobStore) -> None:
    """A task with subtasks is COMPUTED until every descendant is done; then it and the job
    complete (grandchildren included)."""
    job_id = await run_root_with(store, [task("Child")])
    assert (await states(store, job_id))["Root"] == TaskState.COMPUTED
    [child] = await claim(store)
    await store.complete("r1", [TaskSuccess(child.id, subtasks=[task("Grandchild")])])
    assert (await states(store, job_id))["Child"] == TaskState.COMPUTED
    assert await job_state(store, job_id) == JobState.RUNNING
    [grandchild] = await claim(store)
    await store.complete("r1", [TaskSuccess(grandchild.id)])
    assert set((await states(store, job_id)).values()) == {TaskState.COMPLETED}
    job = await store.get_job(job_id)
    assert job is not None
    assert job.state == JobState.COMPLETED
    assert job.finished_at is not None


async def test_depends_on_waits_for_the_whole_subtree(store: JobStore) -> None:
    """A dependent becomes claimable only once its dependency's subtree completed, not when
    the dependency's own execute returned."""
    producer = task("Producer")
    consumer = task("Consumer", depends_on=[producer.id])
    job_id = await run_root_with(store, [producer, consumer])
    [p] = await claim(store)
    assert p.name == "Producer"
    await store.complete("r1", [TaskSuccess(p.id, subtasks=[task("Part")])])
    [part] = await claim(store)
    assert part.name == "Part"  # the consumer is not ready yet
    assert await claim(store) == []
    await store.complete("r1", [TaskSuccess(part.id)])
    [c] = await claim(store)
    assert c.name == "Consumer"
    await store.complete("r1", [TaskSuccess(c.id)])
    assert await job_state(store, job_id) == JobState.COMPLETED
    assert (await by_name(store, job_id))["Consumer"].depends_on == [producer.id]


async def test_depends_on_must_name_tasks_of_the_same_batch(store: JobStore) -> None:
    """A subtask depending on a task outside its batch is refused, and the batch is not applied."""
    job_id = await submit(store)
    [root] = await claim(store)
    with pytest.raises(ValueError, match="depends_on"):
        await store.complete("r1", [TaskSuccess(root.id, subtasks=[task(depends_on=[new_id()])])])
    assert await states(store, job_id) == {"Root": TaskState.RUNNING}


async def test_batch_completion_is_atomic(store: JobStore) -> None:
    """If one outcome of a batch cannot be applied (a subtask for an unknown cluster), none of
    the batch is: every task stays RUNNING under its lease."""
    job_id = await run_root_with(store, [task("A"), task("B")])
    a, b = await claim(store)
    with pytest.raises(UnknownClusterError):
        await store.complete(
            "r1",
            [TaskSuccess(a.id), TaskSuccess(b.id, subtasks=[task("Lost", cluster="missing")])],
        )
    got = await states(store, job_id)
    assert (got["A"], got["B"]) == (TaskState.RUNNING, TaskState.RUNNING)
    assert await store.complete("r1", [TaskSuccess(a.id), TaskSuccess(b.id)]) == 2
    assert await job_state(store, job_id) == JobState.COMPLETED


async def test_progress_is_committed_with_success_only(store: JobStore) -> None:
    """Progress deltas accumulate per label with successes; a failure's deltas are dropped."""
    job_id = await run_root_with(store, [task("A", max_retries=1), task("B")])
    a, b = await claim(store)
    await store.complete(
        "r1",
        [
            TaskSuccess(b.id, progress={"tiles": (10, 1), "bytes": (0, 5)}),
            TaskFailure(a.id, err()),
        ],
    )
    job = await store.get_job(job_id)
    assert job is not None
    assert {(p.label, p.total, p.done) for p in job.progress} == {("tiles", 10, 1), ("bytes", 0, 5)}


# -- failures -----------------------------------------------------------------------------------
async def test_failure_with_retries_left_is_requeued_after_its_delay(store: JobStore) -> None:
    """A failed task with retries left goes back to QUEUED with retry_count+1, keeps its error,
    and is not claimable before its back-off has passed."""
    job_id = await run_root_with(store, [task("Flaky", max_retries=2)])
    [t] = await claim(store)
    await store.complete("r1", [TaskFailure(t.id, err("first"), retry_delay=0.3)])
    flaky = (await by_name(store, job_id))["Flaky"]
    assert (flaky.state, flaky.retry_count) == (TaskState.QUEUED, 1)
    assert flaky.error is not None
    assert flaky.error.message == "first"
    assert await claim(store) == []
    ready_at = await store.next_ready("default")
    assert ready_at is not None
    assert ready_at > time.time()
    await asyncio.sleep(0.35)
    [again] = await claim(store)
    assert again.retry_count == 1
    await store.complete("r1", [TaskSuccess(again.id)])
    assert await job_state(store, job_id) == JobState.COMPLETED
    assert (await by_name(store, job_id))["Flaky"].error is None


async def test_failed_task_keeps_type_message_and_full_traceback(store: JobStore) -> None:
    """A failure's exception type, message and traceback are stored whole (no truncation)."""
    job_id = await submit(store)
    [root] = await claim(store)
    long_tb = "Traceback (most recent call last):\n" + "  frame\n" * 5000 + "KeyError: 'x'\n"
    await store.complete("r1", [TaskFailure(root.id, ErrorInfo("KeyError", "'x'", long_tb))])
    info = (await by_name(store, job_id))["Root"]
    assert info.state == TaskState.FAILED
    assert info.error == ErrorInfo("KeyError", "'x'", long_tb)


async def test_non_optional_failure_fails_the_job_and_stops_it(store: JobStore) -> None:
    """A task failing without retries left fails the job: queued tasks are SKIPPED, nothing of
    the job is claimable, and a task still running finishes with its subtasks dropped (SKIPPED,
    so retrying the job runs it again)."""
    job_id = await run_root_with(store, [task("Bad"), task("Busy"), task("Waiting")])
    bad, busy = await claim(store, limit=2)
    await store.complete("r1", [TaskFailure(bad.id, err())])
    assert await job_state(store, job_id) == JobState.FAILED
    got = await states(store, job_id)
    assert (got["Bad"], got["Busy"], got["Waiting"]) == (
        TaskState.FAILED,
        TaskState.RUNNING,
        TaskState.SKIPPED,
    )
    assert await claim(store) == []
    await store.complete("r1", [TaskSuccess(busy.id, subtasks=[task("Dropped")])])
    got = await states(store, job_id)
    assert "Dropped" not in got
    assert got["Busy"] == TaskState.SKIPPED  # its subtree was dropped: a retry runs it again
    assert await job_state(store, job_id) == JobState.FAILED
    assert await store.next_ready("default") is None
    assert await store.retry_job(job_id) == 1
    assert {t.name for t in await claim(store)} == {"Bad", "Busy", "Waiting"}


async def test_optional_failure_lets_dependents_run_and_the_job_complete(store: JobStore) -> None:
    """An optional task that fails is FAILED_OPTIONAL; its dependents still run, its parent
    completes and the job completes."""
    maybe = task("Maybe", optional=True)
    after = task("After", depends_on=[maybe.id])
    job_id = await run_root_with(store, [maybe, after])
    [m] = await claim(store)
    await store.complete("r1", [TaskFailure(m.id, err())])
    [a] = await claim(store)
    assert a.name == "After"
    await store.complete("r1", [TaskSuccess(a.id)])
    got = await states(store, job_id)
    assert got["Maybe"] == TaskState.FAILED_OPTIONAL
    assert got["Root"] == TaskState.COMPLETED
    assert await job_state(store, job_id) == JobState.COMPLETED


async def test_optional_task_uses_its_retries_first(store: JobStore) -> None:
    """An optional task with retries is retried before it becomes FAILED_OPTIONAL."""
    job_id = await run_root_with(store, [task("Maybe", optional=True, max_retries=1)])
    [m] = await claim(store)
    await store.complete("r1", [TaskFailure(m.id, err())])
    [m2] = await claim(store)
    await store.complete("r1", [TaskFailure(m2.id, err())])
    assert (await states(store, job_id))["Maybe"] == TaskState.FAILED_OPTIONAL
    assert await job_state(store, job_id) == JobState.COMPLETED


# -- leases -------------------------------------------------------------------------------------
async def test_expired_lease_is_requeued_and_the_old_result_refused(store: JobStore) -> None:
    """When a lease expires the task is claimable again without charging its retries; the
    runner that lost it can no longer complete it."""
    job_id = await submit(store)
    [t] = await store.claim("default", "dead", 10, 0.05)
    await asyncio.sleep(0.1)
    [again] = await store.claim("default", "alive", 10, LEASE)
    assert again.id == t.id
    assert again.retry_count == 0
    assert await store.complete("dead", [TaskSuccess(t.id, subtasks=[task("Ghost")])]) == 0
    assert await store.complete("alive", [TaskSuccess(t.id)]) == 1
    info = (await by_name(store, job_id))["Root"]
    assert (info.state, info.lost_count, info.retry_count) == (TaskState.COMPLETED, 1, 0)


async def test_heartbeat_keeps_a_lease_alive(store: JobStore) -> None:
    """Heartbeats extend a runner's leases, so nobody else can claim its tasks meanwhile; a lease
    that already expired is not revived."""
    await submit(store)
    await store.claim("default", "r1", 10, 0.3)
    for _ in range(4):
        await asyncio.sleep(0.1)
        assert await store.heartbeat("r1", 0.3) == 1
    assert await claim(store, "r2") == []
    await asyncio.sleep(0.4)
    assert len(await claim(store, "r2")) == 1
    assert await store.heartbeat("r1", 0.3) == 0


async def test_a_task_lost_too_often_fails(store: JobStore) -> None:
    """A task whose runner is lost more than MAX_LOST times fails (and with it the job); up to
    MAX_LOST losses it is re-queued."""
    job_id = await submit(store)
    for _ in range(MAX_LOST + 1):
        assert len(await store.claim("default", "dying", 10, 0.001)) == 1
        await asyncio.sleep(0.01)
    assert await claim(store) == []
    info = (await by_name(store, job_id))["Root"]
    assert info.state == TaskState.FAILED
    assert info.lost_count == MAX_LOST + 1
    assert info.error is not None
    assert info.error.type == "RunnerLostError"
    assert await job_state(store, job_id) == JobState.FAILED


async def test_release_gives_tasks_back_without_charge(store: JobStore) -> None:
    """Released tasks are QUEUED again with no retry or loss counted; other runners' tasks are
    not released."""
    job_id = await run_root_with(store, [task("A"), task("B")])
    a, b = await claim(store, limit=2)
    assert await store.release("r1", [a.id, b.id, "not-a-task"]) == 2
    assert await store.release("someone-else", [a.id]) == 0
    info = await by_name(store, job_id)
    assert info["A"].state == TaskState.QUEUED
    assert info["A"].retry_count == 0
    assert info["A"].lost_count == 0
    assert len(await claim(store, "r2")) == 2


# -- cancel, retry ------------------------------------------------------------------------------
async def test_cancel_stops_queued_work_and_drops_running_tasks_subtasks(store: JobStore) -> None:
    """cancel: the job is CANCELED, queued tasks CANCELED (counted), a running task finishes but
    its subtasks are dropped (and it is CANCELED, not COMPLETED); unknown jobs raise."""
    job_id = await run_root_with(store, [task("Running"), task("Q1"), task("Q2")])
    [running] = await claim(store, limit=1)
    assert await store.cancel_job(job_id) == 2
    assert await job_state(store, job_id) == JobState.CANCELED
    assert await claim(store) == []
    await store.complete("r1", [TaskSuccess(running.id, subtasks=[task("Dropped")])])
    got = await states(store, job_id)
    assert "Dropped" not in got
    assert got["Running"] == TaskState.CANCELED  # finished, but its subtree was dropped
    assert (got["Q1"], got["Q2"]) == (TaskState.CANCELED, TaskState.CANCELED)
    assert await store.cancel_job(job_id) == 0
    with pytest.raises(UnknownJobError):
        await store.cancel_job(new_id())


async def test_retry_requeues_failed_tasks_and_the_job_finishes(store: JobStore) -> None:
    """retry re-queues FAILED tasks (returns how many) and the SKIPPED ones; the job runs to
    completion afterwards."""
    job_id = await run_root_with(store, [task("Bad"), task("Later")])
    [bad] = await claim(store, limit=1)  # "Later" stays queued
    await store.complete("r1", [TaskFailure(bad.id, err())])
    assert await job_state(store, job_id) == JobState.FAILED
    assert (await states(store, job_id))["Later"] == TaskState.SKIPPED
    assert await store.retry_job(job_id) == 1
    assert await job_state(store, job_id) == JobState.QUEUED
    assert await store.retry_job(job_id) == 0
    claimed = await claim(store)
    assert {t.name for t in claimed} == {"Bad", "Later"}
    assert await store.complete("r1", [TaskSuccess(t.id) for t in claimed]) == 2
    assert await job_state(store, job_id) == JobState.COMPLETED
    with pytest.raises(UnknownJobError):
        await store.retry_job(new_id())


# -- queries, wake-ups --------------------------------------------------------------------------
async def test_query_jobs_by_state_name_and_time(store: JobStore) -> None:
    """query_jobs filters by state, name and creation time, newest first."""
    t0 = time.time()
    a = await submit(store, name="alpha")
    await asyncio.sleep(0.01)
    t1 = time.time()
    b = await submit(store, name="beta")
    assert [t.job_id for t in await claim(store, limit=1)] == [a]  # oldest first: a runs
    assert [j.id for j in await store.query_jobs()] == [b, a]
    assert [j.id for j in await store.query_jobs(name="alpha")] == [a]
    assert [j.id for j in await store.query_jobs(states=[JobState.RUNNING])] == [a]
    assert [j.id for j in await store.query_jobs(states=[JobState.QUEUED])] == [b]
    both = await store.query_jobs(states=[JobState.QUEUED, JobState.RUNNING])
    assert [j.id for j in both] == [b, a]
    assert [j.id for j in await store.query_jobs(since=t1)] == [b]
    assert [j.id for j in await store.query_jobs(since=t0, until=t1)] == [a]
    assert len(await store.query_jobs(limit=1)) == 1


async def test_query_jobs_pages_jobs_of_one_instant_by_keyset(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jobs created at the same instant (a batch submitted within the clock's resolution) page
    by ``before=(created_at, id)`` without loss or duplicates, in (created_at, id) order newest
    first; older jobs follow. (Paging by time alone lost every job of the instant after the
    first page.)"""
    from swath.store import machine

    older = await submit(store, name="older")
    await asyncio.sleep(0.01)
    clock = time.time()
    monkeypatch.setattr(machine, "time", type("Frozen", (), {"time": staticmethod(lambda: clock)}))
    same = [await submit(store, name=f"same-{i}") for i in range(7)]
    monkeypatch.undo()
    listed = await store.query_jobs()
    assert [j.id for j in listed] == [*sorted(same, reverse=True), older]
    assert {j.created_at for j in listed[:7]} == {clock}
    seen: list[str] = []
    before: tuple[float, str] | None = None
    for _ in range(10):
        page = await store.query_jobs(limit=3, before=before)
        seen += [j.id for j in page]
        if len(page) < 3:
            break
        before = (page[-1].created_at, page[-1].id)
    assert seen == [j.id for j in listed]
    named = await store.query_jobs(name="same-3", before=(clock, max(same)))
    assert [j.id for j in named] == ([same[3]] if same[3] < max(same) else [])


async def test_runners_report_themselves_and_leases_show_who_holds_what(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """runner_alive upserts a runner's row (last_heartbeat is the store's time, tasks as
    reported); list_runners lists them by cluster and start; list_leases gives each RUNNING task
    with its runner, job and lease; runner_stopped removes the row; a row silent for longer than
    RUNNER_EXPIRY is removed by the next report of any runner."""
    from swath.store import RunnerInfo, machine
    from swath.store.base import RUNNER_EXPIRY

    await store.create_cluster("other")
    before = time.time()
    r1 = RunnerInfo("host-a:1:aa", "default", "host-a", 1, 8, LEASE, before - 5)
    r2 = RunnerInfo("host-b:2:bb", "other", "host-b", 2, 4, LEASE, before - 1)
    await store.runner_alive(r1)
    await store.runner_alive(r2)
    runners = await store.list_runners()
    assert [r.id for r in runners] == [r1.id, r2.id]
    assert runners[0].last_heartbeat >= before
    assert runners[0].tasks == 0
    assert (runners[0].host, runners[0].pid, runners[0].concurrency) == ("host-a", 1, 8)

    job_id = await submit(store, task("Root"), name="held")
    [claimed] = await claim(store, runner=r1.id)
    await store.runner_alive(msgspec.structs.replace(r1, tasks=1))
    [again] = [r for r in await store.list_runners() if r.id == r1.id]
    assert again.tasks == 1
    assert again.last_heartbeat >= runners[0].last_heartbeat
    [lease] = await store.list_leases()
    assert (lease.task_id, lease.job_id, lease.job_name) == (claimed.id, job_id, "held")
    assert (lease.runner_id, lease.name, lease.cluster) == (r1.id, "Root", "default")
    assert lease.lease_expires >= before + LEASE - 1
    assert await store.list_leases(limit=0) == []

    await store.runner_stopped(r2.id)
    assert [r.id for r in await store.list_runners()] == [r1.id]

    # a day and more later, the next report of any runner removes r1's silent row
    later = time.time() + RUNNER_EXPIRY + 60
    monkeypatch.setattr(machine, "time", type("Later", (), {"time": staticmethod(lambda: later)}))
    await store.runner_alive(r2)
    monkeypatch.undo()
    assert [r.id for r in await store.list_runners()] == [r2.id]


async def test_work_signal_wakes_on_new_work_for_its_cluster(store: JobStore) -> None:
    """Submitting (or committing subtasks) sets the signals of that cluster at once and not the
    signals of other clusters."""
    await store.create_cluster("other")
    mine = store.work_signal("default")
    theirs = store.work_signal("other")
    mine.clear()
    theirs.clear()
    waiter = asyncio.create_task(mine.wait(5.0))
    await asyncio.sleep(0)
    started = time.perf_counter()
    await submit(store)
    assert await waiter is True
    assert time.perf_counter() - started < 0.5
    assert await theirs.wait(0.05) is False
    mine.clear()
    [root] = await claim(store)
    await store.complete("r1", [TaskSuccess(root.id, subtasks=[task("Sub")])])
    assert await mine.wait(1.0) is True


async def test_next_ready_reports_pending_work(store: JobStore) -> None:
    """next_ready is None for an idle cluster, and a time while tasks are queued or running."""
    assert await store.next_ready("default") is None
    await submit(store)
    assert (ready := await store.next_ready("default")) is not None
    assert ready <= time.time()
    [root] = await claim(store)
    assert await store.next_ready("default") is not None  # running: may still submit work
    await store.complete("r1", [TaskSuccess(root.id)])
    assert await store.next_ready("default") is None


async def test_list_tasks_is_the_tree(store: JobStore) -> None:
    """list_tasks returns every task with its parent, cluster, identifier and timings."""
    job_id = await run_root_with(store, [task("A"), task("B")])
    tasks = await store.list_tasks(job_id)
    root = next(t for t in tasks if t.parent_id is None)
    assert root.name == "Root"
    assert root.started_at is not None
    assert {t.name for t in tasks if t.parent_id == root.id} == {"A", "B"}
    assert all(t.job_id == job_id and t.version == "v0.0" for t in tasks)
    assert await store.list_tasks(new_id()) == []


async def test_two_outcomes_of_one_task_in_a_batch_count_once(store: JobStore) -> None:
    """A runner that re-claimed its own expired lease may report two executions of one task in
    one batch: the task completes once, so its parent is counted off once and its dependent
    released once. (Before: counted twice; the parent completed while the dependent stayed
    QUEUED forever with pending_deps -1. Found by the fault-injection suite on PostgreSQL.)"""
    x = task("X")
    y = task("Y", depends_on=[x.id])
    job_id = await run_root_with(store, [x, y])
    [claimed_x] = await claim(store)
    assert claimed_x.id == x.id
    assert await store.complete("r1", [TaskSuccess(x.id), TaskSuccess(x.id)]) == 1
    assert await states(store, job_id) == {
        "Root": TaskState.COMPUTED,
        "X": TaskState.COMPLETED,
        "Y": TaskState.QUEUED,
    }
    [claimed_y] = await claim(store)
    assert claimed_y.id == y.id
    await store.complete("r1", [TaskSuccess(y.id)])
    assert await job_state(store, job_id) == JobState.COMPLETED


async def test_an_outcome_counts_only_for_the_attempt_it_ran(store: JobStore) -> None:
    """A failure re-sent after a lost reply arrives when the same runner has claimed the task's
    next attempt: it is refused (it belongs to attempt 0), so the failure is not counted twice.
    (Found by the fault-injection suite: attempts [0, 2] ran, 1 was skipped.)"""
    root = task("Root", max_retries=2)
    job_id = await submit(store, root)
    [first] = await claim(store)
    assert first.retry_count == 0
    failure = TaskFailure(first.id, err(), 0.0, attempt=0)
    assert await store.complete("r1", [failure]) == 1
    [second] = await claim(store)
    assert (second.id, second.retry_count) == (first.id, 1)
    assert await store.complete("r1", [failure]) == 0  # the re-sent one: not this attempt
    [info] = await store.list_tasks(job_id)
    assert (info.state, info.retry_count) == (TaskState.RUNNING, 1)
    assert await store.complete("r1", [TaskSuccess(first.id, attempt=1)]) == 1
    assert await job_state(store, job_id) == JobState.COMPLETED
