"""Local-disk cache throughput: swath against dd/cat (the raw limit), Tilebox's cache and naive
aiofiles code, on the same filesystem, in one run.

    .venv/bin/python benchmarks/cache_local.py            # 1 GiB, 3 runs each
    .venv/bin/python benchmarks/cache_local.py --size-mib 256 --repeat 1   # quick look

Needs the bench extra (`pip install -e '.[bench]'`: tilebox-workflows, aiofiles). Every case runs
in its own process, so peak RSS and CPU seconds are its own. "CPU s/GB" is the whole process's
(for a Python case it includes starting the interpreter and its imports: about 0.2 CPU s for
swath, 0.4 CPU s/GB at 512 MiB); "timed" is the CPU of the timed section only (all threads),
the figure to compare with dd and cat, whose start costs nothing. The read group also runs a
floor: a bare one-thread loop of ``os.pread`` into fresh 8 MiB ``bytes`` plus their CRC32C, the
least any verified read of new chunks costs (cat checks nothing and reuses one small buffer).
Prints a table, writes benchmarks/results/cache_local.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    MiB,
    Result,
    interleaved,
    print_table,
    report,
    rss_now,
    run_case,
    run_command,
    write_json,
)

CHUNK = 8 * MiB
KEY = "scene/B04.tif"

# Fresh pages. Every write case removes its previous round's output just before its timed
# write, as the dd case always did (``dd()`` unlinks its file first). On this VM that matters
# more than anything the writers do: the guest hands freed memory back to its host (free page
# reporting), and a write into pages the host took back costs 2-3 CPU s/GB for any writer, dd
# included (a lone dd measured 2.5 s of system time for 1 GiB that way), while pages freed a
# moment before are reused at 0.3-0.4. Before this, dd reused its own file's pages and swath's
# put_stream, whose old value is only unlinked when the new one is committed, wrote into
# returned memory: the 0.22-0.24x "put_stream against dd" of earlier runs.


def chunks(size: int) -> object:
    block = bytes(CHUNK)  # zeros, like dd if=/dev/zero; one object reused, no allocation
    for _ in range(size // CHUNK):
        yield block


# -- child cases ---------------------------------------------------------------------------------
async def swath_write(directory: str, size: int) -> None:
    from swath import LocalFileSystemCache

    async with LocalFileSystemCache(directory) as cache:
        await cache.put("warmup", b"x")
        with contextlib.suppress(KeyError):  # KeyNotFoundError: the first round
            await cache.delete(KEY)  # the previous round's value (see 'Fresh pages')
        base = rss_now()
        t0, c0 = time.perf_counter(), time.process_time()
        written = await cache.put_stream(KEY, chunks(size))  # type: ignore[arg-type]
        report(time.perf_counter() - t0, written, base, cpu_section=time.process_time() - c0)


async def swath_read(directory: str, size: int) -> None:
    from swath import LocalFileSystemCache

    async with LocalFileSystemCache(directory) as cache:
        base = rss_now()
        t0, c0 = time.perf_counter(), time.process_time()
        n = 0
        async for chunk in cache.stream(KEY, chunk_size=CHUNK):
            n += len(chunk)
        report(time.perf_counter() - t0, n, base, cpu_section=time.process_time() - c0)


def tilebox_write(directory: str, size: int) -> None:
    from tilebox.workflows.cache import LocalFileSystemCache

    cache = LocalFileSystemCache(Path(directory))
    (Path(directory) / KEY).unlink(missing_ok=True)  # the previous round's (see 'Fresh pages')
    base = rss_now()
    t0, c0 = time.perf_counter(), time.process_time()
    blob = b"".join(chunks(size))  # type: ignore[arg-type]  # Tilebox takes whole values
    cache[KEY] = blob
    report(time.perf_counter() - t0, len(blob), base, cpu_section=time.process_time() - c0)


def tilebox_read(directory: str, size: int) -> None:
    from tilebox.workflows.cache import LocalFileSystemCache

    cache = LocalFileSystemCache(Path(directory))
    base = rss_now()
    t0, c0 = time.perf_counter(), time.process_time()
    blob = cache[KEY]
    report(time.perf_counter() - t0, len(blob), base, cpu_section=time.process_time() - c0)


async def aiofiles_write(directory: str, size: int) -> None:
    import aiofiles

    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(directory, "naive.bin"))  # see 'Fresh pages'
    base = rss_now()
    t0, c0 = time.perf_counter(), time.process_time()
    n = 0
    async with aiofiles.open(os.path.join(directory, "naive.bin"), "wb") as f:
        for chunk in chunks(size):  # type: ignore[attr-defined]
            await f.write(chunk)
            n += len(chunk)
    report(time.perf_counter() - t0, n, base, cpu_section=time.process_time() - c0)


async def aiofiles_read(directory: str, size: int) -> None:
    import aiofiles

    base = rss_now()
    t0, c0 = time.perf_counter(), time.process_time()
    n = 0
    async with aiofiles.open(os.path.join(directory, "naive.bin"), "rb") as f:
        while chunk := await f.read(CHUNK):
            n += len(chunk)
    report(time.perf_counter() - t0, n, base, cpu_section=time.process_time() - c0)


def floor_read_crc(directory: str, size: int) -> None:
    """What any verified read of fresh ``bytes`` costs at least: a bare loop, one thread, no
    event loop, ``os.pread`` of 8 MiB into new ``bytes`` and the CRC32C of each. cat needs
    neither the checksum nor new memory per chunk (it reuses one small buffer)."""
    import crc32c

    fd = os.open(os.path.join(directory, "naive.bin"), os.O_RDONLY)
    base = rss_now()
    t0, c0 = time.perf_counter(), time.process_time()
    n = crc = 0
    while chunk := os.pread(fd, CHUNK, n):
        crc = crc32c.crc32c(chunk, crc)
        n += len(chunk)
    report(time.perf_counter() - t0, n, base, cpu_section=time.process_time() - c0)
    os.close(fd)


async def memory_put_get(kind: str, size: int) -> None:
    from swath import InMemoryCache

    value: bytes | bytearray = bytes(size) if kind == "bytes" else bytearray(size)
    cache = InMemoryCache()
    base = rss_now()
    t0, c0 = time.perf_counter(), time.process_time()
    await cache.put("v", value)
    out = await cache.get("v")
    report(time.perf_counter() - t0, len(out), base, cpu_section=time.process_time() - c0)


CASES = {
    "swath_write": lambda d, s: asyncio.run(swath_write(d, s)),
    "swath_read": lambda d, s: asyncio.run(swath_read(d, s)),
    "tilebox_write": tilebox_write,
    "tilebox_read": tilebox_read,
    "aiofiles_write": lambda d, s: asyncio.run(aiofiles_write(d, s)),
    "aiofiles_read": lambda d, s: asyncio.run(aiofiles_read(d, s)),
    "floor_read_crc": floor_read_crc,
    "memory_bytes": lambda d, s: asyncio.run(memory_put_get("bytes", s)),
    "memory_bytearray": lambda d, s: asyncio.run(memory_put_get("bytearray", s)),
}


# -- the parent ----------------------------------------------------------------------------------
def raw(argv: list[str], size: int, stdout_to: str | None = None) -> dict:  # type: ignore[type-arg]
    wall, cpu, rss = run_command(argv, stdout_to=stdout_to)
    return {"seconds": wall, "bytes": size, "cpu": cpu, "peak_rss": rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--case")
    parser.add_argument("--dir", default=None, help="a directory on the filesystem to measure")
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--memory-mib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    args, rest = parser.parse_known_args()
    if args.case:
        CASES[args.case](rest[0], int(rest[1]))
        return

    size = args.size_mib * MiB
    work = tempfile.mkdtemp(prefix="swath-bench-", dir=args.dir)
    me = os.path.abspath(__file__)
    results: list[Result] = []
    try:
        dd_file = os.path.join(work, "dd.bin")
        swath_dir = os.path.join(work, "swath")
        tb_dir = os.path.join(work, "tilebox")
        os.makedirs(tb_dir)

        def dd() -> dict:  # type: ignore[type-arg]
            with contextlib.suppress(FileNotFoundError):
                os.unlink(dd_file)
            return raw(
                [
                    "dd",
                    "if=/dev/zero",
                    f"of={dd_file}",
                    f"bs={CHUNK}",
                    f"count={size // CHUNK}",
                    "conv=fdatasync",
                    "status=none",
                ],
                size,
            )

        def case(name: str, directory: str = work) -> dict:  # type: ignore[type-arg]
            return run_case(me, name, directory, str(size))

        w = "write 1 GiB (8 MiB chunks)" if size == 1 << 30 else f"write {args.size_mib} MiB"
        results += interleaved(
            w,
            [
                ("dd bs=8M conv=fdatasync", dd, "raw limit"),
                (
                    "swath LocalFileSystemCache.put_stream",
                    lambda: case("swath_write", swath_dir),
                    "fsync + rename",
                ),
                (
                    "tilebox LocalFileSystemCache[k] = blob",
                    lambda: case("tilebox_write", tb_dir),
                    "whole blob, no fsync",
                ),
                ("naive aiofiles write", lambda: case("aiofiles_write"), "no fsync"),
            ],
            args.repeat,
            before_each=os.sync,  # nobody pays for the previous case's dirty pages
        )

        r = "read (warm page cache)"
        for path in (dd_file, os.path.join(work, "naive.bin"), swath_dir, tb_dir):
            for f in Path(path).rglob("*") if os.path.isdir(path) else [Path(path)]:
                if f.is_file():
                    run_command(["cat", str(f)], stdout_to="/dev/null")  # warm the page cache
        results += interleaved(
            r,
            [
                (
                    "cat file > /dev/null",
                    lambda: raw(["cat", dd_file], size, stdout_to="/dev/null"),
                    "raw limit",
                ),
                (
                    "swath LocalFileSystemCache.stream",
                    lambda: case("swath_read", swath_dir),
                    "CRC32C verified",
                ),
                (
                    "tilebox LocalFileSystemCache[k]",
                    lambda: case("tilebox_read", tb_dir),
                    "whole blob",
                ),
                ("naive aiofiles read", lambda: case("aiofiles_read"), "no checksum"),
                (
                    "floor: pread + CRC32C, one thread",
                    lambda: case("floor_read_crc"),
                    "bare loop, fresh bytes",
                ),
            ],
            args.repeat,
        )

        m = f"InMemoryCache put+get {args.memory_mib} MiB"
        msize = args.memory_mib * MiB
        results += interleaved(
            m,
            [
                (
                    f"swath InMemoryCache ({kind})",
                    lambda k=kind: run_case(me, f"memory_{k}", work, str(msize)),  # type: ignore[misc]
                    note,
                )
                for kind, note in (
                    ("bytes", "bytes: stored as is"),
                    ("bytearray", "bytearray: one copy"),
                )
            ],
            args.repeat,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rows = print_table(
        f"Local cache, {args.size_mib} MiB, median of {args.repeat} (ratio = MB/s / reference)",
        results,
        reference={w: "dd bs=8M conv=fdatasync", "read (warm page cache)": "cat file > /dev/null"},
    )
    for row in rows:
        if row["group"].startswith("InMemoryCache"):
            print(f"{row['name']}: {row['nbytes'] / row['seconds'] / 2**30:.1f} GiB/s")
    write_json("cache_local", {"size_bytes": size, "repeat": args.repeat, "results": rows})


if __name__ == "__main__":
    main()
