"""The dashboard over a PostgreSQL job store and an S3 cache (real servers: the throwaway
PostgreSQL cluster and moto, started by tests/services; these tests fail, never skip)."""

from __future__ import annotations

import pytest

from swath import Client
from swath.cache import cache_from_url
from swath.dashboard.security import CSRF_COOKIE
from swath.store.base import JobState
from tests.conformance.backends import BackendFactory
from tests.dashboard.harness import app_for, http, populate


async def test_postgres_store_and_s3_cache(
    postgres_dsn: str, factory_s3_moto: BackendFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL and S3: the jobs page, a job's aggregated tree, cancel with the CSRF
    token, the S3 cache's groups, keys, checksums and a streamed download, and a key outside
    the cache refused."""
    for name, value in factory_s3_moto.env.items():  # the endpoint of the moto server
        monkeypatch.setenv(name, value)
    ids = await populate(postgres_dsn, factory_s3_moto.make())
    cache = cache_from_url(factory_s3_moto.url, read_only=True)
    app = app_for(postgres_dsn, cache)
    async with http(app) as client:
        jobs = await client.get("/jobs")
        assert ids["hello"] in jobs.text
        job = await client.get(f"/jobs/{ids['fan']}")
        assert "Leaf x 12" in job.text
        token = client.cookies[CSRF_COOKIE]
        cancel = await client.post(f"/jobs/{ids['queued']}/cancel", data={"csrf": token})
        assert cancel.status_code == 303
        root = await client.get("/cache")
        assert f"{ids['hello']}/" in root.text
        listing = await client.get("/cache", params={"group": "big"})
        assert "blob.bin" in listing.text
        assert "crc32c:" in listing.text
        download = await client.get("/cache/download", params={"key": "big/blob.bin"})
        assert download.content == bytes(range(256)) * (3 * 4096)
        outside = await client.get("/cache/download", params={"key": "../jobs-other/x"})
        assert outside.status_code == 400
    async with Client(postgres_dsn) as c:
        assert (await c.jobs().find(ids["queued"])).state == JobState.CANCELED
