"""Job stores: the ``JobStore`` protocol (``base.py``), the shared state machine
(``machine.py``) and the embedded SQLite store (``sqlite.py``)."""

from __future__ import annotations

from swath.store.base import (
    ClaimedTask,
    ClusterInfo,
    ErrorInfo,
    JobInfo,
    JobState,
    JobStore,
    LeaseInfo,
    NewTask,
    ProgressInfo,
    RunnerInfo,
    TaskFailure,
    TaskInfo,
    TaskOutcome,
    TaskState,
    TaskSuccess,
    UnknownClusterError,
    UnknownJobError,
    WorkSignal,
    new_id,
    store_from_url,
)

__all__ = [
    "ClaimedTask",
    "ClusterInfo",
    "ErrorInfo",
    "JobInfo",
    "JobState",
    "JobStore",
    "LeaseInfo",
    "NewTask",
    "ProgressInfo",
    "RunnerInfo",
    "TaskFailure",
    "TaskInfo",
    "TaskOutcome",
    "TaskState",
    "TaskSuccess",
    "UnknownClusterError",
    "UnknownJobError",
    "WorkSignal",
    "new_id",
    "store_from_url",
]
