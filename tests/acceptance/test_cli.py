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


def test_clusters_ls_create_rm(tmp_path: Path) -> None:
    """clusters create makes a cluster a runner can serve and a job can be submitted to;
    clusters ls lists it beside 'default'; --exist-ok tolerates it existing, a second create
    without it is one line and exit 1; rm removes it (not 'default', and a missing one is exit 1);
    a runner of a cluster that does not exist stops at once and says how to create it."""
    code, out = swath(tmp_path, "runner", "tests.acceptance.killable_tasks", "--cluster", "gpu",
                      "--cache", str(tmp_path / "cache"), "--until-idle")  # fmt: skip
    assert code == 1, out
    assert "unknown cluster 'gpu': create it first (swath clusters create gpu" in out

    code, out = swath(tmp_path, "clusters", "create", "gpu", "--name", "GPU machines")
    assert (code, out.strip()) == (0, "created cluster gpu")
    code, out = swath(tmp_path, "clusters", "create", "gpu")
    assert code == 1
    assert "already exists" in out
    code, out = swath(tmp_path, "clusters", "create", "gpu", "--exist-ok")
    assert (code, out.strip()) == (0, "exists: cluster gpu")
    code, out = swath(tmp_path, "clusters", "ls")
    assert code == 0
    assert "default" in out
    assert "GPU machines" in out

    async def submit_to_gpu() -> str:
        async with Client(f"sqlite:///{tmp_path}/jobs.db") as client:
            job = await client.jobs().submit("gpu-job", FanOutSlow(n=2, seconds=0.0), cluster="gpu")
            return job.id

    job_id = asyncio.run(submit_to_gpu())
    code, out = swath(tmp_path, "runner", "tests.acceptance.killable_tasks", "--cluster", "gpu",
                      "--cache", str(tmp_path / "cache"), "--until-idle")  # fmt: skip
    assert code == 0, out
    assert "3 succeeded, 0 failed" in out
    code, out = swath(tmp_path, "jobs", "watch", job_id)
    assert code == 0, out

    assert swath(tmp_path, "clusters", "rm", "gpu") == (0, "removed cluster gpu\n")
    code, out = swath(tmp_path, "clusters", "rm", "gpu")
    assert (code, out.strip()) == (1, "Error: no cluster 'gpu'")
    code, out = swath(tmp_path, "clusters", "rm", "default")
    assert code == 1
    assert "cannot be deleted" in out
    code, out = swath(tmp_path, "clusters", "ls")
    assert "gpu" not in out


def test_clusters_commands_create_no_store_by_typo(tmp_path: Path) -> None:
    """clusters ls and rm against a database that does not exist fail with exit code 3 and
    create nothing (a typo in --database never makes a new empty store)."""
    for args in (["clusters", "ls"], ["clusters", "rm", "gpu"]):
        code, out = swath(tmp_path, *args)
        assert code == 3, out
        assert "no database at" in out
    assert not (tmp_path / "jobs.db").exists()


def test_runner_says_how_to_make_a_task_module_importable(tmp_path: Path) -> None:
    """A task module that is not importable is a usage error that says how to make it so."""
    code, out = swath(tmp_path, "runner", "myproject.tasks:TileScene", "--until-idle")
    assert code == 2
    assert "No module named 'myproject'" in out
    assert "PYTHONPATH" in out
