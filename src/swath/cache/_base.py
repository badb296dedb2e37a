"""The Cache protocol and the machinery every backend shares.

A backend implements a handful of *primitives* on validated paths (tuples of key segments, see
``keys.py``): open a writer, stream a value, read a range, stat, delete, list a group, clear a
group. Everything users call (``put``, ``get``, ``stream``, ``group``, ...) lives once, in
:class:`CacheAPI`, and is the same on every backend: key validation, type checks, exact
re-chunking, commit-or-discard of writers and slicing rules cannot drift between backends.

A backend object is itself the root group of its cache; ``group()`` returns a :class:`CacheGroup`
that shares the backend and carries a longer prefix. No group can reach outside its prefix,
because every key passes through :func:`swath.cache.keys.split_key` with that prefix.
"""

from __future__ import annotations

import abc
import contextlib
import os
import re
import secrets
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self, TypeAlias, runtime_checkable

import anyio

from swath.cache.keys import Path, join, split_key
from swath.errors import ChecksumMismatchError, InvalidKeyError, KeyNotFoundError, ReadOnlyError

DEFAULT_CHUNK_SIZE = 8 << 20

if TYPE_CHECKING:
    from typing_extensions import Buffer

    # Any object with the buffer protocol (PEP 688): bytes, bytearray, memoryview, array.array,
    # numpy arrays... (see ``as_view`` for the one rule that turns them into bytes).
    BytesLike: TypeAlias = Buffer
else:
    BytesLike = bytes | bytearray | memoryview  # for readers at run time; the rule is as_view


@dataclass(frozen=True, slots=True)
class Stat:
    """What ``stat`` tells of a stored value."""

    size: int
    checksum: str  # "crc32c:<8 hex digits>"


@dataclass(frozen=True, slots=True)
class StoredObject:
    """An object as a cloud backend's raw listing (``_objects``) shows it: every object below
    the backend's prefix, whether or not its name is a valid key.

    ``name`` is below the prefix; ``modified`` is when it was written (Unix seconds, by the
    storage's clock); ``version`` changes whenever the object is replaced (the S3 ETag, the GCS
    generation); ``checksum`` is its CRC32C in the form of :attr:`Stat.checksum` when the
    listing carries one (GCS), else None."""

    name: str
    size: int
    modified: float
    version: str
    checksum: str | None = None


def as_view(value: object) -> memoryview:
    """The bytes of a cache value as a flat, C-contiguous ``memoryview`` of unsigned bytes; the
    one rule for values, used by ``put``, ``put_stream`` and ``open_write`` on every backend.

    Any object with the buffer protocol is a value, whatever its shape, strides or item format:
    its bytes are the bytes of its logical elements in C (row-major) order, each element's bytes
    as they are in memory, i.e. exactly ``memoryview(value).tobytes()``. A contiguous buffer is
    viewed without copying; a non-contiguous one (``memoryview(b"abcdef")[::2]``, a transposed
    or sliced array) is copied once. Empty buffers of any shape are the empty value.

    ``TypeError`` for ``str`` (encode it first), for objects without the buffer protocol, and
    for buffers of Python object references (numpy ``dtype=object``, format ``O``): their bytes
    are pointers, not data.
    """
    if isinstance(value, str):
        raise TypeError("cache values must be bytes-like, not str (encode it first)")
    try:
        view = memoryview(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"cache values must be bytes-like (bytes, bytearray, memoryview, a buffer), "
            f"not {type(value).__name__} ({exc})"
        ) from None
    if view.format == "B" and view.ndim == 1 and view.c_contiguous:
        return view
    if _holds_objects(view.format):
        raise TypeError(
            f"cache values must hold data, not Python object references ({type(value).__name__} "
            f"with item format {view.format!r}, e.g. a numpy array of dtype=object)"
        )
    if view.nbytes == 0:
        return memoryview(b"")
    if view.c_contiguous:
        return view.cast("B")
    return memoryview(view.tobytes())


def _holds_objects(fmt: str) -> bool:
    """Whether a struct-syntax buffer format contains object references (``O``), field names
    (``:name:`` in ``T{...}`` structures) left out."""
    return "O" in re.sub(r":[^:]*:", "", fmt)


def is_buffer(value: object) -> bool:
    """Whether ``value`` has the buffer protocol (is one value, not a stream of chunks)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return True
    try:
        memoryview(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True


def joined(pieces: list[bytes]) -> bytes:
    """The pieces as one ``bytes``: a single piece as it is, more joined with one copy."""
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)


class Gather:
    """Cuts pieces of any size into ``bytes`` of exactly ``size`` (the last may be shorter): a
    ``bytes`` piece of the right size passes through without a copy; any other output is joined
    from the pieces it spans with one copy (no staging buffer)."""

    __slots__ = ("count", "held", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.held: list[memoryview] = []
        self.count = 0

    def add(self, chunk: bytes | bytearray | memoryview) -> Iterator[bytes]:
        if not self.held and len(chunk) == self.size and isinstance(chunk, bytes):
            yield chunk
            return
        view = memoryview(chunk).cast("B")
        while self.count + len(view) >= self.size:
            take = self.size - self.count
            self.held.append(view[:take])
            whole = b"".join(self.held)
            self.held = []
            self.count = 0
            view = view[take:]
            yield whole
        if len(view):
            self.held.append(view)
            self.count += len(view)

    def rest(self) -> Iterator[bytes]:
        if self.held:
            whole = b"".join(self.held)
            self.held = []
            self.count = 0
            yield whole


async def rechunk(
    chunks: AsyncIterable[bytes | bytearray | memoryview], size: int
) -> AsyncGenerator[bytes, None]:
    """Yield exactly ``size`` bytes per chunk (the last may be shorter), as :class:`Gather`.
    Closing this generator closes ``chunks`` at once (a backend's stream then releases its
    connection and cancels its reads in flight there and then, not when the garbage collector
    gets to it)."""
    gather = Gather(size)
    try:
        async for chunk in chunks:
            for piece in gather.add(chunk):
                yield piece
        for piece in gather.rest():
            yield piece
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()


async def _iterate(source: AsyncIterable[object] | Iterable[object]) -> AsyncIterator[object]:
    if isinstance(source, AsyncIterable):
        async for item in source:
            yield item
    elif isinstance(source, str) or is_buffer(source):
        raise TypeError(
            "put_stream takes an iterable of bytes-like chunks; use put() for one value"
        )
    elif isinstance(source, Iterable):
        for item in source:
            yield item
    else:
        raise TypeError(f"put_stream takes an (async) iterable of bytes-like, not {type(source)!r}")


class BackendWriter(abc.ABC):
    """A backend's half of ``open_write``: receives chunks, then commits or aborts.

    Backends compute the CRC32C of what they write (``_checksum.update``) and store it with the
    value. ``commit`` makes the value visible atomically; ``abort`` discards everything and must be
    safe to call after a failed ``write`` or ``commit``.
    """

    @abc.abstractmethod
    async def write(self, data: memoryview) -> None: ...

    @abc.abstractmethod
    async def commit(self) -> None: ...

    @abc.abstractmethod
    async def abort(self) -> None: ...


class CacheWriter:
    """What ``open_write`` yields. The value becomes visible only when the ``async with`` block
    exits cleanly; an exception or a cancellation discards it and leaves the previous state."""

    def __init__(self, key: str, backend: BackendWriter) -> None:
        self._key = key
        self._backend = backend
        self._written = 0
        self._closed = False

    @property
    def bytes_written(self) -> int:
        return self._written

    async def write(self, data: BytesLike) -> None:
        """Append ``data`` (bytes-like) to the value being written."""
        if self._closed:
            raise RuntimeError(f"writer for {self._key!r} is already closed")
        view = as_view(data)
        if view.nbytes:
            await self._backend.write(view)
            self._written += view.nbytes

    send = write  # anyio ByteSendStream vocabulary

    async def _finish(self, ok: bool) -> None:
        if self._closed:
            return
        self._closed = True
        if ok:
            try:
                await self._backend.commit()
                return
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await self._backend.abort()
                raise
        with anyio.CancelScope(shield=True):
            await self._backend.abort()


class _OpenWrite:
    def __init__(self, api: CacheAPI, key: str) -> None:
        self._api = api
        self._key = key
        self._writer: CacheWriter | None = None

    async def __aenter__(self) -> CacheWriter:
        path = self._api._path(self._key)
        backend = await self._api._backend._open_writer(path)
        self._writer = CacheWriter(self._key, backend)
        return self._writer

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._writer is not None
        await self._writer._finish(ok=et is None)


@runtime_checkable
class Cache(Protocol):
    """The cache contract (docs/cache.md). Every backend and every group satisfies it."""

    async def put(self, key: str, value: BytesLike) -> None: ...
    async def get(self, key: str) -> bytes: ...
    async def contains(self, key: str) -> bool: ...
    async def delete(self, key: str) -> None: ...
    async def stat(self, key: str) -> Stat: ...
    async def put_stream(
        self, key: str, chunks: AsyncIterable[BytesLike] | Iterable[BytesLike]
    ) -> int: ...
    def open_write(self, key: str) -> _OpenWrite: ...
    def stream(self, key: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> AsyncIterator[bytes]: ...
    async def get_range(self, key: str, start: int, end: int | None = None) -> bytes: ...
    async def put_file(self, key: str, path: str | os.PathLike[str]) -> int: ...
    async def get_file(self, key: str, path: str | os.PathLike[str]) -> int: ...
    def group(self, name: str) -> Cache: ...
    def __aiter__(self) -> AsyncIterator[str]: ...
    def groups(self) -> AsyncIterator[str]: ...
    def items(self) -> AsyncIterator[tuple[str, bytes]]: ...
    async def clear(self) -> None: ...


class CacheAPI:
    """The public cache operations, written once on top of a backend's primitives."""

    _backend: Backend
    _prefix: Path

    # -- helpers --------------------------------------------------------------------------------
    def _path(self, key: str) -> Path:
        return split_key(key, self._prefix)

    def _missing(self, key: str) -> KeyNotFoundError:
        return missing(self._path(key))

    def _writable(self) -> None:
        if self._backend.read_only:
            raise ReadOnlyError(f"the cache {self._backend.url()} is open read-only")

    # -- whole values ---------------------------------------------------------------------------
    async def put(self, key: str, value: BytesLike) -> None:
        """Store ``value`` under ``key``, replacing any previous value atomically."""
        path = self._path(key)
        self._writable()
        view = as_view(value)
        await self._backend._put_bytes(path, value if type(value) is bytes else view)

    async def get(self, key: str) -> bytes:
        """The whole value (verified against its checksum); ``KeyNotFoundError`` if missing."""
        return await self._backend._read_all(self._path(key))

    async def contains(self, key: str) -> bool:
        """True if ``key`` holds a value (a name that is only a group is not contained). Never
        reads the value: a corrupt value is contained (reading it raises the checksum error)."""
        return await self._backend._exists(self._path(key))

    async def delete(self, key: str) -> None:
        """Remove the value of ``key``; ``KeyNotFoundError`` if there is none."""
        path = self._path(key)
        self._writable()
        await self._backend._delete(path)

    async def stat(self, key: str) -> Stat:
        """Size and checksum of the value, without reading it."""
        st = await self._backend._stat(self._path(key))
        if st is None:
            raise self._missing(key)
        return st

    # -- streaming ------------------------------------------------------------------------------
    def open_write(self, key: str) -> _OpenWrite:
        """``async with cache.open_write(key) as w: await w.write(chunk)``: commit on clean exit."""
        self._path(key)  # validate now, before the caller produces any data
        self._writable()
        return _OpenWrite(self, key)

    async def put_stream(
        self, key: str, chunks: AsyncIterable[BytesLike] | Iterable[BytesLike]
    ) -> int:
        """Store the concatenation of ``chunks`` (any iterable or async iterable of bytes-like),
        holding one chunk at a time. Returns the number of bytes written."""
        if isinstance(chunks, str) or is_buffer(chunks):
            raise TypeError("put_stream takes an iterable of bytes-like chunks; use put()")
        async with self.open_write(key) as writer:
            async for chunk in _iterate(chunks):
                await writer.write(chunk)  # type: ignore[arg-type]
        return writer.bytes_written

    def stream(self, key: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> AsyncIterator[bytes]:
        """Yield the value in chunks of exactly ``chunk_size`` bytes (the last may be shorter).

        The checksum is verified as the data goes by; a mismatch raises at the end."""
        if not isinstance(chunk_size, int) or chunk_size <= 0:
            raise ValueError(f"chunk_size must be a positive int, not {chunk_size!r}")
        return rechunk(self._backend._stream(self._path(key), chunk_size), chunk_size)

    async def get_range(self, key: str, start: int, end: int | None = None) -> bytes:
        """``value[start:end]`` read without reading the rest (negative indices as in slicing)."""
        path = self._path(key)
        if not isinstance(start, int) or not (end is None or isinstance(end, int)):
            raise TypeError("get_range takes int start and end")
        if start < 0 or (end is not None and end < 0):
            st = await self._backend._stat(path)
            if st is None:
                raise self._missing(key)
            start, end, _ = slice(start, end).indices(st.size)
        if end is not None and end <= start:
            if await self._backend._stat(path) is None:
                raise self._missing(key)
            return b""
        return await self._backend._read_range(path, start, end)

    async def put_file(self, key: str, path: str | os.PathLike[str]) -> int:
        """Store the contents of the file at ``path``; returns its size."""
        self._writable()
        return await self._backend._put_file(self._path(key), os.fspath(path))

    async def get_file(self, key: str, path: str | os.PathLike[str]) -> int:
        """Write the value to the file at ``path`` (atomically replaced); returns its size."""
        return await self._backend._get_file(self._path(key), os.fspath(path))

    # -- groups ---------------------------------------------------------------------------------
    def group(self, name: str) -> CacheGroup:
        """The group ``name`` below this one (no I/O). ``group("a/b")`` is
        ``group("a").group("b")``."""
        return CacheGroup(self._backend, split_key(name, self._prefix))

    def __aiter__(self) -> AsyncIterator[str]:
        """The direct keys of this group: not its subgroups, not nested keys."""
        return self._backend._list(self._prefix, groups=False)

    def groups(self) -> AsyncIterator[str]:
        """The names of the direct subgroups that hold at least one value."""
        return self._backend._list(self._prefix, groups=True)

    async def items(self) -> AsyncIterator[tuple[str, bytes]]:
        """``(key, value)`` for each direct key (values read one at a time)."""
        async for key in self._backend._list(self._prefix, groups=False):
            try:
                yield key, await self.get(key)
            except KeyNotFoundError:
                continue  # deleted while we listed

    async def clear(self) -> None:
        """Delete this group and everything below it."""
        self._writable()
        await self._backend._clear(self._prefix)

    @property
    def path(self) -> str:
        """This group's path from the root of the backend ('' for the root)."""
        return join(self._prefix)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._backend!r} group={join(self._prefix)!r}>"


class CacheGroup(CacheAPI):
    """A group of a backend: the same operations, scoped below a prefix."""

    def __init__(self, backend: Backend, prefix: Path) -> None:
        if not prefix:
            raise InvalidKeyError("a group needs a non-empty name")
        self._backend = backend
        self._prefix = prefix

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, CacheGroup)
            and other._backend is self._backend
            and other._prefix == self._prefix
        )

    def __hash__(self) -> int:
        return hash((id(self._backend), self._prefix))

    def __repr__(self) -> str:
        return f"<CacheGroup {join(self._prefix)!r} of {self._backend!r}>"


class Backend(CacheAPI, abc.ABC):
    """Base class of every cache backend; the backend object is the root group of its cache.

    Subclasses implement the ``_``-prefixed primitives. Paths they receive are validated tuples of
    segments; keys have at least one segment, group prefixes may be empty (the root).
    """

    url_scheme: str = ""
    #: a read-only cache refuses every write with ``ReadOnlyError`` (constructor option)
    read_only: bool = False

    def __init__(self) -> None:
        self._backend = self
        self._prefix = ()
        self._depth = 0

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self._depth > 0

    async def __aenter__(self) -> Self:
        if self._depth == 0:
            await self._open()
        self._depth += 1
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._depth -= 1
        if self._depth == 0:
            with anyio.CancelScope(shield=True):
                await self._close()

    async def _open(self) -> None:
        """Open connections (called on the first enter)."""

    async def _close(self) -> None:
        """Release connections (called on the last exit). Never deletes data."""

    def url(self) -> str:
        """The URL form of this cache (``memory://``, ``file:///...``, ``s3://...``)."""
        raise NotImplementedError

    # -- primitives -----------------------------------------------------------------------------
    @abc.abstractmethod
    async def _open_writer(self, path: Path) -> BackendWriter: ...

    @abc.abstractmethod
    def _stream(self, path: Path, chunk_size: int) -> AsyncIterator[bytes]:
        """An async generator of the value's chunks (any sizes, ideally ``chunk_size``),
        verifying the checksum by the end; raises ``missing(path)`` if there is no value."""

    @abc.abstractmethod
    async def _read_range(self, path: Path, start: int, end: int | None) -> bytes:
        """``value[start:end]`` with ``0 <= start`` and ``end`` None or ``> start``."""

    @abc.abstractmethod
    async def _stat(self, path: Path) -> Stat | None:
        """Size and checksum, or None if there is no value (never raises for a missing key)."""

    @abc.abstractmethod
    async def _delete(self, path: Path) -> None:
        """Remove the value; raise ``missing(path)`` if there is none."""

    @abc.abstractmethod
    def _list(self, prefix: Path, *, groups: bool) -> AsyncIterator[str]: ...

    @abc.abstractmethod
    async def _clear(self, prefix: Path) -> None: ...

    # -- primitives with generic implementations ------------------------------------------------
    async def _exists(self, path: Path) -> bool:
        """Whether ``path`` holds a value, corrupt or not: True or False, never a checksum
        error (backends override this with a cheaper check that reads no data)."""
        try:
            return await self._stat(path) is not None
        except ChecksumMismatchError:
            return True

    async def _put_bytes(self, path: Path, data: bytes | memoryview) -> None:
        writer = await self._open_writer(path)
        try:
            await writer.write(memoryview(data))
            await writer.commit()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await writer.abort()
            raise

    async def _read_all(self, path: Path) -> bytes:
        return joined([chunk async for chunk in self._stream(path, DEFAULT_CHUNK_SIZE)])

    async def _put_file(self, path: Path, src: str) -> int:
        writer = await self._open_writer(path)
        total = 0
        try:
            fd = await anyio.to_thread.run_sync(os.open, src, os.O_RDONLY)
            try:
                while True:
                    chunk = await anyio.to_thread.run_sync(os.read, fd, DEFAULT_CHUNK_SIZE)
                    if not chunk:
                        break
                    await writer.write(memoryview(chunk))
                    total += len(chunk)
            finally:
                os.close(fd)
            await writer.commit()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await writer.abort()
            raise
        return total

    async def _get_file(self, path: Path, dst: str) -> int:
        if await self._stat(path) is None:
            raise missing(path)
        return await write_file_atomically(dst, self._stream(path, DEFAULT_CHUNK_SIZE))


def missing(path: Path) -> KeyNotFoundError:
    """The error for a key without a value (the message names the full key)."""
    return KeyNotFoundError(f"no value for key {join(path)!r}")


async def write_file_atomically(dst: str, chunks: AsyncIterator[bytes]) -> int:
    """Write ``chunks`` to a temporary file beside ``dst`` and rename it into place; on any
    error remove the temporary file, leaving ``dst`` as it was. Returns the size."""
    tmp = f"{dst}.swath-{os.getpid()}-{secrets.token_hex(6)}.tmp"
    fd = await anyio.to_thread.run_sync(
        lambda: os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    )
    total = 0
    ok = False
    try:
        async for chunk in chunks:
            await anyio.to_thread.run_sync(_write_all, fd, chunk)
            total += len(chunk)
        await anyio.to_thread.run_sync(os.rename, tmp, dst)
        ok = True
        return total
    finally:
        os.close(fd)
        if not ok:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_unlink_quietly, tmp)


def _write_all(fd: int, data: BytesLike) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
