"""Tilebox's client, runner set-up, job statistics and diagrams, as a Tilebox user calls them:
``client.runner`` without a cache or with a cluster first, a blocking client for scripts,
``clusters().update``, ``jobs().query`` by temporal extent and Tilebox's state names,
``job.execution_stats``, diagrams in three formats and a notebook display, ``dir(swath)``."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import swath
from swath import (
    BlockingClient,
    Client,
    ExecutionContext,
    InMemoryCache,
    LocalFileSystemCache,
    Task,
    TaskState,
    UnknownClusterError,
)
from tests.conformance.backends import BackendFactory
from tests.store.stores import StoreFactory


class Leaf(Task):
    n: int

    def execute(self, context: ExecutionContext) -> None:
        context.job_cache[f"leaf_{self.n}"] = str(self.n).encode()


class Fan(Task):
    n: int

    def execute(self, context: ExecutionContext) -> None:
        time.sleep(0.05)
        context.submit_subtasks([Leaf(i) for i in range(self.n)])


# -- 5. runner set-up ---------------------------------------------------------------------------
async def test_runner_without_cache_uses_the_client_cache() -> None:
    """``client.runner(tasks=[T])`` without a cache runs on the client's cache
    (``Client(url, cache=...)``)."""
    cache = InMemoryCache()
    async with Client(":memory:", cache=cache) as client:
        job = await client.jobs().submit("leaf", Leaf(3))
        runner = client.runner(tasks=[Leaf])
        assert runner.cache is cache
        await runner.run_all()
        assert await cache.group(job.id).get("leaf_3") == b"3"


async def test_runner_cache_from_environment_then_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a client cache: ``$SWATH_CACHE_URL``, else the directory ``./cache``."""
    monkeypatch.setenv("SWATH_CACHE_URL", f"file://{tmp_path / 'from-env'}")
    async with Client(":memory:") as client:
        job = await client.jobs().submit("leaf", Leaf(1))
        await client.runner(tasks=[Leaf]).run_all()
    assert (tmp_path / "from-env").is_dir()
    async with LocalFileSystemCache(tmp_path / "from-env") as cache:
        assert await cache.group(job.id).get("leaf_1") == b"1"

    monkeypatch.delenv("SWATH_CACHE_URL")
    monkeypatch.chdir(tmp_path)
    async with Client(":memory:") as client:
        runner = client.runner(tasks=[Leaf])
        assert isinstance(runner.cache, LocalFileSystemCache)
        job = await client.jobs().submit("leaf", Leaf(2))
        await runner.run_all()
    async with LocalFileSystemCache(tmp_path / "cache") as cache:
        assert await cache.group(job.id).get("leaf_2") == b"2"


async def test_runner_positional_cluster_form() -> None:
    """Tilebox's ``client.runner("dev-cluster", tasks=[...], cache=c)`` runs that cluster's
    work; swath's positional form still works."""
    cache = InMemoryCache()
    async with Client(":memory:") as client:
        cluster = await client.clusters().create("dev-cluster")
        job = await client.jobs().submit("leaf", Leaf(5), cluster="dev-cluster")
        runner = client.runner("dev-cluster", tasks=[Leaf], cache=cache)
        assert runner.cluster == "dev-cluster"
        await runner.run_all()
        assert (await client.jobs().find(job)).state == "COMPLETED"
        assert client.runner(cluster, [Leaf], cache).cluster == "dev-cluster"
        assert client.runner([Leaf], cache, "dev-cluster").cluster == "dev-cluster"


async def test_runner_misspelt_option_is_a_type_error() -> None:
    """Every runner option is spelt out: a misspelt one is a TypeError when the runner is
    made, not at run time."""
    async with Client(":memory:") as client:
        with pytest.raises(TypeError, match="grase"):
            client.runner([Leaf], InMemoryCache(), grase=1.0)  # type: ignore[call-overload]
        with pytest.raises(TypeError, match="grase"):
            client.runner("default", tasks=[Leaf], grase=1.0)  # type: ignore[call-overload]
        runner = client.runner([Leaf], InMemoryCache(), grace=2.0, cleanup="on-success")
        assert (runner.grace, runner.cleanup) == (2.0, "on-success")


# -- 6. the blocking client ---------------------------------------------------------------------
def test_async_client_without_await_is_a_clear_error() -> None:
    """A script calling the async client's coroutines without an event loop gets a
    RuntimeError naming BlockingClient at once, not a coroutine that never runs."""
    client = Client(":memory:")
    with pytest.raises(RuntimeError, match="BlockingClient"):
        client.jobs().submit("never", Leaf(1))
    with pytest.raises(RuntimeError, match="await"):
        client.clusters().all()
    with pytest.raises(RuntimeError, match="BlockingClient"):
        client.runner(tasks=[Leaf], cache=InMemoryCache()).run_all()


def test_blocking_client_runs_a_tilebox_script(tmp_path: Path) -> None:
    """A Tilebox script ported by changing imports: submit, run, find, tasks, query, clusters,
    from plain (loop-less) code."""
    cache = InMemoryCache()
    with BlockingClient(f"sqlite:///{tmp_path / 'jobs.db'}", cache=cache) as client:
        client.clusters().create("dev-cluster", "Development")
        job = client.jobs().submit("fan", Fan(3), cluster="dev-cluster")
        runner = client.runner("dev-cluster", tasks=[Fan, Leaf])
        runner.run_all()
        job = client.jobs().find(job)
        assert job.state == "COMPLETED"
        assert len(client.jobs().tasks(job)) == 4
        assert [j.id for j in client.jobs().query(job_states="COMPLETED")] == [job.id]
        updated = client.clusters().update("dev-cluster", name="Dev")
        assert updated.name == client.clusters().find("dev-cluster").name == "Dev"
        assert client.jobs().diagram(job).startswith("graph TD")
    with pytest.raises(RuntimeError, match="closed"):
        client.jobs().find(job)


def test_blocking_client_reads_the_runner_cache(cache_factory: BackendFactory) -> None:
    """A script reads the runner cache as Tilebox scripts do (``cache.group(job.id)["k"]``)
    through ``client.blocking_cache(cache)``, on every backend: the client enters the backend
    on its loop and leaves it when it closes."""
    backend = cache_factory.make()
    with BlockingClient(":memory:", cache=backend) as client:
        job = client.jobs().submit("leaf", Leaf(4))
        client.runner(tasks=[Leaf]).run_all()
        job_cache = client.blocking_cache().group(job.id)
        assert job_cache["leaf_4"] == b"4"
        assert list(job_cache.items()) == [("leaf_4", b"4")]
        job_cache["from-script"] = b"x"
        assert "from-script" in client.blocking_cache(backend).group(job.id)


async def test_clusters_update() -> None:
    """``clusters().update`` renames a cluster (by slug or Cluster); an unknown one is
    UnknownClusterError."""
    async with Client(":memory:") as client:
        created = await client.clusters().create("gpu", "GPU")
        assert (await client.clusters().update(created, name="GPUs")).name == "GPUs"
        assert (await client.clusters().find("gpu")).name == "GPUs"
        assert (await client.clusters().update("gpu")).name == "GPUs"
        with pytest.raises(UnknownClusterError):
            await client.clusters().update("nope", name="x")


async def test_jobs_query_by_temporal_extent_and_tilebox_states() -> None:
    """``jobs().query(temporal_extent=(start, end), job_states=...)``: ``[start, end)`` on the
    creation time; SUBMITTED is QUEUED and STARTED is RUNNING, as Tilebox names them."""
    async with Client(":memory:") as client:
        before = dt.datetime.now(dt.UTC)
        queued = await client.jobs().submit("a", Leaf(1))
        after = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
        found = await client.jobs().query((before, after), job_states=["SUBMITTED"])
        assert [j.id for j in found] == [queued.id]
        assert await client.jobs().query((after, after + dt.timedelta(days=1))) == []
        assert (
            await client.jobs().query(temporal_extent=(before, after), job_states="STARTED") == []
        )
        today = await client.jobs().query(dt.datetime.fromtimestamp(queued.created_at).date())
        assert [j.id for j in today] == [queued.id]
        assert [j.id for j in await client.jobs().query(state="QUEUED")] == [queued.id]


# -- 7. execution stats -------------------------------------------------------------------------
async def test_job_execution_stats() -> None:
    """``job.execution_stats``: task counts by state, first start and last stop, compute time
    (a parent counts until its subtasks were submitted, not until they finished)."""
    async with Client(":memory:") as client:
        job = await client.jobs().submit("fan", Fan(4))
        stats = (await client.jobs().find(job)).execution_stats
        assert stats.tasks_by_state == {TaskState.QUEUED: 1}
        assert stats.first_task_started_at is None
        await client.runner(tasks=[Fan, Leaf], cache=InMemoryCache()).run_all()
        job = await client.jobs().find(job)
        stats = job.execution_stats
        assert stats.total_tasks == 5
        assert stats.tasks_by_state == {TaskState.COMPLETED: 5}
        tasks = await client.jobs().tasks(job)
        assert stats.first_task_started_at == min(t.started_at for t in tasks if t.started_at)
        assert stats.last_task_stopped_at is not None
        assert stats.first_task_started_at <= stats.last_task_stopped_at
        assert 0.05 <= stats.compute_time < 5
        assert stats.elapsed_time >= 0.05
        # listings and polls skip the stats: they scan every task of the job
        [listed] = await client.jobs().query()
        assert (listed.id, listed.execution_stats.total_tasks) == (job.id, 0)
        polled = await client.jobs().find(job, execution_stats=False)
        assert polled.execution_stats.total_tasks == 0


# -- 8. diagrams --------------------------------------------------------------------------------
async def test_diagram_formats_and_notebook_display() -> None:
    """``diagram(format=...)``: Mermaid and DOT text, SVG through Graphviz's dot; ``display``
    returns an object notebooks show (``_repr_svg_``/``_repr_html_``)."""
    async with Client(":memory:") as client:
        job = await client.jobs().submit("fan", Fan(2))
        await client.runner(tasks=[Fan, Leaf], cache=InMemoryCache()).run_all()
        mermaid = await client.jobs().diagram(job)
        assert mermaid.startswith("graph TD")
        assert "t0 --> t1" in mermaid
        assert await client.jobs().diagram(job, format="mermaid") == mermaid
        dot = await client.jobs().diagram(job, format="dot")
        assert dot.startswith("digraph job {")
        assert "t0 -> t1;" in dot
        svg = await client.jobs().diagram(job, format="svg")
        assert "<svg" in svg
        assert "Fan" in svg
        assert "COMPLETED" in svg
        with pytest.raises(ValueError, match="format"):
            await client.jobs().diagram(job, format="png")  # type: ignore[arg-type]
        shown = await client.jobs().display(job)
        assert "<svg" in (shown._repr_svg_() or "")
        assert "<svg" in shown._repr_html_()
        html = (await client.jobs().find(job))._repr_html_()
        assert "<td>COMPLETED</td>" in html
        assert "3 COMPLETED" in html


async def test_diagram_display_without_graphviz(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without Graphviz, SVG is a clear error naming it and the notebook display falls back to
    the Mermaid text."""
    monkeypatch.setenv("PATH", "/nonexistent")
    async with Client(":memory:") as client:
        job = await client.jobs().submit("fan", Fan(1))
        with pytest.raises(RuntimeError, match="Graphviz"):
            await client.jobs().diagram(job, format="svg")
        shown = await client.jobs().display(job)
        assert shown._repr_svg_() is None
        assert shown._repr_html_().startswith('<pre class="mermaid">graph TD')


# -- 9. the package -----------------------------------------------------------------------------
def test_dir_lists_lazy_names_and_import_stays_light() -> None:
    """``dir(swath)`` lists every name of ``__all__``, the lazily imported cloud caches too;
    importing swath imports neither aiobotocore nor gcloud-aio."""
    assert set(swath.__all__) <= set(dir(swath))
    assert {"AmazonS3Cache", "GoogleStorageCache", "BlockingClient"} <= set(dir(swath))
    code = (
        "import sys, swath; "
        "heavy = [m for m in sys.modules if m.split('.')[0] in "
        "('aiobotocore', 'botocore', 'gcloud', 'aiohttp', 'google')]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": ""},
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- 6. several root tasks ----------------------------------------------------------------------
class SlowLeaf(Task):
    n: int

    async def execute(self, context: ExecutionContext) -> None:
        await asyncio.sleep(0.01 * (self.n % 3))


async def test_submit_several_root_tasks(store_factory: StoreFactory) -> None:
    """``jobs().submit(name, [t1, t2, t3], cluster=[...])``: one job, a root task per element on
    its own cluster (their parent a group task that is never executed); the job completes only
    when the last root has, on every store."""
    async with Client(store=store_factory.make()) as client:
        await client.clusters().create("gpu")
        job = await client.jobs().submit(
            "roots", [Leaf(1), Leaf(2), Leaf(3)], cluster=["default", "default", "gpu"]
        )
        tasks = {t.id: t for t in await client.jobs().tasks(job)}
        group = tasks[job.root_task_id]
        assert (group.name, group.state, group.parent_id) == ("swath.roots", "COMPUTED", None)
        roots = sorted((t for t in tasks.values() if t is not group), key=lambda t: t.cluster)
        assert [(t.name, t.parent_id, t.cluster) for t in roots] == [
            ("Leaf", group.id, "default"),
            ("Leaf", group.id, "default"),
            ("Leaf", group.id, "gpu"),
        ]
        cache = InMemoryCache()
        await client.runner(tasks=[Leaf], cache=cache).run_all()
        assert (await client.jobs().find(job)).state == "RUNNING"
        await client.runner("gpu", tasks=[Leaf], cache=cache).run_all()
        assert (await client.jobs().find(job)).state == "COMPLETED"
        with pytest.raises(ValueError, match="one per root task"):
            await client.jobs().submit("bad", [Leaf(1), Leaf(2)], cluster=["default"])
        with pytest.raises(ValueError, match="at least one"):
            await client.jobs().submit("bad", [])


async def test_several_roots_completed_concurrently(store_factory: StoreFactory) -> None:
    """Many roots finishing at once in runners of their own (separate store objects, as
    separate processes would be) complete their jobs, without a deadlock or a lost
    completion."""
    async with Client(store=store_factory.make()) as client:
        jobs = [
            await client.jobs().submit(f"roots-{i}", [SlowLeaf(n) for n in range(6)])
            for i in range(5)
        ]
        # a :memory: database is one store object: its runners share it
        others = [
            Client(store=store_factory.make() if store_factory.shared else client.store)
            for _ in range(3)
        ]
        try:
            runners = [
                c.runner([SlowLeaf], InMemoryCache(), max_concurrency=4) for c in [client, *others]
            ]
            await asyncio.gather(*(r.run_all() for r in runners))
        finally:
            for other in others:
                await other.close()  # a shared store object counts its users
        states = [(await client.jobs().find(job)).state for job in jobs]
        assert states == ["COMPLETED"] * 5
