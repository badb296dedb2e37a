"""CRC32C, the one checksum every backend stores (it is also native to GCS and S3).

The ``crc32c`` package uses the CPU's CRC instructions, accepts any buffer without copying and
releases the GIL, so checksums can be computed in worker threads beside the I/O.
"""

from __future__ import annotations

import crc32c as _crc32c

from swath.errors import ChecksumMismatchError


def update(crc: int, data: bytes | bytearray | memoryview) -> int:
    """Extend a running CRC32C with ``data``."""
    return int(_crc32c.crc32c(data, crc))


def render(crc: int) -> str:
    """The public form of a checksum, as found in :class:`Stat`."""
    return f"crc32c:{crc:08x}"


def verify(expected: int, actual: int, what: str) -> None:
    if expected != actual:
        raise ChecksumMismatchError(
            f"checksum mismatch for {what}: stored {render(expected)}, read {render(actual)}"
        )
