"""Scale: the jobs page with 10,000 jobs and a job page with 100,000 tasks stay small and
quick (paging in the store query; large fan-outs aggregated)."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from swath import Client, LocalFileSystemCache
from swath.cli import main
from tests.dashboard.harness import app_for, http
from tests.dashboard.tasks import FanOut, Hello

pytestmark = pytest.mark.slow


async def test_ten_thousand_jobs_page_by_page(tmp_path: Path) -> None:
    """With 10,000 jobs the jobs page shows 50 at a time and each page, the first or one far
    down, is one bounded store query: under 10 s each on a loaded machine (about 0.1 s idle)."""
    db = f"sqlite:///{tmp_path}/jobs.db"
    async with Client(db) as client:
        for i in range(10_000):
            await client.jobs().submit(f"job-{i}", Hello())
    app = app_for(db, None)
    async with http(app) as browser:
        url = "/jobs"
        for page_number in range(3):
            started = time.perf_counter()
            page = await browser.get(url)
            assert time.perf_counter() - started < 10
            assert page.status_code == 200
            names = re.findall(r'class="job-link" href="[^"]+">(job-\d+)<', page.text)
            assert len(names) == 50
            assert names[0] == f"job-{9_999 - 50 * page_number}"
            link = re.search(r'class="next" href="([^"]+)"', page.text)
            assert link
            url = link.group(1).replace("&amp;", "&")


@pytest.fixture(scope="module")
def big_job(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A store with a job of 100,000 queued subtasks (made once for the module)."""
    tmp_path = tmp_path_factory.mktemp("big")
    db = f"sqlite:///{tmp_path}/jobs.db"

    async def make() -> str:
        async with Client(db) as client:
            await client.clusters().create("elsewhere")  # the leaves wait there: none run
            job = await client.jobs().submit("big", FanOut(100_000, cluster="elsewhere"))
            cache = LocalFileSystemCache(tmp_path / "cache")
            await client.runner([FanOut], cache=cache).run_all()
            return job.id

    return db, asyncio.run(make())


async def test_a_job_of_a_hundred_thousand_tasks(big_job: tuple[str, str]) -> None:
    """A job with 100,000 subtasks renders as a handful of rows ("Leaf x 100000"), in a page
    of a few kilobytes, within 60 s on a loaded machine (about 4 s idle); its JSON as well."""
    db, job_id = big_job
    app = app_for(db, None)
    async with http(app) as browser:
        started = time.perf_counter()
        page = await browser.get(f"/jobs/{job_id}")
        assert time.perf_counter() - started < 60
        assert page.status_code == 200
        assert "Leaf x 100000" in page.text
        assert "QUEUED 100000" in page.text
        assert len(page.text) < 20_000
        api = (await browser.get(f"/api/jobs/{job_id}")).json()
        assert [row["label"] for row in api["tasks"]] == ["FanOut", "Leaf x 100000", "Broken"]


def test_jobs_show_aggregates_a_hundred_thousand_tasks(big_job: tuple[str, str]) -> None:
    """`swath jobs show` prints the 100,000 leaves as one line "Leaf x 100000" with their
    state count and one "waits for a runner" line, in under 60 s on a loaded machine (old code:
    100,000 lines, 21 s idle, about 2 minutes loaded); --expand still prints every task."""
    db, job_id = big_job
    started = time.perf_counter()
    result = CliRunner().invoke(main, ["--database", db, "jobs", "show", job_id])
    assert time.perf_counter() - started < 60
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) < 10, result.output
    assert "Leaf x 100000 v0.0 QUEUED 100000" in result.output
    assert "100000 of them wait for a runner of cluster elsewhere that knows Leaf v0.0" in (
        result.output
    )
