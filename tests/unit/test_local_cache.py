"""Rules of LocalFileSystemCache that only exist on disk: symlinks, corruption, temporaries,
long names, and the on-disk layout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from swath import CacheError, ChecksumMismatchError, LocalFileSystemCache
from swath.cache import local


@pytest.fixture
async def cache(tmp_path: Path):  # type: ignore[no-untyped-def]
    async with LocalFileSystemCache(tmp_path / "root") as c:
        yield c


def value_file(root: Path, key: str) -> Path:
    *groups, name = key.split("/")
    return root.joinpath(*[g + "%" for g in groups], name)


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


async def test_symlinked_group_inside_root_is_refused(
    cache: LocalFileSystemCache, tmp_path: Path
) -> None:
    """A group directory replaced by a symlink to a directory outside the root is never
    followed: writes and reads through it fail with CacheError and nothing lands outside."""
    outside = tmp_path / "outside"
    outside.mkdir()
    root = Path(cache.root)
    (root / "evil%").symlink_to(outside)
    with pytest.raises(CacheError, match="symlink"):
        await cache.put("evil/x", b"data")
    with pytest.raises(CacheError, match="symlink"):
        await cache.get("evil/x")
    assert list(outside.iterdir()) == []
    assert [g async for g in cache.groups()] == []


async def test_symlinked_value_file_is_refused(cache: LocalFileSystemCache, tmp_path: Path) -> None:
    """A value file replaced by a symlink (to a file outside) is not read through."""
    secret = tmp_path / "secret"
    secret.write_bytes(b"do not read" + bytes(24))
    (Path(cache.root) / "k").symlink_to(secret)
    with pytest.raises(CacheError, match="symlink"):
        await cache.get("k")
    assert secret.read_bytes().startswith(b"do not read")


async def test_flipped_byte_is_detected(cache: LocalFileSystemCache, tmp_path: Path) -> None:
    """A value changed on disk behind the cache's back fails get, stream and get_file with
    ChecksumMismatchError; get_file leaves no file behind."""
    data = os.urandom(3 << 20)
    await cache.put("k", data)
    flip_byte(value_file(Path(cache.root), "k"), 123_456)
    with pytest.raises(ChecksumMismatchError):
        await cache.get("k")
    with pytest.raises(ChecksumMismatchError):
        [c async for c in cache.stream("k", chunk_size=1 << 20)]
    dst = tmp_path / "dst"
    with pytest.raises(ChecksumMismatchError):
        await cache.get_file("k", dst)
    assert not dst.exists()
    assert [p for p in os.listdir(tmp_path) if p != "root"] == []


async def test_truncated_value_is_detected(cache: LocalFileSystemCache) -> None:
    """A truncated value file (its checksum trailer cut) is an integrity error, not data."""
    await cache.put("k", b"x" * 1000)
    path = value_file(Path(cache.root), "k")
    os.truncate(path, 500)
    with pytest.raises(ChecksumMismatchError):
        await cache.get("k")
    with pytest.raises(ChecksumMismatchError):
        await cache.stat("k")


async def test_temporaries_are_hidden_and_stale_ones_removed(cache: LocalFileSystemCache) -> None:
    """Temporary files of writers are never listed; a listing removes stale ones (untouched for
    an hour, or left by a dead process) and keeps a live writer's."""
    root = Path(cache.root)
    await cache.put("g/k", b"v")
    gdir = root / "g%"
    stale = gdir / f".x{local.TEMP_MARK}{os.getpid()}-aaaa"
    dead = gdir / f".y{local.TEMP_MARK}999999999-bbbb"
    live = gdir / f".z{local.TEMP_MARK}{os.getpid()}-cccc"
    for p in (stale, dead, live):
        p.write_bytes(b"partial")
    old = time.time() - 2 * local.STALE_AFTER
    os.utime(stale, (old, old))
    grace = time.time() - 2 * local.DEAD_WRITER_GRACE
    os.utime(dead, (grace, grace))
    assert [k async for k in cache.group("g")] == ["k"]
    assert not stale.exists()
    assert not dead.exists()
    assert live.exists()


@pytest.mark.parametrize("length", [199, 200, 201, 255, 256, 700, 1000])
async def test_long_segments_roundtrip(cache: LocalFileSystemCache, length: int) -> None:
    """Segments longer than a filesystem name allows (255 bytes) still work as keys and as
    groups, and are listed under their own names."""
    name = ("ab%é" * 400)[:length]
    if len(name.encode()) > 1000:
        name = name[:300]
    await cache.put(name, b"value")
    await cache.put("short", b"s")
    assert await cache.get(name) == b"value"
    assert sorted([k async for k in cache]) == sorted([name, "short"])
    group_name = name[:-1] + "G"
    await cache.group(group_name).put("inner", b"i")
    assert [g async for g in cache.groups()] == [group_name]
    assert await cache.get(f"{group_name}/inner") == b"i"
    await cache.delete(name)
    assert [k async for k in cache] == ["short"]
    await cache.group(group_name).clear()
    assert [g async for g in cache.groups()] == []
    assert sorted(os.listdir(cache.root)) == ["short"]


async def test_on_disk_layout(cache: LocalFileSystemCache) -> None:
    """Values are files named by their key (% escaped); groups are directories with a % suffix,
    so a key and a group of the same name sit side by side."""
    await cache.put("a", b"1")
    await cache.put("a/b", b"2")
    await cache.put("50%", b"3")
    root = Path(cache.root)
    assert sorted(os.listdir(root)) == ["50%25", "a", "a%"]
    assert os.listdir(root / "a%") == ["b"]
    size = (root / "a").stat().st_size
    assert size == 1 + local.TRAILER.size


async def test_cache_url_roundtrip(tmp_path: Path) -> None:
    """url() gives a file:// URL that cache_from_url turns back into the same cache."""
    from swath.cache import cache_from_url

    async with LocalFileSystemCache(tmp_path / "c") as a:
        await a.put("k", b"v")
        async with cache_from_url(a.url()) as b:
            assert await b.get("k") == b"v"


async def test_put_delete_race_in_nested_groups(cache: LocalFileSystemCache) -> None:
    """Six tasks each putting then deleting their own key under one deep group never fail: a
    delete prunes empty parent directories while another writer walks down to create its path,
    and the writer retries its walk instead of failing with FileNotFoundError from os.mkdir.
    Bounded: at most 1,500 rounds per task or 40 seconds (it failed within a few hundred puts
    before the fix)."""
    deadline = time.monotonic() + 40.0
    rounds = [0] * 6

    async def worker(i: int) -> None:
        key = f"a/b/c/d/k{i}"
        while rounds[i] < 1500 and time.monotonic() < deadline:
            await cache.put(key, b"v")
            await cache.delete(key)
            rounds[i] += 1

    async with anyio.create_task_group() as tg:
        for i in range(6):
            tg.start_soon(worker, i)
    assert min(rounds) > 0
    assert [g async for g in cache.groups()] == []
    assert os.listdir(cache.root) == []


def _temps(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if local.TEMP_MARK in p.name)


_DEAD_WRITER = """
import asyncio, sys
from swath import LocalFileSystemCache

async def main() -> None:
    async with LocalFileSystemCache(sys.argv[1]) as cache, cache.open_write("g/dead") as w:
        await w.write(b"partial")
        print("READY", flush=True)
        await asyncio.sleep(3600)

asyncio.run(main())
"""


def _kill_a_writer_mid_write(root: Path) -> None:
    """Run a process that opens a writer for g/dead and writes to it, then SIGKILL it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _DEAD_WRITER, str(root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "READY", proc.communicate()[1]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_idle_live_writer_keeps_its_temporary_dead_ones_are_swept(
    cache: LocalFileSystemCache,
) -> None:
    """A live writer that stays idle for hours (a stalled download feeding open_write) keeps its
    temporary: a listing that meets it, aged two hours with os.utime, leaves it, and the writer
    then commits. A temporary whose writer process was killed with SIGKILL, aged the same way,
    is removed by that listing. (Before, the listing removed any temporary older than an hour
    and the live writer's commit failed with FileNotFoundError.)"""
    root = Path(cache.root)
    await cache.put("g/k", b"v")
    await anyio.to_thread.run_sync(_kill_a_writer_mid_write, root)
    (dead,) = _temps(root / "g%")
    async with cache.open_write("g/slow") as w:
        await w.write(b"first half, ")
        dead_and_live = _temps(root / "g%")
        assert len(dead_and_live) == 2
        old = time.time() - 2 * local.STALE_AFTER
        for temp in dead_and_live:
            os.utime(temp, (old, old))
        assert [k async for k in cache.group("g")] == ["k"]
        assert _temps(root / "g%") == [t for t in dead_and_live if t != dead]
        await w.write(b"second half")
    assert await cache.get("g/slow") == b"first half, second half"
    assert _temps(root / "g%") == []


async def test_put_and_clear_race(cache: LocalFileSystemCache) -> None:
    """Writers putting into a group (and its subgroups) while another task clears that group
    never fail: a clear may remove the directory holding a writer's temporary before its commit,
    and the commit then moves the data into a new temporary and commits that (before, a raw
    FileNotFoundError); the clear never fails on entries writers add or rename in the tree it is
    removing (before, FileNotFoundError or ENOTEMPTY from rmtree). Afterwards the cache works
    and a final clear leaves nothing behind. Bounded: 400 clears or 20 seconds."""
    deadline = time.monotonic() + 20.0
    stop = False
    errors: list[BaseException] = []

    async def writer(i: int) -> None:
        n = 0
        while not stop:
            key = f"g/s{i % 2}/k{i}-{n % 3}"
            await cache.put(key, b"v" * (n % 5))
            n += 1

    async def clearer() -> None:
        nonlocal stop
        rounds = 0
        while time.monotonic() < deadline and rounds < 400:
            await cache.group("g").clear()
            rounds += 1
            await anyio.lowlevel.checkpoint()
        stop = True

    async def guarded(fn: object, *args: object) -> None:
        nonlocal stop
        try:
            await fn(*args)  # type: ignore[operator]
        except BaseException as exc:
            errors.append(exc)
            stop = True

    async with anyio.create_task_group() as tg:
        for i in range(4):
            tg.start_soon(guarded, writer, i)
        tg.start_soon(guarded, clearer)
    assert errors == [], "".join(traceback.format_exception(errors[0]))
    await cache.put("g/s0/last", b"x")
    assert await cache.get("g/s0/last") == b"x"
    await cache.group("g").clear()
    assert [g async for g in cache.groups()] == []
    assert os.listdir(cache.root) == []


async def test_cancelling_writes_at_random_moments_leaves_no_debris(tmp_path: Path) -> None:
    """1,000 chunked open_write writes, each cancelled at a random moment (mid-write, mid-commit
    in its worker thread): none raises anything but CancelledError, no temporary is left, and
    each key holds either nothing or its whole value. Before, a cancellation during the commit's
    thread ran the abort beside it: one descriptor closed twice (``OSError: Bad file
    descriptor``) or a directory pruned twice (``IndexError``)."""
    import asyncio
    import random

    rng = random.Random(20261129)
    chunk = bytes(range(256)) * 256  # 64 KiB

    async def write(key: str) -> None:
        async with cache.open_write(key) as w:
            for _ in range(4):
                await w.write(chunk)

    async with LocalFileSystemCache(tmp_path / "cache") as cache:
        errors: list[BaseException] = []
        for i in range(1000):
            task = asyncio.create_task(write(f"g{i % 7}/k{i}"))
            await asyncio.sleep(rng.random() * 0.004)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            except BaseException as exc:
                errors.append(exc)
        assert errors == []
        for i in range(1000):
            key = f"g{i % 7}/k{i}"
            if await cache.contains(key):
                assert await cache.get(key) == chunk * 4
    leftovers = [p for p in (tmp_path / "cache").rglob("*") if local.TEMP_MARK in p.name]
    assert leftovers == []


async def test_a_long_write_starts_its_writeback_as_it_goes(
    cache: LocalFileSystemCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer starts the disk on what it has written every WRITEBACK_STEP bytes (so the fsync
    of the commit finds little left to write): ranges in order, from 0, without gaps, each only
    over bytes already in the file; small writes count once they reach the file. The value
    reads back whole."""
    if sys.platform == "linux":  # CI runs here: the call must have been found
        assert local._start_writeback is not None, "sync_file_range not found in the C library"
    elif local._start_writeback is None:
        pytest.skip("no sync_file_range off Linux")
    started: list[tuple[int, int]] = []
    sizes: list[int] = []

    def record(fd: int, offset: int, count: int) -> None:
        sizes.append(os.fstat(fd).st_size)
        started.append((offset, count))

    monkeypatch.setattr(local, "_start_writeback", record)
    step = local.WRITEBACK_STEP
    big, small = os.urandom(step // 2 + 5), os.urandom(1000)
    chunks = [big, small, big] * 5 + [small] * 300
    await cache.put_stream("g/v", chunks)
    total = sum(map(len, chunks))
    assert await cache.get("g/v") == b"".join(chunks)
    assert len(started) >= total // step - 1
    position = 0
    for (offset, count), size in zip(started, sizes, strict=True):
        assert offset == position
        assert count >= step
        assert offset + count <= size
        position += count
