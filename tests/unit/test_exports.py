"""The errors users meet are importable from ``swath``."""

from __future__ import annotations

import swath
from swath.store.machine import MAX_LOST


def test_every_public_name_imports_and_errors_users_meet_are_exported() -> None:
    """Every name of ``swath.__all__`` resolves; the errors a user sees in a task's error type
    or catches from the API (RunnerLostError, UnknownTaskError, TaskInputError,
    InvalidTextError, StoreOpenError, NotFoundError, ReadOnlyError, DatabaseError) are among
    them (old code: RunnerLostError existed only as a string in the store)."""
    for name in swath.__all__:
        assert getattr(swath, name) is not None
    errors = {
        "RunnerLostError",
        "UnknownTaskError",
        "TaskInputError",
        "InvalidTextError",
        "StoreOpenError",
        "NotFoundError",
        "ReadOnlyError",
        "DatabaseError",
        "InvalidKeyError",
        "KeyNotFoundError",
        "ChecksumMismatchError",
        "CacheError",
        "UnknownJobError",
        "UnknownClusterError",
        "StoreError",
    }
    assert errors <= set(swath.__all__)
    for name in errors:
        assert issubclass(getattr(swath, name), swath.SwathError)
    # the name the store records for a task lost too many times is the exported class's
    assert swath.RunnerLostError.__name__ == "RunnerLostError"
    assert MAX_LOST >= 1
