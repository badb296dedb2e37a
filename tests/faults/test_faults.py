"""The fault-injection suite in CI: 20 seeded trials on SQLite and 20 on PostgreSQL.

Each trial (``tests/faults/harness.py``) runs a job of a few hundred tasks under three runner
processes while it SIGKILLs, SIGSTOPs and SIGTERMs runners, fails store calls, restarts
PostgreSQL and lets tasks raise, all at points drawn from the seed, then checks the invariants of
``tests/faults/check.py``. A failing trial names its seed and prints the command that replays it
(``python -m tests.faults --store ... --seed ... --trial ...``); the long run is
``python -m tests.faults --trials 500 --store sqlite|postgres``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.harness import draw, run_trial, server_log
from tests.services.postgres import PostgresCluster

SEED = 1
TRIALS = 20

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("trial", range(TRIALS), ids=lambda t: f"seed{SEED}-trial{t}")
def test_sqlite_trial(trial: int, tmp_path: Path) -> None:
    """One seeded trial on a SQLite file shared by the runner processes: the job ends as the
    rules say, every task ran (more than once only after a kill or a stop of its runner), never
    twice at once, every cache value is whole, nothing is left RUNNING."""
    spec = draw("sqlite", SEED, trial)
    result = run_trial(spec, tmp_path, f"sqlite:///{(tmp_path / 'jobs.db').resolve()}")
    if not result.ok:
        pytest.fail(result.report(), pytrace=False)


@pytest.mark.parametrize("trial", range(TRIALS), ids=lambda t: f"seed{SEED}-trial{t}")
def test_postgres_trial(trial: int, tmp_path: Path, postgres_cluster: PostgresCluster) -> None:
    """One seeded trial on a fresh PostgreSQL database, with server restarts among the faults:
    the same invariants as on SQLite."""
    spec = draw("postgres", SEED, trial)
    name = postgres_cluster.create_database()
    try:
        with server_log(postgres_cluster.log, tmp_path / "postgres.log"):
            result = run_trial(
                spec, tmp_path, postgres_cluster.dsn(name), restart=postgres_cluster.restart
            )
    finally:
        postgres_cluster.drop_database(name)
    if not result.ok:
        pytest.fail(result.report(), pytrace=False)
