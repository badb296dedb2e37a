"""The records a runner makes for every task are plain data the cyclic garbage collector never
tracks (``gc=False``): at 100,000 tasks its full passes over them cost about 15 % of a run's
CPU. They must hold no reference cycle, which their fields (text, numbers, bytes, lists of other
records) cannot form."""

from __future__ import annotations

import gc

from swath.store.base import (
    ClaimedTask,
    ErrorInfo,
    LogEntry,
    NewTask,
    TaskFailure,
    TaskSuccess,
    new_id,
)


def test_per_task_records_are_not_tracked_by_the_garbage_collector() -> None:
    """Each per-task record, even holding lists and other records, is untracked."""
    sub = NewTask(new_id(), "T", "v1.0", b"{}", "default", depends_on=["x"])
    claimed = ClaimedTask(
        new_id(), "job", "name", None, "default", "T", "v1.0", b"{}", "", 0, 0, False
    )
    error = ErrorInfo("E", "message", "traceback")
    log = LogEntry(1.0, 20, "hello")
    success = TaskSuccess(claimed.id, "", [sub], {"p": (1, 1)}, (log,))
    failure = TaskFailure(claimed.id, error)
    for record in (sub, claimed, error, log, success, failure):
        assert not gc.is_tracked(record), type(record).__name__
