"""The dashboard in a real browser: Playwright drives Debian's chromium (``/usr/bin/chromium``,
installed by .ci/run; Playwright's own browser download is not used). Without the browser these
tests fail, they do not skip. Screenshots go to ``$SWATH_SCREENSHOTS`` (docs/dashboard/ holds
the ones the docs show) or the test's temporary directory."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Dialog, Page, async_playwright, expect

from swath import Client, LocalFileSystemCache
from swath.store.base import JobState
from tests.dashboard.harness import TASKS, XSS_NAME, app_for, populate, served
from tests.dashboard.tasks import FanOut

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def chromium() -> str:
    path = shutil.which("chromium") or CHROMIUM
    assert os.path.exists(path), (
        "the browser tests need Debian's chromium: apt-get install chromium"
    )
    return path


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    where = Path(os.environ.get("SWATH_SCREENSHOTS") or tmp_path / "screenshots")
    where.mkdir(parents=True, exist_ok=True)
    return where


@pytest.fixture
async def world(tmp_path: Path) -> dict[str, Any]:
    db = f"sqlite:///{tmp_path}/jobs.db"
    ids = await populate(db, tmp_path / "cache")
    return {"db": db, "cache": tmp_path / "cache", **ids}


async def new_page(browser: Browser) -> tuple[Page, list[str]]:
    """A page whose dialogs are recorded: confirmations accepted, any alert() is an XSS."""
    page = await browser.new_page(viewport={"width": 1280, "height": 860})
    dialogs: list[str] = []

    async def on_dialog(dialog: Dialog) -> None:
        dialogs.append(f"{dialog.type}: {dialog.message}")
        await dialog.accept()

    page.on("dialog", on_dialog)
    return page, dialogs


async def test_jobs_page_and_a_running_job_followed_live(
    browser: Browser, world: dict[str, Any], shots: Path, tmp_path: Path
) -> None:
    """The jobs page loads and shows the jobs (the XSS name as text: no alert ever fires);
    opening a running job, its progress bar advances and the job ends COMPLETED on the same
    page, never reloaded (a marker set in the page survives)."""
    app = app_for(world["db"], world["cache"], poll=(0.05, 0.5))
    async with Client(world["db"]) as client, served(app) as base:
        job = await client.jobs().submit("ndvi-tiles", FanOut(10, sleep=0.5, display="NDVI"))
        page, dialogs = await new_page(browser)
        await page.goto(f"{base}/jobs")
        await expect(page.locator("h1")).to_have_text("Jobs")
        await expect(page.get_by_text(XSS_NAME)).to_have_count(1)
        await page.screenshot(path=shots / "jobs.png", full_page=True)

        cache = LocalFileSystemCache(tmp_path / "runner-cache")
        running = asyncio.create_task(client.runner(TASKS, cache, max_concurrency=1).run_all())
        try:
            await page.get_by_role("link", name="ndvi-tiles").click()
            await expect(page.locator(".job-name")).to_have_text("ndvi-tiles")
            await page.evaluate("window.notReloaded = true")
            bar = page.locator("#summary progress").first
            seen: list[int] = []
            for _ in range(600):
                value = await bar.get_attribute("value")
                if value is not None and (not seen or int(value) != seen[-1]):
                    seen.append(int(value))
                    if len(seen) == 3:
                        await page.screenshot(path=shots / "job-running.png", full_page=True)
                if seen and seen[-1] == 10:
                    break
                await asyncio.sleep(0.1)
            assert seen == sorted(seen)
            assert len(seen) >= 3, seen
            await expect(page.locator("#job-state")).to_have_text("COMPLETED", timeout=60_000)
            assert await page.evaluate("window.notReloaded") is True
            await expect(page.locator("#live")).to_have_text("finished")
            await expect(page.get_by_text("Leaf x 10")).to_be_visible()
            # the logs arrived with the updates too (there were none when the page loaded)
            await expect(page.locator("#logs")).to_contain_text("leaf 9 done")
            await page.screenshot(path=shots / "job.png", full_page=True)
        finally:
            await running
        assert (await client.jobs().find(job)).state == JobState.COMPLETED
        await page.goto(f"{base}/jobs/{world['fan']}")
        await expect(page.locator(".job-name")).to_have_text(XSS_NAME)
        await page.locator("tr.failure summary").first.click()
        await expect(page.locator("pre.traceback").first).to_contain_text("Traceback")
        await page.screenshot(path=shots / "job-failure.png", full_page=True)
        await page.locator("#tree a.task-logs").first.click()  # the root task's logs
        await expect(page.locator("h1")).to_contain_text("Logs of")
        await page.goto(f"{base}/jobs/{world['fan']}/logs")
        await page.select_option("select[name=level]", "WARNING")
        await page.get_by_role("button", name="Filter").click()
        await expect(page.locator("table.logs tbody tr")).to_have_count(1)
        await expect(page.locator("table.logs")).to_contain_text('a <b>bold</b> & "quoted"')
        await page.screenshot(path=shots / "job-logs.png", full_page=True)
        assert dialogs == []


async def test_cancel_a_job_with_confirmation(browser: Browser, world: dict[str, Any]) -> None:
    """Cancel on a job page asks for confirmation, posts with the CSRF token and the page then
    shows the job CANCELED (and the store agrees)."""
    app = app_for(world["db"], world["cache"])
    async with served(app) as base:
        page, dialogs = await new_page(browser)
        await page.goto(f"{base}/jobs/{world['queued']}")
        await expect(page.locator("#job-state")).to_have_text("QUEUED")
        await page.get_by_role("button", name="Cancel job").click()
        await expect(page.locator("#job-state")).to_have_text("CANCELED")
        assert len(dialogs) == 1
        assert dialogs[0].startswith("confirm: Cancel job waiting?")
    async with Client(world["db"]) as client:
        assert (await client.jobs().find(world["queued"])).state == JobState.CANCELED


async def test_browse_the_cache(browser: Browser, world: dict[str, Any], shots: Path) -> None:
    """The cache page lists groups; a group lists keys with sizes and checksums; a key's page
    previews it; a large value downloads whole (streamed); an XSS key is shown as text."""
    app = app_for(world["db"], world["cache"])
    async with served(app) as base:
        page, dialogs = await new_page(browser)
        await page.goto(f"{base}/cache")
        await expect(page.locator("ul.groups")).to_contain_text("big/")
        await page.screenshot(path=shots / "cache.png", full_page=True)
        await page.get_by_role("link", name=f"{world['hello']}/").click()
        await expect(page.locator("table.keys")).to_contain_text("crc32c:")
        await page.screenshot(path=shots / "cache-group.png", full_page=True)
        await page.get_by_role("link", name="hello.txt").click()
        await expect(page.locator("pre.preview")).to_have_text("hello, world\n")
        await page.screenshot(path=shots / "cache-value.png", full_page=True)
        await page.goto(f"{base}/cache?group=misc")
        await expect(page.locator("a.key").first).to_be_visible()
        await page.goto(f"{base}/cache/value?key=big/blob.bin")
        async with page.expect_download() as info:
            await page.locator("a.download").click()
        download = await info.value
        saved = await download.path()
        assert await asyncio.to_thread(os.path.getsize, saved) == 3 << 20
        assert dialogs == []


async def test_runners_page_shows_who_holds_which_task(
    browser: Browser, world: dict[str, Any], shots: Path, tmp_path: Path
) -> None:
    """With a runner at work, the clusters and runners page shows it alive with its host,
    last heartbeat and the tasks it holds, each linked to its job."""
    app = app_for(world["db"], world["cache"])
    async with Client(world["db"]) as client, served(app) as base:
        await client.jobs().submit("slow-tiles", FanOut(3, sleep=30, display="tiles"))
        cache = LocalFileSystemCache(tmp_path / "runner-cache")
        runner = client.runner(TASKS, cache, max_concurrency=4, grace=0.2)
        running = asyncio.create_task(runner.run_forever())
        try:
            for _ in range(600):
                if len([x for x in await client.clusters().leases() if x.name == "Leaf"]) == 3:
                    break
                await asyncio.sleep(0.05)
            page, dialogs = await new_page(browser)
            await page.goto(f"{base}/clusters")
            await expect(page.locator("tr.runner.alive")).to_have_count(1)
            await expect(page.locator("tr.runner.alive")).to_contain_text(runner.id)
            await expect(page.locator("tr.lease")).to_have_count(3)
            await page.screenshot(path=shots / "runners.png", full_page=True)
            await page.locator("tr.lease a.job-name").first.click()
            await expect(page.locator(".job-name")).to_have_text("slow-tiles")
            assert dialogs == []
        finally:
            runner.stop()
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
