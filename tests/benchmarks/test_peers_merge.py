"""``python -m benchmarks.peers --merge``: a later invocation's rows replace the earlier run's rows
of the same cases (and only those), and the table says which rows came from where."""

from __future__ import annotations

from typing import Any

from benchmarks.peers import _report
from benchmarks.peers.__main__ import _merged


def _row(workload: str, system: str, label: str, wall: float) -> dict[str, Any]:
    return {"workload": workload, "system": system, "variant": "tuned", "label": label,
            "status": "ok", "result": {"wall_s": wall}}  # fmt: skip


def test_merge_replaces_the_rows_of_the_cases_run_again_and_notes_it() -> None:
    """Rows of the same (workload, system, variant, size) are replaced in place; other rows are
    kept; a case the earlier run did not have is added; the note names the merged cases."""
    earlier = {
        "when": "t0",
        "total_s": 1000.0,
        "loadavg_at_start": [1.0, 1.0, 1.0],
        "rows": [
            _row("W2", "swath (GCS, fake-gcs)", "64 x 16 MiB", 25.0),
            _row("W2", "swath (local disk)", "64 x 16 MiB", 1.0),
            _row("W3", "swath (GCS, fake-gcs)", "2,048 MiB", 0.0),
        ],
    }
    now = {
        "when": "t1",
        "total_s": 100.0,
        "loadavg_at_start": [0.5, 0.5, 0.5],
        "rows": [
            _row("W2", "swath (GCS, fake-gcs)", "64 x 16 MiB", 12.0),
            _row("W2", "swath (GCS, fake-gcs)", "1024 x 16 MiB", 200.0),
            _row("W3", "swath (GCS, fake-gcs)", "2,048 MiB", 50.0),
        ],
    }
    merged = _merged(earlier, now)
    walls = {
        (r["workload"], r["system"], r["label"]): r["result"]["wall_s"] for r in merged["rows"]
    }
    assert walls == {
        ("W2", "swath (GCS, fake-gcs)", "64 x 16 MiB"): 12.0,
        ("W2", "swath (local disk)", "64 x 16 MiB"): 1.0,
        ("W2", "swath (GCS, fake-gcs)", "1024 x 16 MiB"): 200.0,
        ("W3", "swath (GCS, fake-gcs)", "2,048 MiB"): 50.0,
    }
    assert [r["workload"] for r in merged["rows"]] == ["W2", "W2", "W2", "W3"]
    assert merged["when"] == "t0"  # the run it merges into stays the run of record
    [note] = merged["merged_runs"]
    assert note["when"] == "t1"
    assert note["cases"] == ["W2 swath (GCS, fake-gcs)", "W3 swath (GCS, fake-gcs)"]
    footer = _report.markdown({**merged, "rows": [], "mode": "full"}).splitlines()[-1]
    assert "W2 swath (GCS, fake-gcs), W3 swath (GCS, fake-gcs)" in footer
    assert "`--merge`" in footer
