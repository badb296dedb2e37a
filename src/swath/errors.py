"""Exceptions raised by swath. All are importable from ``swath``."""

from __future__ import annotations


class SwathError(Exception):
    """Base class of swath's own errors."""


class InvalidKeyError(SwathError, ValueError):
    """A cache key or group name breaks the key rules; raised before any I/O."""


class KeyNotFoundError(SwathError, KeyError):
    """The key has no value in this cache (or group)."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0]) if self.args else "key not found"


class ChecksumMismatchError(SwathError, IOError):
    """A stored value does not match the checksum recorded when it was written."""


class CacheError(SwathError, IOError):
    """A cache backend failed (after its retries); the message names operation and key."""


class RunnerLostError(SwathError):
    """The error a task ends with when its runner was lost (its lease expired) too many times.

    Recorded by the job store under this name (``TaskInfo.error.type == "RunnerLostError"``);
    never raised inside a task."""


class ReadOnlyError(SwathError, PermissionError):
    """A write to a job store or cache opened read-only (``read_only=True``)."""


class NotFoundError(SwathError, FileNotFoundError):
    """A job store or cache opened read-only does not exist (read-only opens create nothing)."""
