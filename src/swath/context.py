"""What a task sees while it runs: :class:`ExecutionContext` and its helpers.

Subtasks submitted here are only collected; the runner commits them with the task's completion,
in one transaction, and only if ``execute`` returns normally.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import math
import threading
import time
import traceback
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

from swath._validate import INT64_MAX, check_count, check_text, storable_text
from swath.store.base import (
    MAX_TASK_LOGS,
    ClaimedTask,
    LogEntry,
    NewTask,
    Trigger,
    decode_trigger,
    new_id,
)
from swath.task import Task, encode_input

#: ``ExecutionContext.trigger`` before it is first read
_UNREAD = object()

#: The most retries a task can have (every store holds it in a 32-bit column).
MAX_RETRIES_LIMIT = 2**31 - 1

if TYPE_CHECKING:
    from swath.cache import Cache
    from swath.cache.blocking import BlockingCache

logger = logging.getLogger("swath.task")


class FutureTask:
    """A submitted subtask: pass it to ``depends_on`` of later submissions of the same task."""

    __slots__ = ("_owner", "id", "index", "task")

    def __init__(self, owner: ExecutionContext, index: int, task_id: str, task: Task) -> None:
        self._owner = owner
        self.index = index
        self.id = task_id
        self.task = task

    def __repr__(self) -> str:
        return f"FutureTask({type(self.task).__name__}, index={self.index}, id={self.id!r})"


class ProgressIndicator:
    """``progress(label).add(n)`` raises the total, ``.done(n)`` the count done; committed with
    the task's completion. ``label`` is None for the job's unlabelled indicator (Tilebox's
    ``progress()``), stored under the label ``""``."""

    __slots__ = ("_done", "_total", "label")

    def __init__(self, label: str | None) -> None:
        self.label = label
        self._total = 0
        self._done = 0

    def add(self, n: int = 1) -> None:
        self._total = _count(self._total, n, self.label)

    def done(self, n: int = 1) -> None:
        self._done = _count(self._done, n, self.label)


def _count(current: int, n: int, label: str | None) -> int:
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"progress counts are non-negative ints, not {n!r}")
    if current + n > INT64_MAX:
        raise ValueError(
            f"progress {label!r}: {current} + {n} is more than a store can count ({INT64_MAX})"
        )
    return current + n


class JobRef:
    __slots__ = ("id", "name")

    def __init__(self, job_id: str, name: str) -> None:
        self.id = job_id
        self.name = name

    def __repr__(self) -> str:
        return f"JobRef(id={self.id!r}, name={self.name!r})"


class TaskIdentifier(NamedTuple):
    """A task's ``(name, version)``, as ``Task.identifier()`` returns it."""

    name: str
    version: str


class CurrentTask:
    """The running task: ``id``, ``identifier`` (``.name``, ``.version``), ``parent_id`` (None
    for a job's root task), ``input`` (the task's serialized input, bytes), ``display``
    (settable), ``job.id``, ``job.name``, ``retry_count``."""

    __slots__ = (
        "_display",
        "cluster",
        "id",
        "identifier",
        "input",
        "job",
        "name",
        "parent_id",
        "retry_count",
        "version",
    )

    def __init__(self, claimed: ClaimedTask) -> None:
        self.id = claimed.id
        self.name = claimed.name
        self.version = claimed.version
        self.identifier = TaskIdentifier(claimed.name, claimed.version)
        self.parent_id = claimed.parent_id
        self.input = claimed.input
        self.cluster = claimed.cluster
        self._display = claimed.display
        self.retry_count = claimed.retry_count
        self.job = JobRef(claimed.job_id, claimed.job_name)

    @property
    def display(self) -> str:
        """The task's label in listings and diagrams (saved with its completion)."""
        return self._display

    @display.setter
    def display(self, value: str) -> None:
        self._display = check_text(value, "current_task.display")


#: Attributes a LogRecord has already: a field of that name is kept in ``record.fields`` only.
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "fields",
}


class TaskLogBook:
    """The log records one execution keeps for the job store: records at ``level`` or above,
    the newest ``limit`` of them (older ones are counted in ``dropped``). Thread-safe: a sync
    task logs from its worker thread."""

    __slots__ = ("_lock", "dropped", "level", "records")

    def __init__(self, level: int = logging.INFO, limit: int = MAX_TASK_LOGS) -> None:
        self.level = level
        self.records: collections.deque[LogEntry] = collections.deque(maxlen=max(1, limit))
        self.dropped = 0
        self._lock = threading.Lock()

    def add(
        self, level: int, msg: object, args: tuple[Any, ...], exc_info: Any, fields: dict[str, Any]
    ) -> None:
        try:
            text = str(msg) % args if args else str(msg)
        except Exception:
            text = f"{msg!r} % {args!r}"
        exc = _exc_text(exc_info)
        if exc:
            text = f"{text}\n{exc}"
        entry = LogEntry(
            time.time(),
            min(max(level, 0), 2**31 - 1),
            storable_text(text),
            storable_text(_json_fields(fields)),
        )
        with self._lock:
            if len(self.records) == self.records.maxlen:
                self.dropped += 1
            self.records.append(entry)

    def taken(self) -> tuple[tuple[LogEntry, ...], int]:
        with self._lock:
            return tuple(self.records), self.dropped


def _exc_text(exc_info: Any) -> str:
    if not exc_info:
        return ""
    if isinstance(exc_info, BaseException):
        return "".join(traceback.format_exception(exc_info)).rstrip()
    if not isinstance(exc_info, tuple):
        import sys

        exc_info = sys.exc_info()
    if len(exc_info) == 3 and exc_info[1] is not None:
        return "".join(traceback.format_exception(*exc_info)).rstrip()
    return ""


def _json_fields(fields: Mapping[str, Any]) -> str:
    if not fields:
        return "{}"
    try:
        return json.dumps({str(k): v for k, v in fields.items()}, default=repr, ensure_ascii=False)
    except Exception:  # a field whose repr raises, a circular structure
        return json.dumps({str(k): _safe_repr(v) for k, v in fields.items()}, ensure_ascii=False)


def _safe_repr(value: object) -> str:
    try:
        return repr(value)
    except Exception:
        return f"<unrepresentable {type(value).__name__}>"


class TaskLogger:
    """``context.logger``: Tilebox-style structured logging over the standard ``logging``
    module (logger ``swath.task``), kept per task in the job store too.

    ``context.logger.info("tile done", scene_id=s, ms=12)``: keyword fields go on the record as
    ``record.fields`` (a dict) and as attributes of the record (``record.scene_id``) unless a
    ``LogRecord`` attribute has that name. Every record also carries ``job_id``, ``task_id``,
    ``task`` (the task's name), ``task_version`` and ``runner_id``. ``exc_info``,
    ``stack_info``, ``stacklevel`` and ``extra`` keep their ``logging`` meaning; ``%``-style
    ``args`` work as in ``logging``. Logging never raises because of its fields.

    Records at the runner's ``log_level`` (INFO unless changed) or above are also committed to
    the job store with the task's outcome (``jobs().logs``, ``swath jobs logs``), whatever the
    ``logging`` configuration of the process; the newest ``MAX_TASK_LOGS`` per execution."""

    __slots__ = ("_base", "_book", "_bound", "logger")

    def __init__(
        self,
        logger: logging.Logger,
        base: Mapping[str, Any],
        bound: Mapping[str, Any] | None = None,
        book: TaskLogBook | None = None,
    ) -> None:
        self.logger = logger
        self._base = dict(base)
        self._bound = dict(bound or {})
        self._book = book

    def bind(self, **fields: Any) -> TaskLogger:
        """A logger that adds ``fields`` to every record."""
        return TaskLogger(self.logger, self._base, {**self._bound, **fields}, self._book)

    def isEnabledFor(self, level: int) -> bool:
        return self.logger.isEnabledFor(level)

    def debug(self, msg: object, /, *args: Any, **fields: Any) -> None:
        self._log(logging.DEBUG, msg, args, fields)

    def info(self, msg: object, /, *args: Any, **fields: Any) -> None:
        self._log(logging.INFO, msg, args, fields)

    def warning(self, msg: object, /, *args: Any, **fields: Any) -> None:
        self._log(logging.WARNING, msg, args, fields)

    def error(self, msg: object, /, *args: Any, **fields: Any) -> None:
        self._log(logging.ERROR, msg, args, fields)

    def exception(self, msg: object, /, *args: Any, **fields: Any) -> None:
        fields.setdefault("exc_info", True)
        self._log(logging.ERROR, msg, args, fields)

    def critical(self, msg: object, /, *args: Any, **fields: Any) -> None:
        self._log(logging.CRITICAL, msg, args, fields)

    def log(self, level: int, msg: object, /, *args: Any, **fields: Any) -> None:
        self._log(level, msg, args, fields)

    def _log(self, level: int, msg: object, args: tuple[Any, ...], fields: dict[str, Any]) -> None:
        if not isinstance(level, int):
            return
        book = self._book
        keep = book is not None and level >= book.level
        if not keep and not self.logger.isEnabledFor(level):
            return
        exc_info = fields.pop("exc_info", None)
        stack_info = bool(fields.pop("stack_info", False))
        stacklevel = fields.pop("stacklevel", 1)
        extra = fields.pop("extra", None)
        merged = {**self._bound, **(dict(extra) if isinstance(extra, Mapping) else {}), **fields}
        if keep:
            assert book is not None
            book.add(level, msg, args, exc_info, merged)
            if not self.logger.isEnabledFor(level):
                return
        attributes = {k: v for k, v in merged.items() if k not in _RECORD_ATTRIBUTES}
        self.logger.log(
            level,
            msg,
            *args,
            exc_info=exc_info,
            stack_info=stack_info,
            stacklevel=(stacklevel if isinstance(stacklevel, int) else 1) + 2,
            extra={**attributes, **self._base, "fields": merged},
        )


class ExecutionContext:
    """Passed to ``Task.execute`` (docs/tasks.md explains each part).

    Sync tasks (a plain ``def execute``) get a :class:`SyncExecutionContext`, whose
    ``job_cache`` is the blocking, Tilebox-style mapping."""

    #: made with ``logger`` on first use; the traceparent of the execution's span, on first use
    _book: TaskLogBook | None = None
    _traceparent: str | None = None

    def __new__(cls, *args: Any, blocking: bool = False, **kwargs: Any) -> ExecutionContext:
        if blocking and cls is ExecutionContext:
            cls = SyncExecutionContext
        return object.__new__(cls)

    def __init__(
        self,
        claimed: ClaimedTask,
        cache: Cache,
        *,
        runner_context: Any = None,
        loop: asyncio.AbstractEventLoop | None = None,
        blocking: bool = False,
        runner_id: str = "",
        log_level: int = logging.INFO,
        telemetry: tuple[Any, Any] | None = None,
    ) -> None:
        self._claimed = claimed
        #: (swath._otel.Telemetry, the execution's span) when OpenTelemetry is in use
        self._telemetry = telemetry
        self._runner_id = runner_id
        self._log_level = log_level
        self._cache = cache
        self._loop = loop
        self._blocking = blocking
        self._subtasks: list[NewTask] = []
        self._progress: dict[str, ProgressIndicator] = {}
        self._logger: TaskLogger | None = None
        self._job_cache: Cache | None = None
        self._blocking_cache: BlockingCache | None = None
        self._current: CurrentTask | None = None
        self._cancelled = False  # set by the runner's loop; read by the task's thread
        self._trigger: object = _UNREAD
        self.runner_context = runner_context

    @property
    def cancelled(self) -> bool:
        """True once the runner wants this task to stop: its job was canceled or failed, or its
        ``timeout`` passed. Async tasks are cancelled (``CancelledError``) at the same moment;
        sync tasks, which run in a thread, should poll this and return early. Whatever the task
        returns after that is discarded."""
        return self._cancelled

    @property
    def current_task(self) -> CurrentTask:
        """The running task: ``id``, ``identifier``, ``parent_id``, ``input``, ``display``
        (settable), ``job.id``, ``job.name``, ``retry_count``."""
        if self._current is None:
            self._current = CurrentTask(self._claimed)
        return self._current

    @property
    def trigger(self) -> Trigger | None:
        """What fired this job when an automation submitted it (:mod:`swath.automations`), in
        every task of the job; None for jobs submitted otherwise. ``.automation`` (its name),
        ``.kind`` (``"cron"`` or ``"storage"``); a cron tick's ``.time`` (the scheduled time,
        time-zone aware); a stored object's ``.key``, ``.url``, ``.size``, ``.checksum``,
        ``.version`` and ``.time`` (see :class:`swath.Trigger`)."""
        if self._trigger is _UNREAD:
            self._trigger = decode_trigger(self._claimed.trigger)
        return self._trigger  # type: ignore[return-value]

    # -- subtasks --------------------------------------------------------------------------------
    def submit_subtask(
        self,
        task: Task,
        *,
        depends_on: FutureTask | Sequence[FutureTask] | None = None,
        cluster: str | None = None,
        max_retries: int = 0,
        optional: bool = False,
        timeout: float | None = None,
    ) -> FutureTask:
        """Queue ``task`` as a subtask; it is committed when ``execute`` returns normally.
        ``timeout`` (seconds, default: the task class's) fails an execution that runs longer
        with a ``TimeoutError``, retried like any failure."""
        [future] = self.submit_subtasks(
            [task],
            depends_on=depends_on,
            cluster=cluster,
            max_retries=max_retries,
            optional=optional,
            timeout=timeout,
        )
        return future

    def submit_subtasks(
        self,
        tasks: Sequence[Task],
        *,
        depends_on: FutureTask | Sequence[FutureTask] | None = None,
        cluster: str | None = None,
        max_retries: int = 0,
        optional: bool = False,
        timeout: float | None = None,
    ) -> list[FutureTask]:
        """``submit_subtask`` for each task, with the same options; all or nothing (an error
        for one task submits none)."""
        deps = self._dependencies(depends_on)
        check_max_retries(max_retries)
        if cluster is not None and not isinstance(cluster, str):
            raise TypeError(f"cluster must be a str, not {type(cluster).__name__}")
        if timeout is not None:
            timeout = check_timeout(timeout)
        cluster = cluster or self._claimed.cluster
        optional = bool(optional)
        new: list[NewTask] = []
        for task in tasks:
            data = encode_input(task)  # TypeError for non-tasks and unserializable inputs
            name, version = type(task).identifier()
            new.append(
                NewTask(
                    id=new_id(),
                    name=name,
                    version=version,
                    input=data,
                    cluster=cluster,
                    max_retries=max_retries,
                    optional=optional,
                    depends_on=deps,
                    timeout=type(task)._swath_timeout if timeout is None else timeout,
                )
            )
        if self._telemetry is not None:
            new = [msgspec.structs.replace(t, traceparent=self._span_traceparent()) for t in new]
        first = len(self._subtasks)
        self._subtasks += new
        return [
            FutureTask(self, first + i, t.id, task)
            for i, (t, task) in enumerate(zip(new, tasks, strict=True))
        ]

    def _dependencies(self, depends_on: FutureTask | Sequence[FutureTask] | None) -> list[str]:
        if depends_on is None:
            return []
        items = [depends_on] if isinstance(depends_on, FutureTask) else list(depends_on)
        ids = []
        for item in items:
            if not isinstance(item, FutureTask):
                raise TypeError(
                    f"depends_on takes FutureTasks returned by submit_subtask, not "
                    f"{type(item).__name__}"
                )
            if item._owner is not self:
                raise ValueError(
                    f"depends_on: {item!r} was submitted by another task's context; a subtask "
                    "can only depend on subtasks submitted by the same execute"
                )
            index = item.index
            if not (
                isinstance(index, int)
                and 0 <= index < len(self._subtasks)
                and self._subtasks[index].id == item.id
            ):
                raise ValueError(
                    f"depends_on: {item!r} is not a subtask this execute submitted (use the "
                    "FutureTasks that submit_subtask returns)"
                )
            ids.append(item.id)
        return ids

    # -- the rest of the context -----------------------------------------------------------------
    @property
    def job_cache(self) -> Cache:
        """The job's cache: the runner cache's group named by the job id (async API). In sync
        tasks it is the blocking mapping of :attr:`blocking_job_cache` instead (see
        :class:`SyncExecutionContext`)."""
        return self._async_job_cache()

    def _async_job_cache(self) -> Cache:
        if self._job_cache is None:
            self._job_cache = self._cache.group(self._claimed.job_id)
            if self._telemetry is not None:
                telemetry, span = self._telemetry
                self._job_cache = telemetry.job_cache(self._job_cache, span, self._claimed)
        return self._job_cache

    def _span_traceparent(self) -> str | None:
        """The trace context subtasks are submitted under: this execution's span."""
        if self._traceparent is None and self._telemetry is not None:
            from swath._otel import traceparent_of

            self._traceparent = traceparent_of(self._telemetry[1])
        return self._traceparent

    @property
    def blocking_job_cache(self) -> BlockingCache:
        """The job's cache as a blocking, Tilebox-style mapping (``cache["k"] = v``,
        ``cache["k"]``, ``in``, iteration, ``items()``, ``del``, ``group``), typed as such: for
        sync tasks. In an async task (on the runner's event loop) it is a ``RuntimeError``:
        blocking there would stop every other task."""
        if not self._blocking or self._loop is None:
            raise RuntimeError(
                "blocking_job_cache is for sync tasks (def execute); an async task uses "
                "context.job_cache with await"
            )
        if self._blocking_cache is None:
            from swath.cache.blocking import BlockingCache

            self._blocking_cache = BlockingCache(self._async_job_cache(), self._loop)
        return self._blocking_cache

    def progress(self, label: str | None = None) -> ProgressIndicator:
        """The job's progress indicator ``label`` (created on first use); without a label (or
        with ``""``), the job's unlabelled indicator, as in Tilebox."""
        key = "" if label is None else check_text(label, "a progress label")
        indicator = self._progress.get(key)
        if indicator is None:
            indicator = self._progress[key] = ProgressIndicator(label or None)
        return indicator

    @property
    def logger(self) -> TaskLogger:
        """Structured logging (``context.logger.info("msg", scene_id=s)``) to
        ``logging.getLogger("swath.task")`` and the job store (see :class:`TaskLogger`), with
        ``job_id``, ``task_id``, ``task``, ``task_version`` and ``runner_id`` on every
        record."""
        if self._logger is None:
            self._book = TaskLogBook(self._log_level)
            self._logger = TaskLogger(
                logger,
                {
                    "job_id": self._claimed.job_id,
                    "task_id": self._claimed.id,
                    "task": self._claimed.name,
                    "task_version": self._claimed.version,
                    "runner_id": self._runner_id,
                },
                book=self._book,
            )
        return self._logger

    # -- for the runner --------------------------------------------------------------------------
    def _cancel(self) -> None:
        self._cancelled = True

    def _display(self) -> str:
        return self._claimed.display if self._current is None else self._current.display

    def _logs(self) -> tuple[tuple[LogEntry, ...], int]:
        """The execution's log records for the store and how many older ones were dropped."""
        return ((), 0) if self._book is None else self._book.taken()

    def _collected(self) -> tuple[list[NewTask], dict[str, tuple[int, int]]]:
        if not self._progress:
            return self._subtasks, {}
        progress = {p.label or "": (p._total, p._done) for p in self._progress.values()}
        return self._subtasks, {k: v for k, v in progress.items() if v != (0, 0)}


def check_max_retries(max_retries: object) -> int:
    """``max_retries`` if it is an int every store can hold; ``ValueError``/``TypeError``."""
    if type(max_retries) is int and 0 <= max_retries <= MAX_RETRIES_LIMIT:
        return max_retries  # the common case, checked in one step
    if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
        raise ValueError(f"max_retries must be a non-negative int, not {max_retries!r}")
    return check_count(max_retries, "max_retries", maximum=MAX_RETRIES_LIMIT)


def check_timeout(timeout: object) -> float:
    """``timeout`` as seconds if it is a positive, finite number; ``TypeError``/``ValueError``."""
    if not isinstance(timeout, int | float) or isinstance(timeout, bool):
        raise TypeError(f"timeout must be seconds (a number), not {type(timeout).__name__}")
    if not (timeout > 0 and math.isfinite(timeout)):
        raise ValueError(f"timeout must be a positive, finite number of seconds, not {timeout!r}")
    return float(timeout)


def task_timeout(task: Task, timeout: float | None) -> float | None:
    """The time limit of one execution of ``task``: ``timeout`` if given, else its class's
    (``class T(Task, timeout=60)``)."""
    return type(task)._swath_timeout if timeout is None else check_timeout(timeout)


class SyncExecutionContext(ExecutionContext):
    """The context of a sync task (``def execute``, run in a worker thread): ``job_cache`` is the
    blocking, Tilebox-style mapping (:class:`swath.cache.blocking.BlockingCache`)."""

    @property
    def job_cache(self) -> BlockingCache:  # type: ignore[override]
        """The job's cache as a blocking mapping: ``cache["k"] = v``, ``cache["k"]``, ``in``,
        iteration, ``items()``, ``del cache["k"]``, ``group``."""
        return self.blocking_job_cache
