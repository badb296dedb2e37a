"""Tilebox's ``JobCache`` behaviour, in full, on swath's blocking cache (what ``context.job_cache``
is in sync tasks), over every swath backend on real servers. Each test mirrors one of Tilebox's
``tests/test_cache.py`` and keeps its name."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from swath.cache.blocking import BlockingCache
from tests.conformance.backends import BackendFactory, unique


@pytest.fixture
def cache(cache_factory: BackendFactory) -> Iterator[BlockingCache]:
    """A fresh group of the backend, entered on an event loop in another thread (as a runner's
    loop is when a sync task runs), seen through the blocking mapping."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    backend = cache_factory.make()
    asyncio.run_coroutine_threadsafe(backend.__aenter__(), loop).result()
    try:
        yield BlockingCache(backend.group(unique("job")), loop)
    finally:
        asyncio.run_coroutine_threadsafe(backend.__aexit__(None, None, None), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()


def test_contains(cache: BlockingCache) -> None:
    """``in`` is False before a write, True after."""
    assert "test" not in cache
    cache["test"] = b"some-value"
    assert "test" in cache


def test_set_and_get(cache: BlockingCache) -> None:
    """What is set is what is got."""
    cache["test"] = b"some-value"
    assert cache["test"] == b"some-value"


def test_get_file_not_found(cache: BlockingCache) -> None:
    """A missing key is a KeyError."""
    with pytest.raises(KeyError):
        cache["test"]


def test_get_folder_not_found(cache: BlockingCache) -> None:
    """A key under a missing group is a KeyError."""
    with pytest.raises(KeyError):
        cache["dir/a"]


def test_get_wrong_type(cache: BlockingCache) -> None:
    """A name that is only a group is not a key: KeyError, and ``in`` is False."""
    cache.group("dir")["a"] = b"1"
    with pytest.raises(KeyError):
        cache["dir"]
    assert "dir" not in cache


def test_get_wrong_type_nested(cache: BlockingCache) -> None:
    """Below a name that is only a key there is nothing: KeyError."""
    cache["dir"] = b"1"
    with pytest.raises(KeyError):
        cache["dir/a"]


def test_iter(cache: BlockingCache) -> None:
    """Iteration yields the keys."""
    cache["test"] = b"some-value"
    cache["other"] = b"some-value"
    assert sorted(cache) == ["other", "test"]


def test_iter_file_only(cache: BlockingCache) -> None:
    """Iteration yields direct keys only, not groups."""
    cache.group("some")["a"] = b"1"
    cache["b"] = b"2"
    cache["c"] = b"3"
    assert sorted(cache) == ["b", "c"]


def test_iter_nested(cache: BlockingCache) -> None:
    """A group iterates over its own keys."""
    cache["a"] = b"1"
    g = cache.group("some")
    g["b"] = b"2"
    g["c"] = b"3"
    assert sorted(g) == ["b", "c"]


def test_iter_dir_does_not_exist(cache: BlockingCache) -> None:
    """An empty group iterates over nothing, without an error."""
    assert sorted(cache.group("dir")) == []


def test_iter_on_file(cache: BlockingCache) -> None:
    """The group of a name that is only a key is empty."""
    cache["file"] = b"1"
    assert sorted(cache.group("file")) == []


def test_groups(cache: BlockingCache) -> None:
    """Nested groups and ``/`` in keys reach the same value."""
    cache.group("some").group("nested").group("group")["test"] = b"some-value"
    assert cache.group("some")["nested/group/test"] == b"some-value"
    assert cache.group("some/nested/group")["test"] == b"some-value"
    assert cache["some/nested/group/test"] == b"some-value"


def test_groups_2(cache: BlockingCache) -> None:
    """``group("a/b/c")`` is ``group("a").group("b").group("c")``."""
    cache.group("some/nested/group")["test"] = b"some-value"
    assert cache.group("some")["nested/group/test"] == b"some-value"
    assert cache.group("some/nested/group")["test"] == b"some-value"
    assert cache["some/nested/group/test"] == b"some-value"


def test_items(cache: BlockingCache) -> None:
    """``items()`` yields (key, value) of the direct keys."""
    cache["a"] = b"b"
    cache["c"] = b"d"
    cache.group("g")["x"] = b"y"
    assert sorted(cache.items()) == [("a", b"b"), ("c", b"d")]


def test_delitem(cache: BlockingCache) -> None:
    """``del`` removes a key; deleting a missing key is a KeyError (Tilebox's object-store
    caches)."""
    cache["a"] = b"1"
    del cache["a"]
    assert "a" not in cache
    with pytest.raises(KeyError):
        del cache["a"]
