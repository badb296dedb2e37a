"""Automations (``swath.automations``) in one process: cron schedules, the client API, what a
job's tasks see of their trigger, catch-up policies, pause and resume, runners that evaluate,
local folders (settling, hidden files, globs, new versions, folders moved in), and a listing
held one page at a time."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
import tracemalloc
import zoneinfo
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from swath import (
    BlockingClient,
    Client,
    CronSchedule,
    ExecutionContext,
    InMemoryCache,
    Task,
    Trigger,
    UnknownAutomationError,
    UnknownClusterError,
)
from swath.automations import AutomationEvaluator, _Object, _Source
from swath.cache import _checksum
from swath.store import AutomationInfo, new_id

SEEN: list[tuple[str, str, Trigger | None]] = []


class Scene(Task):
    scene: str = "S2"

    async def execute(self, context: ExecutionContext) -> None:
        SEEN.append((context.current_task.job.name, "root", context.trigger))
        context.submit_subtask(Leaf())


class Leaf(Task):
    def execute(self, context: ExecutionContext) -> None:  # a sync task sees it too
        SEEN.append((context.current_task.job.name, "leaf", context.trigger))


class NotATask:
    pass


@pytest.fixture(autouse=True)
def _clear_seen() -> None:
    SEEN.clear()


async def evaluate(client: Client, seconds: float, **options: object) -> int:
    evaluator = client.automations().evaluator(refresh=0.2, **options)  # type: ignore[arg-type]
    await evaluator.run(seconds)
    return evaluator.fired


# -- schedules -------------------------------------------------------------------------------------
def test_cron_schedules_parse_and_compute_ticks_in_their_time_zone() -> None:
    """Five fields, six with seconds first, and aliases parse; anything else (three fields,
    seven, nonsense, an unknown zone) is a ValueError. Ticks are exact, strictly after the
    start, and follow the zone's daylight-saving changes (9:00 local stays 9:00 local)."""
    every2 = CronSchedule("*/2 * * * * *")
    assert every2.ticks(1000.5, 1006.0, 10) == [1002.0, 1004.0, 1006.0]
    assert every2.ticks(1000.0, 1100.0, 2) == [1002.0, 1004.0]
    assert every2.latest(1000.0, 1005.9) == 1004.0
    assert every2.latest(1004.0, 1005.9) is None
    assert every2.next_after(1004.0) == 1006.0
    assert CronSchedule("@hourly").next_after(0.0) == 3600.0
    assert CronSchedule("0 * * * *").next_after(0.0) == 3600.0
    for bad in ("* * *", "* * * * * * *", "61 * * * *", "nonsense", "", "*/0 * * * * *"):
        with pytest.raises(ValueError, match="cron schedule"):
            CronSchedule(bad)
    with pytest.raises(ValueError, match="time zone"):
        CronSchedule("* * * * *", "Mars/Olympus")
    berlin = CronSchedule("0 9 * * *", "Europe/Berlin")
    zone = zoneinfo.ZoneInfo("Europe/Berlin")
    before = dt.datetime(2026, 3, 27, 12, tzinfo=zone).timestamp()  # DST: 29 March
    first, second = berlin.ticks(before, before + 3 * 86400, 2)
    assert second - first == 23 * 3600  # the night clocks went forward
    assert berlin.when(second).hour == 9
    assert berlin.when(second).utcoffset() == dt.timedelta(hours=2)


# -- the client ------------------------------------------------------------------------------------
async def test_the_client_refuses_bad_automations_and_stores_none_of_them(tmp_path: Path) -> None:
    """Bad names, schedules, time zones, policies, URLs, globs, retries, non-tasks and unknown
    clusters are refused before anything is stored."""
    async with Client(":memory:") as client:
        api = client.automations()
        for name in ("", " x", "a\nb", "x" * 201, "tab\there", "nul\x00"):
            with pytest.raises(ValueError, match=r"automation name|text"):
                await api.cron(name, "* * * * *", Scene())
        with pytest.raises(ValueError, match="cron schedule"):
            await api.cron("c", "* * *", Scene())
        with pytest.raises(ValueError, match="time zone"):
            await api.cron("c", "* * * * *", Scene(), timezone="Nowhere/City")
        with pytest.raises(ValueError, match="catch_up"):
            await api.cron("c", "* * * * *", Scene(), catch_up="some")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="max_retries"):
            await api.cron("c", "* * * * *", Scene(), max_retries=-1)
        with pytest.raises(TypeError):
            await api.cron("c", "* * * * *", NotATask())  # type: ignore[arg-type]
        with pytest.raises(UnknownClusterError):
            await api.cron("c", "* * * * *", Scene(), cluster="nope")
        for url in ("ftp://host/x", "s3:///prefix", "gs://", "s3://user:pw@bucket/x", ""):
            with pytest.raises(ValueError, match=r"url|URL|bucket|scheme"):
                await api.storage_event("s", url, Scene())
        with pytest.raises(ValueError, match="glob"):
            await api.storage_event("s", str(tmp_path), Scene(), glob="")
        assert await api.all() == []


def test_the_blocking_client_creates_finds_pauses_resumes_and_deletes(tmp_path: Path) -> None:
    """``BlockingClient.automations()`` mirrors the async client: a cron schedule and a storage
    trigger are created (the task stored serialized, the URL made absolute), found by id or
    name, paused, resumed and deleted; a second one of a name is a ValueError, a missing one an
    UnknownAutomationError."""
    os.chdir(tmp_path)
    with BlockingClient(":memory:") as client:
        api = client.automations()
        cron = api.cron("nightly", "0 2 * * *", Scene("A"), max_retries=2, timezone="Asia/Tokyo")
        landing = api.storage_event("landing", "incoming", Scene("B"), glob="*.tif")
        assert (cron.kind, cron.schedule, cron.timezone, cron.catch_up) == (
            "cron", "0 2 * * *", "Asia/Tokyo", "latest",
        )  # fmt: skip
        assert (cron.task_name, cron.task_version, cron.input) == (
            "Scene",
            "v0.0",
            b'{"scene":"A"}',
        )
        assert cron.max_retries == 2
        assert (landing.url, landing.glob) == (str(tmp_path / "incoming"), "*.tif")
        assert api.find("nightly") == cron
        assert api.find(landing.id) == landing
        assert [a.name for a in api.all()] == ["landing", "nightly"]
        with pytest.raises(ValueError, match="exists"):
            api.cron("nightly", "* * * * *", Scene())
        assert api.pause("landing").paused
        assert not api.resume(landing).paused
        assert api.delete(cron) is True
        assert api.delete("nightly") is False
        with pytest.raises(UnknownAutomationError):
            api.find("nightly")
        with pytest.raises(UnknownAutomationError):
            api.pause("nightly")


def test_the_blocking_client_evaluates_for_a_while(tmp_path: Path) -> None:
    """``BlockingClient.automations().run(for_seconds)`` evaluates for that long and returns
    how many jobs it submitted: the jobs in the store."""
    with BlockingClient(f"sqlite:///{tmp_path}/jobs.db") as client:
        client.automations().cron("every-1s", "* * * * * *", Scene(), catch_up="all")
        fired = client.automations().run(1.6)
        assert fired >= 1
        assert len(client.jobs().query(name="every-1s")) == fired


# -- cron ------------------------------------------------------------------------------------------
async def test_each_tick_submits_a_job_whose_tasks_read_their_trigger() -> None:
    """An every-second schedule fires one job per tick, named after the automation; its root
    task (async) and its subtask (sync) both read the tick from ``context.trigger``: the
    scheduled time, time-zone aware, in the schedule's zone; jobs submitted otherwise see
    None."""
    async with Client(":memory:") as client:
        auto = await client.automations().cron(
            "every-1s", "* * * * * *", Scene("A"), catch_up="all", timezone="Asia/Kolkata"
        )
        await client.jobs().submit("by-hand", Scene("B"))
        fired = await evaluate(client, 2.6)
        assert fired >= 2
        await client.runner([Scene, Leaf], InMemoryCache()).run_all()
        jobs = await client.jobs().query(name="every-1s")
        assert len(jobs) == fired
    ticks = sorted(t.time for name, _, t in SEEN if name == "every-1s" and t is not None)
    assert len(ticks) == 2 * fired  # root and leaf of each job
    assert ticks[::2] == ticks[1::2]
    seconds = [t.timestamp() for t in ticks[::2]]
    assert seconds == [seconds[0] + i for i in range(fired)]
    assert all(t.utcoffset() == dt.timedelta(hours=5, minutes=30) for t in ticks)
    assert seconds[0] > auto.created_at
    assert {(t.automation, t.automation_id, t.kind) for _, _, t in SEEN if t} == {
        ("every-1s", auto.id, "cron")
    }
    assert [t for name, _, t in SEEN if name == "by-hand"] == [None, None]


@pytest.mark.parametrize(("policy", "expected"), [("all", 2), ("latest", 1), ("none", 0)])
async def test_catch_up_policies_after_the_evaluators_were_down(policy: str, expected: int) -> None:
    """A yearly schedule whose last tick decided is two years ago (nothing evaluated since):
    ``all`` fires both missed ticks, ``latest`` only the newest, ``none`` neither; either way
    they are decided, and evaluating again fires nothing more."""
    async with Client(":memory:") as client:
        await client.automations().all()  # opens the store
        now = time.time()
        auto = AutomationInfo(
            id=new_id(), name="new-year", kind="cron", cluster="default", task_name="Scene",
            task_version="v0.0", input=b"{}", schedule="0 0 1 1 *", timezone="UTC",
            catch_up=policy, cursor=now - 2 * 365.25 * 86400, created_at=now - 3 * 365 * 86400,
        )  # fmt: skip
        await client.store.create_automation(auto)
        assert await evaluate(client, 0.3) == expected
        jobs = await client.jobs().query(name="new-year")
        times = sorted(j.trigger.time for j in jobs if j.trigger and j.trigger.time)
        assert all((t.month, t.day, t.hour) == (1, 1, 0) for t in times)
        if policy == "latest":
            assert times[0].year == dt.datetime.now(dt.UTC).year
        found = await client.automations().find("new-year")
        assert found.cursor == CronSchedule("0 0 1 1 *").latest(auto.cursor, time.time())
        assert await evaluate(client, 0.3) == 0


async def test_a_paused_schedule_fires_nothing_and_resumes_without_catching_up() -> None:
    """While paused an every-second schedule fires nothing; resumed, it fires only ticks after
    the resume, never the ones of the pause (catch_up="all" notwithstanding)."""
    async with Client(":memory:") as client:
        api = client.automations()
        await api.cron("every-1s", "* * * * * *", Scene(), catch_up="all")
        await api.pause("every-1s")
        assert await evaluate(client, 1.2) == 0
        resumed = await api.resume("every-1s")
        assert await evaluate(client, 1.2) >= 1
        jobs = await client.jobs().query(name="every-1s")
        assert all(j.trigger and j.trigger.time.timestamp() > resumed.cursor for j in jobs)  # type: ignore[union-attr]


async def test_a_runner_with_automations_evaluates_those_of_its_cluster() -> None:
    """``runner(..., automations=True)`` evaluates the automations of its own cluster while it
    runs (and runs their jobs); an automation of another cluster is left to that cluster's
    evaluators; a runner without the option evaluates nothing."""
    async with Client(":memory:") as client:
        await client.clusters().create("other")
        api = client.automations()
        await api.cron("here", "* * * * * *", Scene("here"))
        await api.cron("there", "* * * * * *", Scene("there"), cluster="other")
        plain = client.runner([Scene, Leaf], InMemoryCache())
        task = asyncio.create_task(plain.run_forever())
        await asyncio.sleep(1.2)
        plain.stop()
        await task
        assert await client.jobs().query() == []
        runner = client.runner([Scene, Leaf], InMemoryCache(), automations=True)
        task = asyncio.create_task(runner.run_forever())
        await asyncio.sleep(2.2)
        runner.stop()
        await task
        here = await client.jobs().query(name="here")
        assert len(here) >= 1
        assert await client.jobs().query(name="there") == []
    assert {name for name, _, _ in SEEN} == {"here"}


# -- local folders ---------------------------------------------------------------------------------
def crc(data: bytes) -> str:
    return _checksum.render(_checksum.update(0, data))


@pytest.mark.parametrize("watch", [True, False], ids=["inotify", "polling"])
async def test_a_local_folder_fires_each_new_settled_file_once(tmp_path: Path, watch: bool) -> None:
    """New files that match the glob fire once they stopped changing for ``settle`` seconds
    (a file written slowly in place fires once, whole); hidden files, files that do not match,
    and files there before the automation do not; a file in a subfolder fires with its
    ``/``-separated key, a folder moved in fires its files, and a file rewritten fires again as
    a new version. Each trigger carries the file's key, path, size and CRC32C."""
    folder = tmp_path / "landing"
    (folder / "old").mkdir(parents=True)
    (folder / "old" / "before.tif").write_bytes(b"old")
    await asyncio.sleep(0.05)
    async with Client(f"sqlite:///{tmp_path}/jobs.db") as client:
        await client.automations().all()
        now = time.time()
        await client.store.create_automation(
            AutomationInfo(
                id=new_id(),
                name="landing",
                kind="storage",
                cluster="default",
                task_name="Scene",
                task_version="v0.0",
                input=b"{}",
                url=str(folder),
                glob="*.tif",
                cursor=now,
                created_at=now,
            )
        )
        evaluator = client.automations().evaluator(
            refresh=0.2, poll_interval=0.2, settle=0.6, watch=watch
        )
        running = asyncio.create_task(evaluator.run())
        await asyncio.sleep(0.5)
        (folder / "a.tif").write_bytes(b"alpha")
        (folder / ".hidden.tif").write_bytes(b"hidden")
        (folder / "notes.txt").write_bytes(b"no")
        (folder / "sub").mkdir()
        (folder / "sub" / "b.tif").write_bytes(b"beta")
        outside = tmp_path / "moved"
        outside.mkdir()
        (outside / "c.tif").write_bytes(b"gamma")
        outside.rename(folder / "moved")
        with (folder / "slow.tif").open("wb") as slow:  # written in place, with pauses
            for _ in range(4):
                slow.write(b"x" * 1000)
                slow.flush()
                await asyncio.sleep(0.3)
        await wait_for_jobs(client, 4)
        (folder / "a.tif").write_bytes(b"alpha, again")
        await wait_for_jobs(client, 5)
        await asyncio.sleep(1.0)  # nothing more comes
        evaluator.stop()
        await running
        jobs = await client.jobs().query(limit=100)
    by_key: dict[str, list[Trigger]] = {}
    for job in jobs:
        assert job.trigger is not None
        assert job.trigger.key is not None
        assert job.name == f"landing: {job.trigger.key}"
        by_key.setdefault(job.trigger.key, []).append(job.trigger)
    assert sorted(by_key) == ["a.tif", "moved/c.tif", "slow.tif", "sub/b.tif"]
    assert [t.size for t in by_key["slow.tif"]] == [4000]
    assert by_key["slow.tif"][0].checksum == crc(b"x" * 4000)
    assert by_key["sub/b.tif"][0].url == str(folder / "sub" / "b.tif")
    assert by_key["moved/c.tif"][0].checksum == crc(b"gamma")
    first, second = sorted(by_key["a.tif"], key=lambda t: t.size or 0)
    assert (first.checksum, second.checksum) == (crc(b"alpha"), crc(b"alpha, again"))
    assert first.version != second.version
    assert len(jobs) == 5


async def wait_for_jobs(client: Client, n: int, within: float = 20.0) -> None:
    deadline = time.monotonic() + within
    while len(await client.jobs().query(limit=10_000)) < n:
        assert time.monotonic() < deadline, f"fewer than {n} jobs after {within} s"
        await asyncio.sleep(0.05)


# -- bounded listings ------------------------------------------------------------------------------
class Synthetic(_Source):
    """100,000 objects, made as they are listed (their names made beforehand), of which the
    last ``new`` are new."""

    lag = 0.0

    def __init__(self, mark: float, total: int = 100_000, new: int = 10) -> None:
        self.mark = mark
        self.names = [f"scenes/{i:06d}.tif" for i in range(total)]
        self.new = new

    async def objects(self) -> AsyncIterator[list[_Object]]:
        total = len(self.names)
        for start in range(0, total, 1000):
            page = []
            for i in range(start, min(start + 1000, total)):
                fresh = i >= total - self.new
                modified = self.mark + 100 + i * 1e-6 if fresh else self.mark - 100 + i * 1e-6
                page.append(_Object(self.names[i], 10, modified, "v1"))
            yield page

    def url_of(self, name: str) -> str:
        return f"s3://bucket/{name}"


async def test_a_listing_of_100_000_objects_is_held_one_page_at_a_time(tmp_path: Path) -> None:
    """A storage trigger on 100,000 objects (10 of them new) fires exactly the 10 new ones and
    moves its high-water mark up to the newest object seen; listing them all again (what each
    poll of a big bucket does) fires nothing and holds one page at a time: peak memory stays far
    below what the whole listing takes (about 25 MiB)."""
    async with Client(f"sqlite:///{tmp_path}/jobs.db") as client:
        await client.automations().all()
        mark = time.time()
        auto = AutomationInfo(
            id=new_id(), name="big", kind="storage", cluster="default", task_name="Scene",
            task_version="v0.0", input=b"{}", url="s3://bucket/", glob="*.tif", cursor=mark,
            created_at=mark,
        )  # fmt: skip
        await client.store.create_automation(auto)
        evaluator = AutomationEvaluator(client.store)
        source = Synthetic(mark)
        await evaluator._scan(auto, source)
        assert evaluator.fired == 10
        found = await client.automations().find("big")
        assert found.cursor > mark + 50  # the newest seen, less the scan's duration
        names = sorted(j.name for j in await client.jobs().query(limit=100))
        assert names == [f"big: scenes/{i:06d}.tif" for i in range(99_990, 100_000)]
        tracemalloc.start()
        try:
            await evaluator._scan(found, source)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert evaluator.fired == 10
        assert peak < 4 << 20, f"peak {peak / 2**20:.1f} MiB"
