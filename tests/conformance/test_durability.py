"""Durability and memory rules that need a second process: a writer killed with SIGKILL leaves
the previous state, and streaming 1 GiB keeps peak RSS flat. They run on every persistent
backend (data reachable from another process through its URL and environment)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .backends import BACKENDS, BackendFactory

ROOT = Path(__file__).resolve().parents[2]


def run_worker(factory: BackendFactory, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.conformance._worker", *args],
        cwd=ROOT,
        env=factory.subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def persistent_params() -> list[str]:
    """Every backend but the in-memory one, whose data cannot outlive its process."""
    return [name for name in BACKENDS if name != "memory"]


@pytest.mark.slow
@pytest.mark.parametrize("cache_factory", persistent_params(), indirect=True)
async def test_sigkill_mid_write_leaves_previous_state(cache_factory: BackendFactory) -> None:
    """A process killed with SIGKILL half way through two open_write calls (256 MiB each on
    backends that hold large objects, 32 MiB otherwise) leaves the old value intact, the new key
    absent, and no partial value or group visible."""
    async with cache_factory.make() as cache:
        await cache.put("k", b"old value")
    size = (256 << 20) if cache_factory.large_objects else (32 << 20)
    proc = run_worker(cache_factory, "hang", cache_factory.url, str(size))
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != "HALF":
            proc.kill()
            pytest.fail(f"worker failed: {line!r} {proc.communicate()[1]}")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    async with cache_factory.make() as cache:
        assert await cache.get("k") == b"old value"
        assert [k async for k in cache] == ["k"]
        assert [g async for g in cache.groups()] == []
        assert not await cache.contains("g/new")
        assert [k async for k in cache.group("g")] == []


@pytest.mark.slow
@pytest.mark.parametrize("cache_factory", persistent_params(), indirect=True)
def test_streaming_1gib_keeps_rss_flat(cache_factory: BackendFactory) -> None:
    """put_stream of 1 GiB (8 MiB chunks) and stream of it back grow the process's peak RSS by
    less than the backend's budget (64 MiB for local disk): memory is bounded by chunk size x
    concurrency, not by blob size. Backends that cannot hold large objects stream 64 MiB."""
    size = (1 << 30) if cache_factory.large_objects else (64 << 20)
    proc = run_worker(cache_factory, "rss", cache_factory.url, str(size))
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    assert report["written"] == size
    assert report["read"] == size
    growth = max(report["after_write"], report["after_read"]) - report["base"]
    assert growth < cache_factory.rss_budget, (
        f"peak RSS grew by {growth / 2**20:.1f} MiB streaming {size >> 20} MiB "
        f"(budget {cache_factory.rss_budget >> 20} MiB)"
    )
