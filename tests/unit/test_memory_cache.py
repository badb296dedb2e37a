"""InMemoryCache specifics: no copies of bytes values, values written in chunks kept as their
chunks (never held twice), and the key/group separation Tilebox's in-memory cache lacks."""

from __future__ import annotations

import os
import tracemalloc

import crc32c
from hypothesis import given, settings
from hypothesis import strategies as st

from swath import InMemoryCache

MiB = 1 << 20


async def test_bytes_are_stored_without_copy() -> None:
    """A bytes value is kept as the same object (zero copies); get returns it as is."""
    cache = InMemoryCache()
    data = b"x" * (1 << 20)
    await cache.put("k", data)
    assert await cache.get("k") is data


async def test_bytearray_is_copied_once() -> None:
    """A mutable value is copied on put, so later mutation does not leak into the cache."""
    cache = InMemoryCache()
    buf = bytearray(b"abc")
    await cache.put("k", buf)
    buf[0] = 0
    assert await cache.get("k") == b"abc"


async def test_key_and_group_writes_both_survive() -> None:
    """Writing key 'a' then group 'a' (and the reverse) keeps both: nothing is silently lost."""
    cache = InMemoryCache()
    await cache.put("a", b"value")
    await cache.group("a").put("b", b"child")
    await cache.put("c/d", b"child first")
    await cache.put("c", b"then value")
    assert await cache.get("a") == b"value"
    assert await cache.get("a/b") == b"child"
    assert await cache.get("c/d") == b"child first"
    assert await cache.get("c") == b"then value"


async def test_a_streamed_value_is_not_held_twice() -> None:
    """put_stream of 64 MiB in 8 MiB chunks keeps the chunks (one copy of the value, not a
    second one joined at commit: Python's peak allocation stays under 1.25x the value), and
    stream() in the same chunk size hands out the stored chunks themselves, copying nothing."""
    cache = InMemoryCache()
    block = os.urandom(8 * MiB)
    tracemalloc.start()
    try:
        await cache.put_stream("k", (block for _ in range(8)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 80 * MiB, f"put_stream of 64 MiB peaked at {peak / MiB:.0f} MiB"
    first = [c async for c in cache.stream("k", chunk_size=8 * MiB)]
    second = [c async for c in cache.stream("k", chunk_size=8 * MiB)]
    assert all(a is b for a, b in zip(first, second, strict=True))
    assert b"".join(first) == block * 8
    whole = await cache.get("k")  # joined once, then kept whole
    assert whole == block * 8
    assert await cache.get("k") is whole


@settings(max_examples=60, deadline=None)
@given(
    writes=st.lists(st.integers(0, 700_000), max_size=6),
    start=st.integers(0, 5_000_000),
    length=st.integers(0, 3_000_000),
    chunk=st.integers(1, 900_000),
)
async def test_values_in_parts_read_like_one_value(
    writes: list[int], start: int, length: int, chunk: int
) -> None:
    """Whatever the sizes of the writes (small ones gathered, large ones kept as parts), every
    read of the value sees the same bytes: get, get_range anywhere (also past the end), stream
    in exact chunks, and stat's size and CRC32C."""
    data = os.urandom(sum(writes))
    cache = InMemoryCache()
    async with cache.open_write("k") as writer:
        at = 0
        for size in writes:
            await writer.write(data[at : at + size])
            at += size
    assert await cache.get_range("k", start, start + length) == data[start : start + length]
    chunks = [c async for c in cache.stream("k", chunk_size=chunk)]
    assert b"".join(chunks) == data
    assert all(len(c) == chunk for c in chunks[:-1])
    stat = await cache.stat("k")
    assert stat.size == len(data)
    assert stat.checksum == f"crc32c:{crc32c.crc32c(data):08x}"
    assert await cache.get("k") == data
    assert await cache.get_range("k", start, start + length) == data[start : start + length]
