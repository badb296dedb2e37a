"""``python -m tests.faults --trials 500 --store sqlite|postgres [--seed S] [--trial T]``

Runs seeded fault-injection trials (:mod:`tests.faults.harness`) and prints one line per trial,
the details and a replay command for each failing one, and a summary: trials, faults injected by
kind, re-executions by cause, violations. ``--trial T`` replays exactly one trial of the seed.
For PostgreSQL it starts its own throwaway cluster (``tests/services/postgres.py``), with one
fresh database per trial. Exit status 1 if any trial broke an invariant.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

from tests.faults.harness import Settings, TrialResult, draw, run_trial, server_log


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults", description=__doc__)
    parser.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--trials", type=int, default=20, help="how many trials (from --first)")
    parser.add_argument("--first", type=int, default=0, help="the first trial number")
    parser.add_argument("--trial", type=int, help="run only this trial (a replay)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the work directories")
    parser.add_argument("--work", type=Path, help="where to put them (default: a temp dir)")
    args = parser.parse_args(argv)
    trials = [args.trial] if args.trial is not None else range(args.first, args.first + args.trials)
    work = args.work or Path(tempfile.mkdtemp(prefix="swath-faults-"))
    results: list[TrialResult] = []
    began = time.monotonic()
    with _store(args.store) as (fresh, restart):
        for t in trials:
            spec = draw(args.store, args.seed, t)
            where = work / f"{args.store}-{args.seed}-{t}"
            where.mkdir(parents=True)
            with fresh(where) as url:
                result = run_trial(spec, where, url, Settings(), restart)
            results.append(result)
            print(result.report(), flush=True)
            if result.ok and not args.keep:
                shutil.rmtree(where, ignore_errors=True)
    print(summary(results, time.monotonic() - began))
    if args.keep or any(not r.ok for r in results):
        print(f"work directories: {work}")
    elif args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(r.ok for r in results) else 1


def summary(results: list[TrialResult], seconds: float) -> str:
    injected: Counter[str] = Counter()
    reruns: Counter[str] = Counter()
    states: Counter[str] = Counter()
    for r in results:
        injected.update(r.injected)
        reruns.update(r.reruns)
        states[r.job_state] += 1
    failed = [r for r in results if not r.ok]
    lines = [
        f"{len(results)} trials in {seconds:.0f} s, {len(failed)} with violations "
        f"({sum(len(r.violations) for r in results)} violations); "
        f"jobs: {dict(sorted(states.items()))}; "
        f"executions: {sum(r.executions for r in results)}",
        "faults injected: "
        + (", ".join(f"{k} {v}" for k, v in sorted(injected.items())) or "none"),
        "explained re-executions: "
        + (", ".join(f"{k} {v}" for k, v in sorted(reruns.items())) or "none")
        + f"; zombie overlaps after SIGCONT: {sum(r.zombies for r in results)}",
    ]
    lines += [f"failing: {r.spec.replay()}" for r in failed]
    return "\n".join(lines)


Fresh = Callable[[Path], AbstractContextManager[str]]
Restart = Callable[[float], None]


@contextlib.contextmanager
def _store(kind: str) -> Iterator[tuple[Fresh, Restart | None]]:
    """How to make a fresh, empty store for a trial (given its work directory; a context whose
    value is the store's URL), and how to restart its server (None for SQLite)."""
    if kind == "sqlite":

        @contextlib.contextmanager
        def sqlite_file(where: Path) -> Iterator[str]:
            yield f"sqlite:///{(where / 'jobs.db').resolve()}"

        yield sqlite_file, None
        return
    from tests.services.postgres import running_cluster

    with running_cluster() as cluster:
        # lock waits longer than deadlock_timeout (1 s) and deadlocks go to each trial's log
        cluster.psql("ALTER SYSTEM SET log_lock_waits = on")
        cluster.psql("SELECT pg_reload_conf()")

        @contextlib.contextmanager
        def database(where: Path) -> Iterator[str]:
            name = cluster.create_database()
            with server_log(cluster.log, where / "postgres.log"):
                try:
                    yield cluster.dsn(name)
                finally:
                    cluster.drop_database(name)

        yield database, cluster.restart


if __name__ == "__main__":
    sys.exit(main())
