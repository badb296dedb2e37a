"""The ``JobStore`` protocol: what a job store must do, and the records it speaks in.

A job store keeps clusters, jobs, tasks, their dependencies and progress indicators, and hands
tasks to runners. Two implementations sit behind this one protocol: :mod:`swath.store.sqlite`
(embedded, one machine) and a PostgreSQL store (many machines). Both pass the store conformance
suite in ``tests/store/``.

The state machine (what becomes runnable when, subtree completion, dependencies, optional
failures, job failure, retries, lease expiry) is written once, in :mod:`swath.store.machine`,
on top of named SQL queries that each store provides in its own dialect (``store/sql/<dialect>/``).
A store implementation supplies transactions and the queries; it does not re-implement the rules.

Semantics every store guarantees (the conformance suite checks each):

* **Claiming** (:meth:`JobStore.claim`): atomically moves up to ``limit`` *ready* tasks of one
  cluster from QUEUED to RUNNING and gives each a lease owned by ``runner_id`` that expires
  ``lease`` seconds later. A task is ready when it is QUEUED, all the tasks it depends on have
  completed (their whole subtrees), and its ``run_after`` time (retry back-off) has passed. Two
  concurrent claims never return the same task. Before claiming, expired leases are handled
  (see below). The job of a claimed task moves from QUEUED to RUNNING.
* **Heartbeats** (:meth:`JobStore.heartbeat`): extend every live lease of ``runner_id`` to
  ``now + lease``. A lease that already expired and was re-queued is not revived.
* **Lease expiry**: a RUNNING task whose lease has passed is re-queued (QUEUED, lease cleared)
  without charging its retry budget; its ``lost_count`` goes up by one, and a task lost
  more than ``MAX_LOST`` times fails (non-optional: the job fails) with a ``RunnerLostError``.
* **Completion** (:meth:`JobStore.complete`): a batch of outcomes is applied in one transaction.
  An outcome is accepted only if the task is still RUNNING under a lease of ``runner_id`` (a
  runner whose lease expired loses its result; this is what keeps a live lease from being
  executed twice). A success commits the task's subtasks and progress deltas in the same
  transaction. A task with no subtasks becomes COMPLETED; with subtasks, COMPUTED, and COMPLETED
  once all its subtasks are (recursively). When a task completes, its parent may complete, and
  tasks depending on it lose one pending dependency. When the root task completes, the job is
  COMPLETED. If the job is no longer active
  (CANCELED or FAILED), a success is recorded but its subtasks are dropped: a task without
  subtasks becomes COMPLETED, one whose subtasks were dropped becomes CANCELED (job canceled) or
  SKIPPED (job failed), so a retry runs it again.
* **Failure**: a failed outcome with retries left goes back to QUEUED with ``retry_count + 1``
  and ``run_after = now + retry_delay``; its subtasks are dropped. Without retries left, an
  optional task becomes FAILED_OPTIONAL, which counts as completed for its parent and its
  dependents; a non-optional task becomes FAILED, the job becomes FAILED, and every QUEUED task
  of the job becomes SKIPPED (tasks still running finish, their subtasks are dropped).
* **Release** (:meth:`JobStore.release`): a runner gives tasks back (graceful stop): QUEUED
  again, nothing charged.
* **Cancel** (:meth:`JobStore.cancel_job`): the job becomes CANCELED, its QUEUED tasks CANCELED;
  running tasks finish and their subtasks are dropped.
* **Retry** (:meth:`JobStore.retry_job`): FAILED tasks go back to QUEUED with a fresh retry
  budget (the count of them is returned); SKIPPED and CANCELED tasks go back to QUEUED; the job
  becomes QUEUED again (RUNNING once claimed).
* **Wake-ups** (:meth:`JobStore.work_signal`): whenever a write of this store object may have
  made tasks of a cluster ready, every signal of that cluster is set, so an idle runner in the
  same process wakes at once. Stores that see other processes' writes (PostgreSQL
  LISTEN/NOTIFY) set the signals for those too; otherwise runners poll with back-off.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import os
import random
import time
import weakref
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import msgspec

from swath.errors import SwathError

#: A task whose runner is lost more than this many times fails (as Tilebox does).
MAX_LOST = 10
#: The cluster that always exists.
DEFAULT_CLUSTER = "default"
#: The name of the task that is the parent of a job's root tasks when it has several (never
#: executed: it completes when they all have).
ROOTS_TASK = "swath.roots"
#: How many log records a store keeps per task (over all its executions) and per job; the oldest
#: go first, counted by a marker record (see :class:`TaskLogRecord`). A store object's
#: ``max_task_logs`` and ``max_job_logs`` attributes override them.
MAX_TASK_LOGS = 1_000
MAX_JOB_LOGS = 100_000
#: The wake-up signal set when jobs stop (canceled or failed): not a cluster name (slugs are
#: ``[a-z0-9_-]``), so it never collides with one.
STOPPED_SIGNAL = "!stopped"
#: The signal set when jobs change (submitted, a state, progress, a task's state other than
#: claimed): on PostgreSQL by a trigger's NOTIFY from any process, so a dashboard follows jobs
#: without polling; other stores never set it (their followers poll). ``job_signal(id)`` is set
#: for changes of that one job only.
CHANGED_SIGNAL = "!changed"


def job_signal(job_id: str) -> str:
    """The name of the signal (``work_signal(job_signal(id))``) set when job ``id`` changes."""
    return f"{CHANGED_SIGNAL}:{job_id}"


#: A runner's row (``list_runners``) is removed once it has been silent this many seconds.
RUNNER_EXPIRY = 24 * 3600.0
#: A runner reports itself every heartbeat period (``lease / 3``) but not more often than this.
RUNNER_REPORT_MIN = 1.0


def report_interval(lease: float) -> float:
    """How often a runner with this lease reports itself (:meth:`JobStore.runner_alive`); one
    silent for three of these (a lease, unless the lease is very short) is probably gone."""
    return max(lease / 3, RUNNER_REPORT_MIN)


#: A task identifier a runner can execute: ``(name, major, newest minor)``. A runner claims a
#: task ``name vX.Y`` only through an entry ``(name, X, Z)`` with ``Z >= Y``.
TaskKind = tuple[str, int, int]


class JobState(enum.StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"


class TaskState(enum.StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    COMPUTED = "COMPUTED"  # execute returned; waiting for its subtasks
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    FAILED_OPTIONAL = "FAILED_OPTIONAL"
    SKIPPED = "SKIPPED"
    CANCELED = "CANCELED"


def new_id() -> str:
    """A new id: a UUID-formatted string whose first half is the time in ns, so ids sort by
    creation time (claims take older tasks first), and whose second half is 64 random bits
    (``random`` is reseeded in forked children, and ids need to be unique, not secret)."""
    t, r = time.time_ns(), random.getrandbits(64)  # one %-format: half the time of slicing
    return "%08x-%04x-%04x-%04x-%012x" % (  # noqa: UP031
        t >> 32, (t >> 16) & 0xFFFF, t & 0xFFFF, r >> 48, r & 0xFFFFFFFFFFFF
    )  # fmt: skip


# -- records ------------------------------------------------------------------------------------
# The records a runner makes per task (NewTask, ClaimedTask, TaskSuccess, TaskFailure, ErrorInfo,
# LogEntry) are ``gc=False``: plain data that never refers back to itself, so the cyclic garbage
# collector need not track them (at 100,000 tasks it spent 15 % of the run's CPU, most of it in
# full collections over objects like these).
class ClusterInfo(msgspec.Struct, frozen=True):
    slug: str
    name: str
    created_at: float


class ProgressInfo(msgspec.Struct, frozen=True):
    label: str
    total: int
    done: int


class ExecutionStats(msgspec.Struct, frozen=True):
    """What a job's tasks did (Tilebox's ``job.execution_stats``): ``tasks_by_state`` (count per
    task state, states without tasks left out), ``first_task_started_at`` and
    ``last_task_stopped_at`` (Unix seconds, None before any), ``compute_time`` (seconds spent
    in ``execute``, summed over tasks; a retried task counts its last attempt)."""

    total_tasks: int = 0
    tasks_by_state: dict[TaskState, int] = {}
    first_task_started_at: float | None = None
    last_task_stopped_at: float | None = None
    compute_time: float = 0.0

    @property
    def elapsed_time(self) -> float:
        """Seconds from the first task start to the last task stop (0 before both)."""
        if self.first_task_started_at is None or self.last_task_stopped_at is None:
            return 0.0
        return max(0.0, self.last_task_stopped_at - self.first_task_started_at)

    @property
    def parallelism(self) -> float:
        """Compute time over elapsed time: how many tasks ran at once, on average."""
        elapsed = self.elapsed_time
        return self.compute_time / elapsed if elapsed > 0 else 0.0


class Trigger(msgspec.Struct, frozen=True, omit_defaults=True):
    """What made an automation submit a job: ``context.trigger`` in each of the job's tasks,
    ``job.trigger`` of the job (None for a job submitted otherwise).

    ``automation`` and ``automation_id`` name the automation; ``kind`` is ``"cron"`` or
    ``"storage"``. A cron tick: ``time``, the scheduled time (time-zone aware, in the
    automation's time zone), however late it fired. A stored object: ``key`` (its name below the
    automation's URL, ``/``-separated), ``url`` (where to read it: ``s3://bucket/name``,
    ``gs://bucket/name`` or a local path), ``size`` in bytes, ``checksum`` (its CRC32C in the
    form of :attr:`swath.cache.Stat.checksum`, when the storage has one: always on GCS and for
    local files, on S3 for objects written with a CRC32C, as swath's cache writes them; else
    None), ``version`` (the S3 ETag, the GCS generation, or a local file's inode, size and
    modification time) and ``time`` (when it was written, by the storage's clock)."""

    automation: str
    automation_id: str
    kind: str
    time: dt.datetime | None = None
    key: str | None = None
    url: str | None = None
    size: int | None = None
    checksum: str | None = None
    version: str | None = None


def decode_trigger(text: str | None) -> Trigger | None:
    """A stored trigger (JSON text), or None (no trigger, or one this code cannot read)."""
    if not text:
        return None
    try:
        return _TRIGGER_DECODER.decode(text)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


_TRIGGER_DECODER = msgspec.json.Decoder(Trigger)


class JobInfo(msgspec.Struct, frozen=True):
    id: str
    name: str
    cluster: str
    state: JobState
    created_at: float
    started_at: float | None
    finished_at: float | None
    root_task_id: str
    progress: list[ProgressInfo] = []
    execution_stats: ExecutionStats = ExecutionStats()
    #: what submitted the job when an automation did (None for jobs submitted otherwise)
    trigger: Trigger | None = None

    def _repr_html_(self) -> str:
        """A job in a notebook: its state, progress bars and task counts (its task graph is
        ``jobs().display(job)``)."""
        from html import escape

        rows = [
            f"<tr><th>job</th><td>{escape(self.name)} <code>{escape(self.id)}</code></td></tr>",
            f"<tr><th>state</th><td>{escape(self.state.value)}</td></tr>",
        ]
        for p in self.progress:
            bar = f'<progress value="{p.done}" max="{max(p.total, 1)}"></progress>'
            rows.append(
                f"<tr><th>{escape(p.label or 'progress')}</th>"
                f"<td>{bar} {p.done} / {p.total}</td></tr>"
            )
        stats = self.execution_stats
        counts = ", ".join(f"{n} {state.value}" for state, n in stats.tasks_by_state.items())
        rows.append(f"<tr><th>tasks</th><td>{escape(counts) or 'none'}</td></tr>")
        rows.append(f"<tr><th>compute time</th><td>{stats.compute_time:.3f} s</td></tr>")
        return "<table>" + "".join(rows) + "</table>"


class RunnerInfo(msgspec.Struct, frozen=True):
    """A runner as it last reported itself (:meth:`JobStore.runner_alive`): its id, cluster,
    host and process, how many tasks it runs at once and its lease (seconds), when it started,
    when the store last heard from it (its heartbeat, every ``lease / 3`` seconds, busy or idle)
    and how many tasks it held then."""

    id: str
    cluster: str
    host: str
    pid: int
    concurrency: int
    lease: float
    started_at: float
    last_heartbeat: float = 0.0
    tasks: int = 0


class LeaseInfo(msgspec.Struct, frozen=True):
    """A task a runner holds: RUNNING under ``runner_id``'s lease until ``lease_expires``."""

    task_id: str
    job_id: str
    job_name: str
    cluster: str
    name: str
    version: str
    display: str
    runner_id: str
    started_at: float
    lease_expires: float


class ErrorInfo(msgspec.Struct, frozen=True, gc=False):
    """A failure as recorded: the exception's type name, message and full traceback text."""

    type: str
    message: str
    traceback: str


class NewTask(msgspec.Struct, frozen=True, gc=False):
    """A task to insert: a job's root task, or a subtask committed with its parent's success.

    ``depends_on`` names tasks of the same batch (the same parent) by id."""

    id: str
    name: str
    version: str
    input: bytes
    cluster: str
    display: str = ""
    max_retries: int = 0
    optional: bool = False
    depends_on: list[str] = []
    timeout: float | None = None  # seconds one execution may take (None: no limit)
    #: the W3C trace context (``traceparent`` header) it was submitted under, if tracing is on
    traceparent: str | None = None


class ClaimedTask(msgspec.Struct, frozen=True, gc=False):
    id: str
    job_id: str
    job_name: str
    parent_id: str | None
    cluster: str
    name: str
    version: str
    input: bytes
    display: str
    retry_count: int
    max_retries: int
    optional: bool
    timeout: float | None = None
    traceparent: str | None = None
    #: the job's :class:`Trigger` as JSON text when an automation submitted it
    trigger: str | None = None


class LogEntry(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One record of ``context.logger``, as a runner hands it to the store with its task's
    outcome: Unix time, ``logging`` level number, the formatted message (traceback included)
    and the record's structured fields as JSON text. Text is store-safe
    (:func:`swath._validate.storable_text`)."""

    created_at: float
    level: int
    message: str
    fields: str = "{}"


class TaskLogRecord(msgspec.Struct, frozen=True):
    """A task's log record as stored (``jobs().logs``): the job, task (id and identifier),
    runner, time, ``logging`` level, message and structured fields.

    A *marker* record (``dropped > 0``, level WARNING, ``id`` 0) stands where a task's oldest
    records were: it says how many the store dropped to stay within its bounds."""

    id: int
    job_id: str
    task_id: str
    task_name: str
    task_version: str
    runner_id: str
    created_at: float
    level: int
    message: str
    fields: dict[str, object] = {}
    dropped: int = 0

    @property
    def levelname(self) -> str:
        """``INFO``, ``WARNING``, ... (``logging.getLevelName``)."""
        import logging

        return logging.getLevelName(self.level)


class TaskSuccess(msgspec.Struct, frozen=True, gc=False):
    """``execute`` returned normally: commit ``subtasks`` and ``progress`` deltas (label ->
    (added to total, added to done)) with the task's completion."""

    task_id: str
    display: str = ""
    subtasks: list[NewTask] = []
    progress: dict[str, tuple[int, int]] = {}
    #: the execution's log records (the newest ones) and how many older ones it dropped
    logs: tuple[LogEntry, ...] = ()
    logs_dropped: int = 0
    #: the ``retry_count`` of the claim it ran under: an outcome re-sent after a lost reply never
    #: counts for a later attempt the same runner claimed meanwhile (None: not checked)
    attempt: int | None = None


class TaskFailure(msgspec.Struct, frozen=True, gc=False):
    """``execute`` raised (or the task could not even be started). ``retry_delay`` is the back-off
    before the next attempt if a retry is left."""

    task_id: str
    error: ErrorInfo
    retry_delay: float = 0.0
    display: str = ""
    logs: tuple[LogEntry, ...] = ()
    logs_dropped: int = 0
    attempt: int | None = None  # as TaskSuccess.attempt


TaskOutcome = TaskSuccess | TaskFailure


class TaskInfo(msgspec.Struct, frozen=True):
    id: str
    job_id: str
    parent_id: str | None
    cluster: str
    name: str
    version: str
    display: str
    state: TaskState
    retry_count: int
    max_retries: int
    optional: bool
    lost_count: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    error: ErrorInfo | None
    depends_on: list[str] = []


class AutomationInfo(msgspec.Struct, frozen=True):
    """An automation as stored (``client.automations()`` returns these).

    ``kind`` is ``"cron"`` (``schedule``, ``timezone``, ``catch_up``) or ``"storage"`` (``url``,
    ``glob``). The task it submits is stored serialized: ``task_name``, ``task_version`` and
    ``input`` (JSON), with the ``cluster``, ``max_retries`` and ``timeout`` of its jobs.
    ``cursor`` (Unix seconds) is the last cron tick decided (fired or skipped), or a storage
    trigger's high-water mark (every object written before it, by the storage's clock, was
    seen)."""

    id: str
    name: str
    kind: str
    cluster: str
    task_name: str
    task_version: str
    input: bytes
    max_retries: int = 0
    timeout: float | None = None
    schedule: str | None = None
    timezone: str | None = None
    catch_up: str = "latest"
    url: str | None = None
    glob: str | None = None
    paused: bool = False
    cursor: float = 0.0
    created_at: float = 0.0


class Firing(msgspec.Struct, frozen=True):
    """One tick or object of an automation, and the job it submits if it has not fired yet:
    ``key`` is unique per automation (the tick, or the object's key and version); the job is
    ``job_id``, named ``name``, with the one root task ``root`` and the :class:`Trigger`
    ``trigger`` (JSON text). ``at`` (a cron tick's time) makes the firing conditional on the
    automation's cursor being before it."""

    key: str
    job_id: str
    name: str
    root: NewTask
    trigger: str
    at: float | None = None


# -- errors -------------------------------------------------------------------------------------
class StoreError(SwathError):
    """A job store failed or was asked something impossible."""


class StoreOpenError(StoreError, OSError):
    """The job store cannot be opened: unreadable, not a database, corrupt, unreachable."""


class UnknownClusterError(StoreError, LookupError):
    """The cluster does not exist (``clusters().create`` it first)."""


class UnknownJobError(StoreError, LookupError):
    """No job has this id."""


class UnknownAutomationError(StoreError, LookupError):
    """No automation has this id or name."""


class RefusedError(StoreError, ValueError):
    """The store cannot save a value it was given (a number out of its range, text it cannot
    encode, a duplicate id): not retried, since the same value would be refused again. A runner
    records it as the failure of the task whose outcome was refused."""


# -- wake-ups -----------------------------------------------------------------------------------
class WorkSignal:
    """One runner's wake-up flag for one cluster.

    The runner calls :meth:`clear` *before* it looks for work and :meth:`wait` after finding none;
    a notification in between is not lost."""

    def __init__(self, cluster: str) -> None:
        self.cluster = cluster
        self._event = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None

    def clear(self) -> None:
        self._event.clear()

    def set(self) -> None:
        """Wake the waiter; safe from any thread."""
        if self._event.is_set():
            return
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None or running is loop:
            self._event.set()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(self._event.set)

    async def wait(self, seconds: float) -> bool:
        """True if woken, False after ``seconds``."""
        try:
            async with asyncio.timeout(seconds):
                await self._event.wait()
            return True
        except TimeoutError:
            return False


class Signals:
    """The wake-up signals of one store object, by cluster (weakly held: a runner that goes
    away needs no unregistering)."""

    def __init__(self) -> None:
        self._by_cluster: dict[str, weakref.WeakSet[WorkSignal]] = {}

    def new(self, cluster: str) -> WorkSignal:
        signal = WorkSignal(cluster)
        self._by_cluster.setdefault(cluster, weakref.WeakSet()).add(signal)
        return signal

    def notify(self, clusters: set[str] | None = None) -> None:
        """Set the signals of ``clusters`` (all clusters when None)."""
        for cluster, signals in list(self._by_cluster.items()):
            if clusters is None or cluster in clusters:
                for signal in list(signals):
                    signal.set()


# -- the protocol -------------------------------------------------------------------------------
@runtime_checkable
class JobStore(Protocol):
    """What the client and the runner need from a job store. All times are Unix seconds."""

    #: A URL for display, without any password.
    url: str

    async def open(self) -> None:
        """Connect, create or migrate the schema (to the version of this code), and make sure
        the cluster ``default`` exists. Idempotent."""

    async def close(self) -> None:
        """Release connections. Never deletes data."""

    # clusters
    async def create_cluster(self, slug: str, name: str = "") -> ClusterInfo:
        """Create a cluster; ``ValueError`` if ``slug`` exists or is not a valid name."""

    async def get_cluster(self, slug: str) -> ClusterInfo | None: ...

    async def list_clusters(self) -> list[ClusterInfo]: ...

    async def delete_cluster(self, slug: str) -> bool:
        """Delete a cluster; False if there was none; ``ValueError`` for ``default``."""

    async def rename_cluster(self, slug: str, name: str) -> ClusterInfo | None:
        """Set a cluster's display name; None if there is no such cluster."""

    # jobs
    async def submit_job(
        self, job_id: str, name: str, cluster: str, root: NewTask | Sequence[NewTask]
    ) -> JobInfo:
        """Insert a QUEUED job whose root task is ``root``; ``UnknownClusterError`` if a cluster
        does not exist. Wakes the clusters' runners. With several root tasks, the job's root is a
        group task (named ``ROOTS_TASK``, never executed, COMPUTED from the start) whose
        subtasks they are: it completes, and the job with it, when they all have."""

    async def get_job(self, job_id: str, *, stats: bool = False) -> JobInfo | None:
        """The job, with its progress; with ``stats=True`` also its ``execution_stats`` (a scan
        of all its tasks: for when they are asked for, not for polling)."""

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
        """Jobs newest first (by ``created_at``, then ``id``), filtered by state, exact name,
        and creation time in ``[since, until)`` (without ``execution_stats``: see
        ``get_job``). ``before``: a page's last job as ``(created_at, id)``; only the jobs after
        it in this order (keyset paging: jobs created at the same instant are neither lost nor
        repeated between pages)."""

    async def cancel_job(self, job_id: str) -> int:
        """Cancel an active job; returns how many queued tasks were canceled. ``UnknownJobError``
        if no such job; a job already finished is left as it is (0)."""

    async def retry_job(self, job_id: str) -> int:
        """Re-queue the job's FAILED tasks (fresh retry budget) and its SKIPPED/CANCELED ones;
        returns how many FAILED tasks were re-queued. ``UnknownJobError`` if no such job."""

    async def list_tasks(self, job_id: str) -> list[TaskInfo]:
        """Every task of the job, in creation order, with ``depends_on`` filled in."""

    # runners
    async def claim(
        self,
        cluster: str,
        runner_id: str,
        limit: int,
        lease: float,
        tasks: Sequence[TaskKind] | None = None,
    ) -> list[ClaimedTask]:
        """Handle expired leases, then lease up to ``limit`` ready tasks of ``cluster`` (oldest
        ``run_after`` first) whose identifier ``tasks`` covers (None: any task)."""

    async def heartbeat(self, runner_id: str, lease: float) -> int:
        """Extend the live leases of ``runner_id``; returns how many."""

    async def renew(self, runner_id: str, task_ids: Sequence[str], lease: float) -> list[str]:
        """Extend the leases of ``task_ids`` that ``runner_id`` still holds, alive; returns
        those. A runner whose claim took longer than expected (a locked store, a frozen process)
        starts only these: the others may have expired and gone to another runner."""

    async def stop_requested(self, runner_id: str) -> list[str]:
        """The ids of tasks ``runner_id`` holds whose job stopped (canceled or failed): the
        runner cancels them and releases them (they end CANCELED or SKIPPED)."""

    async def complete(self, runner_id: str, outcomes: Sequence[TaskOutcome]) -> int:
        """Apply outcomes in one transaction (see the module docstring); returns how many were
        accepted (the rest had lost their lease). A value the store cannot save raises
        :class:`RefusedError` (or another ``ValueError``/``TypeError``) and changes nothing."""

    async def task_logs(
        self,
        job_id: str,
        *,
        task_id: str | None = None,
        level: int = 0,
        after: int = 0,
        limit: int = 100_000,
    ) -> list[TaskLogRecord]:
        """The log records of a job's tasks (of ``task_id`` only, when given) at ``level`` or
        above, in the order they were committed, from the record after id ``after`` (0: from
        the first), at most ``limit``. Records arrive with their task's outcome
        (:meth:`complete`, in the same transaction); a store keeps the newest ``max_task_logs``
        per task and ``max_job_logs`` per job. With ``after=0``, a task some of whose records
        were dropped has a marker record (``dropped`` > 0) before its oldest kept one."""

    async def runner_alive(self, runner: RunnerInfo) -> None:
        """Record that ``runner`` is alive now (its row, keyed by id: ``last_heartbeat`` is
        now, by the caller's clock as every time a store records; ``tasks`` as given); a runner
        calls it at start and with each heartbeat. Also removes the rows of runners silent for
        longer than ``RUNNER_EXPIRY``."""

    async def runner_stopped(self, runner_id: str) -> None:
        """Remove the runner's row (it stopped)."""

    async def list_runners(self) -> list[RunnerInfo]:
        """Every runner that reported itself and has not stopped or expired, by cluster and
        start (a runner silent for longer than its lease is probably gone: its tasks' leases
        run out and other runners take them)."""

    async def list_leases(self, limit: int = 1000) -> list[LeaseInfo]:
        """The tasks runners hold (RUNNING), by runner and start, at most ``limit``."""

    async def queue_depth(self) -> dict[str, int]:
        """How many tasks are QUEUED, per cluster (clusters without queued tasks left out):
        the ``swath.queue.depth`` metric."""

    async def release(self, runner_id: str, task_ids: Sequence[str]) -> int:
        """Give leased tasks back to the queue without charging anything; returns how many."""

    async def next_ready(
        self, cluster: str, tasks: Sequence[TaskKind] | None = None
    ) -> float | None:
        """Whether ``cluster`` may still have work, and from when: the earliest of the
        ``run_after`` of its QUEUED tasks without pending dependencies (that ``tasks`` covers,
        as in ``claim``) and the lease expiry of its RUNNING tasks (a running task may still
        submit subtasks, and is claimable again if its lease runs out). None when the cluster has
        neither: ``run_all`` is done."""

    def work_signal(self, cluster: str) -> WorkSignal:
        """A new wake-up signal for one runner of ``cluster``; ``work_signal(STOPPED_SIGNAL)``
        is set whenever a job stops (in this process, and on PostgreSQL in any);
        ``work_signal(CHANGED_SIGNAL)`` and ``work_signal(job_signal(id))`` when jobs (that job)
        change, on PostgreSQL only."""

    # automations
    async def create_automation(self, automation: AutomationInfo) -> AutomationInfo:
        """Store a new automation; ``ValueError`` if one of that name exists,
        ``UnknownClusterError`` if its cluster does not."""

    async def get_automation(self, key: str) -> AutomationInfo | None:
        """The automation with this id, or else this name; None if there is none."""

    async def list_automations(self) -> list[AutomationInfo]:
        """Every automation, by name."""

    async def pause_automation(self, automation_id: str, paused: bool) -> AutomationInfo | None:
        """Pause (``paused=True``) or resume an automation; None if there is none. A paused
        automation fires nothing. Resuming a paused cron schedule moves its cursor to now: the
        ticks of the pause are skipped, not caught up. A storage trigger's cursor stays: the
        objects written during the pause fire once it is resumed."""

    async def delete_automation(self, automation_id: str) -> bool:
        """Delete an automation and its firing records (its jobs stay); False if none."""

    async def fired_keys(self, automation_id: str, keys: Sequence[str]) -> set[str]:
        """Those of ``keys`` the automation has fired already."""

    async def fire_automation(
        self, automation_id: str, firings: Sequence[Firing], cursor: float | None = None
    ) -> list[str]:
        """In one transaction: for each firing whose key the automation has not fired yet (and
        whose ``at``, if given, is after its cursor), record the key and submit its job; then
        move the cursor forward to ``cursor`` (never back). A paused automation fires nothing
        and keeps its cursor. Returns the ids of the jobs submitted; wakes their clusters'
        runners. ``UnknownAutomationError`` if the automation is gone. However many processes
        call this with the same key at once, one job is submitted for it."""


def store_from_url(url: str | None = None, *, read_only: bool = False) -> JobStore:
    """The store for a URL: ``:memory:``, ``sqlite:///path`` (or a plain path), or
    ``postgresql://...``. None means ``$SWATH_DATABASE_URL`` or ``./swath.db``.

    URLs are split by :func:`swath._urls.parse_url` (the way libpq splits them); errors quote
    only their redacted form. ``read_only=True`` opens an existing store for reading: it creates
    and migrates nothing (see the stores' ``read_only`` option)."""
    from swath._urls import parse_url, redact

    if url is None:
        url = os.environ.get("SWATH_DATABASE_URL") or "sqlite:///swath.db"
    from swath.store.sqlite import SQLiteJobStore

    if url == ":memory:":
        return SQLiteJobStore(":memory:", read_only=read_only)
    if "://" not in url:
        if not url:
            raise ValueError("an empty database URL")
        return SQLiteJobStore(url, read_only=read_only)
    parsed = parse_url(url)
    if parsed.scheme in ("postgresql", "postgres"):
        import importlib

        try:
            cls = importlib.import_module("swath.store.postgres").PostgresJobStore
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"the PostgreSQL store is not available: {exc}") from exc
        store: JobStore = cls(url, read_only=read_only)
        return store
    if parsed.scheme == "sqlite":
        if parsed.user is not None or parsed.query:
            raise ValueError(f"a sqlite URL is sqlite:///path, not {redact(url)!r}")
        if parsed.hostspec == ":memory:" or parsed.path == ":memory:":
            return SQLiteJobStore(":memory:", read_only=read_only)
        if parsed.hostspec:
            raise ValueError(
                f"a sqlite URL names a file, not a host: {redact(url)!r} "
                "(sqlite:///relative.db, sqlite:////absolute.db)"
            )
        # sqlite:///rel.db -> "rel.db"; sqlite:////abs.db -> "/abs.db"
        if not parsed.path:
            raise ValueError(f"sqlite URL without a path: {redact(url)!r}")
        return SQLiteJobStore(parsed.path, read_only=read_only)
    raise ValueError(
        f"unknown database URL {redact(url)!r}: use sqlite:///path, postgresql://, or :memory:"
    )
