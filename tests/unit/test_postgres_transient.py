"""Which PostgreSQL errors the store retries: a deadlock or a serialization failure is retried
(the transaction is simply run again); a refused value is not."""

from __future__ import annotations

import asyncpg

from swath.store.postgres import _transient


def test_deadlock_is_transient_and_refusals_are_not() -> None:
    """Classifying an error never raises (it once did: ``type | tuple`` in isinstance), a
    deadlock is retried, a data error is not."""
    assert _transient(asyncpg.exceptions.DeadlockDetectedError("deadlock detected"))
    assert _transient(asyncpg.exceptions.SerializationError("could not serialize"))
    assert not _transient(asyncpg.exceptions.DataError("bad value"))
    assert not _transient(UnicodeError("bad text"))
