"""InMemoryCache: values in a tree of dicts, for tests and single-process work.

Values and groups live in separate dicts of each node, so a name can be a key and a group at once
without either hiding the other (Tilebox's in-memory cache loses such writes). ``bytes`` values
are stored without copying (they are immutable); other bytes-like values are copied once. The
checksum is computed on first ``stat`` and kept: nothing can change a stored ``bytes`` object.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from swath.cache import _checksum
from swath.cache._base import Backend, BackendWriter, Stat, missing
from swath.cache.keys import Path


@dataclass(slots=True)
class _Value:
    data: bytes
    crc: int | None = None

    def checksum(self) -> int:
        if self.crc is None:
            self.crc = _checksum.update(0, self.data)
        return self.crc


@dataclass(slots=True)
class _Node:
    values: dict[str, _Value] = field(default_factory=dict)
    groups: dict[str, _Node] = field(default_factory=dict)

    def is_empty(self) -> bool:
        return not self.values and not self.groups


class _MemoryWriter(BackendWriter):
    def __init__(self, cache: InMemoryCache, path: Path) -> None:
        self._cache = cache
        self._path = path
        self._parts: list[bytes] = []

    async def write(self, data: memoryview) -> None:
        self._parts.append(data.tobytes())

    async def commit(self) -> None:
        data = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
        self._parts = []
        self._cache._set(self._path, data)

    async def abort(self) -> None:
        self._parts = []


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

    def _set(self, path: Path, data: bytes) -> None:
        node = self._node(path[:-1], create=True)
        assert node is not None
        node.values[path[-1]] = _Value(data)

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
        self._set(path, data if isinstance(data, bytes) else data.tobytes())

    async def _open_writer(self, path: Path) -> BackendWriter:
        return _MemoryWriter(self, path)

    async def _read_all(self, path: Path) -> bytes:
        value = self._value(path)
        if value is None:
            raise missing(path)
        return value.data

    async def _stream(self, path: Path, chunk_size: int) -> AsyncIterator[bytes]:
        value = self._value(path)
        if value is None:
            raise missing(path)
        data = value.data
        if len(data) <= chunk_size:
            yield data
            return
        view = memoryview(data)
        for start in range(0, len(data), chunk_size):
            yield view[start : start + chunk_size].tobytes()

    async def _read_range(self, path: Path, start: int, end: int | None) -> bytes:
        value = self._value(path)
        if value is None:
            raise missing(path)
        return value.data[start:end]

    async def _stat(self, path: Path) -> Stat | None:
        value = self._value(path)
        if value is None:
            return None
        return Stat(size=len(value.data), checksum=_checksum.render(value.checksum()))

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
