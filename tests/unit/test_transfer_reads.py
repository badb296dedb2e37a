"""The engine's ordered reader (``_transfer.ordered_reads``) with fetches that checksum their own
ranges (``Checked``, what the local disk returns): the CRC32C of the whole value is combined from
the ranges' in order, whatever mix of plain and checked ranges a backend returns, and a wrong
one is still a checksum mismatch at the end. A first range still arriving (an async generator:
S3's first GET) is passed on piece by piece while the ranges after it are already in flight.
``rechunk`` (what ``stream()`` puts around every backend) cuts any pieces into exact chunks."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swath import ChecksumMismatchError
from swath.cache import _checksum
from swath.cache._base import rechunk
from swath.cache._transfer import Checked, ordered_reads

VALUE = os.urandom(10_000)


async def read(
    checked: set[int], chunk_size: int, window: int, *, corrupt: int | None = None
) -> bytes:
    """The value through ordered_reads in ranges of 1,000 bytes after a first plain 500; ranges
    starting at an offset in ``checked`` come back as Checked (with a wrong CRC at ``corrupt``)."""

    async def fetch(start: int, end: int) -> bytes | Checked:
        data = VALUE[start:end]
        if start not in checked:
            return data
        crc = _checksum.update(0, data) ^ (1 if start == corrupt else 0)
        cut = [data[i : i + chunk_size] for i in range(0, len(data), chunk_size)]
        return Checked(cut, len(data), crc)

    out = []
    async for piece in ordered_reads(
        VALUE[:500], 500, len(VALUE), 1_000, window, fetch, chunk_size,
        _checksum.update(0, VALUE), "the value",
    ):  # fmt: skip
        assert isinstance(piece, bytes)
        assert 0 < len(piece) <= chunk_size
        out.append(piece)
    return b"".join(out)


@pytest.mark.parametrize("window", [1, 3])
@pytest.mark.parametrize(
    "checked",
    [set(range(500, 10_000, 1_000)), {500, 1_500}, {4_500, 9_500}, {2_500, 6_500, 7_500}],
    ids=["all", "first", "last", "mixed"],
)
async def test_checked_ranges_are_verified_in_order(checked: set[int], window: int) -> None:
    """Checked ranges are yielded as their pieces and their CRCs combined in order with the
    plain ranges' (before, after or between them): the value comes back whole and verified."""
    assert await read(checked, 300, window) == VALUE


async def test_a_wrong_checked_crc_is_a_mismatch() -> None:
    """A checked range whose CRC does not match fails the read at the end, as a plain one would."""
    with pytest.raises(ChecksumMismatchError):
        await read({1_500, 2_500}, 1_000, 2, corrupt=2_500)


BIG = os.urandom(3 * (1 << 20) + 777)  # pieces of 1 MiB and more are checksummed in a thread


async def read_streamed(
    piece_sizes: list[int], *, expected: int | None = None, stop_after: int | None = None
) -> tuple[bytes, list[str]]:
    """BIG through ordered_reads with its first 2 MiB arriving as pieces of ``piece_sizes``
    (repeated), the rest in ranges of 300 KiB, 2 at a time. Returns what came out and a log of
    the generator's and the fetches' events."""
    events: list[str] = []
    head = 2 << 20

    async def arriving() -> AsyncGenerator[bytes, None]:
        at, i = 0, 0
        try:
            while at < head:
                size = min(piece_sizes[i % len(piece_sizes)], head - at)
                events.append(f"piece {at}")
                await asyncio.sleep(0)  # the ranges after it run meanwhile
                yield BIG[at : at + size]
                at, i = at + size, i + 1
        finally:
            events.append("closed")

    async def fetch(start: int, end: int) -> bytes:
        events.append(f"fetch {start}")
        await asyncio.sleep(0)
        return BIG[start:end]

    out = []
    crc = _checksum.update(0, BIG) if expected is None else expected
    reads = ordered_reads(
        arriving(), head, len(BIG), 300 << 10, 2, fetch, 1 << 20, crc, "the value"
    )
    async for piece in reads:
        out.append(piece)
        if stop_after is not None and len(out) == stop_after:
            await reads.aclose()
            break
    return b"".join(out), events


@pytest.mark.parametrize(
    "piece_sizes", [[1 << 20], [5_000, 1 << 20, 70_000], [2 << 20], [65_536]], ids=str
)
async def test_a_first_range_still_arriving_is_passed_on_and_verified(
    piece_sizes: list[int],
) -> None:
    """The first range's pieces (small ones checksummed inline, large ones in a thread) come out
    as they arrive, the ranges after it are fetched while it arrives, and the whole value's CRC
    is verified: a wrong expected CRC fails at the end."""
    got, events = await read_streamed(piece_sizes)
    assert got == BIG
    assert events.index("fetch 2097152") < events.index("closed")  # in flight meanwhile
    with pytest.raises(ChecksumMismatchError):
        await read_streamed(piece_sizes, expected=_checksum.update(0, BIG) ^ 1)


async def test_leaving_during_the_first_range_closes_it_and_cancels_the_ranges() -> None:
    """A consumer that leaves while the first range is arriving closes its generator (the
    connection is released) and cancels the ranges in flight."""
    got, events = await read_streamed([100_000], stop_after=3)
    assert got == BIG[:300_000]
    assert events[-1] == "closed"


async def _pieces(sizes: list[int]) -> AsyncGenerator[bytes | bytearray | memoryview, None]:
    at = 0
    for i, size in enumerate(sizes):
        data = VALUE[at : at + size]
        yield (data, bytearray(data), memoryview(data))[i % 3]
        at += size


@settings(max_examples=300, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 2_500), max_size=8).filter(lambda s: sum(s) <= len(VALUE)),
    size=st.integers(1, 3_000),
)
async def test_rechunk_cuts_any_pieces_into_exact_chunks(sizes: list[int], size: int) -> None:
    """Whatever pieces (bytes, bytearray, memoryview, empty) arrive, rechunk yields ``bytes`` of
    exactly ``size`` (the last one shorter, never empty) that join to the same value."""
    out = [c async for c in rechunk(_pieces(sizes), size)]
    assert b"".join(out) == VALUE[: sum(sizes)]
    assert all(type(c) is bytes for c in out)
    assert all(len(c) == size for c in out[:-1])
    assert not out or 0 < len(out[-1]) <= size


async def test_closing_rechunk_closes_its_source_at_once() -> None:
    """Leaving a stream early (aclose) closes the backend's generator under rechunk there and
    then, not when the garbage collector finalizes it: its connection is released and its reads
    in flight are cancelled before aclose returns."""
    closed: list[bool] = []

    async def backend() -> AsyncGenerator[bytes, None]:
        try:
            for _ in range(10):
                yield b"x" * 1000
        finally:
            closed.append(True)

    source = backend()
    stream = rechunk(source, 1000)
    assert await anext(stream) == b"x" * 1000
    await stream.aclose()
    assert closed == [True]
    del source  # still referenced until here: only aclose can have closed it
