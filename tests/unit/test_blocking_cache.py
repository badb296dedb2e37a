"""The blocking, Tilebox-style cache mapping used by sync tasks, over a cache whose event loop
runs in another thread."""

from __future__ import annotations

import array
import asyncio
import threading
from collections.abc import Iterator

import numpy
import pytest

from swath import InMemoryCache, KeyNotFoundError
from swath.cache.blocking import BlockingCache


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()


def test_mapping_syntax(loop: asyncio.AbstractEventLoop) -> None:
    """Set, get, in, iteration (direct keys), del and group behave like Tilebox's job cache."""
    cache = BlockingCache(InMemoryCache(), loop)
    cache["a"] = b"1"
    cache["b"] = bytearray(b"2")
    group = cache.group("g")
    group["x"] = b"3"
    assert cache["a"] == b"1"
    assert "a" in cache
    assert "missing" not in cache
    assert "g" not in cache  # a group is not a key
    assert 42 not in cache
    assert sorted(cache) == ["a", "b"]
    assert cache.groups() == ["g"]
    assert cache["g/x"] == b"3"
    del cache["a"]
    assert "a" not in cache
    with pytest.raises(KeyNotFoundError):
        cache["a"]
    with pytest.raises(TypeError):
        cache["s"] = "text"  # type: ignore[assignment]


def test_streaming_forms(loop: asyncio.AbstractEventLoop, tmp_path: object) -> None:
    """put_stream pulls chunks from a plain iterator, stream yields exact chunks, get_range and
    stat work without reading everything."""
    cache = BlockingCache(InMemoryCache(), loop)
    assert cache.put_stream("big", (bytes([i]) * 1000 for i in range(10))) == 10_000
    chunks = list(cache.stream("big", chunk_size=4096))
    assert [len(c) for c in chunks] == [4096, 4096, 1808]
    assert b"".join(chunks) == b"".join(bytes([i]) * 1000 for i in range(10))
    assert cache.get_range("big", 999, 1001) == b"\x00\x01"
    assert cache.stat("big").size == 10_000


def test_a_buffer_is_a_value_not_a_stream(loop: asyncio.AbstractEventLoop) -> None:
    """The blocking mapping follows the async cache's value rule: a numpy array or an
    array.array is one value for put, and put_stream of one is a TypeError (not a stream of its
    elements), writing nothing."""
    cache = BlockingCache(InMemoryCache(), loop)
    cache["a"] = numpy.arange(6, dtype="<u2").reshape(2, 3).T
    assert cache["a"] == numpy.arange(6, dtype="<u2").reshape(2, 3).T.tobytes()
    for value in (numpy.arange(3), array.array("b", [1, 2])):
        with pytest.raises(TypeError, match="put"):
            cache.put_stream("s", value)  # type: ignore[arg-type]
    assert "s" not in cache


async def test_calling_on_its_own_loop_is_refused() -> None:
    """Using the blocking mapping from a coroutine on the same loop raises instead of
    deadlocking."""
    cache = BlockingCache(InMemoryCache(), asyncio.get_running_loop())
    with pytest.raises(RuntimeError, match="deadlock"):
        cache["k"] = b"v"
