"""W4 a diamond DAG: a root, 100 branches after it, one fan-in after all of them; branch 7 fails
on its first attempt and is retried once. Every branch reports its number; the fan-in checks it
got all 100 (the sum 0 + ... + 99) and the run checks the failing branch ran exactly twice.

- swath: the root submits the branches with ``max_retries=1`` and the fan-in with
  ``depends_on=branches``; branches write their number into the job cache.
- Dask: ``submit(root)``, ``map(branch, ..., root, retries=1)``, ``submit(fan_in, branches)``.
- Prefect: ``root.submit()``, ``branch.map(..., wait_for=[root])`` with ``retries=1``,
  ``fan_in.submit(branches)``.
- arq (no dependencies): the root job enqueues the branches and awaits their results, then
  enqueues the fan-in; a branch retries by raising ``arq.Retry``.
- Procrastinate (no dependencies): the root defers the branches (``retry=1``); each branch
  counts itself done in a table, and the last one defers the fan-in.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from benchmarks.peers._measure import cpu_now, cpu_since
from swath import Client, ExecutionContext, Task

WIDTH = 100
FAILING = 7
EXPECTED = sum(range(WIDTH))


def _attempt(scratch: str, i: int) -> None:
    """Raises on the failing branch's first attempt; counts attempts in a file."""
    if i != FAILING:
        return
    marker = Path(scratch, "attempts")
    with open(marker, "a") as f:
        f.write("x")
    if marker.stat().st_size == 1:
        raise RuntimeError(f"branch {i} fails on its first attempt")


def _save_total(scratch: str, total: int) -> None:
    Path(scratch, "total").write_text(str(total))


def _saved_total(scratch: str) -> int | None:
    path = Path(scratch, "total")
    return int(path.read_text()) if path.exists() else None


def _result(p: dict[str, Any], t0: float, t2: float, c0: Any, total: int) -> dict[str, Any]:
    attempts = Path(p["scratch"], "attempts").stat().st_size
    if total != EXPECTED or attempts != 2:
        raise RuntimeError(f"fan-in got {total} (want {EXPECTED}), {attempts} attempts (want 2)")
    return {"run_s": t2 - t0, "branches": WIDTH, "attempts": attempts, **cpu_since(c0)}


# -- swath ----------------------------------------------------------------------------------------
_total: list[int] = []


class Branch(Task):
    i: int
    scratch: str

    async def execute(self, context: ExecutionContext) -> None:
        _attempt(self.scratch, self.i)
        await context.job_cache.group("out").put(str(self.i), str(self.i).encode())


class FanIn(Task):
    async def execute(self, context: ExecutionContext) -> None:
        group = context.job_cache.group("out")
        _total.append(sum([int(await group.get(k)) async for k in group]))


class Root(Task):
    scratch: str

    async def execute(self, context: ExecutionContext) -> None:
        branches = context.submit_subtasks(
            [Branch(i, self.scratch) for i in range(WIDTH)], max_retries=1
        )
        context.submit_subtask(FanIn(), depends_on=branches)


async def swath(p: dict[str, Any]) -> dict[str, Any]:
    from swath import InMemoryCache

    async with Client(f"sqlite:///{p['scratch']}/swath.db") as client:
        # swath waits retry_delay (1 s by default, doubling) before a retry; the peers retry at
        # once by default, which the tuned run matches
        delay = {"retry_delay": 0.0} if p["variant"] == "tuned" else {}
        runner = client.runner([Root, Branch, FanIn], InMemoryCache(), **delay)
        c0 = cpu_now()
        t0 = time.perf_counter()
        job = await client.jobs().submit("w4", Root(p["scratch"]))
        await runner.run_all()
        t2 = time.perf_counter()
        state = (await client.jobs().find(job.id)).state.value
    if state != "COMPLETED":
        raise RuntimeError(f"job ended {state}")
    return _result(p, t0, t2, c0, _total[0])


# -- Dask -----------------------------------------------------------------------------------------
def _root() -> int:
    return 0


def _branch(i: int, root: int, scratch: str) -> int:
    _attempt(scratch, i)
    return i + root


def _fan_in(values: list[int]) -> int:
    return sum(values)


def dask(p: dict[str, Any]) -> dict[str, Any]:
    from distributed import Client as DaskClient
    from distributed import LocalCluster

    with (
        LocalCluster(processes=p["processes"], dashboard_address=None) as cluster,
        DaskClient(cluster) as client,
    ):
        c0 = cpu_now()
        t0 = time.perf_counter()
        root = client.submit(_root, pure=False)
        branches = client.map(_branch, range(WIDTH), root=root, scratch=p["scratch"],
                              retries=1, pure=False)  # fmt: skip
        total = client.submit(_fan_in, branches).result()
        t2 = time.perf_counter()
    return _result(p, t0, t2, c0, total)


# -- Prefect --------------------------------------------------------------------------------------
def prefect(p: dict[str, Any]) -> dict[str, Any]:
    from prefect import flow, task

    out: dict[str, Any] = {}

    @task
    def root() -> int:
        return 0

    @task(retries=1)
    def branch(i: int, scratch: str) -> int:
        _attempt(scratch, i)
        return i

    @task
    def fan_in(values: list[int]) -> int:
        return sum(values)

    @flow
    def diamond() -> None:
        out["c0"] = cpu_now()
        out["t0"] = time.perf_counter()
        r = root.submit()
        branches = branch.map(range(WIDTH), scratch=p["scratch"], wait_for=[r])
        out["total"] = fan_in.submit(branches).result()
        out["t2"] = time.perf_counter()

    diamond()
    return _result(p, out["t0"], out["t2"], out["c0"], out["total"])


# -- arq ------------------------------------------------------------------------------------------
async def _arq_root(ctx: dict[str, Any], scratch: str) -> None:
    redis = ctx["redis"]
    jobs = [await redis.enqueue_job("_arq_branch", i, scratch) for i in range(WIDTH)]
    values = [await j.result(timeout=60, poll_delay=0.01) for j in jobs if j]
    await redis.enqueue_job("_arq_fan_in", values)


async def _arq_branch(ctx: dict[str, Any], i: int, scratch: str) -> int:
    from arq import Retry

    try:
        _attempt(scratch, i)
    except RuntimeError:
        raise Retry(defer=0) from None
    return i


async def _arq_fan_in(ctx: dict[str, Any], values: list[int]) -> None:
    _save_total(ctx["scratch"], sum(values))


async def arq(p: dict[str, Any]) -> dict[str, Any]:
    from arq import create_pool
    from arq.connections import RedisSettings
    from arq.worker import Worker

    redis = await create_pool(RedisSettings(port=int(os.environ["PEERS_REDIS_PORT"])))
    await redis.flushall()
    tuned = p["variant"] == "tuned"
    worker = Worker([_arq_root, _arq_branch, _arq_fan_in], redis_pool=redis, burst=True,
                    handle_signals=False, ctx={"scratch": p["scratch"]},
                    **({"max_jobs": 64, "poll_delay": 0.01} if tuned else {}))  # fmt: skip
    c0 = cpu_now()
    t0 = time.perf_counter()
    await redis.enqueue_job("_arq_root", p["scratch"])
    await worker.async_run()
    t2 = time.perf_counter()
    await worker.close()
    return _result(p, t0, t2, c0, _saved_total(p["scratch"]) or -1)


# -- Procrastinate --------------------------------------------------------------------------------
async def procrastinate(p: dict[str, Any]) -> dict[str, Any]:
    from benchmarks.peers._pg import fresh_database, procrastinate_app

    dsn = await fresh_database()
    app = procrastinate_app(dsn)
    scratch = p["scratch"]

    @app.task(name="root")
    async def root() -> None:
        await branch.batch_defer_async(*({"i": i} for i in range(WIDTH)))

    @app.task(name="branch", retry=1)
    async def branch(i: int) -> None:
        _attempt(scratch, i)
        row = await app.connector.execute_query_one_async(
            "UPDATE diamond SET done = done + 1, total = total + %(i)s RETURNING done, total", i=i
        )
        if row["done"] == WIDTH:
            await fan_in.defer_async(total=row["total"])

    @app.task(name="fan_in")
    async def fan_in(total: int) -> None:
        _save_total(scratch, total)

    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        await app.connector.execute_query_async(
            "CREATE TABLE diamond (done int, total int); INSERT INTO diamond VALUES (0, 0)"
        )
        c0 = cpu_now()
        t0 = time.perf_counter()
        await root.defer_async()
        concurrency = 64 if p["variant"] == "tuned" else 1
        while _saved_total(scratch) is None:  # a burst, then look again
            await app.run_worker_async(concurrency=concurrency, wait=False,
                                       install_signal_handlers=False)  # fmt: skip
            await asyncio.sleep(0)
        t2 = time.perf_counter()
    return _result(p, t0, t2, c0, _saved_total(scratch) or -1)


def plan(smoke: bool) -> list[Any]:
    from benchmarks.peers._harness import Case

    def case(system: str, fn: str, variant: str = "default", **extra: Any) -> Case:
        services = {"arq": ("redis",), "procrastinate": ("postgres",), "prefect": ("prefect",)}
        return Case("W4", system, variant, f"1 + {WIDTH} + 1", "w4_dag", fn,
                    {"variant": variant, **extra}, 30.0 if smoke else 120.0,
                    services.get(fn, ()), x=WIDTH + 2)  # fmt: skip

    if smoke:
        return [
            case("swath", "swath", "tuned"),
            case("arq", "arq", "tuned"),
        ]
    return [
        case("swath", "swath"),
        case("swath", "swath", "tuned"),
        case("Dask (threads)", "dask", processes=False),
        case("Dask (processes)", "dask", processes=True),
        case("Prefect", "prefect"),
        case("arq", "arq"),
        case("arq", "arq", "tuned"),
        case("Procrastinate", "procrastinate"),
        case("Procrastinate", "procrastinate", "tuned"),
    ]
