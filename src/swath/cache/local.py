"""LocalFileSystemCache: values as files under a root directory, written atomically.

On-disk layout (see docs/architecture.md):

* a value is a regular file named by its key segment, with ``%`` escaped as ``%25``; the file holds
  the value followed by a 24-byte trailer (magic, size, CRC32C), so value and checksum are
  committed together by one rename;
* a group is a directory named by its segment plus a ``%`` suffix, so a name can be a key and a
  group at once;
* a segment whose escaped name is longer than 200 bytes is split into pieces; all pieces but the
  last are directories with a ``%l`` suffix (filesystem names are limited to 255 bytes, keys are
  not);
* a write goes to a hidden temporary ``.<name>%t<pid>-<token>`` in the value's directory (its
  writeback to disk started every few MiB as it is written), is fsynced (``fdatasync``) and
  renamed over the value. Names containing ``%t`` are never listed. The writer holds an exclusive
  ``flock`` on its temporary for its whole life; a listing removes a temporary only if that lock
  is free (its writer is gone) and it is old (see ``_temp_is_stale``).

Every path is walked from the root one directory at a time with ``O_NOFOLLOW`` (``openat``-style,
through ``dir_fd``), so a symlink planted inside the root is refused, never followed. Blocking
calls run in worker threads; the CRC is computed there too (the ``crc32c`` module releases the
GIL).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import os
import secrets
import stat as stat_mod
import struct
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TypeVar

import anyio
import anyio.to_thread

from swath.cache import _checksum
from swath.cache._base import Backend, BackendWriter, Stat, missing
from swath.cache._transfer import Checked, ordered_reads, pieces
from swath.cache.keys import Path, join
from swath.errors import CacheError, ChecksumMismatchError, NotFoundError

T = TypeVar("T")

TRAILER = struct.Struct("<8sQI4x")
MAGIC = b"swath\x00v1"
MAX_NAME = 200  # bytes of one filesystem name we produce (ext4 and most others allow 255)
GROUP_SUFFIX = "%"
PIECE_SUFFIX = "%l"
TEMP_MARK = "%t"
SMALL_WRITE = 256 << 10
WRITEBACK_STEP = 8 << 20  # a writer starts the disk on what it wrote every this many bytes
MIN_READ = 1 << 20  # streams read at least this much per thread hop
SMALL_PIECE = 64 << 10  # stream chunks smaller than this are cut from one larger read
READ_AHEAD = 2  # blocks read (and checksummed) at once by a stream, each in its own thread
STALE_AFTER = 3600.0  # seconds without a write after which any temporary is debris
DEAD_WRITER_GRACE = 60.0  # a temporary of a dead local process is debris after this long
WALK_ATTEMPTS = 1000  # walks down to a new value's directory, each undone by concurrent deletes

_NO_FLOCK = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL})
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


async def _run(fn: Callable[..., T], *args: object) -> T:
    return await anyio.to_thread.run_sync(fn, *args)


async def _run_to_end(
    fn: Callable[..., T], *args: object, undo: Callable[[T], object] | None = None
) -> T:
    """``_run``, but a cancellation arriving meanwhile waits for the thread to finish before it
    is raised: a writer's file descriptor and directories are never used by two threads at once
    (an abort racing a commit closed one descriptor twice). If the call succeeded all the same,
    ``undo(result)`` runs (in a thread, to its end) before the cancellation is raised."""
    call = asyncio.ensure_future(anyio.to_thread.run_sync(fn, *args))
    cancelled = False
    while not call.done():
        try:
            await asyncio.shield(call)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        if not call.cancelled() and call.exception() is None and undo is not None:
            await _run_to_end(undo, call.result())
        raise asyncio.CancelledError
    return call.result()


def _escape(segment: str) -> str:
    return segment.replace("%", "%25")


def _unescape(name: str) -> str:
    return name.replace("%25", "%")


def _pieces(segment: str) -> list[str]:
    """The escaped segment cut into names of at most MAX_NAME UTF-8 bytes (at char bounds)."""
    name = _escape(segment)
    if len(name.encode()) <= MAX_NAME:
        return [name]
    pieces: list[str] = []
    current: list[str] = []
    size = 0
    for ch in name:
        n = len(ch.encode())
        if size + n > MAX_NAME - len(PIECE_SUFFIX):
            pieces.append("".join(current))
            current, size = [], 0
        current.append(ch)
        size += n
    pieces.append("".join(current))
    return pieces


def _components(path: Path, leaf_is_group: bool) -> list[str]:
    """Filesystem names from the root to the value file (or group directory) of ``path``."""
    names: list[str] = []
    for i, segment in enumerate(path):
        pieces = _pieces(segment)
        names.extend(piece + PIECE_SUFFIX for piece in pieces[:-1])
        is_leaf_value = i == len(path) - 1 and not leaf_is_group
        names.append(pieces[-1] if is_leaf_value else pieces[-1] + GROUP_SUFFIX)
    return names


def _is_temp(name: str) -> bool:
    return TEMP_MARK in name


class _Dirs:
    """Open directory fds from the root down a list of names, never following symlinks."""

    def __init__(self, root: str, names: list[str], create: bool) -> None:
        self.fds: list[int] = []
        self.names = names
        try:
            if create:
                os.makedirs(root, exist_ok=True)
            self.fds.append(os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
            for name in names:
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(name, 0o755, dir_fd=self.fds[-1])
                self.fds.append(_open_dir(name, self.fds[-1]))
        except BaseException:
            self.close()
            raise

    @property
    def fd(self) -> int:
        return self.fds[-1]

    def prune(self) -> None:
        """Remove the directories of this walk that are empty, deepest first."""
        for depth in range(len(self.names), 0, -1):
            try:
                os.rmdir(self.names[depth - 1], dir_fd=self.fds[depth - 1])
            except OSError:
                return

    def close(self) -> None:
        for fd in reversed(self.fds):
            os.close(fd)
        self.fds = []

    def __enter__(self) -> _Dirs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open_dir(name: str, dir_fd: int) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise CacheError(
                f"refusing to follow {name!r}: not a plain directory (a symlink inside the "
                "cache root?)"
            ) from exc
        raise


def _open_value(root: str, path: Path) -> tuple[int, int, int]:
    """Open a value file; returns (fd, size, crc). Raises KeyNotFoundError if missing."""
    names = _components(path, leaf_is_group=False)
    try:
        with _Dirs(root, names[:-1], create=False) as dirs:
            fd = os.open(names[-1], _READ_FLAGS, dir_fd=dirs.fd)
    except (FileNotFoundError, NotADirectoryError):
        raise missing(path) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise CacheError(f"refusing to follow a symlink for key {join(path)!r}") from exc
        raise
    try:
        st = os.fstat(fd)
        if not stat_mod.S_ISREG(st.st_mode):
            raise missing(path)
        size, crc = _read_trailer(fd, st.st_size, path)
        return fd, size, crc
    except BaseException:
        os.close(fd)
        raise


def _read_trailer(fd: int, file_size: int, path: Path) -> tuple[int, int]:
    if file_size < TRAILER.size:
        raise ChecksumMismatchError(f"value of {join(path)!r} is truncated (no checksum trailer)")
    magic, size, crc = TRAILER.unpack(os.pread(fd, TRAILER.size, file_size - TRAILER.size))
    if magic != MAGIC or size != file_size - TRAILER.size:
        raise ChecksumMismatchError(f"value of {join(path)!r} is corrupt (bad trailer)")
    return size, crc


def _copy_range(src: int, dst: int, count: int) -> None:
    """Copy ``count`` bytes from the current offsets, the cheapest way the OS offers."""
    remaining = count
    try:
        while remaining:
            n = os.copy_file_range(src, dst, remaining)
            if n == 0:
                break
            remaining -= n
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
        while remaining:  # sendfile to a regular file works since Linux 2.6.33
            n = os.sendfile(dst, src, None, remaining)
            if n == 0:
                break
            remaining -= n
    if remaining:
        raise CacheError(f"source shrank while copying ({remaining} bytes missing)")


def _crc_of_fd(fd: int, offset: int, size: int, buf: bytearray) -> int:
    crc = 0
    view = memoryview(buf)
    end = offset + size
    while offset < end:
        n = os.preadv(fd, [view[: min(len(buf), end - offset)]], offset)
        if n == 0:
            raise CacheError("file shrank while reading")
        crc = _checksum.update(crc, view[:n])
        offset += n
    return crc


def _load_sync_file_range() -> Callable[[int, int, int], None] | None:
    """``sync_file_range(fd, offset, n, SYNC_FILE_RANGE_WRITE)`` from the C library (Linux; not
    in the ``os`` module), or None where there is none."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        call = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    call.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    call.restype = ctypes.c_int
    sync_file_range_write = 2

    def start_writeback(fd: int, offset: int, count: int) -> None:
        call(fd, offset, count, sync_file_range_write)  # advisory: a failure changes nothing

    return start_writeback


#: Starts writing a range of a file to disk without waiting for it (None: not on this system).
#: A writer calls it for every WRITEBACK_STEP bytes written, so the disk works while the value
#: is still being produced and the fsync of the commit finds little left to write.
_start_writeback = _load_sync_file_range() if sys.platform == "linux" else None


def _write_all(fd: int, data: memoryview | bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class _LocalWriter(BackendWriter):
    """Writes to a temporary file beside the value; commit = trailer, fsync, rename."""

    def __init__(self, root: str, path: Path) -> None:
        self._root = root
        self._path = path
        self._names = _components(path, leaf_is_group=False)
        self._final = self._names[-1]
        self._dirs, self._tmp, self._fd = self._create_temp()
        self._crc = 0
        self._size = 0
        self._pending = bytearray()
        self._written_back = 0  # bytes from 0 whose writeback to disk was started
        self._done = False

    def _create_temp(self) -> tuple[_Dirs, str, int]:
        """Walk down to the value's directory (creating it) and create a locked temporary
        there; returns the walk, the temporary's name and its fd."""
        # A concurrent delete (or clear) removes empty directories: one this walk has just made
        # or opened may vanish before the next step (mkdir or open in it gives ENOENT). Once the
        # temporary exists, its directory is not empty and nothing prunes it, so the walk is
        # simply started again from the root until the temporary is created.
        for _attempt in range(WALK_ATTEMPTS):
            tmp = f".{self._final[:48]}{TEMP_MARK}{os.getpid()}-{secrets.token_hex(6)}"
            try:
                dirs = _Dirs(self._root, self._names[:-1], create=True)
            except FileNotFoundError:
                continue
            try:
                fd = os.open(
                    tmp,
                    os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o644,
                    dir_fd=dirs.fd,
                )
            except FileNotFoundError:
                dirs.close()
                continue
            except BaseException:
                dirs.close()
                raise
            # Held until the temporary is renamed or removed: it tells sweepers the writer is
            # alive, however long it stays idle (the kernel drops it when the process dies).
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError as exc:
                if exc.errno not in _NO_FLOCK:
                    os.close(fd)
                    with contextlib.suppress(OSError):
                        os.unlink(tmp, dir_fd=dirs.fd)
                    dirs.close()
                    raise
                # a filesystem without flock: sweepers fall back to the age of the temporary
            return dirs, tmp, fd
        raise CacheError(
            f"could not create a temporary file for {join(self._path)!r}: its directories kept "
            f"vanishing ({WALK_ATTEMPTS} attempts)"
        )

    # sync halves, run in threads --------------------------------------------------------------
    def _write_sync(self, data: memoryview) -> None:
        self._crc = _checksum.update(self._crc, data)
        self._size += len(data)
        if len(data) < SMALL_WRITE:
            self._pending += data
            if len(self._pending) < SMALL_WRITE:
                return
            data, self._pending = memoryview(self._pending), bytearray()
        elif self._pending:
            _write_all(self._fd, self._pending)
            self._pending = bytearray()
        _write_all(self._fd, data)
        on_file = self._size - len(self._pending)
        if _start_writeback is not None and on_file - self._written_back >= WRITEBACK_STEP:
            _start_writeback(self._fd, self._written_back, on_file - self._written_back)
            self._written_back = on_file

    def _copy_from_sync(self, src: str) -> int:
        with open(src, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat_mod.S_ISREG(st.st_mode) or st.st_size == 0:
                # a pipe, a device, a /proc file: their size says nothing, read to the end
                buf = bytearray(1 << 20)
                while n := f.readinto(buf):
                    self._write_sync(memoryview(buf)[:n])
                return self._size
            size = st.st_size
            _copy_range(f.fileno(), self._fd, size)
        self._crc = _crc_of_fd(self._fd, 0, size, bytearray(min(size, 8 << 20) or 1))
        self._size = size
        return size

    def _commit_sync(self) -> None:
        if self._pending:
            _write_all(self._fd, self._pending)
            self._pending = bytearray()
        os.pwrite(self._fd, TRAILER.pack(MAGIC, self._size, self._crc), self._size)
        # the data and what reading it needs (the size): the rename's directory entry is not
        # part of the file's fsync either way
        os.fdatasync(self._fd)
        for _attempt in range(WALK_ATTEMPTS):
            # rename while the lock is still held: a sweeper must not take the temporary between
            try:
                os.rename(
                    self._tmp, self._final, src_dir_fd=self._dirs.fd, dst_dir_fd=self._dirs.fd
                )
                break
            except FileNotFoundError:
                # A clear() of a group above removed the directory with our temporary in it
                # while we wrote. The data is still ours through the open fd: copy it into a new
                # temporary down a fresh walk, and commit that (the write lands after the clear).
                self._move_to_new_temp()
        else:
            raise CacheError(f"could not commit {join(self._path)!r}: its directory kept vanishing")
        self._done = True
        os.close(self._fd)
        self._fd = -1
        self._dirs.close()

    def _move_to_new_temp(self) -> None:
        dirs, tmp, fd = self._create_temp()
        try:
            os.lseek(self._fd, 0, os.SEEK_SET)
            _copy_range(self._fd, fd, self._size + TRAILER.size)
            os.fsync(fd)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dirs.fd)
            os.close(fd)
            dirs.close()
            raise
        os.close(self._fd)
        self._dirs.close()
        self._dirs, self._tmp, self._fd = dirs, tmp, fd

    def _abort_sync(self) -> None:
        if self._done:
            return
        self._done = True
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp, dir_fd=self._dirs.fd)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self._dirs.prune()
        self._dirs.close()

    # async face -------------------------------------------------------------------------------
    async def write(self, data: memoryview) -> None:
        await _run_to_end(self._write_sync, data)

    async def copy_from(self, src: str) -> int:
        return await _run_to_end(self._copy_from_sync, src)

    async def commit(self) -> None:
        await _run_to_end(self._commit_sync)

    async def abort(self) -> None:
        await _run_to_end(self._abort_sync)


def _temp_is_stale(name: str, dir_fd: int, now: float) -> bool:
    """Whether the temporary ``name`` is debris. A writer holds an exclusive ``flock`` on its
    temporary file from creation to rename or removal, so a file temporary is debris only if
    that lock is free (its writer is gone) and it is old: untouched for an hour, or a minute for
    one whose process (on this machine) no longer exists. A live writer keeps its temporary
    however long it stays idle. Directories (trash of an interrupted ``clear``) are debris
    after an hour."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    age = now - st.st_mtime
    if age <= DEAD_WRITER_GRACE:
        return False
    if stat_mod.S_ISREG(st.st_mode) and _writer_alive(name, dir_fd):
        return False
    if age > STALE_AFTER:
        return True
    pid_text = name.rsplit(TEMP_MARK, 1)[-1].split("-", 1)[0]
    if pid_text.isdigit():
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
    return False


def _writer_alive(name: str, dir_fd: int) -> bool:
    """Whether a writer holds the lock of the temporary file ``name`` (True if unsure, False
    where the filesystem has no ``flock``)."""
    try:
        fd = os.open(name, _READ_FLAGS | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        # no flock on this filesystem: nothing tells, the age rules alone decide
        return exc.errno not in _NO_FLOCK
    finally:
        os.close(fd)  # also releases the lock taken just now
    return False


def _remove_entry(name: str, dir_fd: int) -> None:
    """Remove the file or directory tree ``name`` (symlinks removed, never followed). Writers
    that walked into the tree before it was renamed away may still add or remove entries in it
    meanwhile: entries already gone are fine, and a directory refilled behind our back is
    emptied again."""
    for _attempt in range(WALK_ATTEMPTS):
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if not stat_mod.S_ISDIR(st.st_mode):
                os.unlink(name, dir_fd=dir_fd)
                return
            fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
        except FileNotFoundError:
            return
        try:
            with os.scandir(fd) as it:
                children = [entry.name for entry in it]
            for child in children:
                _remove_entry(child, fd)
        finally:
            os.close(fd)
        try:
            os.rmdir(name, dir_fd=dir_fd)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.ENOTEMPTY:
                raise
    raise CacheError(f"could not remove {name!r}: writers kept filling it")


def _scan(dir_fd: int, groups: bool, prefix: str = "") -> Iterator[str]:
    """Names in one directory: values (``groups=False``) or non-empty groups; descends into
    ``%l`` pieces of long names. Removes stale temporaries it meets."""
    now = time.time()
    with os.scandir(dir_fd) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        name = entry.name
        if _is_temp(name):
            with contextlib.suppress(OSError):
                if _temp_is_stale(name, dir_fd, now):
                    _remove_entry(name, dir_fd)
            continue
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
            is_file = entry.is_file(follow_symlinks=False)
        except OSError:
            continue
        if name.endswith(PIECE_SUFFIX) and is_dir:
            try:
                sub = _open_dir(name, dir_fd)
            except (OSError, CacheError):
                continue
            try:
                yield from _scan(sub, groups, prefix + name[: -len(PIECE_SUFFIX)])
            finally:
                os.close(sub)
        elif groups and is_dir and name.endswith(GROUP_SUFFIX) and not name.endswith("%25"):
            if _has_value(dir_fd, name):
                yield _unescape(prefix + name[: -len(GROUP_SUFFIX)])
        elif not groups and is_file and not name.endswith(GROUP_SUFFIX):
            yield _unescape(prefix + name)


def _has_value(parent_fd: int, name: str) -> bool:
    try:
        fd = _open_dir(name, parent_fd)
    except (OSError, CacheError):
        return False
    try:
        with os.scandir(fd) as it:
            entries = list(it)
        for entry in entries:
            if _is_temp(entry.name):
                continue
            if entry.is_file(follow_symlinks=False):
                return True
            if entry.is_dir(follow_symlinks=False) and _has_value(fd, entry.name):
                return True
        return False
    finally:
        os.close(fd)


class LocalFileSystemCache(Backend):
    """A cache in a directory of the local filesystem (or any mounted one)."""

    url_scheme = "file"

    def __init__(self, root: str | os.PathLike[str] = "cache", *, read_only: bool = False) -> None:
        super().__init__()
        self.root = os.path.abspath(os.fspath(root))
        self.read_only = read_only

    def url(self) -> str:
        return "file://" + self.root

    def __repr__(self) -> str:
        return f"LocalFileSystemCache({self.root!r})"

    async def _open(self) -> None:
        if self.read_only:  # create nothing; a missing root is no cache at all
            if not await _run(os.path.isdir, self.root):
                raise NotFoundError(f"no cache at {self.root}")
            return
        await _run(lambda: os.makedirs(self.root, exist_ok=True))

    # -- writes ---------------------------------------------------------------------------------
    async def _open_writer(self, path: Path) -> BackendWriter:
        # cancelled while its temporary was being made: removed, never left locked behind
        return await _run_to_end(_LocalWriter, self.root, path, undo=_LocalWriter._abort_sync)

    async def _put_file(self, path: Path, src: str) -> int:
        writer = await self._open_writer(path)
        assert isinstance(writer, _LocalWriter)
        try:
            size = await writer.copy_from(src)
            await writer.commit()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await writer.abort()
            raise
        return size

    # -- reads ----------------------------------------------------------------------------------
    async def _stream(self, path: Path, chunk_size: int) -> AsyncIterator[bytes]:
        fd, size, expected = await _run(_open_value, self.root, path)
        block = max(chunk_size, MIN_READ)  # tiny chunk sizes are cut by rechunk()
        if size <= block:  # one chunk: read and check it in one thread hop
            try:
                chunk, crc = await _run(_read_chunk, fd, size, 0, 0)
            finally:
                os.close(fd)
            _checksum.verify(expected, crc, repr(join(path)))
            if chunk:
                yield chunk
            return
        # Larger values: the engine's ordered reader, READ_AHEAD blocks read ahead while the
        # consumer holds the current one (at most three blocks alive). A worker thread reads a
        # block in chunk-sized ``bytes`` and checksums them in the same hop: one thread hop per
        # block, no copy, the CRC while the data is still in the CPU's cache, and two blocks
        # read and checked at once on two cores. (Reading in one thread and checking in another,
        # as before, cost a second hop per block and a page fault per 4 KiB of most blocks.)

        async def fetch(start: int, end: int) -> Checked:
            return await _run(_read_checked, fd, start, end, chunk_size)

        try:
            async for chunk in ordered_reads(
                None, 0, size, block, READ_AHEAD, fetch, block, expected, repr(join(path))
            ):
                yield chunk
        finally:
            os.close(fd)

    async def _read_all(self, path: Path) -> bytes:
        def read() -> bytes:
            fd, size, expected = _open_value(self.root, path)
            try:
                data = _pread_exact(fd, size, 0)
            finally:
                os.close(fd)
            _checksum.verify(expected, _checksum.update(0, data), repr(join(path)))
            return data

        return await _run(read)

    async def _read_range(self, path: Path, start: int, end: int | None) -> bytes:
        def read() -> bytes:
            fd, size, _ = _open_value(self.root, path)
            try:
                stop = size if end is None else min(end, size)
                return _pread_exact(fd, max(0, stop - start), start) if start < stop else b""
            finally:
                os.close(fd)

        return await _run(read)

    async def _stat(self, path: Path) -> Stat | None:
        def stat() -> Stat | None:
            try:
                fd, size, crc = _open_value(self.root, path)
            except KeyError:
                return None
            os.close(fd)
            return Stat(size=size, checksum=_checksum.render(crc))

        return await _run(stat)

    async def _exists(self, path: Path) -> bool:
        def exists() -> bool:
            names = _components(path, leaf_is_group=False)
            try:
                with _Dirs(self.root, names[:-1], create=False) as dirs:
                    st = os.stat(names[-1], dir_fd=dirs.fd, follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError):
                return False
            return stat_mod.S_ISREG(st.st_mode)

        return await _run(exists)

    async def _get_file(self, path: Path, dst: str) -> int:
        def copy() -> int:
            fd, size, expected = _open_value(self.root, path)
            try:
                crc = _crc_of_fd(fd, 0, size, bytearray(min(size, 8 << 20) or 1))
                _checksum.verify(expected, crc, repr(join(path)))
                directory = os.path.dirname(os.path.abspath(dst))
                tmp = os.path.join(directory, f".{os.path.basename(dst)[:48]}.swath-{os.getpid()}")
                tmp += "-" + secrets.token_hex(6)
                out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
                try:
                    os.lseek(fd, 0, os.SEEK_SET)
                    _copy_range(fd, out, size)
                    os.close(out)
                    out = -1
                    os.rename(tmp, dst)
                except BaseException:
                    if out >= 0:
                        os.close(out)
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(tmp)
                    raise
                return size
            finally:
                os.close(fd)

        return await _run(copy)

    # -- delete and listing ---------------------------------------------------------------------
    async def _delete(self, path: Path) -> None:
        def delete() -> None:
            names = _components(path, leaf_is_group=False)
            try:
                with _Dirs(self.root, names[:-1], create=False) as dirs:
                    st = os.stat(names[-1], dir_fd=dirs.fd, follow_symlinks=False)
                    if not stat_mod.S_ISREG(st.st_mode):
                        raise missing(path)
                    os.unlink(names[-1], dir_fd=dirs.fd)
                    dirs.prune()
            except (FileNotFoundError, NotADirectoryError):
                raise missing(path) from None

        await _run(delete)

    async def _list(self, prefix: Path, *, groups: bool) -> AsyncIterator[str]:
        def scan() -> list[str]:
            try:
                with _Dirs(self.root, _components(prefix, leaf_is_group=True), False) as dirs:
                    return list(_scan(dirs.fd, groups))
            except (FileNotFoundError, NotADirectoryError):
                return []

        for name in await _run(scan):
            yield name

    async def _clear(self, prefix: Path) -> None:
        def clear() -> None:
            names = _components(prefix, leaf_is_group=True)
            try:
                dirs = _Dirs(self.root, names[:-1] if names else [], create=False)
            except (FileNotFoundError, NotADirectoryError):
                return
            with dirs:
                targets = [names[-1]] if names else sorted(os.listdir(dirs.fd))
                for name in targets:
                    # rename first, so the group vanishes at once, then delete at leisure
                    trash = f".trash{TEMP_MARK}{os.getpid()}-{secrets.token_hex(6)}"
                    try:
                        os.rename(name, trash, src_dir_fd=dirs.fd, dst_dir_fd=dirs.fd)
                    except FileNotFoundError:
                        continue
                    _remove_entry(trash, dirs.fd)
                if names:
                    dirs.prune()

        await _run(clear)


def _pread_exact(fd: int, n: int, offset: int) -> bytes:
    data = os.pread(fd, n, offset)
    if len(data) == n:
        return data
    parts = [data]
    got = len(data)
    while got < n:
        more = os.pread(fd, n - got, offset + got)
        if not more:
            raise CacheError("file shrank while reading")
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _read_checked(fd: int, start: int, end: int, chunk_size: int) -> Checked:
    """Bytes ``[start, end)`` as ``bytes`` pieces of at most ``chunk_size``, with their CRC32C
    (one worker-thread hop: read and checksum while the data is hot in the CPU cache). Pieces
    of at least SMALL_PIECE are read one by one, without copying; smaller ones are cut from one
    read."""
    if chunk_size < SMALL_PIECE:
        data = _pread_exact(fd, end - start, start)
        return Checked(list(pieces(data, chunk_size)), len(data), _checksum.update(0, data))
    parts: list[bytes] = []
    crc = 0
    for offset in range(start, end, chunk_size):
        data = _pread_exact(fd, min(chunk_size, end - offset), offset)
        crc = _checksum.update(crc, data)
        parts.append(data)
    return Checked(parts, end - start, crc)


def _read_chunk(fd: int, n: int, offset: int, crc: int) -> tuple[bytes, int]:
    chunk = _pread_exact(fd, n, offset)
    return chunk, _checksum.update(crc, chunk)
