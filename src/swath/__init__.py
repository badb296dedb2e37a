"""swath: async-first workflows for data-heavy work, with a streaming per-job cache."""

from __future__ import annotations

from typing import Any

from swath._validate import InvalidTextError
from swath.automations import Automation, AutomationClient, AutomationEvaluator, CronSchedule
from swath.blocking import BlockingClient
from swath.cache import (
    Cache,
    CacheGroup,
    CacheWriter,
    InMemoryCache,
    LocalFileSystemCache,
    Stat,
    cache_from_url,
)
from swath.cache.blocking import BlockingCache
from swath.client import Client, Cluster, ClusterClient, Job, JobClient
from swath.context import (
    CurrentTask,
    ExecutionContext,
    FutureTask,
    ProgressIndicator,
    SyncExecutionContext,
    TaskLogger,
)
from swath.errors import (
    CacheError,
    ChecksumMismatchError,
    InvalidKeyError,
    KeyNotFoundError,
    NotFoundError,
    ReadOnlyError,
    RunnerLostError,
    SwathError,
)
from swath.runner import Runner, TaskInputError, UnknownTaskError
from swath.store.base import (
    ErrorInfo,
    ExecutionStats,
    JobState,
    ProgressInfo,
    StoreError,
    StoreOpenError,
    TaskInfo,
    TaskLogRecord,
    TaskState,
    Trigger,
    UnknownAutomationError,
    UnknownClusterError,
    UnknownJobError,
)
from swath.task import Task

__version__ = "0.1.0"

__all__ = [
    "AmazonS3Cache",
    "Automation",
    "AutomationClient",
    "AutomationEvaluator",
    "BlockingCache",
    "BlockingClient",
    "Cache",
    "CacheError",
    "CacheGroup",
    "CacheWriter",
    "ChecksumMismatchError",
    "Client",
    "Cluster",
    "ClusterClient",
    "CronSchedule",
    "CurrentTask",
    "DatabaseError",
    "ErrorInfo",
    "ExecutionContext",
    "ExecutionStats",
    "FutureTask",
    "GoogleStorageCache",
    "InMemoryCache",
    "InvalidKeyError",
    "InvalidTextError",
    "Job",
    "JobClient",
    "JobState",
    "KeyNotFoundError",
    "LocalFileSystemCache",
    "NotFoundError",
    "ProgressIndicator",
    "ProgressInfo",
    "ReadOnlyError",
    "Runner",
    "RunnerLostError",
    "Stat",
    "StoreError",
    "StoreOpenError",
    "SwathError",
    "SyncExecutionContext",
    "Task",
    "TaskInfo",
    "TaskInputError",
    "TaskLogRecord",
    "TaskLogger",
    "TaskState",
    "Trigger",
    "UnknownAutomationError",
    "UnknownClusterError",
    "UnknownJobError",
    "UnknownTaskError",
    "cache_from_url",
]


#: Imported on first use, so that ``import swath`` does not import aiobotocore or gcloud-aio.
_LAZY = ("AmazonS3Cache", "GoogleStorageCache")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import swath.cache

        return getattr(swath.cache, name)
    if name == "DatabaseError":  # the PostgreSQL store's errors (needs asyncpg, extra postgres)
        import swath.store.postgres

        return swath.store.postgres.DatabaseError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
