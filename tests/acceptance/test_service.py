"""examples/service.py, the embedding example: a Starlette app whose lifespan runs a runner,
an endpoint that submits a job and one that streams its result; served by uvicorn in a real
process, stopped gracefully mid-job and started again."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from swath import Client, LocalFileSystemCache
from swath.store.base import JobState, TaskState
from tests.acceptance.test_examples import REPO, load_example
from tests.dashboard.harness import free_port


def expected(parts: int, mib: int) -> bytes:
    service = load_example("service")
    return b"".join(service.part_chunk(i) * mib for i in range(parts))


async def test_submit_and_download_in_process(tmp_path: Path) -> None:
    """Through the ASGI transport (lifespan entered): POST /reports submits a job, the
    service's own runner runs it, GET /reports/ID follows it and the download is the report,
    byte-exact; bad input is a 400; an unknown job is a 404."""
    service = load_example("service")
    app = service.create_service(f"sqlite:///{tmp_path}/jobs.db", str(tmp_path / "cache"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as http:
            bad = await http.post("/reports", json={"parts": 0})
            assert bad.status_code == 400
            submitted = await http.post("/reports", json={"parts": 3, "part_mib": 1})
            assert submitted.status_code == 202
            job = submitted.json()["job"]
            state = await _until_done(http, job)
            assert state["state"] == "COMPLETED"
            assert state["progress"] == {"parts": [3, 3], "join": [1, 1]}
            download = await http.get(f"/reports/{job}/download")
            assert download.content == expected(3, 1)
            assert (await http.get("/reports/nope")).status_code == 404
            assert (await http.get("/reports/nope/download")).status_code == 404


async def _until_done(http: httpx.AsyncClient, job: str, seconds: float = 120) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        state = (await http.get(f"/reports/{job}")).json()
        if state["state"] in ("COMPLETED", "FAILED", "CANCELED"):
            return state
        assert time.monotonic() < deadline, state
        await asyncio.sleep(0.1)


def _start(tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "SWATH_DATABASE_URL": f"sqlite:///{tmp_path}/jobs.db",
        "SWATH_CACHE_URL": str(tmp_path / "cache"),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--app-dir", str(REPO / "examples"), "service:app",
         "--port", str(port), "--log-level", "warning"],
        env=env, cwd=tmp_path,
    )  # fmt: skip


def _wait_up(base: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"{base}/reports/none")
            return
        except httpx.TransportError:
            assert time.monotonic() < deadline, "the service did not start"
            time.sleep(0.1)


def test_graceful_stop_mid_job_and_a_streamed_download(tmp_path: Path) -> None:
    """Served by uvicorn: a job of 6 parts (1.5 s each, 4 at a time) is stopped by SIGTERM
    while its first parts run; the service exits once they have finished (none left RUNNING,
    none failed, none lost, the rest still QUEUED); started again, it completes the job, and
    the 192 MiB report downloads byte-exact while the server's memory grows by less than
    64 MiB (streamed)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = _start(tmp_path, port)
    try:
        _wait_up(base)
        job = httpx.post(f"{base}/reports", json={"parts": 6, "part_mib": 32, "delay": 1.5}).json()[
            "job"
        ]
        db = f"sqlite:///{tmp_path}/jobs.db"

        async def tasks() -> list[Any]:
            async with Client(db) as client:
                return await client.jobs().tasks(job)

        deadline = time.monotonic() + 60
        while not any(
            t.name == "WritePart" and t.state == TaskState.RUNNING for t in asyncio.run(tasks())
        ):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        server.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it caught (exit -SIGTERM)
        assert server.wait(120) in (0, -signal.SIGTERM)
    finally:
        if server.poll() is None:
            server.kill()
    stopped = asyncio.run(tasks())
    states = [t.state for t in stopped if t.name == "WritePart"]
    assert TaskState.FAILED not in states
    assert TaskState.RUNNING not in states  # the runner let them finish before it exited
    assert all(t.lost_count == 0 for t in stopped)
    assert states.count(TaskState.COMPLETED) >= 1
    assert TaskState.QUEUED in states  # the rest waits for the next start

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = _start(tmp_path, port)
    try:
        _wait_up(base)
        deadline = time.monotonic() + 300
        while (state := httpx.get(f"{base}/reports/{job}").json())["state"] != "COMPLETED":
            assert state["state"] in ("QUEUED", "RUNNING"), state
            assert time.monotonic() < deadline, state
            time.sleep(0.2)
        process = psutil.Process(server.pid)
        before = process.memory_info().rss
        peak = before
        want = expected(6, 32)
        got = 0
        with httpx.stream("GET", f"{base}/reports/{job}/download", timeout=120) as response:
            assert response.headers["content-length"] == str(len(want))
            for chunk in response.iter_bytes():
                assert chunk == want[got : got + len(chunk)]
                got += len(chunk)
                peak = max(peak, process.memory_info().rss)
        assert got == len(want)
        assert peak - before < 64 << 20, (before, peak)
        server.send_signal(signal.SIGTERM)
        assert server.wait(60) in (0, -signal.SIGTERM)
    finally:
        if server.poll() is None:
            server.kill()

    async def final() -> JobState:
        async with Client(db) as client:
            return (await client.jobs().find(job)).state

    assert asyncio.run(final()) == JobState.COMPLETED


GIB = 1 << 30


async def _sparse_value(cache_root: Path, job_id: str, size: int) -> str:
    """A value of ``size`` zero bytes at ``<job>/report.bin`` in the local cache at
    ``cache_root``, made in place as a sparse file with the cache's own checksum trailer (no
    gigabyte is written); returns its checksum as ``stat`` gives it."""
    from swath.cache import _checksum
    from swath.cache.local import MAGIC, TRAILER

    async with LocalFileSystemCache(cache_root) as cache:
        await cache.group(job_id).put("report.bin", b"")  # the group directory, the file
    mib = _checksum.update(0, bytes(1 << 20))
    crc, length = mib, 1 << 20
    while length < size:  # the CRC32C of size zero bytes, doubling from one MiB's
        crc, length = _checksum.crc32c_combine(crc, crc, length), 2 * length
    assert length == size
    path = cache_root / f"{job_id}%" / "report.bin"
    with path.open("r+b") as f:
        f.truncate(0)  # the empty value's trailer goes
        f.truncate(size)  # a hole: reads as zeros, takes no disk
        f.seek(size)
        f.write(TRAILER.pack(MAGIC, size, crc))
    async with LocalFileSystemCache(cache_root) as cache:
        return (await cache.group(job_id).stat("report.bin")).checksum


def test_a_gigabyte_download_streams_in_flat_memory(tmp_path: Path) -> None:
    """The service's download endpoint streams a 1 GiB value (a sparse file in the local cache)
    to an HTTP client chunk by chunk: every byte arrives, its CRC32C matches the value's, and
    the server process's resident memory grows by less than 96 MiB while it sends the gigabyte
    (a handler that read the value whole would grow by a gigabyte)."""
    import crc32c

    job = "job-of-a-gigabyte"
    checksum = asyncio.run(_sparse_value(tmp_path / "cache", job, GIB))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = _start(tmp_path, port)
    try:
        _wait_up(base)
        process = psutil.Process(server.pid)
        before = process.memory_info().rss
        peak = before
        got = 0
        crc = 0
        with httpx.stream("GET", f"{base}/reports/{job}/download", timeout=120) as response:
            assert response.status_code == 200
            assert response.headers["content-length"] == str(GIB)
            assert response.headers["x-checksum"] == checksum
            for n, chunk in enumerate(response.iter_raw(1 << 20)):
                got += len(chunk)
                crc = crc32c.crc32c(chunk, crc)
                if n % 16 == 0:
                    peak = max(peak, process.memory_info().rss)
        peak = max(peak, process.memory_info().rss)
        assert got == GIB
        assert f"crc32c:{crc:08x}" == checksum
        assert peak - before < 96 << 20, (before >> 20, peak >> 20)
        server.send_signal(signal.SIGTERM)
        assert server.wait(60) in (0, -signal.SIGTERM)
    finally:
        if server.poll() is None:
            server.kill()
