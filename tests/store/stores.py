"""Job stores under test. Every store conformance test runs against each entry of ``STORES``.

A store joins the suite by adding its name to ``STORES`` and a fixture named
``store_factory_<name>`` that returns a :class:`StoreFactory` (the PostgreSQL store starts its
server in ``tests/services``).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from swath.store import JobStore
from swath.store.sqlite import SQLiteJobStore

STORES = ["sqlite_memory", "sqlite_file", "postgres"]


@dataclass
class StoreFactory:
    """How to make store objects for one test, all of them on the same (fresh) database."""

    name: str
    make: Callable[[], JobStore]
    # shared: two objects from ``make`` see the same database (a file, a server), as two
    # processes would; False for ``:memory:``, where each object is its own database
    shared: bool = True
    url: str = ""
    env: dict[str, str] = field(default_factory=dict)

    def subprocess_env(self) -> dict[str, str]:
        return {**os.environ, **self.env, "SWATH_DATABASE_URL": self.url}


@pytest.fixture
def store_factory_sqlite_memory() -> StoreFactory:
    return StoreFactory(
        "sqlite_memory", make=lambda: SQLiteJobStore(":memory:"), shared=False, url=":memory:"
    )


@pytest.fixture
def store_factory_sqlite_file(tmp_path: Path) -> StoreFactory:
    path = tmp_path / "jobs.db"
    return StoreFactory(
        "sqlite_file", make=lambda: SQLiteJobStore(path), url=f"sqlite:///{path.resolve()}"
    )


@pytest.fixture
def store_factory_postgres(postgres_dsn: str) -> StoreFactory:
    """A fresh database of the session's throwaway PostgreSQL cluster (tests/services)."""
    from swath.store.postgres import PostgresJobStore

    return StoreFactory("postgres", make=lambda: PostgresJobStore(postgres_dsn), url=postgres_dsn)


@pytest.fixture(params=STORES)
def store_factory(request: pytest.FixtureRequest) -> StoreFactory:
    factory = request.getfixturevalue(f"store_factory_{request.param}")
    assert isinstance(factory, StoreFactory)
    return factory


@pytest.fixture
async def store(store_factory: StoreFactory) -> AsyncIterator[JobStore]:
    s = store_factory.make()
    await s.open()
    try:
        yield s
    finally:
        await s.close()
