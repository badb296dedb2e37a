"""Cache backends under test. Every conformance test runs against each entry of ``BACKENDS``.

A backend joins the suite by adding its name to ``BACKENDS`` and a fixture named
``factory_<name>`` that returns a :class:`BackendFactory` (see ``tests/services`` for the S3 and
GCS servers).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from swath.cache import Backend, InMemoryCache, LocalFileSystemCache

BACKENDS = ["memory", "local", "gcs", "s3_moto"]


@dataclass
class BackendFactory:
    """How to make (fresh, isolated) instances of one backend for one test."""

    name: str
    make: Callable[[], Backend]
    # persistent backends can be reached again from another process, via url + env
    persistent: bool = True
    url: str = ""
    env: dict[str, str] = field(default_factory=dict)
    # peak-RSS budget (bytes) for streaming 1 GiB through put_stream and stream
    rss_budget: int = 64 << 20
    # whether multi-hundred-MiB objects are practical on this server
    large_objects: bool = True
    root: Path | None = None  # the local root, to prove nothing is written outside it
    # the object-name prefix of the backend ("" for none): keys get 1024 bytes minus its room
    prefix: str = ""
    # corrupt(key): change the stored value of ``key`` (from the backend's root) behind the
    # cache's back so that its checksum no longer matches; None where nothing can (memory holds
    # immutable bytes objects; GCS recomputes the CRC32C of whatever it stores)
    corrupt: Callable[[str], None] | None = None

    def subprocess_env(self) -> dict[str, str]:
        return {**os.environ, **self.env}


@pytest.fixture
def factory_memory() -> BackendFactory:
    shared = InMemoryCache()
    return BackendFactory("memory", make=lambda: shared, persistent=False, url="memory://")


@pytest.fixture
def factory_local(tmp_path: Path) -> BackendFactory:
    root = tmp_path / "cache-root"

    def corrupt(key: str) -> None:  # cut the last byte: the checksum trailer no longer parses
        *groups, name = key.split("/")
        path = root.joinpath(*[g + "%" for g in groups], name)
        os.truncate(path, path.stat().st_size - 1)

    return BackendFactory(
        "local",
        make=lambda: LocalFileSystemCache(root),
        url=f"file://{root}",
        root=root,
        corrupt=corrupt,
    )


@pytest.fixture(params=BACKENDS)
def cache_factory(request: pytest.FixtureRequest) -> BackendFactory:
    factory = request.getfixturevalue(f"factory_{request.param}")
    assert isinstance(factory, BackendFactory)
    return factory


@pytest.fixture
async def cache(cache_factory: BackendFactory) -> AsyncIterator[Backend]:
    async with cache_factory.make() as backend:
        yield backend


def run_examples(cache_factory: BackendFactory, check: Callable[..., None]) -> None:
    """Run one hypothesis test with one entered backend, on one event loop: ``check(runner,
    backend)`` runs each example's coroutine with ``runner.run``."""
    with asyncio.Runner() as runner:
        backend = cache_factory.make()
        runner.run(backend.__aenter__())
        try:
            check(runner, backend)
        finally:
            runner.run(backend.__aexit__(None, None, None))


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"
