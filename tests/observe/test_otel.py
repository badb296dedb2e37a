"""OpenTelemetry (issue 14, items 2 and 3): one connected trace per job across runner processes,
cache operations as child spans with byte counts, claims and commits as runner spans, metrics
(also served for Prometheus by ``swath runner --metrics-port``), and nothing of OpenTelemetry
imported where a process does not use it.

Every test runs OpenTelemetry in subprocesses: a tracer provider is set once per process, and the
rest of the suite must keep running without telemetry."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
WORKER = [sys.executable, "-m", "tests.observe.worker"]


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), **extra}


def spans(out: Path, name: str) -> list[dict[str, Any]]:
    lines = (out / f"{name}.spans.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_two_runner_processes_make_one_connected_trace(tmp_path: Path) -> None:
    """A job submitted under a span and run by two runner processes on one SQLite file is one
    trace: the root task's span is the child of the submitting span, each subtask's span the
    child of its parent task's span (across processes), cache operations are children of their
    task's span with byte counts, the retried reducer has a failed and a succeeded span with
    their retry counts; claims and commits are the runners' own spans; the counters add up.
    (Before: no spans at all.)"""
    url = f"sqlite:///{tmp_path}/jobs.db"
    n = 8
    submitted = subprocess.run(
        [*WORKER, "submit", url, str(n), str(tmp_path)],
        env=env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    runners = [
        subprocess.Popen(
            [*WORKER, "run", url, str(tmp_path / "cache"), name, str(tmp_path)],
            env=env(SWATH_TEST_RUNNERS="r1,r2"),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("r1", "r2")
    ]
    for p in runners:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err

    [submit] = spans(tmp_path, "submitter")
    runner_spans = spans(tmp_path, "r1") + spans(tmp_path, "r2")
    tasks = [s for s in runner_spans if s["name"].startswith("swath.task ")]
    by_name: dict[str, list[dict[str, Any]]] = {}
    for s in tasks:
        by_name.setdefault(s["attributes"]["swath.task.name"], []).append(s)
    assert {k: len(v) for k, v in by_name.items()} == {"Split": 1, "Leaf": n, "Reduce": 2}
    assert {s["trace_id"] for s in tasks} == {submit["trace_id"]}
    [split] = by_name["Split"]
    assert split["parent_id"] == submit["span_id"]
    assert split["attributes"]["swath.job.id"] == job_id
    assert all(s["parent_id"] == split["span_id"] for s in by_name["Leaf"] + by_name["Reduce"])
    # both runners executed tasks of the job
    assert {s["process"] for s in tasks} == {"r1", "r2"}
    reduces = sorted(by_name["Reduce"], key=lambda s: s["attributes"]["swath.task.retry_count"])
    assert [s["attributes"]["swath.task.outcome"] for s in reduces] == ["failure", "success"]
    assert [s["attributes"]["swath.task.retry_count"] for s in reduces] == [0, 1]
    assert reduces[0]["status"] == "ERROR"
    assert all(s["attributes"]["swath.task.outcome"] == "success" for s in by_name["Leaf"])

    # cache operations: children of their task's span, with byte counts
    task_ids = {s["span_id"]: s for s in tasks}
    cache = [s for s in runner_spans if s["name"].startswith("swath.cache ")]
    assert cache
    assert all(s["parent_id"] in task_ids for s in cache)
    assert all(s["trace_id"] == submit["trace_id"] for s in cache)
    puts = [
        s
        for s in cache
        if s["name"] == "swath.cache put"
        and task_ids[s["parent_id"]]["attributes"]["swath.task.name"] == "Leaf"
    ]
    assert len(puts) == n
    assert {s["attributes"]["swath.cache.bytes"] for s in puts} == {1000}
    streams = [s for s in cache if s["name"] == "swath.cache stream"]
    assert sum(s["attributes"]["swath.cache.bytes"] for s in streams) == 2 * n * 1000
    [write] = [s for s in cache if s["name"] == "swath.cache open_write"]
    assert write["attributes"]["swath.cache.bytes"] == len(str(n * 1000))

    # the runners' own spans: claims and commits, outside the job's trace
    for name in ("r1", "r2"):
        own = {s["name"] for s in spans(tmp_path, name)}
        assert {"swath.claim", "swath.commit"} <= own
    assert all(
        s["trace_id"] != submit["trace_id"]
        for s in runner_spans
        if s["name"] in ("swath.claim", "swath.commit")
    )

    # metrics of both runners together
    totals: dict[str, float] = {}
    for name in ("r1", "r2"):
        for metric, value in json.loads((tmp_path / f"{name}.metrics.json").read_text()).items():
            totals[metric] = totals.get(metric, 0) + value
    assert totals["swath.tasks.claimed"] == n + 3
    assert totals["swath.tasks.succeeded"] == n + 2
    assert totals["swath.tasks.failed"] == 1
    assert totals["swath.cache.in"] == 100 + n * 1000 + len(str(n * 1000))
    assert totals["swath.cache.out"] == n * 100 + 2 * n * 1000


NO_OTEL = """
import asyncio, sys
if sys.argv[1] == "blocked":
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "opentelemetry":
                raise ModuleNotFoundError(f"No module named {name!r}")
            return None
    sys.meta_path.insert(0, Block())
from swath import Client, InMemoryCache, JobState
from tests.observe.tasks import Leaf, Reduce, Split, SyncLeaf

async def main():
    async with Client(":memory:") as client:
        job = await client.jobs().submit("plain", [Split(3, 0.0), SyncLeaf()])
        await client.runner([Split, Leaf, Reduce, SyncLeaf], InMemoryCache(),
                            retry_delay=0.0).run_all()
        job = await client.jobs().find(job.id)
        assert job.state == JobState.COMPLETED, job.state
        assert await client.jobs().logs(job.id)

asyncio.run(main())
loaded = sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")
assert not loaded, loaded
assert "swath._otel" not in sys.modules
print("ok")
"""


@pytest.mark.parametrize("mode", ["blocked", "installed"])
def test_without_opentelemetry_nothing_of_it_is_imported(mode: str) -> None:
    """A process that does not use OpenTelemetry (``blocked``: not installed; ``installed``:
    installed but never imported) submits and runs a job with subtasks, a retry, a sync task,
    cache use and logs: it completes and no ``opentelemetry`` module (nor ``swath._otel``) is
    ever imported."""
    done = subprocess.run(
        [sys.executable, "-c", NO_OTEL, mode],
        env=env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text: str = response.read().decode()
        return text


def metric(text: str, name: str) -> float:
    """The sum of the samples of ``name`` (any labels) in Prometheus text."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name)] in " {":
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_runner_metrics_port_serves_prometheus_metrics(tmp_path: Path) -> None:
    """``swath runner --metrics-port`` serves the runner's metrics for Prometheus: after a job
    of 4 executions (one failed) the scrape shows tasks claimed, succeeded, failed, the cache
    bytes and the queue depth of the cluster. (Before: no such option.)"""
    url = f"sqlite:///{tmp_path}/jobs.db"
    submitted = subprocess.run(
        [*WORKER, "submit", url, "2", str(tmp_path)],
        env=env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert submitted.returncode == 0, submitted.stderr
    port = free_port()
    runner = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "swath.cli",
            "--database",
            url,
            "runner",
            "tests.observe.tasks",
            "--cache",
            str(tmp_path / "cache"),
            "--metrics-port",
            str(port),
        ],
        env=env(SWATH_METRICS_INTERVAL="0.1"),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        text = ""
        while time.monotonic() < deadline:
            try:
                text = scrape(port)
            except OSError:
                text = ""
            if metric(text, "swath_tasks_succeeded_total") >= 4:
                break
            assert runner.poll() is None, runner.communicate()
            time.sleep(0.2)
        assert metric(text, "swath_tasks_succeeded_total") == 4, text
        assert metric(text, "swath_tasks_claimed_total") == 5
        assert metric(text, "swath_tasks_failed_total") == 1
        assert metric(text, "swath_cache_in_bytes_total") == 100 + 2000 + 4
        assert metric(text, "swath_cache_out_bytes_total") == 2 * 100 + 2 * 2000
        assert 'swath_queue_depth{cluster="default"' in text
    finally:
        runner.send_signal(signal.SIGTERM)
        out, err = runner.communicate(timeout=60)
    assert runner.returncode == 0, err
    assert f"metrics on http://127.0.0.1:{port}/metrics" in out
