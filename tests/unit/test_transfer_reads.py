"""The engine's ordered reader (``_transfer.ordered_reads``) with fetches that checksum their own
ranges (``Checked``, what the local disk returns): the CRC32C of the whole value is combined from
the ranges' in order, whatever mix of plain and checked ranges a backend returns, and a wrong
one is still a checksum mismatch at the end."""

from __future__ import annotations

import os

import pytest

from swath import ChecksumMismatchError
from swath.cache import _checksum
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
