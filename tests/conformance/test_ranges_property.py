"""Property tests of reads on every backend: hypothesis generates values (empty ones included),
ranges (negative, reversed, past the end, None) and chunk sizes; get_range is exactly slicing and
stream yields exact chunks that join to the value."""

from __future__ import annotations

import asyncio
import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swath.cache import Backend

from .backends import BackendFactory, run_examples

bound = st.none() | st.integers(-300, 300)


def test_get_range_is_slicing_for_any_bounds(cache_factory: BackendFactory) -> None:
    """Property: for any value of 0 to 200 bytes and any start/end (negative, reversed, past
    the end, end None), get_range(key, start, end) == value[start:end] and never raises for an
    existing key; for an empty value every range is b""."""

    def check(runner: asyncio.Runner, cache: Backend) -> None:
        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
        @given(value=st.binary(max_size=200), start=st.integers(-300, 300), end=bound)
        def ranges(value: bytes, start: int, end: int | None) -> None:
            async def go() -> None:
                await cache.put("r", value)
                assert await cache.get_range("r", start, end) == value[start:end]
                assert await cache.get_range("r", start) == value[start:]

            runner.run(go())

        ranges()

    run_examples(cache_factory, check)


def test_stream_chunks_are_exact_for_any_size(cache_factory: BackendFactory) -> None:
    """Property: for any value of 0 to 3000 bytes, any chunk size from 1 to 4096 and any way
    the value was written (put, or put_stream of random pieces), stream yields chunks of exactly
    chunk_size bytes but a shorter, non-empty last one, joining to the value; an empty value
    yields no chunk."""

    def check(runner: asyncio.Runner, cache: Backend) -> None:
        @settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
        @given(
            value=st.binary(max_size=3000),
            chunk_size=st.integers(1, 4096),
            cuts=st.lists(st.integers(0, 3000), max_size=5),
        )
        def chunks(value: bytes, chunk_size: int, cuts: list[int]) -> None:
            async def go() -> None:
                edges = sorted({0, len(value), *(c for c in cuts if c < len(value))})
                pieces = [value[a:b] for a, b in itertools.pairwise(edges)]
                assert await cache.put_stream("s", pieces) == len(value)
                got = [c async for c in cache.stream("s", chunk_size=chunk_size)]
                assert b"".join(got) == value
                assert all(len(c) == chunk_size for c in got[:-1])
                assert all(isinstance(c, bytes) for c in got)
                if value:
                    assert 0 < len(got[-1]) <= chunk_size
                else:
                    assert got == []

            runner.run(go())

        chunks()

    run_examples(cache_factory, check)
