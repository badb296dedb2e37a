"""``swath automations ...`` against a real SQLite file store (click's test runner, in process):
create, list, evaluate, show what fired a job, pause, resume, delete, and the errors."""

from __future__ import annotations

import asyncio
from pathlib import Path

from click.testing import CliRunner

from swath import Client
from swath.cli import main

TASK = "tests.unit.test_automations:Scene"


def swath(tmp_path: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        main, ["--database", f"sqlite:///{tmp_path}/jobs.db", *args], catch_exceptions=False
    )
    return result.exit_code, result.output


def test_create_list_run_show_pause_resume_rm(tmp_path: Path) -> None:
    """create-cron and create-storage store automations (the task's input given as JSON) that
    ls lists; run --for evaluates them for that long and says how many jobs it submitted; jobs
    show names the automation that fired a job; pause, resume and rm change them."""
    code, out = swath(
        tmp_path, "automations", "create-cron", "every-1s", "* * * * * *", TASK,
        "--input", '{"scene": "S2B"}', "--catch-up", "all", "--timezone", "Europe/Paris",
    )  # fmt: skip
    assert code == 0, out
    assert "created automation every-1s" in out
    folder = tmp_path / "landing"
    code, out = swath(
        tmp_path, "automations", "create-storage", "landing", str(folder), TASK, "--glob", "*.tif"
    )
    assert code == 0, out
    code, out = swath(tmp_path, "automations", "ls")
    assert code == 0
    assert "every-1s" in out
    assert "Europe/Paris" in out
    assert str(folder) in out
    assert out.count("active") == 2
    code, out = swath(tmp_path, "automations", "run", "--for", "2.2", "--no-watch")
    assert code == 0, out
    assert "stopped: submitted" in out

    async def jobs() -> list[str]:
        async with Client(f"sqlite:///{tmp_path}/jobs.db") as client:
            found = await client.jobs().query(name="every-1s")
            assert found
            assert all(j.trigger is not None for j in found)
            job = await client.jobs().find(found[0])
            return [job.id, (await client.automations().find("every-1s")).input.decode()]

    job_id, stored_input = asyncio.run(jobs())
    assert stored_input == '{"scene":"S2B"}'
    code, out = swath(tmp_path, "jobs", "show", job_id)
    assert code == 0
    assert "fired by automation every-1s" in out
    code, out = swath(tmp_path, "automations", "pause", "landing")
    assert (code, "paused automation landing" in out) == (0, True)
    code, out = swath(tmp_path, "automations", "ls")
    assert "paused" in out
    code, out = swath(tmp_path, "automations", "resume", "landing")
    assert (code, "resumed automation landing" in out) == (0, True)
    code, out = swath(tmp_path, "automations", "rm", "every-1s")
    assert code == 0
    code, out = swath(tmp_path, "automations", "ls")
    assert "every-1s" not in out


def test_errors_are_one_line_with_their_exit_codes(tmp_path: Path) -> None:
    """A bad schedule or URL is exit code 1 with the reason; input that does not fit the task,
    or a spec that names no task class, is a usage error (2); pausing or removing an automation
    that does not exist is 1; reading commands on a missing store create nothing (3)."""
    code, out = swath(tmp_path, "automations", "ls")
    assert code == 3
    assert "no database" in out
    assert not (tmp_path / "jobs.db").exists()
    code, out = swath(tmp_path, "automations", "create-cron", "c", "* * *", TASK)
    assert code == 1
    assert "invalid cron schedule" in out
    code, out = swath(tmp_path, "automations", "create-storage", "s", "ftp://x/y", TASK)
    assert code == 1
    assert "scheme" in out
    code, out = swath(
        tmp_path, "automations", "create-cron", "c", "* * * * *", TASK, "--input", '{"scene": 5}'
    )
    assert code == 2
    assert "does not fit" in out
    code, out = swath(tmp_path, "automations", "create-cron", "c", "* * * * *", "tests.unit")
    assert code == 2
    code, out = swath(tmp_path, "automations", "pause", "nope")
    assert code == 1
    assert "no automation" in out
    code, out = swath(tmp_path, "automations", "rm", "nope")
    assert code == 1
