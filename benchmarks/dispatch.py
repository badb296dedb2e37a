"""Dispatch benchmarks of the workflow engine (issue 3), on the embedded SQLite file store.

Cases (each in its own process, so peak RSS is the runner process's own):
- ``noop``: N no-op async tasks fanned out by one parent, one runner process: tasks/s from
  submit to job COMPLETED (N = 10,000 and 100,000; time per task of the two compared); with
  ``--million``, 1,000,000 under 100 parents of 10,000 (``noop-tree``), for its peak RSS.
- ``sleep``: 200 async tasks that each await 0.5 s of simulated I/O, ``max_concurrency=256``.
- ``latency``: submit-to-start latency of one task with an idle runner in the same process.
- ``asyncio``: the floor: the same no-op and sleep work with bare ``asyncio`` tasks, no store.

Tilebox Workflows is the peer named by the issue, but its runner needs Tilebox's hosted service
(not reachable here); its runner executes one task at a time, so the 200 x 0.5 s case takes
200 x 0.5 = 100 s there, the figure the issue quotes. That figure is printed for reference, not
measured.

Usage: ``python benchmarks/dispatch.py [--repeat 3] [--quick] [--million]``; prints a table and
writes ``benchmarks/results/dispatch.json``. Figures are noisy on a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import peak_rss, run_case, write_json
from swath import Client, ExecutionContext, InMemoryCache, JobState, Task

CONCURRENCY = 1000


class Noop(Task):
    async def execute(self, context: ExecutionContext) -> None:
        pass


class FanOut(Task):
    n: int

    async def execute(self, context: ExecutionContext) -> None:
        context.submit_subtasks([Noop() for _ in range(self.n)])


class FanOutTree(Task):
    """The 1,000,000-task shape: a root fanning out ``parents`` FanOuts of ``n`` no-ops each."""

    parents: int
    n: int

    async def execute(self, context: ExecutionContext) -> None:
        context.submit_subtasks([FanOut(self.n) for _ in range(self.parents)])


class Sleep(Task):
    seconds: float

    async def execute(self, context: ExecutionContext) -> None:
        await asyncio.sleep(self.seconds)


class FanOutSleep(Task):
    n: int
    seconds: float

    async def execute(self, context: ExecutionContext) -> None:
        context.submit_subtasks([Sleep(self.seconds) for _ in range(self.n)])


class Stamps:
    """The runner context of the latency case: start times, and an event per start."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.event = asyncio.Event()


class Stamp(Task):
    async def execute(self, context: ExecutionContext) -> None:
        context.runner_context.times.append(time.perf_counter())
        context.runner_context.event.set()


TASKS: list[type[Task]] = [Noop, FanOut, FanOutTree, Sleep, FanOutSleep, Stamp]


def report(**values: Any) -> None:
    print(json.dumps(values), flush=True)


async def case_noop(n: int, concurrency: int, parents: int = 0) -> None:
    """``n`` no-ops under one FanOut; with ``parents``, under that many FanOuts of a root."""
    root: Task = FanOut(n) if not parents else FanOutTree(parents, n)
    tasks = n + 1 if not parents else parents * (n + 1) + 1
    with tempfile.TemporaryDirectory() as tmp:
        async with Client(f"sqlite:///{tmp}/jobs.db") as client:
            runner = client.runner(TASKS, InMemoryCache(), max_concurrency=concurrency)
            started, cpu_started = time.perf_counter(), time.process_time()
            job = await client.jobs().submit("noop", root)
            await runner.run_all()
            seconds = time.perf_counter() - started
            cpu = time.process_time() - cpu_started  # all threads: event loop + SQLite
            state = (await client.jobs().find(job.id)).state
            assert state == JobState.COMPLETED, state
    report(seconds=seconds, cpu_seconds=cpu, tasks=tasks, peak_rss_in_process=peak_rss())


async def case_sleep(n: int, seconds_each: float, concurrency: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with Client(f"sqlite:///{tmp}/jobs.db") as client:
            runner = client.runner(TASKS, InMemoryCache(), max_concurrency=concurrency)
            started = time.perf_counter()
            job = await client.jobs().submit("sleep", FanOutSleep(n, seconds_each))
            await runner.run_all()
            seconds = time.perf_counter() - started
            assert (await client.jobs().find(job.id)).state == JobState.COMPLETED
    report(seconds=seconds, tasks=n + 1)


async def case_latency(samples: int) -> None:
    stamps = Stamps()
    latencies = []
    with tempfile.TemporaryDirectory() as tmp:
        async with Client(f"sqlite:///{tmp}/jobs.db") as client:
            runner = client.runner(TASKS, InMemoryCache(), context=stamps)
            background = asyncio.create_task(runner.run_forever())
            await asyncio.sleep(0.3)
            for _ in range(samples):
                await asyncio.sleep(0.02)  # idle again: the runner waits on its wake-up signal
                stamps.event.clear()
                submitted = time.perf_counter()
                await client.jobs().submit("latency", Stamp())
                await asyncio.wait_for(stamps.event.wait(), 10)
                latencies.append(stamps.times[-1] - submitted)
            runner.stop()
            await background
    latencies.sort()
    report(
        seconds=statistics.median(latencies),
        median_ms=statistics.median(latencies) * 1e3,
        p99_ms=latencies[int(0.99 * (len(latencies) - 1))] * 1e3,
        max_ms=latencies[-1] * 1e3,
        samples=samples,
    )


async def case_asyncio_noop(n: int) -> None:
    async def noop() -> None:
        pass

    started = time.perf_counter()
    await asyncio.gather(*(noop() for _ in range(n)))
    report(seconds=time.perf_counter() - started, tasks=n)


async def case_asyncio_sleep(n: int, seconds_each: float) -> None:
    started = time.perf_counter()
    await asyncio.gather(*(asyncio.sleep(seconds_each) for _ in range(n)))
    report(seconds=time.perf_counter() - started, tasks=n)


CASES = {
    "noop": lambda a: case_noop(int(a[0]), int(a[1])),
    "noop-tree": lambda a: case_noop(int(a[1]), int(a[2]), parents=int(a[0])),
    "sleep": lambda a: case_sleep(int(a[0]), float(a[1]), int(a[2])),
    "latency": lambda a: case_latency(int(a[0])),
    "asyncio-noop": lambda a: case_asyncio_noop(int(a[0])),
    "asyncio-sleep": lambda a: case_asyncio_sleep(int(a[0]), float(a[1])),
}


def median_run(case: str, repeat: int, *args: str) -> dict[str, Any]:
    runs = sorted(
        (run_case(__file__, case, *args) for _ in range(repeat)), key=lambda r: r["seconds"]
    )
    result = dict(runs[len(runs) // 2])
    result["runs"] = [r["seconds"] for r in runs]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", choices=sorted(CASES))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="skip the 100,000-task run")
    parser.add_argument(
        "--million",
        action="store_true",
        help="also run 1,000,000 no-ops: a root fanning out 100 tasks of 10,000 each (minutes)",
    )
    args, rest = parser.parse_known_args()
    if args.case:
        asyncio.run(CASES[args.case](rest))
        return

    rows: list[dict[str, Any]] = []

    def row(name: str, result: dict[str, Any], value: str, target: str, note: str = "") -> None:
        rows.append({"case": name, "value": value, "target": target, "note": note, **result})
        print(
            f"{name:<46} {value:>22} {target:>22}  {result['peak_rss'] / 2**20:>6.0f} MiB  {note}"
        )

    print(f"{'case':<46} {'result':>22} {'target':>22}  {'RSS':>10}  note")
    print("-" * 120)
    small = median_run("noop", args.repeat, "10000", str(CONCURRENCY))
    rate_small = small["tasks"] / small["seconds"]
    row("10,000 no-op tasks, SQLite file", small, f"{rate_small:,.0f} tasks/s", ">= 10,000 tasks/s",
        f"{small['seconds']:.2f} s, max_concurrency={CONCURRENCY}; "
        f"{small['cpu_seconds'] / small['tasks'] * 1e6:.0f} µs CPU/task")  # fmt: skip
    floor = median_run("asyncio-noop", args.repeat, "10000")
    row("  floor: 10,000 bare asyncio no-op tasks", floor,
        f"{floor['tasks'] / floor['seconds']:,.0f} tasks/s", "", "no store, no runner")  # fmt: skip
    if not args.quick:
        big = median_run("noop", 1, "100000", str(CONCURRENCY))
        rate_big = big["tasks"] / big["seconds"]
        per_task_ratio = (big["seconds"] / big["tasks"]) / (small["seconds"] / small["tasks"])
        row("100,000 no-op tasks, SQLite file", big, f"{rate_big:,.0f} tasks/s",
            "time/task <= 1.5x",
            f"time/task {per_task_ratio:.2f}x of 10,000; RSS < 300 MiB; "
            f"{big['cpu_seconds'] / big['tasks'] * 1e6:.0f} µs CPU/task")  # fmt: skip
    if args.million:
        huge = median_run("noop-tree", 1, "100", "10000", str(CONCURRENCY))
        rate_huge = huge["tasks"] / huge["seconds"]
        row("1,000,000 no-op tasks (100 x 10,000), SQLite", huge, f"{rate_huge:,.0f} tasks/s",
            "RSS < 300 MiB",
            f"{huge['cpu_seconds'] / huge['tasks'] * 1e6:.0f} µs CPU/task")  # fmt: skip
    sleep = median_run("sleep", args.repeat, "200", "0.5", "256")
    row("200 tasks x 0.5 s I/O, max_concurrency=256", sleep, f"{sleep['seconds']:.2f} s wall",
        "< 1.5 s", "Tilebox runner: 100 s (one task at a time; not run here)")  # fmt: skip
    sleep_floor = median_run("asyncio-sleep", args.repeat, "200", "0.5")
    row("  floor: 200 x asyncio.sleep(0.5) gathered", sleep_floor,
        f"{sleep_floor['seconds']:.2f} s wall", "", "no store, no runner")  # fmt: skip
    latency = median_run("latency", 1, "200")
    row("submit-to-start latency, idle runner", latency,
        f"{latency['median_ms']:.2f} / {latency['p99_ms']:.2f} ms", "milliseconds",
        "median / p99 of 200, same process")  # fmt: skip
    write_json("dispatch", {"rows": rows, "concurrency": CONCURRENCY})


if __name__ == "__main__":
    main()
