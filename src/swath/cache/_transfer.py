"""The transfer engine of the cache, written once for every backend that moves values in parts.

* :class:`PartWriter` turns a stream of writes into parts of ``part_size`` uploaded concurrently
  through a :class:`PartTarget` (the service's primitives: put a small value whole, begin, upload
  a part, complete, abort). At most ``concurrency`` parts are in flight and part buffers are
  reused, so a write holds at most ``part_size x (concurrency + 1)`` bytes, whatever the value's
  size. Each part's CRC32C is computed once (in a worker thread) and the whole value's CRC is
  combined from them. Any failure or cancellation cancels the parts in flight and aborts, with
  its own time budget.
* :func:`ordered_reads` reads ranges of a value with up to ``window`` requests in flight, yields
  them in order in chunks, computes the CRC32C one chunk behind in a worker thread (beside the
  consumer), or takes it from a fetch that computed it itself (:class:`Checked`: the local disk
  reads and checksums a range in one thread hop), and verifies it at the end.
* :class:`Body` is a request body over a buffer that aiohttp sends without copying, in slices,
  each with a deadline, so a server that stops reading cannot hold a request forever.

S3 (``s3.py``), GCS (``gcs.py``) and the local disk (``local.py``) supply only their primitives.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import functools
import os
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from swath.cache import _checksum
from swath.cache._base import Backend, BackendWriter, Gather
from swath.cache._retry import Deadlines, RetryPolicy, with_retries
from swath.cache.keys import Path, join, split_key
from swath.errors import CacheError

Buffer = bytes | bytearray | memoryview
T = TypeVar("T")

BODY_SLICE = 1 << 20  # request bodies are handed to the socket in slices of this size


def check_tuning(size_name: str, size: object, low: int, high: int, concurrency: object) -> None:
    """Validate a backend's part size and concurrency (a clear ValueError before any I/O)."""
    if not isinstance(size, int) or isinstance(size, bool) or not low <= size <= high:
        raise ValueError(f"{size_name} must be an int between {low} and {high}, not {size!r}")
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
        raise ValueError(f"max_concurrency must be a positive int, not {concurrency!r}")


# -- uploads -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Part:
    """An uploaded part: its number (from 1), size, CRC32C and what the service answered."""

    number: int
    size: int
    crc: int
    token: Any


class PartTarget(abc.ABC):
    """The primitives of one value's upload on a service."""

    @abc.abstractmethod
    async def put_single(self, data: memoryview, crc: int) -> None:
        """Store a value that fits in one part (no part was uploaded)."""

    @abc.abstractmethod
    async def begin(self) -> None:
        """Called once before the first part (e.g. CreateMultipartUpload)."""

    @abc.abstractmethod
    async def upload_part(self, number: int, data: memoryview, crc: int, last: bool) -> Any:
        """Upload part ``number`` (parts may run concurrently); returns the part's token."""

    @abc.abstractmethod
    async def complete(self, parts: list[Part], crc: int, size: int) -> None:
        """Make the value visible from its parts (in order); ``crc`` is the whole value's."""

    @abc.abstractmethod
    async def abort(self) -> None:
        """Discard everything uploaded so far (called once, shielded, within a time budget)."""


class PartWriter(BackendWriter):
    """Buffers writes into parts and uploads them through a :class:`PartTarget`.

    A full part is uploaded only once more data follows, so the last part is never empty and a
    value of at most ``part_size`` bytes is one ``put_single``. A whole part inside an immutable
    ``bytes`` is uploaded from a view of it, without copying."""

    def __init__(
        self,
        target: PartTarget,
        part_size: int,
        concurrency: int,
        *,
        abort_timeout: float,
        max_parts: int | None = None,
    ) -> None:
        self._target = target
        self._size = part_size
        self._max_parts = max_parts
        self._abort_timeout = abort_timeout
        self._fill: bytearray | None = None  # the part being filled
        self._borrowed: memoryview | None = None  # or a whole part of the caller's bytes
        self._filled = 0
        self._pool: list[bytearray] = []
        self._begun = False
        self._parts: dict[int, Part] = {}
        self._next = 1
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(concurrency)
        self._error: BaseException | None = None
        self._done = False

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    # -- feeding --------------------------------------------------------------------------------
    async def write(self, data: memoryview) -> None:
        self._check()
        size = self._size
        while data:
            if self._filled == size:  # full, and more data comes: it is a part
                await self._add_part(*self._take())
                continue
            if not self._filled and len(data) >= size and isinstance(data.obj, bytes):
                self._borrowed, self._filled = data[:size], size
                data = data[size:]
                continue
            if self._fill is None:
                self._fill = self._pool.pop() if self._pool else bytearray(size)
            n = min(size - self._filled, len(data))
            self._fill[self._filled : self._filled + n] = data[:n]
            self._filled += n
            data = data[n:]

    def _take(self) -> tuple[memoryview, bytearray | None]:
        """The bytes written since the last part, and the pool buffer holding them, if any."""
        if self._borrowed is not None:
            taken, self._borrowed = self._borrowed, None
            self._filled = 0
            return taken, None
        buf, self._fill = self._fill, None
        taken = memoryview(buf if buf is not None else b"")[: self._filled]
        self._filled = 0
        return taken, buf

    async def _add_part(
        self, data: memoryview, recycle: bytearray | None = None, *, last: bool = False
    ) -> None:
        """Upload ``data`` as the next part in the background once a slot is free; ``recycle``
        returns to the buffer pool when that upload is done."""
        self._check()
        if self._max_parts is not None and self._next > self._max_parts:
            raise CacheError(
                f"a value of more than {self._max_parts} parts of {self._size} bytes: "
                "use a larger part size"
            )
        if not self._begun:
            self._begun = True
            await self._target.begin()
        await self._slots.acquire()
        if self._error is not None:
            self._slots.release()
            raise self._error
        number, self._next = self._next, self._next + 1
        task = asyncio.create_task(self._upload(number, data, recycle, last))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _upload(
        self, number: int, data: memoryview, recycle: bytearray | None, last: bool
    ) -> None:
        try:
            crc = await _checksum.update_async(0, data)
            token = await self._target.upload_part(number, data, crc, last)
            self._parts[number] = Part(number, len(data), crc, token)
            if recycle is not None:
                del data
                self._pool.append(recycle)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # kept for the writer to raise: never left unretrieved
            if self._error is None:
                self._error = exc
        finally:
            self._slots.release()

    # -- the whole value known in advance -------------------------------------------------------
    async def put_view(self, view: memoryview) -> None:
        """Store ``view`` (held by the caller until this returns): parts are views of it."""
        try:
            if len(view) <= self._size:
                await self._target.put_single(view, await _checksum.update_async(0, view))
                self._done = True
                return
            for offset in range(0, len(view), self._size):
                last = offset + self._size >= len(view)
                await self._add_part(view[offset : offset + self._size], last=last)
            await self._finish()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.abort()
            raise

    async def put_fd(self, fd: int) -> int:
        """Store the rest of the open file ``fd``, read straight into part buffers."""
        total = 0
        try:
            pending = await anyio.to_thread.run_sync(_read_block, fd, bytearray(self._size))
            while True:
                buf = self._pool.pop() if self._pool else bytearray(self._size)
                following = await anyio.to_thread.run_sync(_read_block, fd, buf)
                total += len(pending)
                if not following:
                    break
                await self._add_part(memoryview(pending), pending)
                pending = following
            if not self._begun:
                await self._target.put_single(
                    memoryview(pending), await _checksum.update_async(0, pending)
                )
                self._done = True
            else:
                await self._add_part(memoryview(pending), last=True)
                await self._finish()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.abort()
            raise
        return total

    # -- the end --------------------------------------------------------------------------------
    async def commit(self) -> None:
        self._check()
        pending, _ = self._take()
        if not self._begun:
            await self._target.put_single(pending, await _checksum.update_async(0, pending))
            self._done = True
            return
        if pending:
            await self._add_part(pending, last=True)
        await self._finish()

    async def _finish(self) -> None:
        """Wait for every part, then complete with the whole value's CRC32C."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))
        self._check()
        self._pool.clear()
        numbers = sorted(self._parts)
        if numbers != list(range(1, self._next)):
            raise CacheError("a multipart upload lost parts")
        parts = [self._parts[n] for n in numbers]
        whole = 0
        for part in parts:
            whole = _checksum.crc32c_combine(whole, part.crc, part.size)
        await self._target.complete(parts, whole, sum(p.size for p in parts))
        self._done = True

    async def abort(self) -> None:
        if self._done:
            return
        self._done = True
        self._fill = self._borrowed = None
        self._pool.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._begun:
            with anyio.move_on_after(self._abort_timeout):
                await self._target.abort()


def _read_block(fd: int, buf: bytearray) -> bytearray:
    """Fill ``buf`` from ``fd`` (shorter only at the end of the file, trimmed to what was read)."""
    view = memoryview(buf)
    got = 0
    while got < len(buf):
        n = os.readv(fd, [view[got:]])
        if n == 0:
            break
        got += n
    del view
    if got < len(buf):
        del buf[got:]
    return buf


# -- reads ---------------------------------------------------------------------------------------
async def received(content: Any) -> AsyncGenerator[bytes, None]:
    """An aiohttp ``StreamReader``'s body as the pieces the connection received, never joined
    (``read()`` joins them, a copy of its own). A broken or stalled connection raises aiohttp's
    error, for the retry policy to judge."""
    while True:
        piece, _ = await content.readchunk()
        if piece:
            yield piece
        elif content.at_eof():
            return


@dataclass(frozen=True, slots=True)
class Checked:
    """A fetched range already cut into ``bytes`` pieces of at most the chunk size (yielded as
    they are), with the CRC32C of the whole range (``crc`` of the pieces' concatenation, from
    0): what a fetch returns when reading and checksumming in one worker thread is cheaper than
    two thread hops (the local disk)."""

    pieces: list[bytes]
    size: int
    crc: int


async def ordered_reads(
    first: Buffer | list[bytes] | AsyncGenerator[bytes, None] | None,
    start: int,
    total: int,
    step: int,
    window: int,
    fetch: Callable[[int, int], Awaitable[Buffer | Checked | list[bytes]]],
    chunk_size: int,
    expected: int | None,
    what: str,
) -> AsyncIterator[bytes]:
    """Yield ``first`` (the value's bytes before ``start``: a buffer or the pieces received
    already, or ``bytes`` pieces still arriving, passed on as they come), then the ranges
    ``[start, total)`` of ``step`` bytes fetched with ``fetch(begin, end)``, up to ``window`` in
    flight (from the start, while ``first`` is still arriving), in order, as ``bytes`` pieces of
    at most ``chunk_size``. A fetch returns a buffer, the pieces it received (joined here, chunk
    by chunk, as they are yielded: a range waiting its turn holds no second copy), or a
    :class:`Checked` range. The CRC32C of what goes by is computed one chunk behind in a worker
    thread (or taken from a Checked range, in order) and checked against ``expected`` (if known)
    at the end. Leaving early cancels and awaits every request in flight and closes ``first``."""
    pending: deque[asyncio.Task[Buffer | Checked | list[bytes]]] = deque()
    crc = _RunningCrc()
    next_start = start

    def fill() -> None:  # keep ranges in flight
        nonlocal next_start
        while next_start < total and len(pending) < window:
            end = min(next_start + step, total)
            pending.append(asyncio.ensure_future(fetch(next_start, end)))
            next_start = end

    try:
        chunk: Buffer | Checked | list[bytes] | None = None
        if isinstance(first, AsyncGenerator):
            fill()
            async with contextlib.aclosing(first):
                async for piece in first:
                    await crc.add(piece)
                    yield piece
        else:
            chunk = first
        while True:
            fill()
            if isinstance(chunk, Checked):
                await crc.combine(chunk.crc, chunk.size)
                for piece in chunk.pieces:
                    yield piece
            elif isinstance(chunk, list):
                gather = Gather(chunk_size)
                received = deque(chunk)
                chunk = None
                while received:
                    for piece in gather.add(received.popleft()):
                        await crc.add(piece)
                        yield piece
                for piece in gather.rest():
                    await crc.add(piece)
                    yield piece
            elif chunk is not None and len(chunk):
                await crc.add(chunk)
                for piece in pieces(chunk, chunk_size):
                    yield piece
            chunk = None  # the consumer may have dropped it: so do we
            if not pending:
                break
            chunk = await pending.popleft()
        if expected is not None:
            _checksum.verify(expected, await crc.result(), what)
    finally:
        with anyio.CancelScope(shield=True):
            await _cancel_all([*pending, *crc.tasks()])


class _RunningCrc:
    """The CRC32C of what a read has yielded so far: small buffers on the loop's thread, large
    ones in a worker thread, at most one checksum behind the consumer."""

    def __init__(self) -> None:
        self._value = 0
        self._task: asyncio.Task[int] | None = None

    async def _settle(self) -> None:
        if self._task is not None:
            self._value, self._task = await self._task, None

    async def add(self, data: Buffer) -> None:
        if len(data) < _checksum.THREAD_ABOVE:  # no task, no thread hop
            await self._settle()
            self._value = _checksum.update(self._value, data)
            return
        previous = self._task
        if previous is not None and not previous.done():
            await asyncio.wait([previous])
        self._task = asyncio.ensure_future(_crc_after(previous, data, self._value))

    async def combine(self, crc: int, size: int) -> None:
        """Append a range whose CRC is known."""
        await self._settle()
        self._value = _checksum.crc32c_combine(self._value, crc, size)

    async def result(self) -> int:
        await self._settle()
        return self._value

    def tasks(self) -> list[asyncio.Task[int]]:
        return [] if self._task is None else [self._task]


async def _crc_after(previous: asyncio.Task[int] | None, chunk: Buffer, crc: int) -> int:
    if previous is not None:
        crc = await previous
    return await _checksum.update_async(crc, chunk)


async def _cancel_all(tasks: list[asyncio.Task[Any]]) -> None:
    """Cancel tasks and wait for them, retrieving their outcomes (no "never retrieved" noise)."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(BaseException):
            await task


def pieces(data: Buffer, size: int) -> Iterator[bytes]:
    """``data`` as ``bytes`` of at most ``size`` (a ``bytes`` that fits passes without a copy)."""
    if len(data) <= size:
        yield data if isinstance(data, bytes) else bytes(data)
        return
    view = memoryview(data)
    for i in range(0, len(view), size):
        yield bytes(view[i : i + size])


# -- request bodies ------------------------------------------------------------------------------
class Body:
    """A request body over a buffer, sent without copying it, each slice with a deadline.

    Botocore takes any object with ``read`` (and ``seek``/``tell`` to rewind); aiohttp sends it
    through :class:`_BodyPayload`, which hands memoryview slices to the socket. ``stall`` is the
    longest one slice may wait for the socket: a server that stops reading fails the request
    (aiohttp's read timeout starts only after the whole body is sent)."""

    def __init__(self, data: Buffer, stall: float | None = None) -> None:
        self.view = data if isinstance(data, memoryview) else memoryview(data)
        self.view = self.view.cast("B") if self.view.format != "B" else self.view
        self.pos = 0
        self.stall = stall

    def __len__(self) -> int:
        return self.view.nbytes - self.pos

    def read(self, n: int | None = -1) -> bytes:
        end = self.view.nbytes if n is None or n < 0 else min(self.view.nbytes, self.pos + n)
        out = bytes(self.view[self.pos : end])
        self.pos = end
        return out

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self.pos, os.SEEK_END: self.view.nbytes}[whence]
        self.pos = max(0, min(self.view.nbytes, base + offset))
        return self.pos

    def tell(self) -> int:
        return self.pos


@functools.cache
def register_body_payload() -> None:
    """Teach aiohttp to send :class:`Body` (called by the backends that use aiohttp, so that the
    local backend never imports it)."""
    import aiohttp
    import aiohttp.abc
    import aiohttp.payload

    class _BodyPayload(aiohttp.payload.Payload):
        _value: Body

        def __init__(self, value: Body, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("content_type", "application/octet-stream")
            super().__init__(value, *args, **kwargs)
            self._size = len(value)

        async def write(self, writer: aiohttp.abc.AbstractStreamWriter) -> None:
            await self.write_with_length(writer, None)

        async def write_with_length(
            self, writer: aiohttp.abc.AbstractStreamWriter, content_length: int | None
        ) -> None:
            body = self._value
            view, pos = body.view, body.pos
            end = view.nbytes if content_length is None else min(view.nbytes, pos + content_length)
            while pos < end:
                step = min(BODY_SLICE, end - pos)
                try:
                    async with asyncio.timeout(body.stall):
                        await writer.write(view[pos : pos + step])
                except TimeoutError:
                    raise aiohttp.ServerTimeoutError(
                        f"the server took no data for {body.stall} s (read_timeout)"
                    ) from None
                pos += step

        def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
            return bytes(self._value.view[self._value.pos :]).decode(encoding, errors)

        async def as_bytes(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
            return bytes(self._value.view[self._value.pos :])

    aiohttp.payload.PAYLOAD_REGISTRY.register(_BodyPayload, Body)


# -- backends that write through a PartWriter ----------------------------------------------------
class PartedBackend(Backend, RetryPolicy):
    """The write paths of a backend that uploads through :class:`PartWriter` (S3, GCS): each
    supplies ``_part_writer(path)``; ``put`` of whole bytes sends views of the caller's buffer,
    ``put_file`` reads the file straight into part buffers."""

    bucket: str
    prefix: str
    max_concurrency: int
    deadlines: Deadlines
    _root: str

    def _configure(
        self,
        bucket: object,
        prefix: object,
        max_concurrency: int,
        deadlines: Mapping[str, Any],
        read_only: bool,
    ) -> None:
        """Check and keep what every cloud backend is made of: a bucket, a key prefix (the same
        rules as keys), the concurrency, the deadlines, and whether writes are refused."""
        if not isinstance(bucket, str) or not bucket or "/" in bucket:
            raise ValueError(f"a bucket name is required (without '/'), not {bucket!r}")
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, not {type(prefix).__name__}")
        prefix = prefix.strip("/")
        self.bucket = bucket
        self.prefix = join(split_key(prefix)) if prefix else ""
        self._root = f"{self.prefix}/" if self.prefix else ""
        self.max_concurrency = max_concurrency
        self.deadlines = Deadlines.from_options(deadlines)
        self.read_only = read_only

    def url(self) -> str:
        """``<scheme>://bucket/prefix`` (``<scheme>://bucket/`` for no prefix: without the
        slash a URL means the default prefix), with any deadline that is not the default."""
        return f"{self.url_scheme}://{self.bucket}/{self.prefix}{self.deadlines.query()}"

    async def _with_retries(
        self,
        call: Callable[[], Awaitable[T]],
        transient: Callable[[BaseException], bool],
        what: str,
        budget: float | None,
    ) -> T:
        """``call`` under this backend's retry policy, within ``budget`` seconds (default: the
        operation budget)."""
        budget = self.deadlines.operation_timeout if budget is None else budget
        return await with_retries(call, transient=transient, policy=self, budget=budget, what=what)

    @abc.abstractmethod
    def _part_writer(self, path: Path) -> PartWriter: ...

    async def _open_writer(self, path: Path) -> BackendWriter:
        return self._part_writer(path)

    async def _put_bytes(self, path: Path, data: bytes | memoryview) -> None:
        view = memoryview(data)
        await self._part_writer(path).put_view(view if view.format == "B" else view.cast("B"))

    async def _put_file(self, path: Path, src: str) -> int:
        writer = self._part_writer(path)
        fd = await anyio.to_thread.run_sync(os.open, src, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return await writer.put_fd(fd)
        finally:
            os.close(fd)
