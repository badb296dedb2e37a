"""InMemoryCache: values in a tree of dicts, for tests and single-process work.

Values and groups live in separate dicts of each node, so a name can be a key and a group at once
without either hiding the other (Tilebox's in-memory cache loses such writes). ``bytes`` values
are stored without copying (they are immutable); other bytes-like values are copied once. A value
written in chunks (``put_stream``, ``open_write``) is kept as those chunks, never joined when the
write commits (that held the value twice): ``stream`` hands them out as they are when their size
is the chunk size asked for, and ``get`` joins them once, on the first call, keeping the joined
value instead. The checksum is computed on first ``stat`` and kept: nothing can change a stored
``bytes`` object.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from swath.cache import _checksum
from swath.cache._base import Backend, BackendWriter, Stat, joined, missing
from swath.cache.keys import Path

SMALL_WRITE = 256 << 10  # writes below this are gathered before they become a part


@dataclass(slots=True)
class _Value:
    parts: list[bytes]  # the value's bytes, in order; one part once joined
    size: int
    crc: int | None = None

    def checksum(self) -> int:
        if self.crc is None:
            crc = 0
            for part in self.parts:
                crc = _checksum.update(crc, part)
            self.crc = crc
        return self.crc

    def whole(self) -> bytes:
        """The value as one ``bytes``: joined on the first call (the user asked for bytes) and
        kept that way, so that the parts are released."""
        if len(self.parts) != 1:
            self.parts = [joined(self.parts)]
        return self.parts[0]

    def range(self, start: int, end: int) -> bytes:
        """``value[start:end]`` for 0 <= start <= end <= size, copying only that range."""
        if len(self.parts) == 1:
            return self.parts[0][start:end]
        out: list[bytes] = []
        at = 0
        for part in self.parts:
            if at >= end:
                break
            stop = at + len(part)
            if stop > start:
                out.append(part[max(0, start - at) : min(len(part), end - at)])
            at = stop
        return joined(out)


@dataclass(slots=True)
class _Node:
    values: dict[str, _Value] = field(default_factory=dict)
    groups: dict[str, _Node] = field(default_factory=dict)

    def is_empty(self) -> bool:
        return not self.values and not self.groups


class _MemoryWriter(BackendWriter):
    """Keeps each write as a part (a copy: the caller may reuse its buffer); writes smaller than
    ``SMALL_WRITE`` are gathered into parts of at least that size first."""

    def __init__(self, cache: InMemoryCache, path: Path) -> None:
        self._cache = cache
        self._path = path
        self._parts: list[bytes] = []
        self._small = bytearray()
        self._size = 0

    async def write(self, data: memoryview) -> None:
        self._size += len(data)
        if len(data) >= SMALL_WRITE:  # its own part (after what was gathered): one copy
            self._flush()
            self._parts.append(data.tobytes())
            return
        self._small += data
        if len(self._small) >= SMALL_WRITE:
            self._flush()

    def _flush(self) -> None:
        if self._small:
            self._parts.append(bytes(self._small))
            self._small = bytearray()

    async def commit(self) -> None:
        self._flush()
        parts, self._parts = self._parts, []
        self._cache._set(self._path, _Value(parts, self._size))

    async def abort(self) -> None:
        self._parts = []
        self._small = bytearray()


class InMemoryCache(Backend):
    """A cache held in this process's memory. Safe for any number of concurrent tasks on one
    event loop (every operation is a few dict steps with no await in between)."""

    url_scheme = "memory"

    def __init__(self) -> None:
        super().__init__()
        self._root = _Node()

    def url(self) -> str:
        return "memory://"

    def __repr__(self) -> str:
        return "InMemoryCache()"

    # -- tree helpers ---------------------------------------------------------------------------
    def _node(self, prefix: Path, create: bool = False) -> _Node | None:
        node = self._root
        for name in prefix:
            child = node.groups.get(name)
            if child is None:
                if not create:
                    return None
                child = node.groups[name] = _Node()
            node = child
        return node

    def _value(self, path: Path) -> _Value | None:
        node = self._node(path[:-1])
        return None if node is None else node.values.get(path[-1])

    def _set(self, path: Path, value: _Value) -> None:
        node = self._node(path[:-1], create=True)
        assert node is not None
        node.values[path[-1]] = value

    def _prune(self, prefix: Path) -> None:
        """Drop empty groups on the way up, so ``groups()`` lists only groups with values."""
        while prefix:
            parent = self._node(prefix[:-1])
            node = None if parent is None else parent.groups.get(prefix[-1])
            if parent is None or node is None or not node.is_empty():
                return
            del parent.groups[prefix[-1]]
            prefix = prefix[:-1]

    # -- primitives -----------------------------------------------------------------------------
    async def _put_bytes(self, path: Path, data: bytes | memoryview) -> None:
        whole = data if isinstance(data, bytes) else data.tobytes()
        self._set(path, _Value([whole] if whole else [], len(whole)))

    async def _open_writer(self, path: Path) -> BackendWriter:
        return _MemoryWriter(self, path)

    async def _read_all(self, path: Path) -> bytes:
        value = self._value(path)
        if value is None:
            raise missing(path)
        return value.whole()

    async def _stream(self, path: Path, chunk_size: int) -> AsyncIterator[bytes]:
        value = self._value(path)
        if value is None:
            raise missing(path)
        for part in list(value.parts):  # a snapshot: a get() may join them meanwhile
            if len(part) <= chunk_size:
                yield part  # stream() regroups parts of another size into exact chunks
                continue
            view = memoryview(part)
            for start in range(0, len(part), chunk_size):
                yield view[start : start + chunk_size].tobytes()

    async def _read_range(self, path: Path, start: int, end: int | None) -> bytes:
        value = self._value(path)
        if value is None:
            raise missing(path)
        stop = value.size if end is None else min(end, value.size)
        return value.range(start, stop) if start < stop else b""

    async def _stat(self, path: Path) -> Stat | None:
        value = self._value(path)
        if value is None:
            return None
        return Stat(size=value.size, checksum=_checksum.render(value.checksum()))

    async def _delete(self, path: Path) -> None:
        node = self._node(path[:-1])
        if node is None or node.values.pop(path[-1], None) is None:
            raise missing(path)
        self._prune(path[:-1])

    async def _list(self, prefix: Path, *, groups: bool) -> AsyncIterator[str]:
        node = self._node(prefix)
        if node is None:
            return
        names = sorted(node.groups if groups else node.values)  # a snapshot: writers may go on
        for name in names:
            yield name

    async def _clear(self, prefix: Path) -> None:
        if not prefix:
            self._root = _Node()
            return
        parent = self._node(prefix[:-1])
        if parent is not None:
            parent.groups.pop(prefix[-1], None)
            self._prune(prefix[:-1])
