"""The peer benchmarks (``python -m benchmarks.peers``) in their smoke mode: tiny sizes, every
workload, swath against Dask, arq, Procrastinate and Tilebox's cache classes (Prefect is left
to the full run: its server alone takes 20-40 s to start here). Keeps the scripts from rotting:
the run must finish and leave sane JSON, a table and charts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_smoke_run_writes_json_table_and_charts(tmp_path: Path) -> None:
    """Every case of the smoke run completes (none errors or times out); every row has a
    positive wall time and CPU time and a peak RSS between 10 MiB and 4 GiB; W1 reports tasks/s
    with submission and execution timed apart; W2 and W3 checked their digests; W4 ran the
    failing branch exactly twice; W5's NDVI means agree between systems; the markdown table
    names every system and the five charts are PNG files."""
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.peers", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    payload = json.loads((tmp_path / "peers.json").read_text())
    rows = payload["rows"]
    assert payload["mode"] == "smoke"
    assert {r["workload"] for r in rows} == {"W1", "W2", "W3", "W4", "W5"}
    failed = [(r["workload"], r["system"], r["error"]) for r in rows if r["status"] != "ok"]
    assert not failed, failed
    systems = {r["system"] for r in rows}
    assert {"swath", "Dask (threads)", "arq", "Procrastinate"} <= systems
    assert any(s.startswith("Tilebox") for s in systems)
    for r in rows:
        assert r["wall_s"] > 0
        assert r["run_s" if "run_s" in r else "wall_s"] > 0
        assert r["timed_cpu_s"] >= 0
        assert 10 << 20 < r["peak_rss"] < 4 << 30, r
    for r in (r for r in rows if r["workload"] == "W1"):
        assert r["tasks_per_s"] > 0
        assert r["submit_s"] >= 0
        assert r["exec_s"] > 0
    assert all(r["digest_ok"] for r in rows if r["workload"] == "W2")
    assert all(r["read_mb_per_s"] > 0 for r in rows if r["workload"] == "W3")
    assert all(r["attempts"] == 2 for r in rows if r["workload"] == "W4")
    means = {round(r["mean"], 5) for r in rows if r["workload"] == "W5"}
    assert len(means) == 1, means
    assert payload["versions"]["swath"] != "not installed"
    assert payload["machine"]["memory_gib"] > 0

    table = (tmp_path / "peers.md").read_text()
    for system in systems:
        assert f"| {system} |" in table
    assert table in proc.stdout
    for chart in ("w1_dispatch", "w2_blobs", "w3_blob", "w4_dag", "w5_imagery"):
        data = (tmp_path / f"{chart}.png").read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        assert len(data) > 10_000
