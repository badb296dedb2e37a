"""A job's task tree with large fan-outs aggregated: one node "NdviTile x 36" with its state
counts instead of 36 nodes. Pure functions over :class:`~swath.store.base.TaskInfo` lists, used
by the dashboard's job page and by ``swath jobs show``; no I/O, linear in the number of tasks,
no recursion (a chain of 100,000 subtasks is as fine as a fan-out of 100,000)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from swath.store.base import TaskInfo, TaskState

#: siblings of one task class (name and version) are aggregated from this many on
DEFAULT_FAN_OUT = 10
#: failed tasks an aggregated node keeps as examples of its errors
ERROR_SAMPLES = 3


@dataclass(eq=False)
class TaskNode:
    """One task (``count == 1``, ``task`` is it) or an aggregate of ``count`` sibling tasks of
    one class whose subtasks are aggregated together below it (``task`` is the first of them).

    ``states`` counts the tasks by state; ``started_at`` is the earliest start and
    ``finished_at`` the latest end (None while any task has not ended); ``compute_time`` sums
    the tasks' own durations; ``failures`` holds up to :data:`ERROR_SAMPLES` failed tasks (all
    of them for a single task); ``members`` the tasks themselves."""

    task: TaskInfo
    count: int = 0
    states: Counter[TaskState] = field(default_factory=Counter)
    started_at: float | None = None
    finished_at: float | None = None
    unfinished: int = 0
    compute_time: float = 0.0
    retries: int = 0
    failures: list[TaskInfo] = field(default_factory=list)
    children: list[TaskNode] = field(default_factory=list)
    members: list[TaskInfo] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.task.name

    @property
    def version(self) -> str:
        return self.task.version

    @property
    def aggregated(self) -> bool:
        return self.count > 1

    @property
    def label(self) -> str:
        """``display`` of a single task (its name without one); ``Name x N`` of an aggregate."""
        if self.aggregated:
            return f"{self.task.name} x {self.count}"
        return self.task.display or self.task.name

    @property
    def state(self) -> TaskState:
        """The single task's state; of an aggregate, the most telling of its states (failed
        before running before queued before the finished ones)."""
        if not self.aggregated:
            return self.task.state
        for state in _STATE_ORDER:
            if self.states.get(state):
                return state
        return self.task.state

    def add(self, task: TaskInfo) -> None:
        self.count += 1
        self.members.append(task)
        self.states[task.state] += 1
        self.retries += task.retry_count
        if task.started_at is not None:
            if self.started_at is None or task.started_at < self.started_at:
                self.started_at = task.started_at
            if task.finished_at is not None:
                self.compute_time += max(0.0, task.finished_at - task.started_at)
        if task.finished_at is None:
            self.unfinished += 1
        elif self.finished_at is None or task.finished_at > self.finished_at:
            self.finished_at = task.finished_at
        if (
            task.error is not None
            and task.state in (TaskState.FAILED, TaskState.FAILED_OPTIONAL)
            and len(self.failures) < ERROR_SAMPLES
        ):
            self.failures.append(task)

    @property
    def ended_at(self) -> float | None:
        """When the last task ended, once all have (None before)."""
        return None if self.unfinished else self.finished_at


#: an aggregate's state is the first of these that any of its tasks is in
_STATE_ORDER = (
    TaskState.FAILED,
    TaskState.RUNNING,
    TaskState.COMPUTED,
    TaskState.QUEUED,
    TaskState.FAILED_OPTIONAL,
    TaskState.CANCELED,
    TaskState.SKIPPED,
    TaskState.COMPLETED,
)


def _group(tasks: Sequence[TaskInfo], fan_out: int) -> list[list[TaskInfo]]:
    """Siblings in creation order as groups: a task class with ``fan_out`` or more siblings is
    one group (placed where its first task is), any other task is a group of its own."""
    by_class: dict[tuple[str, str], list[TaskInfo]] = {}
    for t in tasks:
        by_class.setdefault((t.name, t.version), []).append(t)
    groups: list[list[TaskInfo]] = []
    placed: set[tuple[str, str]] = set()
    for t in tasks:
        key = (t.name, t.version)
        members = by_class[key]
        if len(members) < fan_out:
            groups.append([t])
        elif key not in placed:
            placed.add(key)
            groups.append(members)
    return groups


def task_tree(tasks: Sequence[TaskInfo], fan_out: int = DEFAULT_FAN_OUT) -> list[TaskNode]:
    """The roots of the job's task tree (``tasks`` in creation order, as ``jobs().tasks``
    gives them), with every set of ``fan_out`` or more siblings of one task class aggregated
    into one node, whose children aggregate the subtasks of all its tasks, and so on down.
    A task whose parent is not among ``tasks`` is a root."""
    if fan_out < 2:
        raise ValueError(f"fan_out is at least 2, not {fan_out!r}")
    ids = {t.id for t in tasks}
    children: dict[str | None, list[TaskInfo]] = {}
    for t in tasks:
        parent = t.parent_id if t.parent_id in ids else None
        children.setdefault(parent, []).append(t)
    roots: list[TaskNode] = []
    # (the tasks of a node, where to append its node): breadth-first, no recursion
    todo: list[tuple[list[TaskInfo], list[TaskNode]]] = [
        (group, roots) for group in _group(children.get(None, []), fan_out)
    ]
    i = 0
    while i < len(todo):
        members, siblings = todo[i]
        i += 1
        node = TaskNode(members[0])
        for t in members:
            node.add(t)
        siblings.append(node)
        below = [c for t in members for c in children.get(t.id, ())]
        if len(members) > 1:
            below.sort(key=lambda c: c.created_at)
        todo.extend((group, node.children) for group in _group(below, fan_out))
    return roots


def flatten(roots: Sequence[TaskNode]) -> list[tuple[int, TaskNode]]:
    """The tree as ``(depth, node)`` rows in display order (a parent before its children)."""
    rows: list[tuple[int, TaskNode]] = []
    stack = [(0, node) for node in reversed(roots)]
    while stack:
        depth, node = stack.pop()
        rows.append((depth, node))
        stack.extend((depth + 1, child) for child in reversed(node.children))
    return rows
