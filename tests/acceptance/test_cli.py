"""The ``swath`` command's jobs, cache and runner subcommands against a real SQLite file store
and local-disk cache (click's test runner, in process)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from click.testing import CliRunner

from swath import Client, LocalFileSystemCache
from swath.cli import main
from tests.acceptance.killable_tasks import FanOutSlow

REPO = Path(__file__).resolve().parents[2]


def swath(tmp_path: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        main, ["--database", f"sqlite:///{tmp_path}/jobs.db", *args], catch_exceptions=False
    )
    return result.exit_code, result.output


async def submit(tmp_path: Path, n: int) -> str:
    async with Client(f"sqlite:///{tmp_path}/jobs.db") as client:
        job = await client.jobs().submit("cli-job", FanOutSlow(n=n, seconds=0.0))
        return job.id


def test_runner_jobs_and_cache_commands(tmp_path: Path) -> None:
    """runner --until-idle runs a submitted job; jobs ls/show/diagram describe it; cache
    ls/du/cat/rm work on its job cache; cache gc removes the finished job's cache."""
    job_id = asyncio.run(submit(tmp_path, 3))
    cache = str(tmp_path / "cache")
    code, out = swath(
        tmp_path, "runner", "tests.acceptance.killable_tasks", "--cache", cache, "--until-idle"
    )
    assert code == 0, out
    assert "4 succeeded, 0 failed" in out  # 1 fan-out + 3 leaves

    code, out = swath(tmp_path, "jobs", "ls")
    assert code == 0
    assert job_id in out
    assert "COMPLETED" in out
    code, out = swath(tmp_path, "jobs", "show", job_id)
    assert code == 0
    assert out.count("slow ") == 3
    code, out = swath(tmp_path, "jobs", "diagram", job_id)
    assert code == 0
    assert out.startswith("graph TD\n")
    assert out.count("-->") == 3

    code, out = swath(tmp_path, "jobs", "watch", job_id)
    assert code == 0
    assert f"job {job_id}: COMPLETED" in out

    code, out = swath(tmp_path, "cache", "ls", cache)
    assert out.split() == [f"{job_id}/"]
    code, out = swath(tmp_path, "cache", "ls", cache, f"{job_id}/done")
    assert sorted(out.split()) == ["0", "1", "2"]
    code, out = swath(tmp_path, "cache", "du", cache, job_id)
    assert code == 0
    assert "done/" in out
    assert "ran/" in out
    code, out = swath(tmp_path, "cache", "cat", cache, f"{job_id}/done/0")
    assert code == 0
    assert out.isdigit()  # the pid that ran it
    code, out = swath(tmp_path, "cache", "rm", cache, f"{job_id}/done/0")
    assert code == 0
    code, out = swath(tmp_path, "cache", "cat", cache, f"{job_id}/done/0")
    assert code == 1
    assert "done/0" in out

    code, out = swath(tmp_path, "cache", "gc", cache, "--dry-run")
    assert f"would remove {job_id}" in out
    code, out = swath(tmp_path, "cache", "gc", cache)
    assert "removed 1 job caches" in out

    async def empty() -> bool:
        async with LocalFileSystemCache(cache) as c:
            return [g async for g in c.groups()] == []

    assert asyncio.run(empty())


def test_jobs_cancel_retry_and_errors(tmp_path: Path) -> None:
    """jobs cancel/retry report counts; unknown jobs and bad URLs are clean errors."""
    job_id = asyncio.run(submit(tmp_path, 2))
    code, out = swath(tmp_path, "jobs", "cancel", job_id)
    assert code == 0
    assert "canceled 1 queued tasks" in out
    code, out = swath(tmp_path, "jobs", "retry", job_id)
    assert code == 0
    assert "re-queued 0 failed tasks" in out
    code, out = swath(tmp_path, "jobs", "show", "no-such-job")
    assert code == 1
    assert "no job with id" in out
    code, out = swath(tmp_path, "cache", "ls", "ftp://host/x")
    assert code == 1
    assert "unknown cache URL scheme" in out
    code, out = swath(tmp_path, "runner", "no.such.module", "--until-idle")
    assert code == 2
    assert "cannot import" in out


def test_jobs_show_says_which_identifier_a_waiting_task_needs(tmp_path: Path) -> None:
    """A runner that registered only the fan-out task leaves its subtasks QUEUED (runners claim
    only what they know); `swath jobs show` says each waits for a runner that knows
    `Slow v0.0`, and stops saying it once a runner that knows them has run them."""
    job_id = asyncio.run(submit(tmp_path, 2))
    cache = str(tmp_path / "cache")
    code, out = swath(
        tmp_path, "runner", "tests.acceptance.killable_tasks:FanOutSlow", "--cache", cache,
        "--until-idle",
    )  # fmt: skip
    assert code == 0, out
    code, out = swath(tmp_path, "jobs", "show", job_id)
    assert code == 0
    assert out.count("that knows Slow v0.0") == 2
    code, out = swath(
        tmp_path, "runner", "tests.acceptance.killable_tasks", "--cache", cache, "--until-idle"
    )
    assert code == 0, out
    code, out = swath(tmp_path, "jobs", "show", job_id)
    assert "waits for a runner" not in out
