"""Import a cache directory written by Tilebox Workflows' ``LocalFileSystemCache`` into any swath
cache (``swath cache import-tilebox DIR CACHE_URL``).

Tilebox's local cache keeps each value as a plain file: ``ROOT/<job id>/<key path>``, a job's
cache being the runner cache's group named by the job id, as in swath. swath's local cache keeps
its own layout (a checksum with every value, atomic writes), so the two cannot share a
directory; this copies each file to the key of the same path, streaming it in chunks, and checks
that what the destination stored has the size and CRC32C checksum of what was read.

Files whose path is not a valid swath key, symbolic links and other non-regular files are
skipped and reported, never followed. A key that already holds the same bytes is left as it is
(so an interrupted import can be run again); one that holds other bytes is a conflict, reported
and left alone unless ``overwrite``. With ``delete_source``, each file is removed once its copy
is verified.
"""

from __future__ import annotations

import asyncio
import os
import stat as stat_module
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from swath.cache import _checksum
from swath.cache._base import DEFAULT_CHUNK_SIZE, Cache
from swath.cache.keys import split_key
from swath.errors import ChecksumMismatchError, InvalidKeyError, KeyNotFoundError


@dataclass
class ImportReport:
    """What :func:`import_tilebox_cache` did: keys copied and already present, bytes copied,
    and each file skipped or in conflict with the reason."""

    copied: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    copied_bytes: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when every file is in the destination."""
        return not self.skipped and not self.conflicts


def _walk(root: Path) -> list[tuple[str, Path, str | None]]:
    """``(relative posix path, path, reason to skip or None)`` of every entry below ``root``
    that is not a directory, sorted; symbolic links are reported, not followed."""
    found: list[tuple[str, Path, str | None]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        for name in list(dirnames):
            if (base / name).is_symlink():
                dirnames.remove(name)
                filenames.append(name)
        for name in filenames:
            path = base / name
            rel = path.relative_to(root).as_posix()
            mode = path.lstat().st_mode
            if stat_module.S_ISLNK(mode):
                found.append((rel, path, "a symbolic link (not followed)"))
            elif not stat_module.S_ISREG(mode):
                found.append((rel, path, "not a regular file"))
            else:
                found.append((rel, path, None))
    return sorted(found)


async def _file_crc(path: Path, chunk_size: int) -> tuple[int, int]:
    def run() -> tuple[int, int]:
        crc = size = 0
        with path.open("rb") as f:
            while chunk := f.read(chunk_size):
                crc = _checksum.update(crc, chunk)
                size += len(chunk)
        return size, crc

    return await asyncio.to_thread(run)


async def import_tilebox_cache(
    root: str | os.PathLike[str],
    cache: Cache,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    overwrite: bool = False,
    delete_source: bool = False,
) -> ImportReport:
    """Copy every file below ``root`` (a Tilebox ``LocalFileSystemCache`` root) to the key of
    the same relative path in ``cache`` (an entered swath cache), verified; see the module
    docstring."""
    root_path = Path(root)
    if not await asyncio.to_thread(root_path.is_dir):
        raise NotADirectoryError(f"not a directory: {root_path}")
    report = ImportReport()
    for rel, path, reason in await asyncio.to_thread(_walk, root_path):
        if reason is None:
            try:
                split_key(rel)
            except InvalidKeyError as exc:
                reason = f"not a valid swath key: {exc}"
        if reason is not None:
            report.skipped.append((rel, reason))
            continue
        try:
            existing = await cache.stat(rel)
        except KeyNotFoundError:
            existing = None
        if existing is not None:
            size, crc = await _file_crc(path, chunk_size)
            if (existing.size, existing.checksum) == (size, _checksum.render(crc)):
                report.unchanged.append(rel)
                if delete_source:
                    await asyncio.to_thread(path.unlink)
                continue
            if not overwrite:
                report.conflicts.append(rel)
                continue
        size, crc = await _copy(path, rel, cache, chunk_size)
        stored = await cache.stat(rel)
        if (stored.size, stored.checksum) != (size, _checksum.render(crc)):
            raise ChecksumMismatchError(
                f"{rel}: read {size} bytes ({_checksum.render(crc)}) from {path}, but the "
                f"cache stored {stored.size} bytes ({stored.checksum})"
            )
        report.copied.append(rel)
        report.copied_bytes += size
        if delete_source:
            await asyncio.to_thread(path.unlink)
    return report


async def _copy(path: Path, key: str, cache: Cache, chunk_size: int) -> tuple[int, int]:
    """Stream ``path`` into ``key``; returns the size and CRC32C of what was read."""
    crc = size = 0
    f = await asyncio.to_thread(path.open, "rb")

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal crc, size
        while chunk := await asyncio.to_thread(f.read, chunk_size):
            crc = _checksum.update(crc, chunk)
            size += len(chunk)
            yield chunk

    try:
        await cache.put_stream(key, chunks())
    finally:
        await asyncio.to_thread(f.close)
    return size, crc
