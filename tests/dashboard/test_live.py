"""Live updates: a job page's server-sent events follow a running job (served by uvicorn on a
real socket, read as a stream) by polling a SQLite store and by LISTEN/NOTIFY on PostgreSQL,
and `swath dashboard` serves the demo job and its cache."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

from swath import Client, InMemoryCache, LocalFileSystemCache
from swath.store.base import JobState
from tests.dashboard.harness import TASKS, app_for, free_port, served
from tests.dashboard.tasks import FanOut


async def test_events_follow_a_running_job(tmp_path: Path) -> None:
    """While a runner works through 8 leaves one at a time, the events stream sends updates
    whose progress bar advances (at least 3 different counts, never backwards), the first of
    them before the job ends, and then an ``end`` event once the job is COMPLETED."""
    db = f"sqlite:///{tmp_path}/jobs.db"
    cache = LocalFileSystemCache(tmp_path / "cache")
    async with Client(db) as client:
        job = await client.jobs().submit("live", FanOut(8, sleep=0.4))
        app = app_for(db, None, poll=(0.05, 0.5))
        updates: list[tuple[int, float]] = []
        events: list[str] = []
        async with served(app) as base, httpx.AsyncClient(base_url=base, timeout=60) as http:
            runner = client.runner(TASKS, cache=cache, max_concurrency=1)
            running = asyncio.create_task(runner.run_all())
            async with http.stream("GET", f"/jobs/{job.id}/events") as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                event = ""
                async for line in response.aiter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                        events.append(event)
                    elif line.startswith("data: ") and event == "update":
                        data = json.loads(line[6:])
                        done = re.search(r'<progress value="(\d+)"', data["summary"])
                        if done:
                            updates.append((int(done.group(1)), time.monotonic()))
            await running
            final = await client.jobs().find(job)
        assert final.state == JobState.COMPLETED
        assert events[-1] == "end"
        counts = [n for n, _ in updates]
        assert counts == sorted(counts)
        assert len(set(counts)) >= 3, counts
        assert counts[0] < 8
        assert counts[-1] == 8


def test_swath_dashboard_serves_the_demo(tmp_path: Path) -> None:
    """`swath demo --keep` then `swath dashboard` (in the same directory, defaults only)
    serves the demo job, its aggregated task tree and its cache; off loopback the command
    prints an address with a new token, and the token is required."""
    env = {**os.environ, "SWATH_DATABASE_URL": "", "SWATH_CACHE_URL": ""}
    env.pop("SWATH_DATABASE_URL")
    env.pop("SWATH_CACHE_URL")
    swath = [sys.executable, "-m", "swath.cli"]
    demo = subprocess.run(
        [*swath, "demo", "--keep", "--size", "256", "--tile", "32"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stdout + demo.stderr
    port = free_port()
    server = subprocess.Popen(
        [*swath, "dashboard", "--port", str(port)],
        cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        assert server.stderr is not None
        assert f"on {base}/" in server.stderr.readline()
        _wait_up(base)
        jobs = httpx.get(f"{base}/api/jobs").json()["jobs"]
        [job] = [j for j in jobs if j["name"] == "swath-demo-ndvi"]
        page = httpx.get(f"{base}/jobs/{job['id']}").text
        assert " x 64" in page  # the 64 tiles aggregated
        cache = httpx.get(f"{base}/cache", params={"group": job["id"]}).text
        assert "ndvi.json" in cache
    finally:
        server.terminate()
        assert server.wait(30) is not None

    port = free_port()
    server = subprocess.Popen(
        [*swath, "dashboard", "--host", "0.0.0.0", "--port", str(port), "--read-only"],
        cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stderr is not None
        line = server.stderr.readline()
        token = re.search(r"\?token=([\w-]+)", line)
        assert token, line
        base = f"http://127.0.0.1:{port}"
        _wait_up(base, token.group(1))
        assert httpx.get(f"{base}/api/jobs").status_code == 401
        authorized = {"authorization": f"Bearer {token.group(1)}"}
        assert httpx.get(f"{base}/api/jobs", headers=authorized).status_code == 200
    finally:
        server.terminate()
        server.wait(30)


def _wait_up(base: str, token: str | None = None) -> None:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/healthz", headers=headers).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"the dashboard at {base} did not start")
        time.sleep(0.1)


async def test_jobs_page_rows_follow_new_jobs(tmp_path: Path) -> None:
    """The jobs page's event stream sends the table's rows again when a job is submitted or
    changes state, so the list and its counts follow the store without reloading."""
    db = f"sqlite:///{tmp_path}/jobs.db"
    async with Client(db) as client:
        await client.jobs().submit("first", FanOut(2))
        app = app_for(db, None, poll=(0.05, 0.5))
        async with (
            served(app) as base,
            httpx.AsyncClient(base_url=base, timeout=60) as http,
            http.stream("GET", "/events/jobs?limit=50") as response,
        ):
            lines = response.aiter_lines()
            await asyncio.sleep(0.5)
            await client.jobs().submit("second <job>", FanOut(2))
            async with asyncio.timeout(60):
                async for line in lines:
                    if line.startswith("data: "):
                        rows = json.loads(line[6:])["rows"]
                        break
    assert "second &lt;job&gt;" in rows
    assert "first" in rows


async def test_on_postgres_the_store_announces_changes(postgres_dsn: str) -> None:
    """On PostgreSQL the dashboard follows jobs by LISTEN/NOTIFY, not by polling: with polling
    set to every 30 s, a job page's events still show a running job's progress advance step by
    step (at least 3 different counts) and end within seconds, and the jobs page's rows show a
    job submitted by another client; a runner in another store object (as in another process)
    does the work, so only the database's notifications can tell the dashboard."""
    cache = InMemoryCache()
    async with Client(postgres_dsn) as client:
        job = await client.jobs().submit("live on postgres", FanOut(6, sleep=0.3))
        app = app_for(postgres_dsn, None, poll=(30.0, 30.0))
        updates: list[int] = []
        events: list[str] = []
        async with served(app) as base, httpx.AsyncClient(base_url=base, timeout=60) as http:
            async with asyncio.timeout(25), http.stream("GET", f"/jobs/{job.id}/events") as resp:
                runner = client.runner(TASKS, cache=cache, max_concurrency=1)
                running: asyncio.Task[None] | None = None
                event = ""
                async for line in resp.aiter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                        events.append(event)
                    elif line.startswith("data: ") and event == "update":
                        done = re.search(
                            r'<progress value="(\d+)"', json.loads(line[6:])["summary"]
                        )
                        updates.append(int(done.group(1)) if done else -1)
                        if running is None:  # the first update is read: now run the job
                            running = asyncio.create_task(runner.run_all())
            assert running is not None
            await running
            async with (
                asyncio.timeout(25),
                http.stream("GET", "/events/jobs?limit=50") as response,
            ):
                lines = response.aiter_lines()
                await asyncio.sleep(1)  # the stream has read its first page
                async with Client(postgres_dsn) as other:
                    await other.jobs().submit("announced <job>", FanOut(1))
                async for line in lines:
                    if line.startswith("data: "):
                        rows = json.loads(line[6:])["rows"]
                        break
    assert events[-1] == "end"
    assert updates == sorted(updates)
    assert len(set(updates)) >= 3, updates
    assert updates[-1] == 6
    assert "announced &lt;job&gt;" in rows
