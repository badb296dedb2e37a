"""Dispatch throughput and wake-up latency of swath's PostgreSQL store, with Procrastinate (same
database server, same task count, its async worker with the same total concurrency) in the same
run.

    .venv/bin/python benchmarks/dispatch_postgres.py            # starts a throwaway cluster
    .venv/bin/python benchmarks/dispatch_postgres.py --dsn postgresql://...   # an existing server

Throughput: 10,000 no-op tasks, fanned out by one parent (swath) or batch-deferred
(Procrastinate), run by 1, 2 and 4 runner processes against one database; tasks/s from the
submission to the last completion (swath: the median of ``--repeat`` runs; Procrastinate, ten
times slower, runs once). The CPU seconds of the runner processes and of the PostgreSQL
server during that window are reported too, and their sum per task: unlike tasks/s, CPU per
task hardly depends on what else the (shared) machine is doing. Latency: submit-to-start of
one task with idle runner processes, woken by LISTEN/NOTIFY (median, p99). Each case gets a
fresh database. Prints a table and writes ``benchmarks/results/dispatch_postgres.json``. The
machine is shared: figures are noisy, compare within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402

from swath import Client, ExecutionContext, InMemoryCache, Task  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


# -- swath tasks ----------------------------------------------------------------------------------
class Noop(Task):
    async def execute(self, context: ExecutionContext) -> None:
        return None


class FanOut(Task):
    n: int

    async def execute(self, context: ExecutionContext) -> None:
        context.submit_subtasks([Noop() for _ in range(self.n)])


class Stamp(Task):
    """Records submit-to-start latency: ``submitted`` is the submitter's ``time.time()``."""

    submitted: float
    out: str

    async def execute(self, context: ExecutionContext) -> None:
        started = time.time()
        with open(self.out, "a") as f:  # noqa: ASYNC230 - a few bytes, once per sample
            f.write(f"{started - self.submitted}\n")


def _touch(path: str) -> None:
    Path(path).touch()


# -- worker processes -----------------------------------------------------------------------------
def worker_swath(dsn: str, concurrency: int, ready: str) -> None:
    async def main() -> None:
        async with Client(dsn) as client:
            runner = client.runner(
                [Noop, FanOut, Stamp],
                InMemoryCache(),
                max_concurrency=concurrency,
                handle_signals=True,
                grace=2.0,
            )
            _touch(ready)
            await runner.run_forever()

    asyncio.run(main())


def _procrastinate_app(dsn: str, out: str | None = None) -> Any:
    import logging

    import procrastinate

    # it warns that the app lives in __main__, which is deliberate here
    logging.getLogger("procrastinate").setLevel(logging.ERROR)

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))

    @app.task(name="noop")
    async def noop() -> None:
        return None

    @app.task(name="stamp")
    async def stamp(submitted: float, out: str) -> None:
        started = time.time()
        with open(out, "a") as f:  # noqa: ASYNC230
            f.write(f"{started - submitted}\n")

    return app


def worker_procrastinate(dsn: str, concurrency: int, ready: str) -> None:
    async def main() -> None:
        app = _procrastinate_app(dsn)
        async with app.open_async():
            _touch(ready)
            await app.run_worker_async(
                concurrency=concurrency, install_signal_handlers=True, delete_jobs="never"
            )

    asyncio.run(main())


class Workers:
    """Worker processes of one kind; output to a log file; stopped with SIGTERM."""

    def __init__(self, kind: str, dsn: str, processes: int, concurrency: int, tmp: Path) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        readies = [tmp / f"{kind}-{uuid.uuid4().hex[:8]}.ready" for _ in range(processes)]
        log = open(tmp / f"{kind}.log", "ab")  # noqa: SIM115
        for ready in readies:
            self.procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        "--worker",
                        kind,
                        "--concurrency",
                        str(concurrency),
                        "--ready",
                        str(ready),
                    ],
                    env={**os.environ, "SWATH_BENCH_DSN": dsn},
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        log.close()
        deadline = time.monotonic() + 60
        while not all(r.exists() for r in readies):
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                self.stop()
                raise RuntimeError(f"{kind} workers did not start; see {tmp / (kind + '.log')}")
            time.sleep(0.02)
        time.sleep(0.3)  # let them reach their idle wait (LISTEN in place)

    def cpu(self) -> float:
        return sum(_proc_cpu(p.pid) for p in self.procs)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a live process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _postgres_cpu(port: int | None) -> float:
    """CPU seconds of every live process of the PostgreSQL server (postmaster and backends)."""
    if port is None:
        return 0.0
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if b"postgres" in cmd.split(b"\0", 1)[0] or stat.split()[1] == "(postgres)":
            total += _proc_cpu(int(entry.name))
    return total


# -- cases ----------------------------------------------------------------------------------------
async def _fresh_database(admin_dsn: str) -> str:
    name = f"bench_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return admin_dsn.rsplit("/", 1)[0] + f"/{name}"


def _record(
    system: str, processes: int, concurrency: int, tasks: int, seconds: float,
    runner_cpu: float, postgres_cpu: float,
) -> dict[str, Any]:  # fmt: skip
    return {
        "system": system,
        "processes": processes,
        "concurrency": concurrency,
        "tasks": tasks,
        "seconds": seconds,
        "tasks_per_s": tasks / seconds,
        "runner_cpu_s": runner_cpu,
        "postgres_cpu_s": postgres_cpu,
    }


async def swath_throughput(
    admin_dsn: str, processes: int, concurrency: int, tasks: int, tmp: Path, port: int | None
) -> dict[str, Any]:
    dsn = await _fresh_database(admin_dsn)
    async with Client(dsn) as client:  # creates the schema before the workers start
        workers = Workers("swath", dsn, processes, concurrency, tmp)
        try:
            cpu0, pg0 = workers.cpu(), _postgres_cpu(port)
            t0 = time.perf_counter()
            job = await client.jobs().submit("bench", FanOut(tasks))
            finished = ("COMPLETED", "FAILED")
            jobs = client.jobs()
            while (await jobs.find(job.id, execution_stats=False)).state.value not in finished:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            seconds = time.perf_counter() - t0
            cpu1, pg1 = workers.cpu(), _postgres_cpu(port)
            state = (await client.jobs().find(job.id)).state.value
        finally:
            workers.stop()
    if state != "COMPLETED":
        raise RuntimeError(f"the swath benchmark job ended {state}")
    return _record("swath", processes, concurrency, tasks, seconds, cpu1 - cpu0, pg1 - pg0)


async def procrastinate_throughput(
    admin_dsn: str, processes: int, concurrency: int, tasks: int, tmp: Path, port: int | None
) -> dict[str, Any]:
    dsn = await _fresh_database(admin_dsn)
    app = _procrastinate_app(dsn)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        workers = Workers("procrastinate", dsn, processes, concurrency, tmp)
        conn = await asyncpg.connect(dsn)
        try:
            cpu0, pg0 = workers.cpu(), _postgres_cpu(port)
            t0 = time.perf_counter()
            await app.tasks["noop"].batch_defer_async(*({} for _ in range(tasks)))
            while True:
                done = await conn.fetchval(
                    "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
                )
                if done >= tasks:
                    break
                await asyncio.sleep(0.05)
            seconds = time.perf_counter() - t0
            cpu1, pg1 = workers.cpu(), _postgres_cpu(port)
        finally:
            await conn.close()
            workers.stop()
    return _record("procrastinate", processes, concurrency, tasks, seconds, cpu1 - cpu0, pg1 - pg0)


def _latency_summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {
        "samples": len(ordered),
        "median_ms": statistics.median(ordered) * 1000,
        "p99_ms": p99 * 1000,
        "max_ms": ordered[-1] * 1000,
    }


async def _collect(out: Path, count: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        with contextlib.suppress(FileNotFoundError):
            if len(out.read_text().split()) >= count:  # noqa: ASYNC240
                return
        if time.monotonic() > deadline:
            raise TimeoutError("a latency sample did not arrive within 10 s")
        await asyncio.sleep(0.001)


async def swath_latency(admin_dsn: str, samples: int, tmp: Path) -> dict[str, Any]:
    dsn = await _fresh_database(admin_dsn)
    out = tmp / f"swath-latency-{uuid.uuid4().hex[:6]}.txt"
    async with Client(dsn) as client:
        workers = Workers("swath", dsn, 1, 64, tmp)
        try:
            for i in range(samples):
                await asyncio.sleep(0.05)  # the runner is idle again
                await client.jobs().submit("lat", Stamp(time.time(), str(out)))
                await _collect(out, i + 1)
        finally:
            workers.stop()
    values = [float(x) for x in out.read_text().split()]
    return {"system": "swath", **_latency_summary(values)}


async def procrastinate_latency(admin_dsn: str, samples: int, tmp: Path) -> dict[str, Any]:
    dsn = await _fresh_database(admin_dsn)
    out = tmp / f"procrastinate-latency-{uuid.uuid4().hex[:6]}.txt"
    app = _procrastinate_app(dsn)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        workers = Workers("procrastinate", dsn, 1, 64, tmp)
        try:
            for i in range(samples):
                await asyncio.sleep(0.05)
                await app.tasks["stamp"].defer_async(submitted=time.time(), out=str(out))
                await _collect(out, i + 1)
        finally:
            workers.stop()
    values = [float(x) for x in out.read_text().split()]
    return {"system": "procrastinate", **_latency_summary(values)}


# -- main -----------------------------------------------------------------------------------------
@contextlib.contextmanager
def _server(dsn: str | None) -> Iterator[tuple[str, int | None]]:
    if dsn:
        yield dsn, None
        return
    from tests.services.postgres import running_cluster

    with running_cluster() as cluster:
        yield cluster.dsn(), cluster.port


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"throughput": [], "latency": []}
    with _server(args.dsn) as (admin_dsn, port), tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for processes in args.processes:
            total = args.concurrency * processes
            runs = [
                await swath_throughput(
                    admin_dsn, processes, args.concurrency, args.tasks, tmp, port
                )
                for _ in range(args.repeat)
            ]
            row = _median_run(runs)
            results["throughput"].append(row)
            _progress(row, total)
            if processes in args.procrastinate_processes:
                row = await procrastinate_throughput(
                    admin_dsn, processes, args.concurrency, args.tasks, tmp, port
                )
                results["throughput"].append(row)
                _progress(row, total)
        results["latency"].append(await swath_latency(admin_dsn, args.samples, tmp))
        if args.procrastinate_processes:
            results["latency"].append(await procrastinate_latency(admin_dsn, args.samples, tmp))
    return results


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median throughput, with every run's tasks/s attached."""
    ordered = sorted(runs, key=lambda r: r["tasks_per_s"])
    return {**ordered[len(ordered) // 2], "runs_tasks_per_s": [r["tasks_per_s"] for r in runs]}


def _progress(row: dict[str, Any], total: int) -> None:
    print(
        f"  {row['system']:<14} {row['processes']} proc x {row['concurrency']} "
        f"(total {total}): {row['tasks_per_s']:8.0f} tasks/s",
        file=sys.stderr,
        flush=True,
    )


def table(results: dict[str, Any]) -> str:
    lines = [
        f"{'system':<14} {'procs':>5} {'total conc':>10} {'tasks':>7} {'seconds':>8} "
        f"{'tasks/s':>9} {'vs procr.':>9} {'runner cpu':>10} {'pg cpu':>7} {'cpu/task':>9}"
    ]
    procr = {
        r["processes"]: r["tasks_per_s"]
        for r in results["throughput"]
        if r["system"] == "procrastinate"
    }
    for r in results["throughput"]:
        ratio = (
            f"{r['tasks_per_s'] / procr[r['processes']]:.1f}x"
            if r["system"] == "swath" and r["processes"] in procr
            else ""
        )
        lines.append(
            f"{r['system']:<14} {r['processes']:>5} {r['concurrency'] * r['processes']:>10} "
            f"{r['tasks']:>7} {r['seconds']:>8.2f} {r['tasks_per_s']:>9.0f} {ratio:>9} "
            f"{r['runner_cpu_s']:>9.1f}s {r['postgres_cpu_s']:>6.1f}s "
            f"{(r['runner_cpu_s'] + r['postgres_cpu_s']) / r['tasks'] * 1000:>6.2f} ms"
        )
    lines.append("")
    lines.append("submit-to-start latency, one idle runner process (LISTEN/NOTIFY):")
    lines.append(f"{'system':<14} {'samples':>7} {'median':>9} {'p99':>9} {'max':>9}")
    for r in results["latency"]:
        lines.append(
            f"{r['system']:<14} {r['samples']:>7} {r['median_ms']:>7.1f}ms "
            f"{r['p99_ms']:>7.1f}ms {r['max_ms']:>7.1f}ms"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", help="an existing server's admin DSN (default: a throwaway one)")
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument(
        "--procrastinate-processes",
        type=int,
        nargs="*",
        default=[1, 2, 4],
        help="process counts to run Procrastinate with (none: skip it)",
    )
    parser.add_argument("--concurrency", type=int, default=64, help="per runner process")
    parser.add_argument("--samples", type=int, default=200, help="latency samples")
    parser.add_argument(
        "--repeat", type=int, default=3, help="swath runs per case (the median is reported)"
    )
    parser.add_argument("--worker", choices=["swath", "procrastinate"], help=argparse.SUPPRESS)
    parser.add_argument("--ready", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        dsn = os.environ["SWATH_BENCH_DSN"]
        run = worker_swath if args.worker == "swath" else worker_procrastinate
        run(dsn, args.concurrency, args.ready)
        return

    results = asyncio.run(bench(args))
    text = table(results)
    print(text)
    import procrastinate

    payload = {
        "benchmark": "dispatch_postgres",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "procrastinate": getattr(procrastinate, "__version__", "?"),
        "args": {k: v for k, v in vars(args).items() if k not in ("worker", "ready", "dsn")},
        **results,
        "table": text,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "dispatch_postgres.json").write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
