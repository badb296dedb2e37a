"""W1 dispatch: one parent fans out N no-op tasks; submission and execution timed apart.

"Submission" ends when all N tasks are in the system (swath: the parent's fan-out committed,
i.e. the first no-op starts; Dask: ``client.map`` returned; Prefect: ``task.map`` returned; arq:
every ``enqueue_job`` returned; Procrastinate: ``batch_defer_async`` returned); "execution" is
the rest, until the last task completed. arq and Procrastinate run their worker in burst mode
after the submission (the worker leaves when the queue is empty), in the same process; swath's
runner, Dask's cluster and Prefect's task runner run while the parent submits.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from benchmarks.peers._measure import cpu_now, cpu_since
from swath import Client, ExecutionContext, Task

_first_start: list[float] = []


class Noop(Task):
    async def execute(self, context: ExecutionContext) -> None:
        if not _first_start:
            _first_start.append(time.perf_counter())


class FanOut(Task):
    n: int

    async def execute(self, context: ExecutionContext) -> None:
        context.submit_subtasks([Noop() for _ in range(self.n)])


def _result(n: int, t0: float, t1: float, t2: float, **extra: Any) -> dict[str, Any]:
    return {
        "tasks": n,
        "submit_s": t1 - t0,
        "exec_s": t2 - t1,
        "run_s": t2 - t0,
        "tasks_per_s": n / (t2 - t0),
        **extra,
    }


async def swath(p: dict[str, Any]) -> dict[str, Any]:
    from swath import InMemoryCache

    n = p["n"]
    db = Path(p["scratch"]) / "swath.db"
    async with Client(f"sqlite:///{db}") as client:
        runner = client.runner([FanOut, Noop], InMemoryCache(), max_concurrency=p["concurrency"])
        c0 = cpu_now()
        t0 = time.perf_counter()
        job = await client.jobs().submit("w1", FanOut(n))
        await runner.run_all()
        t2 = time.perf_counter()
        cpu = cpu_since(c0)
        state = (await client.jobs().find(job.id)).state.value
    if state != "COMPLETED":
        raise RuntimeError(f"job ended {state}")
    t1 = _first_start[0] if _first_start else t2
    return _result(n, t0, t1, t2, **cpu)


def _noop(i: int) -> None:
    return None


def dask(p: dict[str, Any]) -> dict[str, Any]:
    import dask as dask_
    from distributed import Client as DaskClient
    from distributed import LocalCluster, wait

    n = p["n"]
    if p["variant"] == "tuned":
        # queuing off: root tasks go to workers at once (the scheduler's per-task work is
        # what bounds a no-op fan-out)
        dask_.config.set({"distributed.scheduler.worker-saturation": "inf"})
        workers = 2 if p["processes"] else 1
        kwargs: dict[str, Any] = {
            "n_workers": workers,
            "threads_per_worker": p["concurrency"] // workers,
        }
    else:
        kwargs = {}
    with (
        LocalCluster(processes=p["processes"], dashboard_address=None, **kwargs) as cluster,
        DaskClient(cluster) as client,
    ):
        c0 = cpu_now()
        t0 = time.perf_counter()
        futures = client.map(_noop, range(n), pure=False)
        t1 = time.perf_counter()
        wait(futures)
        t2 = time.perf_counter()
        cpu = cpu_since(c0)
        errors = sum(f.status != "finished" for f in futures)
    if errors:
        raise RuntimeError(f"{errors} Dask tasks did not finish")
    return _result(n, t0, t1, t2, **cpu)


def prefect(p: dict[str, Any]) -> dict[str, Any]:
    from prefect import flow, task
    from prefect.task_runners import ThreadPoolTaskRunner

    n = p["n"]
    times: dict[str, float] = {}

    @task
    async def noop(i: int) -> None:
        return None

    runner = ThreadPoolTaskRunner(max_workers=p["concurrency"]) if p["variant"] == "tuned" else None

    @flow(task_runner=runner or ThreadPoolTaskRunner())
    def fan_out() -> None:
        times["c0"] = cpu_now()  # type: ignore[assignment]
        times["t0"] = time.perf_counter()
        futures = noop.map(range(n))
        times["t1"] = time.perf_counter()
        futures.wait()
        times["t2"] = time.perf_counter()
        times.update(cpu_since(times["c0"]))  # type: ignore[arg-type]

    fan_out()
    return _result(n, times["t0"], times["t1"], times["t2"], timed_cpu_s=times["timed_cpu_s"],
                   timed_service_cpu_s=times["timed_service_cpu_s"])  # fmt: skip


async def _arq_noop(ctx: dict[str, Any], i: int) -> None:
    return None


async def arq(p: dict[str, Any]) -> dict[str, Any]:
    from arq import create_pool
    from arq.connections import RedisSettings
    from arq.worker import Worker

    n = p["n"]
    settings = RedisSettings(port=int(os.environ["PEERS_REDIS_PORT"]))
    redis = await create_pool(settings)
    await redis.flushall()
    tuned = p["variant"] == "tuned"
    sem = asyncio.Semaphore(p["concurrency"])

    async def enqueue(i: int) -> None:
        async with sem:
            await redis.enqueue_job("_arq_noop", i)

    c0 = cpu_now()
    t0 = time.perf_counter()
    await asyncio.gather(*(enqueue(i) for i in range(n)))
    t1 = time.perf_counter()
    worker = Worker(
        [_arq_noop],
        redis_pool=redis,
        burst=True,
        handle_signals=False,
        max_jobs=p["concurrency"] if tuned else 10,
        poll_delay=0.01 if tuned else 0.5,
        keep_result=0 if tuned else 3600,
        log_results=not tuned,
    )
    await worker.async_run()
    t2 = time.perf_counter()
    cpu = cpu_since(c0)
    done, failed = worker.jobs_complete, worker.jobs_failed
    await worker.close()
    if done != n or failed:
        raise RuntimeError(f"arq ran {done} of {n} jobs, {failed} failed")
    return _result(n, t0, t1, t2, **cpu)


async def procrastinate(p: dict[str, Any]) -> dict[str, Any]:
    from benchmarks.peers._pg import fresh_database, procrastinate_app

    n = p["n"]
    dsn = await fresh_database()
    app = procrastinate_app(dsn)

    @app.task(name="noop")
    async def noop() -> None:
        return None

    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        c0 = cpu_now()
        t0 = time.perf_counter()
        await noop.batch_defer_async(*({} for _ in range(n)))
        t1 = time.perf_counter()
        await app.run_worker_async(
            concurrency=p["concurrency"] if p["variant"] == "tuned" else 1,
            wait=False,
            install_signal_handlers=False,
            delete_jobs="never",
        )
        t2 = time.perf_counter()
        cpu = cpu_since(c0)
        done = await app.connector.execute_query_one_async(
            "SELECT count(*) AS c FROM procrastinate_jobs WHERE status = 'succeeded'"
        )
    if done["c"] != n:
        raise RuntimeError(f"Procrastinate ran {done['c']} of {n} jobs")
    return _result(n, t0, t1, t2, **cpu)


CONCURRENCY = 64  # swath's default max_concurrency; every system gets the same total


def plan(smoke: bool) -> list[Any]:
    from benchmarks.peers._harness import Case

    def case(system: str, fn: str, n: int, variant: str = "tuned", **extra: Any) -> Case:
        services = {"arq": ("redis",), "procrastinate": ("postgres",), "prefect": ("prefect",)}
        timeout = 30.0 if smoke else (400.0 if n >= 1_000_000 else 45.0 if n >= 10_000 else 60.0)
        if fn == "prefect" and n == 1_000 and not smoke:
            timeout = 150.0  # 10-20 tasks/s here: give it its one point
        label = f"{n // 1000}k" if n >= 1000 and n < 1_000_000 else f"{n:,}"
        if n >= 1_000_000:
            label = f"{n // 1_000_000}M"
        return Case("W1", system, variant, label, "w1_dispatch", fn,
                    {"n": n, "concurrency": CONCURRENCY, "variant": variant} | extra,
                    timeout, services.get(fn, ()), x=n)  # fmt: skip

    if smoke:
        return [
            case("swath", "swath", 200),
            case("Dask (threads)", "dask", 200, processes=False),
            case("arq", "arq", 200),
            case("Procrastinate", "procrastinate", 200),
        ]
    out: list[Case] = []
    for n in (1_000, 10_000, 100_000):
        out += [
            case("swath", "swath", n),
            case("Dask (threads)", "dask", n, processes=False),
            case("Dask (processes)", "dask", n, processes=True),
            case("Prefect", "prefect", n),
            case("arq", "arq", n),
            case("Procrastinate", "procrastinate", n),
        ]
    out.append(case("swath", "swath", 1_000_000))
    # what the common limit of 64 costs swath: its dispatch benchmark runs 1,000 in flight
    for n in (10_000, 100_000):
        out.append(case("swath (1,000 in flight)", "swath", n, concurrency=1_000))
    for system, fn, extra in (
        ("Dask (threads)", "dask", {"processes": False}),
        ("Dask (processes)", "dask", {"processes": True}),
        ("Prefect", "prefect", {}),
        ("arq", "arq", {}),
        ("Procrastinate", "procrastinate", {}),
    ):
        # Prefect's default run at 100 tasks: at 10-20 tasks/s, 1,000 would cost two minutes more
        out.append(case(system, fn, 100 if fn == "prefect" else 1_000, "default", **extra))
    return out
