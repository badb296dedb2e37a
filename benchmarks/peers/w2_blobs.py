"""W2 shared blobs: N producer tasks each write a 16 MiB blob into the job's shared storage; one
consumer reads them all, in order, and checks a CRC32C over every byte. Each system its own way:

- swath: producers ``put_stream`` into the job cache (memory, local disk, S3 on rclone, GCS on
  fake-gcs-server), the consumer depends on them and ``stream``s every blob back.
- Dask: producers return the bytes; the consumer is submitted with the list of futures.
- Prefect: producers return the bytes with ``persist_result=True`` (local result storage); the
  consumer is submitted with the list of futures.
- arq: producers return the bytes (stored in redis); the consumer job reads every producer's
  result with ``Job(...).result()``.
- Procrastinate: producers insert the bytes into a table of the PostgreSQL database; the consumer
  job reads them back row by row (Procrastinate has no dependencies: it is deferred once the
  producers' burst is over).
- Tilebox Workflows' cache classes: ``cache.group("blobs")[str(i)] = blob``, then
  ``cache.group("blobs")[str(i)]``; 8 threads stand for 8 Tilebox task runners (its runner runs
  one task at a time), on InMemoryCache, LocalFileSystemCache and S3 (ObstoreCache on S3Store).

Every system runs 8 producers at a time.
"""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from benchmarks.peers import _blobs
from benchmarks.peers._measure import cpu_now, cpu_since
from swath import Client, ExecutionContext, Task

CONCURRENCY = 8
_marks: dict[str, float] = {}


def _result(
    p: dict[str, Any], t0: float, t1: float, t2: float, c0: Any, digest: int
) -> dict[str, Any]:
    if digest != p["expected"]:
        raise RuntimeError(f"digest mismatch: {digest:#x} != {p['expected']:#x}")
    total = p["n"] * p["mib"] * (1 << 20)
    return {
        "blobs": p["n"],
        "bytes": total,
        "write_s": t1 - t0,
        "read_s": t2 - t1,
        "run_s": t2 - t0,
        "mb_per_s": 2 * total / (t2 - t0) / 1e6,  # written once and read once
        "digest_ok": True,
        **cpu_since(c0),
    }


# -- swath ----------------------------------------------------------------------------------------
class Produce(Task):
    i: int
    mib: int

    async def execute(self, context: ExecutionContext) -> None:
        await context.job_cache.group("blobs").put_stream(
            str(self.i), _blobs.chunks(self.i, self.mib)
        )


class Consume(Task):
    n: int

    async def execute(self, context: ExecutionContext) -> None:
        _marks["read_start"] = time.perf_counter()
        group = context.job_cache.group("blobs")
        crc = 0
        for i in range(self.n):
            async for data in group.stream(str(i), chunk_size=8 << 20):
                crc = _blobs.update(crc, data)
        _marks["digest"] = crc


class Root(Task):
    n: int
    mib: int

    async def execute(self, context: ExecutionContext) -> None:
        producers = context.submit_subtasks([Produce(i, self.mib) for i in range(self.n)])
        context.submit_subtask(Consume(self.n), depends_on=producers)


async def swath(p: dict[str, Any]) -> dict[str, Any]:
    cache: Any = _blobs.swath_cache(p["backend"], p["scratch"])
    async with Client(f"sqlite:///{p['scratch']}/swath.db") as client, cache:
        runner = client.runner([Root, Produce, Consume], cache, max_concurrency=CONCURRENCY)
        c0 = cpu_now()
        t0 = time.perf_counter()
        job = await client.jobs().submit("w2", Root(p["n"], p["mib"]))
        await runner.run_all()
        t2 = time.perf_counter()
        state = (await client.jobs().find(job.id)).state.value
    if state != "COMPLETED":
        raise RuntimeError(f"job ended {state}")
    return _result(p, t0, _marks["read_start"], t2, c0, int(_marks["digest"]))


# -- Dask -----------------------------------------------------------------------------------------
def _produce(i: int, mib: int) -> bytes:
    return _blobs.blob(i, mib)


def _consume(blobs: list[bytes]) -> tuple[float, int]:
    start = time.perf_counter()
    crc = 0
    for b in blobs:
        crc = _blobs.update(crc, b)
    return start, crc


def dask(p: dict[str, Any]) -> dict[str, Any]:
    from distributed import Client as DaskClient
    from distributed import LocalCluster, wait

    workers = 2 if p["processes"] else 1
    with (
        LocalCluster(processes=p["processes"], n_workers=workers, dashboard_address=None,
                     threads_per_worker=CONCURRENCY // workers) as cluster,
        DaskClient(cluster) as client,
    ):  # fmt: skip
        c0 = cpu_now()
        t0 = time.perf_counter()
        futures = client.map(_produce, range(p["n"]), mib=p["mib"], pure=False)
        wait(futures)
        t1 = time.perf_counter()
        _, crc = client.submit(_consume, futures).result()
        t2 = time.perf_counter()
    return _result(p, t0, t1, t2, c0, crc)


# -- Prefect --------------------------------------------------------------------------------------
def prefect(p: dict[str, Any]) -> dict[str, Any]:
    from prefect import flow, task
    from prefect.task_runners import ThreadPoolTaskRunner

    out: dict[str, Any] = {}

    @task(persist_result=True)
    def produce(i: int, mib: int) -> bytes:
        return _blobs.blob(i, mib)

    @task
    def consume(blobs: list[bytes]) -> int:
        crc = 0
        for b in blobs:
            crc = _blobs.update(crc, b)
        return crc

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=CONCURRENCY))
    def shared_blobs() -> None:
        out["c0"] = cpu_now()
        out["t0"] = time.perf_counter()
        futures = produce.map(range(p["n"]), mib=p["mib"])
        futures.wait()
        out["t1"] = time.perf_counter()
        out["crc"] = consume.submit(futures).result()
        out["t2"] = time.perf_counter()

    shared_blobs()
    return _result(p, out["t0"], out["t1"], out["t2"], out["c0"], out["crc"])


# -- arq ------------------------------------------------------------------------------------------
async def _arq_produce(ctx: dict[str, Any], i: int, mib: int) -> bytes:
    return await asyncio.to_thread(_blobs.blob, i, mib)


async def _arq_consume(ctx: dict[str, Any], job_ids: list[str]) -> int:
    from arq.jobs import Job

    crc = 0
    for job_id in job_ids:
        data = await Job(job_id, ctx["redis"]).result(timeout=60)
        crc = _blobs.update(crc, data)
    return crc


async def arq(p: dict[str, Any]) -> dict[str, Any]:
    from arq import create_pool
    from arq.connections import RedisSettings
    from arq.worker import Worker

    redis = await create_pool(RedisSettings(port=int(os.environ["PEERS_REDIS_PORT"])))
    await redis.flushall()

    def worker() -> Worker:
        return Worker([_arq_produce, _arq_consume], redis_pool=redis, burst=True,
                      handle_signals=False, max_jobs=CONCURRENCY, poll_delay=0.01,
                      log_results=False)  # fmt: skip

    c0 = cpu_now()
    t0 = time.perf_counter()
    jobs = [await redis.enqueue_job("_arq_produce", i, p["mib"]) for i in range(p["n"])]
    await worker().async_run()
    t1 = time.perf_counter()
    consumer = await redis.enqueue_job("_arq_consume", [j.job_id for j in jobs if j])
    await worker().async_run()
    crc = await consumer.result(timeout=60) if consumer else -1
    t2 = time.perf_counter()
    return _result(p, t0, t1, t2, c0, crc)


# -- Procrastinate --------------------------------------------------------------------------------
async def procrastinate(p: dict[str, Any]) -> dict[str, Any]:
    from benchmarks.peers._pg import fresh_database, procrastinate_app

    dsn = await fresh_database()
    app = procrastinate_app(dsn)
    out: dict[str, int] = {}

    @app.task(name="produce")
    async def produce(i: int, mib: int) -> None:
        data = await asyncio.to_thread(_blobs.blob, i, mib)
        await app.connector.execute_query_async(
            "INSERT INTO blobs (i, data) VALUES (%(i)s, %(data)s)", i=i, data=data
        )

    @app.task(name="consume")
    async def consume(n: int) -> None:
        crc = 0
        for i in range(n):
            row = await app.connector.execute_query_one_async(
                "SELECT data FROM blobs WHERE i = %(i)s", i=i
            )
            crc = _blobs.update(crc, row["data"])
        out["crc"] = crc

    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        await app.connector.execute_query_async(
            "CREATE TABLE blobs (i int PRIMARY KEY, data bytea)"
        )
        c0 = cpu_now()
        t0 = time.perf_counter()
        await produce.batch_defer_async(*({"i": i, "mib": p["mib"]} for i in range(p["n"])))
        await app.run_worker_async(
            concurrency=CONCURRENCY, wait=False, install_signal_handlers=False
        )
        t1 = time.perf_counter()
        await consume.defer_async(n=p["n"])
        await app.run_worker_async(concurrency=1, wait=False, install_signal_handlers=False)
        t2 = time.perf_counter()
    return _result(p, t0, t1, t2, c0, out.get("crc", -1))


# -- Tilebox's cache classes ----------------------------------------------------------------------
def tilebox(p: dict[str, Any]) -> dict[str, Any]:
    cache: Any = _blobs.tilebox_cache(p["backend"], p["scratch"])
    group = cache.group("blobs")

    def produce(i: int) -> None:
        group[str(i)] = _blobs.blob(i, p["mib"])

    c0 = cpu_now()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        list(pool.map(produce, range(p["n"])))
    t1 = time.perf_counter()
    crc = 0
    for i in range(p["n"]):
        crc = _blobs.update(crc, group[str(i)])
    t2 = time.perf_counter()
    return _result(p, t0, t1, t2, c0, crc)


# -- the plan -------------------------------------------------------------------------------------
def plan(smoke: bool) -> list[Any]:
    from benchmarks.peers._harness import Case

    mib = 1 if smoke else 16

    def case(system: str, fn: str, n: int, **extra: Any) -> Case:
        services = {"arq": ("redis",), "procrastinate": ("postgres",), "prefect": ("prefect",)}
        backend = extra.get("backend")
        svc = services.get(fn, ()) + ((backend,) if backend in ("s3", "gcs") else ())
        params = {"n": n, "mib": mib, "expected": _blobs.expected_digest(n, mib), **extra}
        total = n * mib << 20
        label = f"{n} x {mib} MiB"
        timeout = 30.0 if smoke else 60.0 if n <= 64 else 90.0 if n <= 256 else 240.0
        return Case("W2", system, "tuned", label, "w2_blobs", fn, params, timeout, svc,
                    x=total, last=n > 256)  # fmt: skip

    def systems(n: int) -> list[Case]:
        return [
            case("swath (memory)", "swath", n, backend="memory"),
            case("swath (local disk)", "swath", n, backend="local"),
            case("swath (S3, rclone)", "swath", n, backend="s3"),
            case("swath (GCS, fake-gcs)", "swath", n, backend="gcs"),
            case("Dask (threads)", "dask", n, processes=False),
            case("Dask (processes)", "dask", n, processes=True),
            case("Prefect", "prefect", n),
            case("arq", "arq", n),
            case("Procrastinate", "procrastinate", n),
            case("Tilebox cache (memory)", "tilebox", n, backend="memory"),
            case("Tilebox cache (local disk)", "tilebox", n, backend="local"),
            case("Tilebox cache (S3, rclone)", "tilebox", n, backend="s3"),
        ]

    if smoke:
        # not Prefect (its server alone starts in 20-40 s), GCS, Dask's processes, two Tilebox
        # caches: the smoke run must stay under a minute
        left_out = (
            "Prefect",
            "Dask (processes)",
            "swath (GCS",
            "Tilebox cache (local",
            "Tilebox cache (S3",
        )
        return [c for c in systems(4) if not c.system.startswith(left_out)]
    # Dask's processes move every blob between processes like its threads do not, at 1 GiB only.
    # 1,024 blobs (16 GiB written and read) only for the systems whose memory does not hold the
    # data (local disk): every other one keeps the 16 GiB in a process or an emulator, on a
    # machine of 23.5 GiB; they run after W3 (``last``), so that the time budget cuts them first.
    at_1024 = ("swath (local disk)", "Tilebox cache (local disk)")
    return (
        systems(64)
        + [c for c in systems(256) if c.system != "Dask (processes)"]
        + [c for c in systems(1024) if c.system in at_1024]
    )
