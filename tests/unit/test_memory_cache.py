"""InMemoryCache specifics: no copies of bytes values, and the key/group separation Tilebox's
in-memory cache lacks."""

from __future__ import annotations

from swath import InMemoryCache


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
