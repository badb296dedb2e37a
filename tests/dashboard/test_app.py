"""The dashboard's pages and JSON API over a real SQLite store and a local cache, through the
ASGI test transport: jobs (filters, paging), a job (aggregated task tree, states, progress,
errors with tracebacks), clusters, the cache browser (groups, keys, sizes, checksums, preview,
streamed download)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import re
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from swath import Client, LocalFileSystemCache
from swath.dashboard.app import DOWNLOAD_CHUNK
from tests.dashboard.harness import TASKS, app_for, http, populate
from tests.dashboard.tasks import FanOut, Hello


@pytest.fixture
async def world(tmp_path: Path) -> dict[str, Any]:
    db = f"sqlite:///{tmp_path}/jobs.db"
    ids = await populate(db, tmp_path / "cache")
    return {"db": db, "cache": tmp_path / "cache", **ids}


async def test_jobs_page_lists_filters_and_pages(world: dict[str, Any]) -> None:
    """The jobs page lists every job newest first, filters by state and exact name, and pages
    by creation time (each page one store query) without losing or repeating a job."""
    app = app_for(world["db"], world["cache"])
    async with http(app) as client:
        page = await client.get("/jobs")
        assert page.status_code == 200
        assert page.text.index("waiting") < page.text.index("hello")  # newest first
        assert world["fan"] in page.text
        completed = await client.get("/jobs", params={"state": "COMPLETED"})
        assert world["hello"] in completed.text
        assert world["queued"] not in completed.text
        named = await client.get("/jobs", params={"name": "hello"})
        assert world["hello"] in named.text
        assert world["fan"] not in named.text
        bad = await client.get("/jobs", params={"state": "NOPE"})
        assert bad.status_code == 400

        seen: list[str] = []
        params: dict[str, str] = {"limit": "1"}
        for _ in range(5):
            data = (await client.get("/api/jobs", params=params)).json()
            seen += [j["id"] for j in data["jobs"]]
            if data["next_before"] is None:
                break
            params["before"] = repr(data["next_before"])
            params["before_id"] = data["next_before_id"]
        assert seen == [world["queued"], world["hello"], world["fan"]]
        first = await client.get("/jobs", params={"limit": "2"})
        assert "Older jobs" in first.text


async def test_jobs_of_one_instant_page_without_loss_or_duplicates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jobs created at the same instant (a batch submitted within the clock's resolution, or
    by a script in a tight loop) are paged by (created_at, id): following the "Older jobs"
    links and the API's next page shows each exactly once. (Paging by time alone skipped
    every job of that instant after the first page.)"""
    from swath.store import machine

    db = f"sqlite:///{tmp_path}/jobs.db"
    async with Client(db) as client:
        await client.jobs().submit("older", Hello())
        clock = time.time() + 1
        frozen = type("Frozen", (), {"time": staticmethod(lambda: clock)})
        monkeypatch.setattr(machine, "time", frozen)
        batch = [(await client.jobs().submit(f"batch-{i}", Hello())).id for i in range(7)]
        monkeypatch.undo()
    app = app_for(db, None)
    async with http(app) as browser:
        names: list[str] = []
        url = "/jobs?limit=3"
        for _ in range(10):
            page = (await browser.get(url)).text
            names += re.findall(r'class="job-link" href="[^"]+">([^<]+)<', page)
            link = re.search(r'class="next" href="([^"]+)"', page)
            if link is None:
                break
            url = link.group(1).replace("&amp;", "&")
        assert sorted(names) == sorted([*(f"batch-{i}" for i in range(7)), "older"])
        assert len(names) == 8
        ids: list[str] = []
        params: dict[str, str] = {"limit": "2"}
        for _ in range(10):
            data = (await browser.get("/api/jobs", params=params)).json()
            ids += [j["id"] for j in data["jobs"]]
            if data["next_before"] is None:
                break
            params |= {"before": repr(data["next_before"]), "before_id": data["next_before_id"]}
        assert ids[:7] == sorted(batch, reverse=True)
        assert len(ids) == 8


async def test_job_page_shows_the_aggregated_tree_progress_and_errors(
    world: dict[str, Any],
) -> None:
    """A job page shows its fan-out of 12 leaves as one node "Leaf x 12" with its state
    counts, state colours as classes, a progress bar per indicator, durations, and the failed
    task's error with its full traceback; the JSON API gives the same tree."""
    app = app_for(world["db"], world["cache"])
    async with http(app) as client:
        page = await client.get(f"/jobs/{world['fan']}")
        assert page.status_code == 200
        html = page.text
        assert "Leaf x 12" in html
        assert 'class="state completed">COMPLETED 12<' in html
        assert 'class="state failed-optional">FAILED_OPTIONAL<' in html
        assert re.search(r'<progress value="12" max="12">', html)
        assert "RuntimeError" in html
        assert "Traceback (most recent call last)" in html
        assert " s</td>" in html  # durations
        api = (await client.get(f"/api/jobs/{world['fan']}")).json()
        labels = [(row["depth"], row["label"], row["count"]) for row in api["tasks"]]
        assert labels[1:] == [(1, "Leaf x 12", 12), (1, "Broken", 1)]
        assert api["tasks"][2]["errors"][0]["type"] == "RuntimeError"
        missing = await client.get("/jobs/no-such-job")
        assert missing.status_code == 404
        assert "no-such-job" in missing.text


async def test_job_page_shows_the_tasks_logs(world: dict[str, Any]) -> None:
    """A job page shows its tasks' log records (time, level, task, message, fields); the logs
    page filters them by task and by level and pages through them; the JSON API gives the
    same records; a bad level is a 400 and an unknown job a 404."""
    app = app_for(world["db"], world["cache"])
    async with http(app) as client:
        page = (await client.get(f"/jobs/{world['fan']}")).text
        logs = page[page.index('<section id="logs">') :]
        assert len(re.findall(r"leaf \d+ done", logs)) == 12
        assert "about to fail: a &lt;b&gt;bold&lt;/b&gt;" in logs
        assert "WARNING" in logs
        assert "INFO" in logs
        assert '{"index": 3}' in logs  # fields, as JSON (tojson escapes < > & ')
        async with Client(world["db"]) as c:
            leaf = next(t for t in await c.jobs().tasks(world["fan"]) if t.name == "Leaf")
        one = (await client.get(f"/jobs/{world['fan']}/logs", params={"task": leaf.id})).text
        assert len(re.findall(r"leaf \d+ done", one)) == 1
        assert "about to fail" not in one
        assert f'href="/jobs/{world["fan"]}/logs?task={leaf.id}"' in page  # the tree links it
        warnings = await client.get(f"/jobs/{world['fan']}/logs", params={"level": "WARNING"})
        assert "about to fail" in warnings.text
        assert "leaf 1 done" not in warnings.text
        api = (await client.get(f"/api/jobs/{world['fan']}/logs", params={"level": "20"})).json()
        assert len(api["logs"]) == 13
        assert api["next_after"] is None
        assert {r["levelname"] for r in api["logs"]} == {"INFO", "WARNING"}
        after = api["logs"][5]["id"]
        rest = (await client.get(f"/api/jobs/{world['fan']}/logs", params={"after": after})).json()
        assert [r["id"] for r in rest["logs"]] == [r["id"] for r in api["logs"][6:]]
        bad = await client.get(f"/jobs/{world['fan']}/logs", params={"level": "LOUD"})
        assert bad.status_code == 400
        assert (await client.get("/jobs/nope/logs")).status_code == 404
        quiet = (await client.get(f"/jobs/{world['hello']}")).text
        assert "No log records yet" in quiet


async def test_logs_page_pages_through_many_records(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With more records than a page holds, the logs page links to the next page (after the
    last record shown), and following the links shows every record once."""
    from swath.dashboard import app as dashboard_app

    monkeypatch.setattr(dashboard_app, "LOGS_PAGE", 5)
    app = app_for(world["db"], world["cache"])
    seen: list[str] = []
    async with http(app) as client:
        url = f"/jobs/{world['fan']}/logs"
        for _ in range(10):
            page = (await client.get(url)).text
            seen += re.findall(r"leaf \d+ done|about to fail", page)
            link = re.search(r'class="next" href="([^"]+)"', page)
            if link is None:
                break
            url = link.group(1).replace("&amp;", "&")
    assert len(seen) == 13
    assert len(set(seen)) == 13


async def test_clusters_page(world: dict[str, Any]) -> None:
    """The clusters page and API list the store's clusters."""
    async with Client(world["db"]) as c:
        await c.clusters().create("gpu", "GPU <machines>")
    app = app_for(world["db"], world["cache"])
    async with http(app) as client:
        page = await client.get("/clusters")
        assert "gpu" in page.text
        assert "GPU &lt;machines&gt;" in page.text
        api = (await client.get("/api/clusters")).json()
        assert {c["slug"] for c in api["clusters"]} == {"default", "gpu"}


async def test_runners_page_shows_who_holds_which_task(tmp_path: Path) -> None:
    """The clusters and runners page lists each runner that reports itself (host, process,
    last heartbeat, alive or silent for longer than its lease) with the tasks it holds and
    their jobs; tasks held by a runner that does not report itself are listed under its id;
    a runner's host that is an HTML payload is shown as text; /api/runners gives the same."""
    from swath.store import RunnerInfo, machine

    db = f"sqlite:///{tmp_path}/jobs.db"
    cache = LocalFileSystemCache(tmp_path / "cache")
    async with Client(db) as c:
        other = await c.jobs().submit("orphan", Hello())
        await c.store.claim("default", "old-runner:1", 1, 600.0)  # takes `other`'s root
        job = await c.jobs().submit("slow <job>", FanOut(2, sleep=30))
        silent = RunnerInfo("gone:7:x", "default", "<b>gone</b>", 7, 2, 3.0, time.time() - 60)
        then = time.time() - 30  # it last reported 30 s ago: ten periods missed
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(machine, "time", type("Then", (), {"time": staticmethod(lambda: then)}))
            await c.store.runner_alive(silent)
        runner = c.runner(TASKS, cache, lease=3.0, max_concurrency=4, grace=0.2)
        running = asyncio.create_task(runner.run_forever())
        try:
            for _ in range(1200):
                if len([x for x in await c.clusters().leases() if x.name == "Leaf"]) == 2:
                    break
                await asyncio.sleep(0.05)
            app = app_for(db, None)
            async with http(app) as client:
                page = (await client.get("/clusters")).text
                api = (await client.get("/api/runners")).json()
        finally:
            runner.stop()
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
    assert runner.id in page
    assert socket.gethostname() in page
    assert "slow &lt;job&gt;" in page
    assert page.count('class="lease"') == 3  # two leaves, and the orphan's root
    assert "old-runner:1" in page
    assert "does not report itself" in page
    assert "&lt;b&gt;gone&lt;/b&gt;" in page
    assert "<b>gone</b>" not in page
    assert "probably gone" in page
    assert 'class="runner alive"' in page
    assert 'class="runner silent"' in page
    by_id = {r["id"]: r for r in api["runners"]}
    assert by_id[runner.id]["alive"] is True
    assert by_id["gone:7:x"]["alive"] is False
    assert {x["job_id"] for x in by_id[runner.id]["leases"]} == {job.id}
    assert len(by_id[runner.id]["leases"]) == 2
    assert [x["job_id"] for x in api["unreported_leases"]] == [other.id]


async def test_cache_browser_lists_previews_and_streams(world: dict[str, Any]) -> None:
    """The cache browser lists groups and keys with sizes and checksums (the cache's stat),
    previews small values (text, or a hex dump of binary), and downloads a value whole and
    byte-exact with its size and checksum in the headers."""
    app = app_for(world["db"], world["cache"])
    async with http(app) as client:
        root = await client.get("/cache")
        assert root.status_code == 200
        for group in ("big/", "misc/", f"{world['hello']}/"):
            assert group in root.text
        hello = await client.get("/cache", params={"group": world["hello"]})
        assert "hello.txt" in hello.text
        assert "crc32c:" in hello.text
        assert "13 B" in hello.text
        value = await client.get("/cache/value", params={"key": f"{world['hello']}/hello.txt"})
        assert "hello, world" in value.text
        binary = await client.get("/cache/value", params={"key": "misc/binary.bin"})
        assert "00 01 02 03" in binary.text
        big = await client.get("/cache/value", params={"key": "big/blob.bin"})
        assert "no preview" in big.text
        download = await client.get("/cache/download", params={"key": "big/blob.bin"})
        assert download.status_code == 200
        assert download.content == bytes(range(256)) * (3 * 4096)
        assert download.headers["content-length"] == str(3 << 20)
        assert download.headers["x-checksum"].startswith("crc32c:")
        assert "attachment" in download.headers["content-disposition"]
        missing = await client.get("/cache/value", params={"key": "nope"})
        assert missing.status_code == 404
        api = (await client.get("/api/cache", params={"group": "big"})).json()
        assert api["keys"] == [
            {
                "key": "blob.bin",
                "path": "big/blob.bin",
                "size": 3 << 20,
                "checksum": api["keys"][0]["checksum"],
            }
        ]


async def test_download_is_streamed_chunk_by_chunk(world: dict[str, Any]) -> None:
    """A download reaches the server in chunks of at most DOWNLOAD_CHUNK bytes, sent one by one
    as the cache yields them (the value is never whole in the server's memory): the ASGI
    messages are recorded at the app's edge."""
    app = app_for(world["db"], world["cache"])
    sizes: list[int] = []
    async with app.router.lifespan_context(app):
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/cache/download",
            "raw_path": b"/cache/download",
            "query_string": b"key=big/blob.bin",
            "root_path": "",
            "headers": [(b"host", b"127.0.0.1:8765")],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8765),
            "state": {},
        }
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": b"", "more_body": False}
            import asyncio

            await asyncio.sleep(3600)
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                sizes.append(len(message.get("body", b"")))

        await app(scope, receive, send)  # type: ignore[arg-type]
    assert sum(sizes) == 3 << 20
    assert max(sizes) <= DOWNLOAD_CHUNK
    assert len([s for s in sizes if s]) == 3


async def test_jobs_filter_by_creation_time(world: dict[str, Any]) -> None:
    """since/until (ISO, local time as a browser's datetime-local sends it) select jobs by
    creation time, combined with paging; a malformed time is a 400."""
    async with Client(world["db"]) as c:
        hello = await c.jobs().find(world["hello"])
    # fromtimestamp rounds to the nearest microsecond: a microsecond earlier is surely before
    at = datetime.datetime.fromtimestamp(hello.created_at) - datetime.timedelta(microseconds=1)
    app = app_for(world["db"], world["cache"])
    async with http(app) as client:
        since = (await client.get("/api/jobs", params={"since": at.isoformat()})).json()
        assert [j["id"] for j in since["jobs"]] == [world["queued"], world["hello"]]
        until = (await client.get("/api/jobs", params={"until": at.isoformat()})).json()
        assert [j["id"] for j in until["jobs"]] == [world["fan"]]
        page = await client.get("/jobs", params={"since": at.isoformat(), "limit": "1"})
        assert world["queued"] in page.text
        assert world["hello"] not in page.text
        assert "since=" in page.text  # the next page keeps the filter
        assert (await client.get("/jobs", params={"since": "yesterday"})).status_code == 400
