"""A child process for the durability tests: rebuilds a backend from its URL (and environment)
and either starts writes and waits to be killed, or streams 1 GiB and reports its peak RSS."""

from __future__ import annotations

import asyncio
import json
import resource
import sys

from swath.cache import cache_from_url

CHUNK = 8 << 20


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


async def write_then_hang(url: str, size: int) -> None:
    block = bytes(range(256)) * (CHUNK // 256)
    cache = cache_from_url(url)
    async with cache, cache.open_write("k") as replace, cache.open_write("g/new") as fresh:
        written = 0
        while written < size // 2:
            await replace.write(block)
            await fresh.write(block)
            written += CHUNK
        print("HALF", flush=True)
        await asyncio.sleep(3600)  # the parent kills us here


async def stream_and_measure(url: str, size: int, chunk: int) -> None:
    block = b"\xa5" * chunk
    async with cache_from_url(url) as cache:
        await cache.put("warmup", block[:1024])
        [c async for c in cache.stream("warmup")]
        base = peak_rss()

        def chunks():  # type: ignore[no-untyped-def]
            for _ in range(size // chunk):
                yield block  # the same object each time: the source itself costs nothing

        written = await cache.put_stream("big", chunks())
        after_write = peak_rss()
        read = 0
        async for piece in cache.stream("big", chunk_size=chunk):
            read += len(piece)
        after_read = peak_rss()
        await cache.delete("big")
    print(
        json.dumps(
            {
                "written": written,
                "read": read,
                "base": base,
                "after_write": after_write,
                "after_read": after_read,
            }
        ),
        flush=True,
    )


def main() -> None:
    mode, url, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "hang":
        asyncio.run(write_then_hang(url, size))
    elif mode == "rss":
        asyncio.run(stream_and_measure(url, size, CHUNK))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
