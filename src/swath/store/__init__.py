"""Job stores: the ``JobStore`` protocol (``base.py``), the shared state machine
(``machine.py``) and the embedded SQLite store (``sqlite.py``)."""

from __future__ import annotations

from swath.store.base import (
    AutomationInfo,
    ClaimedTask,
    ClusterInfo,
    ErrorInfo,
    Firing,
    JobInfo,
    JobState,
    JobStore,
    NewTask,
    ProgressInfo,
    TaskFailure,
    TaskInfo,
    TaskOutcome,
    TaskState,
    TaskSuccess,
    Trigger,
    UnknownAutomationError,
    UnknownClusterError,
    UnknownJobError,
    WorkSignal,
    new_id,
    store_from_url,
)

__all__ = [
    "AutomationInfo",
    "ClaimedTask",
    "ClusterInfo",
    "ErrorInfo",
    "Firing",
    "JobInfo",
    "JobState",
    "JobStore",
    "NewTask",
    "ProgressInfo",
    "TaskFailure",
    "TaskInfo",
    "TaskOutcome",
    "TaskState",
    "TaskSuccess",
    "Trigger",
    "UnknownAutomationError",
    "UnknownClusterError",
    "UnknownJobError",
    "WorkSignal",
    "new_id",
    "store_from_url",
]
