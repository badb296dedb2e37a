"""The store's named queries (``store/sql/<dialect>/queries.sql``): no dead query, and each
dialect difference is visible (issue 12, section 4: the store layer reads as it runs)."""

from __future__ import annotations

import re
from pathlib import Path

from swath.store.machine import load_queries

SRC = Path(__file__).resolve().parents[2] / "src" / "swath" / "store"

#: what only one dialect has, and why
ONLY = {
    "sqlite": {"job_start", "parent_decrement", "parent_complete"},  # hooks PostgreSQL overrides
    "postgres": {
        "migration_lock",
        "claim_orphans_release",
        "parent_decrement_complete",
        "jobs_changed",  # the hook SQLJobStore._announce (SQLite: nothing to announce to)
    },
}


def used_names() -> set[str]:
    code = "\n".join(p.read_text() for p in SRC.glob("*.py"))
    return set(re.findall(r'"([a-z_]+)"', code))


def test_every_named_query_is_used() -> None:
    """Every query of each dialect is run by the Python code (a ``__bulk`` form by its base
    name): a query nothing runs is removed, not kept beside its replacement."""
    used = used_names()
    for dialect in ("sqlite", "postgres"):
        names = {n.removesuffix("__bulk") for n in load_queries(dialect)}
        assert names - used == set(), f"{dialect}: queries nothing runs"


def test_the_dialects_differ_only_where_a_hook_says_so() -> None:
    """Both dialects define the same queries, but for those named in ONLY: the named hooks
    (``SQLJobStore._start_jobs``, ``_count_off``, ``_announce``) and what only a server store
    needs."""
    sqlite = set(load_queries("sqlite"))
    postgres = {n for n in load_queries("postgres") if not n.endswith("__bulk")}
    assert sqlite - postgres == ONLY["sqlite"]
    assert postgres - sqlite == ONLY["postgres"]


def test_machine_reads_rows_by_column_name() -> None:
    """The state machine never reads a result row by position (``r[15]``)."""
    machine = (SRC / "machine.py").read_text()
    assert re.findall(r"\b(?:r|row|rows\[0\])\[\d+\]", machine) == []
