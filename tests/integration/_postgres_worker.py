"""A runner process for the PostgreSQL multi-process tests (and the tasks they submit).

``python -m tests.integration._postgres_worker --cache DIR --log FILE [--cluster C] ...`` with
``SWATH_DATABASE_URL`` in the environment (never a password on a command line). The runner runs
until no runnable work remains (``--forever``: until SIGTERM). Every execution of a task appends
one line ``<pid> <task name> <key> <task id> <cluster>`` to ``--log`` with a single unbuffered
``write`` before the task does anything else, so the log survives SIGKILL and counts executions,
not completions.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from swath import Client, ExecutionContext, LocalFileSystemCache, Task

_LOG_FD: int | None = None


def record(context: ExecutionContext, name: str, key: str) -> None:
    """Append this execution to the process's log (one atomic O_APPEND write)."""
    if _LOG_FD is not None:
        task = context.current_task
        line = f"{os.getpid()} {name} {key} {task.id} {task.cluster}\n"
        os.write(_LOG_FD, line.encode())


class Spread(Task):
    """Fans keys ``[start, stop)`` out: into ``Spread`` subtasks of at most ``chunk`` keys, or,
    for a range of at most ``chunk`` keys, into one ``Put`` per key. ``put_cluster`` sends the
    ``Put`` tasks to another cluster."""

    start: int
    stop: int
    chunk: int = 1000
    sleep: float = 0.0
    put_cluster: str | None = None

    async def execute(self, context: ExecutionContext) -> None:
        record(context, "Spread", f"{self.start}-{self.stop}")
        size = self.stop - self.start
        if size <= self.chunk:
            context.submit_subtasks(
                [Put(i, self.sleep) for i in range(self.start, self.stop)],
                cluster=self.put_cluster,
            )
            return
        step = max(self.chunk, -(-size // self.chunk))
        context.submit_subtasks(
            [
                Spread(lo, min(lo + step, self.stop), self.chunk, self.sleep, self.put_cluster)
                for lo in range(self.start, self.stop, step)
            ]
        )


class Put(Task):
    """Writes its own key ``k<i>`` into the job cache (after ``sleep`` seconds)."""

    i: int
    sleep: float = 0.0

    async def execute(self, context: ExecutionContext) -> None:
        record(context, "Put", f"k{self.i}")
        if self.sleep:
            await asyncio.sleep(self.sleep)
        await context.job_cache.put(f"k{self.i}", str(self.i).encode())


async def main() -> None:
    global _LOG_FD
    parser = argparse.ArgumentParser()
    parser.add_argument("--cache", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--cluster", default="default")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--lease", type=float, default=30.0)
    parser.add_argument("--forever", action="store_true")
    parser.add_argument("--ready", help="a file to create once the runner is about to run")
    parser.add_argument("--go", help="wait for this file to exist before running")
    args = parser.parse_args()
    _LOG_FD = os.open(args.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    async with Client() as client:  # SWATH_DATABASE_URL
        runner = client.runner(
            [Spread, Put],
            LocalFileSystemCache(args.cache),
            cluster=args.cluster,
            max_concurrency=args.concurrency,
            lease=args.lease,
            handle_signals=True,
            grace=5.0,
        )
        if args.go:
            while not os.path.exists(args.go):  # noqa: ASYNC110, ASYNC240 - another process's file
                await asyncio.sleep(0.005)
        if args.ready:
            os.close(os.open(args.ready, os.O_CREAT | os.O_WRONLY, 0o644))
        if args.forever:
            await runner.run_forever()
        else:
            await runner.run_all()
    print(f"runner {os.getpid()} done: {runner.stats}", file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main())


# -- for the tests: start runner processes, read their logs ---------------------------------------
ROOT = Path(__file__).resolve().parents[2]


class Execution:
    """One line of a runner's execution log."""

    __slots__ = ("cluster", "key", "name", "pid", "task_id")

    def __init__(self, line: str) -> None:
        pid, self.name, self.key, self.task_id, self.cluster = line.split()
        self.pid = int(pid)


def spawn_runner(
    dsn: str,
    cache: Path,
    log: Path,
    *,
    cluster: str = "default",
    concurrency: int = 64,
    lease: float = 30.0,
    forever: bool = False,
    ready: Path | None = None,
    go: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start a runner process; its stdout and stderr go to ``<log>.out``."""
    argv = [
        sys.executable,
        "-m",
        "tests.integration._postgres_worker",
        "--cache",
        str(cache),
        "--log",
        str(log),
        "--cluster",
        cluster,
        "--concurrency",
        str(concurrency),
        "--lease",
        str(lease),
    ]
    if forever:
        argv.append("--forever")
    if ready is not None:
        argv += ["--ready", str(ready)]
    if go is not None:
        argv += ["--go", str(go)]
    env = {**os.environ, "SWATH_DATABASE_URL": dsn, "PYTHONPATH": str(ROOT)}
    with open(f"{log}.out", "ab") as out:
        return subprocess.Popen(
            argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )


def wait_all(procs: list[subprocess.Popen[bytes]], logs: list[Path], timeout: float) -> None:
    """Wait for every process to exit 0; on failure or timeout kill them and raise with their
    output."""
    deadline = time.monotonic() + timeout
    try:
        for proc in procs:
            proc.wait(max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    bad = [(p, log) for p, log in zip(procs, logs, strict=True) if p.returncode != 0]
    if bad:
        report = "\n".join(
            f"--- runner {p.pid} exit {p.returncode}:\n{_tail(Path(f'{log}.out'))}"
            for p, log in bad
        )
        raise AssertionError(f"runner processes failed or timed out:\n{report}")


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "(no output)"


def read_logs(logs: list[Path]) -> list[Execution]:
    executions = []
    for log in logs:
        if log.exists():
            executions += [Execution(line) for line in log.read_text().splitlines() if line]
    return executions
