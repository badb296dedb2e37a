"""CRC32C, the one checksum every backend stores (it is also native to GCS and S3).

Every checksum helper of the cache lives here, with one argument order: ``(crc, data)``, the
running CRC first. The ``crc32c`` package uses the CPU's CRC instructions, accepts any buffer
without copying and releases the GIL, so large buffers are checksummed in worker threads beside
the I/O (``update_async``).
"""

from __future__ import annotations

import base64
import functools

import anyio.to_thread
import crc32c as _crc32c

from swath.errors import ChecksumMismatchError

THREAD_ABOVE = 1 << 20  # buffers at least this large are checksummed in a worker thread


def update(crc: int, data: bytes | bytearray | memoryview) -> int:
    """Extend a running CRC32C with ``data``."""
    return int(_crc32c.crc32c(data, crc))


async def update_async(crc: int, data: bytes | bytearray | memoryview) -> int:
    """``update`` off the event loop for large buffers (on it for small ones: a thread hop costs
    more than hashing a few hundred KiB)."""
    if len(data) >= THREAD_ABOVE:
        return await anyio.to_thread.run_sync(update, crc, data)
    return update(crc, data)


def render(crc: int) -> str:
    """The public form of a checksum, as found in :class:`Stat`."""
    return f"crc32c:{crc:08x}"


def verify(expected: int, actual: int, what: str) -> None:
    if expected != actual:
        raise ChecksumMismatchError(
            f"checksum mismatch for {what}: stored {render(expected)}, read {render(actual)}"
        )


def to_b64(crc: int) -> str:
    """The wire form of a CRC32C in S3 and GCS: base64 of its 4 big-endian bytes."""
    return base64.b64encode(crc.to_bytes(4, "big")).decode("ascii")


def from_b64(text: str) -> int:
    """The inverse of ``to_b64``; ``ValueError`` for anything that is not 4 bytes in base64."""
    raw = base64.b64decode(text, validate=True)
    if len(raw) != 4:
        raise ValueError(f"not a base64 CRC32C: {text!r}")
    return int.from_bytes(raw, "big")


# -- combining: crc(a + b) from crc(a), crc(b) and len(b) ------------------------------------------
def _gf2_times(matrix: tuple[int, ...], vector: int) -> int:
    total = 0
    i = 0
    while vector:
        if vector & 1:
            total ^= matrix[i]
        vector >>= 1
        i += 1
    return total


def _gf2_square(matrix: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(_gf2_times(matrix, matrix[n]) for n in range(32))


@functools.lru_cache(maxsize=64)
def _shift_operator(length: int) -> tuple[int, ...]:
    """The GF(2) matrix that advances a CRC32C register over ``length`` zero bytes."""
    result = tuple(1 << n for n in range(32))  # identity
    # operator for one zero bit, then squared up to one zero byte
    power = (0x82F63B78, *(1 << n for n in range(31)))
    for _ in range(3):
        power = _gf2_square(power)
    while length:
        if length & 1:
            result = tuple(_gf2_times(power, result[n]) for n in range(32))
        length >>= 1
        if length:
            power = _gf2_square(power)
    return result


def crc32c_combine(crc1: int, crc2: int, length2: int) -> int:
    """The CRC32C of ``a + b`` from ``crc(a)``, ``crc(b)`` and ``len(b)`` (as zlib's
    ``crc32_combine``); the operator for each length is cached, so equal parts cost 32 steps."""
    if length2 <= 0:
        return crc1
    return _gf2_times(_shift_operator(length2), crc1) ^ crc2
