"""What a task sees while it runs: :class:`ExecutionContext` and its helpers.

Subtasks submitted here are only collected; the runner commits them with the task's completion,
in one transaction, and only if ``execute`` returns normally.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import MutableMapping, Sequence
from typing import TYPE_CHECKING, Any

from swath._validate import INT64_MAX, check_count, check_text
from swath.store.base import ClaimedTask, NewTask, new_id
from swath.task import Task, encode_input

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
    the task's completion."""

    __slots__ = ("_done", "_total", "label")

    def __init__(self, label: str) -> None:
        self.label = label
        self._total = 0
        self._done = 0

    def add(self, n: int = 1) -> None:
        self._total = _count(self._total, n, self.label)

    def done(self, n: int = 1) -> None:
        self._done = _count(self._done, n, self.label)


def _count(current: int, n: int, label: str) -> int:
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


class CurrentTask:
    """The running task: ``display`` (settable), ``job.id``, ``job.name``, ``retry_count``."""

    __slots__ = ("_display", "cluster", "id", "job", "name", "retry_count", "version")

    def __init__(self, claimed: ClaimedTask) -> None:
        self.id = claimed.id
        self.name = claimed.name
        self.version = claimed.version
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


class _TaskLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Adds ``job_id`` and ``task_id`` to every record, merged with the caller's ``extra``."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        kwargs["extra"] = {**(self.extra or {}), **(kwargs.get("extra") or {})}
        return msg, kwargs


class ExecutionContext:
    """Passed to ``Task.execute``. See API.md section 2."""

    def __init__(
        self,
        claimed: ClaimedTask,
        cache: Cache,
        *,
        runner_context: Any = None,
        loop: asyncio.AbstractEventLoop | None = None,
        blocking: bool = False,
    ) -> None:
        self._claimed = claimed
        self._cache = cache
        self._loop = loop
        self._blocking = blocking
        self._subtasks: list[NewTask] = []
        self._progress: dict[str, ProgressIndicator] = {}
        self._logger: logging.LoggerAdapter[logging.Logger] | None = None
        self._job_cache: Cache | BlockingCache | None = None
        self._current: CurrentTask | None = None
        self._cancelled = False  # set by the runner's loop; read by the task's thread
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
        """The running task: ``display`` (settable), ``job.id``, ``job.name``, ``retry_count``."""
        if self._current is None:
            self._current = CurrentTask(self._claimed)
        return self._current

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
    def job_cache(self) -> Any:
        """The job's cache: the runner cache's group named by the job id. In sync tasks, a
        blocking mapping (``cache["k"] = v``, ``cache["k"]``, ``in``, iteration, ``del``,
        ``group``)."""
        if self._job_cache is None:
            group = self._cache.group(self._claimed.job_id)
            if self._blocking:
                from swath.cache.blocking import BlockingCache

                assert self._loop is not None
                self._job_cache = BlockingCache(group, self._loop)
            else:
                self._job_cache = group
        return self._job_cache

    def progress(self, label: str) -> ProgressIndicator:
        """The job's progress indicator ``label`` (created on first use)."""
        if not isinstance(label, str) or not label:
            raise ValueError(f"a progress label is a non-empty str, not {label!r}")
        check_text(label, "a progress label")
        indicator = self._progress.get(label)
        if indicator is None:
            indicator = self._progress[label] = ProgressIndicator(label)
        return indicator

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """``logging.getLogger("swath.task")`` with ``job_id`` and ``task_id`` on every record."""
        if self._logger is None:
            self._logger = _TaskLogger(
                logger,
                {
                    "job_id": self._claimed.job_id,
                    "task_id": self._claimed.id,
                    "task": self._claimed.name,
                },
            )
        return self._logger

    # -- for the runner --------------------------------------------------------------------------
    def _cancel(self) -> None:
        self._cancelled = True

    def _display(self) -> str:
        return self._claimed.display if self._current is None else self._current.display

    def _collected(self) -> tuple[list[NewTask], dict[str, tuple[int, int]]]:
        progress = {p.label: (p._total, p._done) for p in self._progress.values()}
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
