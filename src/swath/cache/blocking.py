"""A blocking, Tilebox-style mapping over any cache group, for sync (threaded) tasks.

Sync ``execute`` methods run in worker threads; there ``context.job_cache`` is a
:class:`BlockingCache`, the whole of Tilebox's ``JobCache``: ``cache["k"] = b"..."``,
``cache["k"]``, ``"k" in cache``, ``for k in cache``, ``cache.items()``, ``del cache["k"]``,
``cache.group("g")``, plus blocking forms of the streaming calls. Each operation runs the async
cache's coroutine on the runner's event loop (``asyncio.run_coroutine_threadsafe``) and waits
for it, so the cache keeps one set of connections, owned by that loop. The cache layer knows
nothing of tasks: this wraps any group.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator
from typing import Any, TypeVar

from swath.cache._base import DEFAULT_CHUNK_SIZE, BytesLike, Cache, Stat, is_buffer

T = TypeVar("T")


class BlockingCache:
    """A blocking view of ``cache`` whose I/O runs on ``loop`` (which must be running in
    another thread)."""

    __slots__ = ("_cache", "_loop")

    def __init__(self, cache: Cache, loop: asyncio.AbstractEventLoop) -> None:
        self._cache = cache
        self._loop = loop

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            coro.close()
            raise RuntimeError(
                "BlockingCache called on its own event loop (this would deadlock): use the async "
                "cache API in async tasks"
            )
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    # -- the mapping ------------------------------------------------------------------------------
    def __getitem__(self, key: str) -> bytes:
        return self._run(self._cache.get(key))

    def __setitem__(self, key: str, value: BytesLike) -> None:
        self._run(self._cache.put(key, value))

    def __delitem__(self, key: str) -> None:
        self._run(self._cache.delete(key))

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        return self._run(self._cache.contains(key))

    def __iter__(self) -> Iterator[str]:
        """The direct keys of this group (listed when iteration starts)."""
        return iter(self.keys())

    def items(self) -> Iterator[tuple[str, bytes]]:
        """``(key, value)`` for each direct key of this group, each value read as it is reached
        (as Tilebox's ``JobCache.items``); a key deleted meanwhile is left out."""
        for key in self.keys():
            try:
                yield key, self[key]
            except KeyError:
                continue

    def keys(self) -> list[str]:
        """The direct keys of this group."""

        async def collect() -> list[str]:
            return [key async for key in self._cache]

        return self._run(collect())

    def groups(self) -> list[str]:
        """The direct subgroup names of this group."""

        async def collect() -> list[str]:
            return [name async for name in self._cache.groups()]

        return self._run(collect())

    def group(self, name: str) -> BlockingCache:
        """The group ``name`` (``"a/b"`` is ``group("a").group("b")``); no I/O."""
        return BlockingCache(self._cache.group(name), self._loop)

    # -- the rest of the cache, blocking ----------------------------------------------------------
    def get(self, key: str) -> bytes:
        return self[key]

    def put(self, key: str, value: BytesLike) -> None:
        self[key] = value

    def contains(self, key: str) -> bool:
        return key in self

    def delete(self, key: str) -> None:
        del self[key]

    def stat(self, key: str) -> Stat:
        return self._run(self._cache.stat(key))

    def get_range(self, key: str, start: int, end: int | None = None) -> bytes:
        return self._run(self._cache.get_range(key, start, end))

    def put_file(self, key: str, path: str | os.PathLike[str]) -> int:
        return self._run(self._cache.put_file(key, path))

    def get_file(self, key: str, path: str | os.PathLike[str]) -> int:
        return self._run(self._cache.get_file(key, path))

    def clear(self) -> None:
        self._run(self._cache.clear())

    def put_stream(self, key: str, chunks: Iterable[BytesLike]) -> int:
        """Store the concatenation of ``chunks`` (pulled one at a time in this thread)."""
        if isinstance(chunks, str) or is_buffer(chunks):
            raise TypeError("put_stream takes an iterable of bytes-like chunks; use put()")
        iterator = iter(chunks)
        done = object()

        async def pull() -> AsyncIterator[BytesLike]:
            while True:
                item = await asyncio.to_thread(next, iterator, done)
                if item is done:
                    return
                yield item  # type: ignore[misc]

        return self._run(self._cache.put_stream(key, pull()))

    def stream(self, key: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[bytes]:
        """Yield the value in chunks of ``chunk_size`` (one chunk in flight at a time)."""
        agen = self._cache.stream(key, chunk_size)
        try:
            while True:
                try:
                    yield self._run(_anext(agen))
                except StopAsyncIteration:
                    return
        finally:
            closer = getattr(agen, "aclose", None)
            if closer is not None and not self._loop.is_closed():
                self._run(closer())

    def __repr__(self) -> str:
        return f"BlockingCache({self._cache!r})"


async def _anext(agen: AsyncIterator[bytes]) -> bytes:
    return await agen.__anext__()
