"""The fault-injection suite (docs/reliability.md).

- ``plan.py``: the job of a trial, drawn from its seed, and what the rules say must become of it;
- ``tasks.py``: the task classes that play the plan's nodes and record every execution;
- ``records.py``: the per-process, append-only record files, and reading them back;
- ``faultstore.py``: a job store wrapper that fails chosen store calls (and records them);
- ``worker.py``: one runner process (``python -m tests.faults.worker``);
- ``harness.py``: one trial: runner processes, faults at seeded points, then the checks;
- ``check.py``: the invariants, each violation one line;
- ``__main__.py``: ``python -m tests.faults --trials 500 --store sqlite|postgres [--seed S]``;
- ``test_faults.py``: 20 seeded trials per store in CI.
"""
