"""Automations fire exactly once, whoever evaluates them: several ``swath automations run``
processes on one store (SQLite file, PostgreSQL), storage triggers on a local folder, on S3
(moto_server) and on GCS (fake-gcs-server) across a restart of their evaluators, and an
evaluator killed with SIGKILL in the middle of its firings."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from swath import Client, CronSchedule, Task
from swath.cache import _checksum
from swath.store.base import JobInfo
from tests.services.gcs import GcsServer
from tests.services.s3 import S3Server
from tests.store.stores import StoreFactory

OBJECTS = 500
WRITERS = 4


class Landed(Task):
    """What the automations submit (nothing here runs it: the jobs are counted)."""

    pipeline: str = "ndvi"


def evaluator_process(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    """``swath automations run ARGS`` with its output in ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "swath.cli", "automations", "run", *args],
            env={**env, "PYTHONPATH": os.pathsep.join(sys.path)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def finish(proc: subprocess.Popen[bytes], log: Path, within: float = 60.0) -> int:
    """Wait for an evaluator process to end on its own; return how many jobs it submitted."""
    try:
        code = proc.wait(within)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"the evaluator did not stop: {log.read_text()[-2000:]}") from None
    text = log.read_text()
    assert code == 0, text[-2000:]
    found = re.findall(r"stopped: submitted (\d+) jobs", text)
    assert found, text[-2000:]
    return int(found[-1])


async def all_jobs(client: Client) -> list[JobInfo]:
    return await client.jobs().query(limit=100_000)


async def wait_for_jobs(client: Client, n: int, within: float = 60.0) -> list[JobInfo]:
    deadline = time.monotonic() + within
    while True:
        jobs = await all_jobs(client)
        if len(jobs) >= n:
            return jobs
        assert time.monotonic() < deadline, f"{len(jobs)} jobs of {n} after {within} s"
        await asyncio.sleep(0.1)


# -- cron ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("store_name", ["sqlite_file", "postgres"])
async def test_three_processes_fire_each_tick_of_a_seconds_schedule_once(
    request: pytest.FixtureRequest, store_name: str, tmp_path: Path
) -> None:
    """Three ``swath automations run`` processes evaluate one every-second schedule (catch-up
    "all") on one store for a few seconds: every tick from the automation's creation to the
    last one fired has exactly one job (none missing, none twice), and the jobs the processes
    say they submitted add up to the jobs in the store."""
    factory: StoreFactory = request.getfixturevalue(f"store_factory_{store_name}")
    async with Client(store=factory.make()) as client:
        auto = await client.automations().cron("every-1s", "* * * * * *", Landed(), catch_up="all")
        logs = [tmp_path / f"evaluator{i}.log" for i in range(3)]
        procs = [evaluator_process(factory.subprocess_env(), log, "--for", "4") for log in logs]
        submitted = [
            await asyncio.to_thread(finish, p, log) for p, log in zip(procs, logs, strict=True)
        ]
        jobs = await all_jobs(client)
    ticks = sorted(j.trigger.time.timestamp() for j in jobs if j.trigger and j.trigger.time)
    assert len(ticks) == len(jobs) >= 3
    assert len(set(ticks)) == len(ticks), "a tick fired twice"
    expected = CronSchedule("* * * * * *").ticks(auto.created_at, ticks[-1], 10_000)
    assert ticks == expected, "a tick is missing"
    assert sum(submitted) == len(jobs)
    assert {j.name for j in jobs} == {"every-1s"}


# -- storage events --------------------------------------------------------------------------------
Writer = Callable[[str, bytes], Awaitable[None]]


def payload(key: str) -> bytes:
    return (key * (1 + len(key) % 7)).encode()


def crc(data: bytes) -> str:
    return _checksum.render(_checksum.update(0, data))


async def write_all(write: Writer, keys: list[str]) -> None:
    """Write ``keys`` with WRITERS concurrent writers, each its share in a random order."""
    shares = [keys[i::WRITERS] for i in range(WRITERS)]

    async def writer(share: list[str]) -> None:
        random.shuffle(share)
        for key in share:
            await write(key, payload(key))

    await asyncio.gather(*(writer(s) for s in shares))


@contextlib.asynccontextmanager
async def evaluators(
    factory: StoreFactory, n: int, **options: object
) -> AsyncIterator[list[Client]]:
    """``n`` evaluators in this process, each on a store object of its own."""
    clients = [Client(store=factory.make()) for _ in range(n)]
    tasks = []
    for c in clients:
        await c.__aenter__()
        evaluator = c.automations().evaluator(refresh=0.5, **options)  # type: ignore[arg-type]
        tasks.append((evaluator, asyncio.create_task(evaluator.run())))
    try:
        yield clients
    finally:
        for evaluator, task in tasks:
            evaluator.stop()
            await task
        for c in clients:
            await c.__aexit__()


async def storage_round(
    factory: StoreFactory, url: str, write: Writer, poll_interval: float = 0.3, n: int = 2
) -> None:
    """500 objects by 4 writers: 250 while ``n`` evaluators run, then 250 more (and objects
    the glob leaves out) while none does; then ``n`` new evaluators start and catch up. Every
    object has exactly one job, named after it, whose trigger carries its key, size and CRC32C;
    nothing else fired."""
    keys = [f"scenes/w{i % WRITERS}/S2-{i:04d}.tif" for i in range(OBJECTS)]
    options = {"poll_interval": poll_interval, "settle": 0.3}
    async with Client(store=factory.make()) as client:
        await client.automations().storage_event("landing", url, Landed(), glob="*.tif")
        async with evaluators(factory, n, **options):
            await write_all(write, keys[: OBJECTS // 2])
            await wait_for_jobs(client, OBJECTS // 2)
        await write_all(write, keys[OBJECTS // 2 :] + [f"notes/{i}.txt" for i in range(20)])
        async with evaluators(factory, n, **options):
            await wait_for_jobs(client, OBJECTS)
            await asyncio.sleep(3 * poll_interval)  # a few more looks: nothing more fires
        jobs = await all_jobs(client)
    assert len(jobs) == OBJECTS
    assert sorted(j.name for j in jobs) == sorted(f"landing: {k}" for k in keys)
    for job in jobs:
        t = job.trigger
        assert t is not None
        assert t.key is not None
        assert (t.automation, t.kind, t.size) == ("landing", "storage", len(payload(t.key)))
        assert t.checksum == crc(payload(t.key)), t
        assert t.url is not None
        assert t.url.endswith(t.key)


async def test_a_local_folder_fires_500_files_of_4_writers_once(
    store_factory_sqlite_file: StoreFactory, tmp_path: Path
) -> None:
    """``storage_round`` on a local folder written in place by writers outside swath."""
    folder = tmp_path / "landing"
    folder.mkdir()

    def put(key: str, data: bytes) -> None:
        path = folder / key
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:
            f.write(data[:5])
            f.flush()
            f.write(data[5:])

    async def write(key: str, data: bytes) -> None:
        await asyncio.to_thread(put, key, data)

    await storage_round(store_factory_sqlite_file, str(folder), write)


async def test_s3_fires_500_objects_of_4_writers_once(
    store_factory_sqlite_file: StoreFactory,
    moto_s3: S3Server,
    s3_moto_bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``storage_round`` on an S3 prefix (moto_server), written through swath's S3 cache, with
    one evaluator at a time (moto serves one request at a time, and each evaluator reads each
    new object's checksum with a HeadObject: two would double that; several evaluators on one
    trigger are proven on the other storages)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_s3.endpoint)
    async with moto_s3.make_cache(s3_moto_bucket, prefix="landing") as cache:
        url = f"s3://{s3_moto_bucket}/landing"
        # moto takes about 0.4 s to list 500 objects: looking more often only slows it down
        await storage_round(store_factory_sqlite_file, url, cache.put, poll_interval=1.0, n=1)


async def test_gcs_fires_500_objects_of_4_writers_once(
    store_factory_sqlite_file: StoreFactory,
    gcs_server: GcsServer,
    gcs_bucket: str,
    tmp_path: Path,
) -> None:
    """``storage_round`` on a GCS prefix (fake-gcs-server), written through swath's GCS
    cache."""
    from swath.cache.gcs import GoogleStorageCache

    async with GoogleStorageCache(gcs_bucket, prefix="landing") as cache:
        url = f"gs://{gcs_bucket}/landing"
        await storage_round(store_factory_sqlite_file, url, cache.put)


# -- a killed evaluator ----------------------------------------------------------------------------
@pytest.mark.parametrize("store_name", ["sqlite_file", "postgres"])
async def test_an_evaluator_killed_mid_evaluation_loses_and_duplicates_nothing(
    request: pytest.FixtureRequest, store_name: str, tmp_path: Path
) -> None:
    """An evaluator process is killed with SIGKILL as soon as the first of its firing
    transactions commits, while the rest of the 500 new files are still to fire (the test
    checks it landed there); a second evaluator then fires the rest: every file has exactly
    one job."""
    factory: StoreFactory = request.getfixturevalue(f"store_factory_{store_name}")
    folder = tmp_path / "landing"
    folder.mkdir()
    env = factory.subprocess_env()
    async with Client(store=factory.make()) as client:
        await client.automations().storage_event("landing", str(folder), Landed())
        for i in range(OBJECTS):
            (folder / f"{i:04d}.tif").write_bytes(os.urandom(16 << 10))
        first = evaluator_process(env, tmp_path / "killed.log", "--settle", "0", "--no-watch")
        try:
            deadline = time.monotonic() + 60
            while not (seen := len(await client.jobs().query(limit=1))):
                assert time.monotonic() < deadline, (tmp_path / "killed.log").read_text()
                await asyncio.sleep(0.002)
            first.send_signal(signal.SIGKILL)
        finally:
            first.kill()
            first.wait()
        at_kill = len(await all_jobs(client))
        assert 0 < seen <= at_kill < OBJECTS, f"the kill came after all firings ({at_kill})"
        log = tmp_path / "second.log"
        second = evaluator_process(env, log, "--settle", "0")
        try:
            await wait_for_jobs(client, OBJECTS)
            await asyncio.sleep(1.0)
        finally:
            second.send_signal(signal.SIGTERM)
            submitted = await asyncio.to_thread(finish, second, log)
        jobs = await all_jobs(client)
    assert len(jobs) == OBJECTS
    assert sorted(j.name for j in jobs) == [f"landing: {i:04d}.tif" for i in range(OBJECTS)]
    assert submitted == OBJECTS - at_kill
