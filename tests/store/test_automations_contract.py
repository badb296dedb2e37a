"""The automation part of the JobStore contract (``JobStore.create_automation`` ...
``fire_automation``), run against every store in ``STORES``: what an automation is, and the
rule that makes firing exactly-once: each key (a cron tick, an object) submits one job, however
many store objects (processes) fire it at once.
"""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest

from swath.store import (
    AutomationInfo,
    Firing,
    JobStore,
    NewTask,
    Trigger,
    UnknownAutomationError,
    UnknownClusterError,
    new_id,
)

from .stores import StoreFactory


def automation(name: str = "every-2s", *, kind: str = "cron", **kw: object) -> AutomationInfo:
    fields: dict[str, object] = {
        "id": new_id(),
        "name": name,
        "kind": kind,
        "cluster": "default",
        "task_name": "Tick",
        "task_version": "v1.2",
        "input": b'{"n": 1}',
        "max_retries": 2,
        "timeout": 60.0,
        "cursor": 1000.0,
        "created_at": 1000.0,
    }
    if kind == "cron":
        fields.update(schedule="*/2 * * * * *", timezone="UTC", catch_up="all")
    else:
        fields.update(url="s3://bucket/landing", glob="*.tif")
    fields.update(kw)
    return AutomationInfo(**fields)  # type: ignore[arg-type]


def firing(auto: AutomationInfo, key: str, at: float | None = None) -> Firing:
    trigger = Trigger(auto.name, auto.id, auto.kind, key=key, size=3, checksum="abc")
    root = NewTask(new_id(), auto.task_name, auto.task_version, auto.input, auto.cluster)
    return Firing(
        key=key,
        job_id=new_id(),
        name=f"{auto.name}: {key}",
        root=root,
        trigger=msgspec.json.encode(trigger).decode(),
        at=at,
    )


async def test_create_find_list_pause_delete(store: JobStore) -> None:
    """An automation is stored whole, found by id or by name, listed by name; a second one of
    the same name is a ValueError, one for an unknown cluster UnknownClusterError; pausing and
    resuming flips ``paused``; delete removes it (False the second time)."""
    cron = await store.create_automation(automation("b-cron"))
    storage = await store.create_automation(automation("a-landing", kind="storage"))
    assert await store.get_automation(cron.id) == cron
    assert await store.get_automation("b-cron") == cron
    assert await store.get_automation("nope") is None
    assert [a.name for a in await store.list_automations()] == ["a-landing", "b-cron"]
    assert (await store.list_automations())[0] == storage
    with pytest.raises(ValueError, match="exists"):
        await store.create_automation(automation("b-cron"))
    with pytest.raises(UnknownClusterError):
        await store.create_automation(automation("elsewhere", cluster="nope"))
    paused = await store.pause_automation(storage.id, True)
    assert paused is not None
    assert paused.paused
    resumed = await store.pause_automation(storage.id, False)
    assert resumed is not None
    assert not resumed.paused
    assert resumed.cursor == storage.cursor  # a storage trigger keeps its high-water mark
    assert await store.pause_automation("nope", True) is None
    assert await store.delete_automation(cron.id) is True
    assert await store.delete_automation(cron.id) is False
    assert [a.name for a in await store.list_automations()] == ["a-landing"]


async def test_resuming_a_paused_cron_skips_the_ticks_of_the_pause(store: JobStore) -> None:
    """Resuming a paused cron schedule moves its cursor to now, so the ticks missed while it was
    paused are skipped rather than caught up; resuming one that was not paused moves nothing."""
    cron = await store.create_automation(automation())
    again = await store.pause_automation(cron.id, False)  # not paused: nothing moves
    assert again is not None
    assert again.cursor == cron.cursor
    await store.pause_automation(cron.id, True)
    before = time.time()
    resumed = await store.pause_automation(cron.id, False)
    assert resumed is not None
    assert resumed.cursor >= before


async def test_a_key_fires_one_job_with_its_trigger(store: JobStore) -> None:
    """fire_automation submits one job per new key, named and with the trigger it was given;
    the claim of its root task carries that trigger, and the job records it; firing the same
    key again submits nothing; ``fired_keys`` tells which keys fired."""
    auto = await store.create_automation(automation("landing", kind="storage"))
    first = firing(auto, "a.tif")
    submitted = await store.fire_automation(auto.id, [first, firing(auto, "b.tif")])
    assert len(submitted) == 2
    assert submitted[0] == first.job_id
    assert await store.fire_automation(auto.id, [firing(auto, "a.tif")]) == []
    assert await store.fired_keys(auto.id, ["a.tif", "b.tif", "c.tif"]) == {"a.tif", "b.tif"}
    job = await store.get_job(first.job_id)
    assert job is not None
    assert job.name == "landing: a.tif"
    assert job.trigger == Trigger(
        "landing", auto.id, "storage", key="a.tif", size=3, checksum="abc"
    )
    claimed = await store.claim("default", "r1", 10, 30.0)
    assert {c.job_id for c in claimed} == set(submitted)
    by_job = {c.job_id: c for c in claimed}
    assert by_job[first.job_id].trigger == first.trigger
    assert (by_job[first.job_id].name, by_job[first.job_id].version) == ("Tick", "v1.2")
    assert [j.trigger for j in await store.query_jobs(name="landing: a.tif")] == [job.trigger]


async def test_jobs_submitted_otherwise_have_no_trigger(store: JobStore) -> None:
    """A job submitted with submit_job has no trigger, and neither do its claimed tasks."""
    job_id = new_id()
    await store.submit_job(
        job_id, "plain", "default", NewTask(new_id(), "T", "v0.0", b"{}", "default")
    )
    job = await store.get_job(job_id)
    assert job is not None
    assert job.trigger is None
    [claimed] = await store.claim("default", "r1", 10, 30.0)
    assert claimed.trigger is None


async def test_cursor_moves_forward_only_and_decided_ticks_do_not_fire(store: JobStore) -> None:
    """The cursor only moves forward; a firing whose ``at`` is at or before the cursor (a tick
    decided already) submits nothing, one after it does."""
    auto = await store.create_automation(automation())
    assert await store.fire_automation(auto.id, [], cursor=1010.0) == []
    assert await store.fire_automation(auto.id, [], cursor=1004.0) == []
    found = await store.get_automation(auto.id)
    assert found is not None
    assert found.cursor == 1010.0
    late = [firing(auto, "1008", at=1008.0), firing(auto, "1010", at=1010.0)]
    assert await store.fire_automation(auto.id, late) == []
    due = firing(auto, "1012", at=1012.0)
    assert await store.fire_automation(auto.id, [due], cursor=1012.0) == [due.job_id]
    found = await store.get_automation(auto.id)
    assert found is not None
    assert found.cursor == 1012.0


async def test_paused_or_deleted_automations_fire_nothing(store: JobStore) -> None:
    """A paused automation submits no job and keeps its cursor; a deleted one is an
    UnknownAutomationError, and its firing records go with it."""
    auto = await store.create_automation(automation("landing", kind="storage"))
    await store.pause_automation(auto.id, True)
    assert await store.fire_automation(auto.id, [firing(auto, "a")], cursor=5000.0) == []
    found = await store.get_automation(auto.id)
    assert found is not None
    assert found.cursor == auto.cursor
    assert await store.query_jobs() == []
    await store.pause_automation(auto.id, False)
    assert len(await store.fire_automation(auto.id, [firing(auto, "a")])) == 1
    assert await store.delete_automation(auto.id)
    assert await store.fired_keys(auto.id, ["a"]) == set()
    with pytest.raises(UnknownAutomationError):
        await store.fire_automation(auto.id, [firing(auto, "b")])


async def test_firing_to_an_unknown_cluster_submits_nothing(store: JobStore) -> None:
    """A firing whose job cannot be submitted (its cluster was deleted) raises and records no
    firing: the key fires once the cluster is back."""
    await store.create_cluster("gpu")
    auto = await store.create_automation(automation(cluster="gpu", kind="storage"))
    await store.delete_cluster("gpu")
    fire = firing(auto, "a")
    fire = msgspec.structs.replace(fire, root=msgspec.structs.replace(fire.root, cluster="gpu"))
    with pytest.raises(UnknownClusterError):
        await store.fire_automation(auto.id, [fire], cursor=9999.0)
    assert await store.fired_keys(auto.id, ["a"]) == set()
    found = await store.get_automation(auto.id)
    assert found is not None
    assert found.cursor == auto.cursor


async def test_concurrent_firings_of_one_key_submit_one_job(store_factory: StoreFactory) -> None:
    """Eight store objects (eight processes, where the database is shared) fire the same 50 keys
    at once, each with jobs of its own: every key submits exactly one job, and the jobs in the
    store are exactly those the calls report."""
    stores = [store_factory.make() for _ in range(8 if store_factory.shared else 1)]
    for s in stores:
        await s.open()
    try:
        auto = await stores[0].create_automation(automation("landing", kind="storage"))
        keys = [f"scene-{i}.tif" for i in range(50)]

        async def fire(s: JobStore, offset: int) -> list[str]:
            done: list[str] = []
            for i in range(0, len(keys), 10):
                batch = keys[(i + offset) % len(keys) :] + keys[: (i + offset) % len(keys)]
                done += await s.fire_automation(auto.id, [firing(auto, k) for k in batch[:10]])
            return done

        results = await asyncio.gather(*(fire(stores[i % len(stores)], 7 * i) for i in range(8)))
        submitted = [job for r in results for job in r]
        jobs = await stores[0].query_jobs(limit=1000)
        assert sorted(j.id for j in jobs) == sorted(submitted)
        names = sorted(j.name for j in jobs)
        assert names == sorted(f"landing: {k}" for k in keys)
    finally:
        for s in stores:
            await s.close()
