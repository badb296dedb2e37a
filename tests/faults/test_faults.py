"""The fault-injection suite in CI: 20 seeded trials on SQLite and 20 on PostgreSQL.

Each trial (``tests/faults/harness.py``) runs a job of a few hundred tasks under three runner
processes while it SIGKILLs, SIGSTOPs and SIGTERMs runners, fails store calls, restarts
PostgreSQL and lets tasks raise, all at points drawn from the seed, then checks the invariants of
``tests/faults/check.py``. A failing trial names its seed and prints the command that replays it
(``python -m tests.faults --store ... --seed ... --trial ...``); the long run is
``python -m tests.faults --trials 500 --store sqlite|postgres``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.faults.harness import TrialResult, draw, run_trial, server_log
from tests.services.postgres import PostgresCluster

SEED = 1
TRIALS = 20

pytestmark = pytest.mark.slow


def judge(run: Callable[[int], TrialResult]) -> None:
    """Fail on a violation that happens again when the trial is run once more. On a shared
    2-core machine a runner can be starved of CPU for longer than the trials' 1.5 s lease, which
    one run cannot tell from a bug; a violation that repeats is not that. A violation that does
    not repeat is reported as a warning in the test summary (and the long runs,
    ``python -m tests.faults``, count every one)."""
    first = run(1)
    if first.ok:
        return
    second = run(2)
    if not second.ok:
        pytest.fail(first.report() + "\n-- run again --\n" + second.report(), pytrace=False)
    warnings.warn(f"violated once, not when run again:\n{first.report()[:3000]}", stacklevel=1)


@pytest.mark.parametrize("trial", range(TRIALS), ids=lambda t: f"seed{SEED}-trial{t}")
def test_sqlite_trial(trial: int, tmp_path: Path) -> None:
    """One seeded trial on a SQLite file shared by the runner processes: the job ends as the
    rules say, every task ran (more than once only after a kill or a stop of its runner), never
    twice at once, every cache value is whole, nothing is left RUNNING."""
    spec = draw("sqlite", SEED, trial)

    def run(n: int) -> TrialResult:
        where = tmp_path / f"run{n}"
        where.mkdir()
        return run_trial(spec, where, f"sqlite:///{(where / 'jobs.db').resolve()}")

    judge(run)


@pytest.mark.parametrize("trial", range(TRIALS), ids=lambda t: f"seed{SEED}-trial{t}")
def test_postgres_trial(trial: int, tmp_path: Path, postgres_cluster: PostgresCluster) -> None:
    """One seeded trial on a fresh PostgreSQL database, with server restarts among the faults:
    the same invariants as on SQLite."""
    spec = draw("postgres", SEED, trial)

    def run(n: int) -> TrialResult:
        where = tmp_path / f"run{n}"
        where.mkdir()
        name = postgres_cluster.create_database()
        try:
            with server_log(postgres_cluster.log, where / "postgres.log"):
                return run_trial(
                    spec, where, postgres_cluster.dsn(name), restart=postgres_cluster.restart
                )
        finally:
            postgres_cluster.drop_database(name)

    judge(run)
