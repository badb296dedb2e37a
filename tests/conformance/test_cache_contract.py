"""The cache contract (docs/cache.md), run against every backend in ``BACKENDS``.

Each test's docstring says what it proves. Nothing here knows which backend it runs on, except
where a rule only applies to persistent backends (selected by a flag of the factory, not skipped).
"""

from __future__ import annotations

import array
import asyncio
import os
from pathlib import Path

import anyio
import anyio.to_thread
import crc32c
import numpy
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as npst

from swath import ChecksumMismatchError, InvalidKeyError, KeyNotFoundError
from swath.cache import Backend, CacheGroup, Stat

from .backends import BackendFactory, run_examples

BAD_KEYS = [
    "",
    "/",
    "/a",
    "a/",
    "a//b",
    ".",
    "..",
    "a/./b",
    "a/../b",
    "../escape",
    "a\\b",
    "a\x00b",
    "a\nb",
    "tab\there",
    "del\x7f",
    "c1\x85",
    "x" * 1025,
    "é" * 513,
    "\ud800",
]


def expected_checksum(data: bytes) -> str:
    return f"crc32c:{crc32c.crc32c(data):08x}"


# -- whole values --------------------------------------------------------------------------------
async def test_put_get_roundtrip_all_bytes_like_types(cache: Backend) -> None:
    """put accepts bytes, bytearray, memoryview (and other buffers); get returns equal bytes."""
    await cache.put("b", b"bytes")
    await cache.put("ba", bytearray(b"bytearray"))
    await cache.put("mv", memoryview(b"xxmemoryviewxx")[2:-2])
    assert await cache.get("b") == b"bytes"
    assert await cache.get("ba") == b"bytearray"
    assert await cache.get("mv") == b"memoryview"
    assert isinstance(await cache.get("ba"), bytes)


async def test_non_contiguous_and_shaped_buffers_are_values(cache: Backend) -> None:
    """Every buffer is a value: a strided memoryview, a Fortran-ordered or transposed array, an
    array.array, an empty 2-D array. Its bytes are memoryview(x).tobytes() (logical elements in
    C order), the same through put, put_stream and open_write."""
    values: list[object] = [
        memoryview(b"abcdef")[::2],
        memoryview(b"abcdef")[::-1],
        array.array("H", [1, 2, 3]),
        numpy.arange(12, dtype="<i4").reshape(3, 4).T,
        numpy.asfortranarray(numpy.arange(6, dtype=">f8").reshape(2, 3)),
        numpy.zeros((0, 3, 2)),
        numpy.array(7.5),
    ]
    for i, value in enumerate(values):
        expected = memoryview(value).tobytes()  # type: ignore[arg-type]
        await cache.put(f"put{i}", value)  # type: ignore[arg-type]
        assert await cache.get(f"put{i}") == expected
        assert await cache.put_stream(f"stream{i}", [value, b"|", value]) == 2 * len(expected) + 1
        assert await cache.get(f"stream{i}") == expected + b"|" + expected
        async with cache.open_write(f"write{i}") as w:
            await w.write(value)  # type: ignore[arg-type]
        assert await cache.get(f"write{i}") == expected
    assert await cache.get("put0") == b"ace"


@pytest.mark.parametrize(
    "value",
    [
        numpy.array([1, "x", None], dtype=object),
        numpy.zeros(3, dtype=[("n", "<i4"), ("o", "O")]),
        numpy.array(["2020-01-01"], dtype="datetime64[D]"),
    ],
    ids=["object", "struct-with-object", "datetime64"],
)
async def test_object_arrays_are_type_errors_everywhere(cache: Backend, value: object) -> None:
    """An array of Python object references (numpy dtype=object, or a structure holding one) is
    not a value: put, put_stream and open_write raise TypeError and write nothing (the previous
    value stays). The same for an array numpy cannot export as a buffer."""
    await cache.put("k", b"old")
    with pytest.raises(TypeError):
        await cache.put("k", value)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await cache.put_stream("k", [b"new", value])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        async with cache.open_write("k") as w:
            await w.write(b"new")
            await w.write(value)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await cache.put("fresh", value)  # type: ignore[arg-type]
    assert await cache.get("k") == b"old"
    assert [k async for k in cache] == ["k"]


async def test_a_buffer_is_not_a_stream(cache: Backend) -> None:
    """put_stream of one buffer (an array, array.array, not only bytes) is a TypeError pointing
    to put, not a stream of its elements, and writes nothing."""
    for value in (numpy.arange(4), array.array("b", [1, 2]), bytearray(b"ab")):
        with pytest.raises(TypeError, match="put"):
            await cache.put_stream("k", value)  # type: ignore[arg-type]
    assert [k async for k in cache] == []


# Values for the property tests: every kind of buffer, of several item types, shapes and strides.
_ARRAY_CODES = "bBhHiIlLqQfd"
_DTYPES = [
    numpy.dtype(code)
    for code in ["u1", "i1", "<i2", ">i2", "<u4", ">i8", "<f4", ">f8", "<c16", "?"]
] + [numpy.dtype("S3"), numpy.dtype("<U2"), numpy.dtype([("n", "<i2"), ("Obj", "u1")])]


@st.composite
def _arrays(draw: st.DrawFn) -> object:
    dtype = draw(st.sampled_from(_DTYPES))
    shape = draw(npst.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5))
    a = draw(npst.arrays(dtype, shape))
    view = draw(st.sampled_from(["c", "fortran", "transpose", "strided", "reversed"]))
    if view == "fortran":
        return numpy.asfortranarray(a)
    if view == "transpose":
        return a.T
    if a.ndim and view == "strided":
        return a[(slice(None, None, draw(st.integers(1, 3))),) * a.ndim]
    if a.ndim and view == "reversed":
        return a[::-1]
    return a


@st.composite
def _memoryview_slices(draw: st.DrawFn) -> object:
    data = draw(st.binary(max_size=64))
    step = draw(st.integers(-4, 4).filter(bool))
    start = draw(st.none() | st.integers(-70, 70))
    stop = draw(st.none() | st.integers(-70, 70))
    return memoryview(data)[start:stop:step]


valid_values = st.one_of(
    st.binary(max_size=200),
    st.binary(max_size=200).map(bytearray),
    _memoryview_slices(),
    st.sampled_from(_ARRAY_CODES).flatmap(
        lambda code: st.lists(st.integers(0, 100), max_size=20).map(lambda v: array.array(code, v))
    ),
    _arrays(),
)
invalid_values = st.one_of(
    st.text(max_size=10),
    st.integers(),
    st.lists(st.binary(max_size=4), max_size=3),
    st.none(),
    npst.arrays(numpy.dtype(object), npst.array_shapes(min_dims=1, max_dims=2, min_side=0)),
    st.just(numpy.zeros(2, dtype=[("n", "<i4"), ("o", "O")])),
)


def test_every_buffer_roundtrips_as_its_c_order_bytes(cache_factory: BackendFactory) -> None:
    """Property: any buffer (bytes, bytearray, strided memoryview slices, array.array, numpy
    arrays of many dtypes, shapes, strides and orders, empty N-dimensional ones included) is a
    value whose bytes are memoryview(x).tobytes(): its logical elements in C order. put,
    put_stream and open_write agree on every backend."""

    def check(runner: asyncio.Runner, cache: Backend) -> None:
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
        @given(value=valid_values)
        def roundtrip(value: object) -> None:
            expected = memoryview(value).tobytes()  # type: ignore[arg-type]

            async def go() -> None:
                await cache.put("v/put", value)  # type: ignore[arg-type]
                await cache.put_stream("v/stream", [value, value])  # type: ignore[list-item]
                async with cache.open_write("v/write") as w:
                    await w.write(value)  # type: ignore[arg-type]
                assert await cache.get("v/put") == expected
                assert await cache.get("v/stream") == expected * 2
                assert await cache.get("v/write") == expected
                assert (await cache.stat("v/put")).checksum == expected_checksum(expected)

            runner.run(go())

        roundtrip()

    run_examples(cache_factory, check)


def test_every_non_buffer_is_refused_and_writes_nothing(cache_factory: BackendFactory) -> None:
    """Property: a value that is not a buffer of data (text, numbers, lists, None, numpy arrays
    of Python objects) is a TypeError from put, put_stream and open_write, and nothing is
    written: the key keeps its previous value and no other key appears."""

    def check(runner: asyncio.Runner, cache: Backend) -> None:
        runner.run(cache.put("v/k", b"old"))

        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
        @given(value=invalid_values)
        def refused(value: object) -> None:
            async def go() -> None:
                with pytest.raises(TypeError):
                    await cache.put("v/k", value)  # type: ignore[arg-type]
                with pytest.raises(TypeError):
                    await cache.put_stream("v/k", [b"new", value])  # type: ignore[list-item]
                with pytest.raises(TypeError):
                    async with cache.open_write("v/k") as w:
                        await w.write(value)  # type: ignore[arg-type]
                assert await cache.get("v/k") == b"old"
                assert [k async for k in cache.group("v")] == ["k"]
                assert [k async for k in cache] == []

            runner.run(go())

        refused()

    run_examples(cache_factory, check)


class _Tagged(bytes):
    """A bytes subclass that carries more than its bytes."""

    tag = "not part of the value"


async def test_get_returns_plain_bytes_for_any_value(cache: Backend) -> None:
    """A value is its bytes: whatever buffer type went in (a bytes subclass included), get,
    get_range and stream give back plain bytes objects."""
    await cache.put("k", _Tagged(b"tagged"))
    for got in (await cache.get("k"), await cache.get_range("k", 0)):
        assert type(got) is bytes
        assert got == b"tagged"
    assert [type(c) for c in [c async for c in cache.stream("k")]] == [bytes]


async def test_value_is_copied_on_put(cache: Backend) -> None:
    """Mutating a bytearray after put does not change the stored value."""
    buf = bytearray(b"original")
    await cache.put("k", buf)
    buf[:] = b"mutated!"
    assert await cache.get("k") == b"original"


async def test_empty_value_is_a_value(cache: Backend) -> None:
    """An empty value is stored, listed, contained, and has size 0."""
    await cache.put("empty", b"")
    assert await cache.get("empty") == b""
    assert await cache.contains("empty")
    assert [k async for k in cache] == ["empty"]
    assert (await cache.stat("empty")).size == 0
    assert [c async for c in cache.stream("empty")] == []


async def test_last_write_wins(cache: Backend) -> None:
    """A second put replaces the first."""
    await cache.put("k", b"first")
    await cache.put("k", b"second, longer")
    await cache.put("k", b"3")
    assert await cache.get("k") == b"3"


async def test_missing_key_errors_are_keyerrors(cache: Backend) -> None:
    """get/stat/delete/stream/get_range/get_file of a missing key raise KeyNotFoundError, a
    KeyError, and contains is False."""
    with pytest.raises(KeyNotFoundError):
        await cache.get("nope")
    with pytest.raises(KeyError):
        await cache.get("nope")
    with pytest.raises(KeyNotFoundError):
        await cache.stat("nope")
    with pytest.raises(KeyNotFoundError):
        await cache.delete("nope")
    with pytest.raises(KeyNotFoundError):
        [c async for c in cache.stream("nope")]
    with pytest.raises(KeyNotFoundError):
        await cache.get_range("nope", 0, 10)
    with pytest.raises(KeyNotFoundError):
        await cache.get_range("nope", 5, 5)
    assert not await cache.contains("nope")


async def test_get_file_of_missing_key_leaves_destination(cache: Backend, tmp_path: Path) -> None:
    """get_file of a missing key raises and leaves an existing destination file untouched."""
    tmp_path = tmp_path / "files"
    tmp_path.mkdir()
    dst = tmp_path / "out.bin"
    dst.write_bytes(b"keep me")
    with pytest.raises(KeyNotFoundError):
        await cache.get_file("nope", dst)
    assert dst.read_bytes() == b"keep me"
    assert os.listdir(tmp_path) == ["out.bin"]


@pytest.mark.parametrize("value", ["text", 42, None, [b"a"], 3.5, object()])
async def test_non_bytes_values_are_type_errors(cache: Backend, value: object) -> None:
    """A value that is not bytes-like is a TypeError and nothing is written."""
    with pytest.raises(TypeError):
        await cache.put("k", value)  # type: ignore[arg-type]
    assert not await cache.contains("k")
    assert [k async for k in cache] == []


async def test_contains_of_a_corrupt_value_is_true_and_the_read_raises(
    cache_factory: BackendFactory,
) -> None:
    """contains() answers True or False, never a checksum error: for a value corrupted behind
    the cache's back it is True (a value is there) and the read is what raises
    ChecksumMismatchError. (Backends that cannot hold a corrupt value check contains only.)"""
    async with cache_factory.make() as cache:
        data = bytes(range(256)) * 64
        await cache.put("g/c", data)
        assert await cache.contains("g/c")
        if cache_factory.corrupt is not None:
            cache_factory.corrupt("g/c")
            with pytest.raises(ChecksumMismatchError):
                await cache.get("g/c")
        assert await cache.contains("g/c") is True
        assert await cache.group("g").contains("c") is True
        assert await cache.contains("g/missing") is False


async def test_delete(cache: Backend) -> None:
    """delete removes the value; a second delete is KeyNotFoundError; other keys stay."""
    await cache.put("a", b"1")
    await cache.put("b", b"2")
    await cache.delete("a")
    assert not await cache.contains("a")
    assert await cache.get("b") == b"2"
    with pytest.raises(KeyNotFoundError):
        await cache.delete("a")


async def test_stat_reports_size_and_crc32c(cache: Backend) -> None:
    """stat gives the size and the CRC32C of the value, the same on every backend."""
    data = os.urandom(100_000)
    await cache.put("k", data)
    assert await cache.stat("k") == Stat(size=len(data), checksum=expected_checksum(data))
    await cache.put_stream("s", [data[:3], data[3:]])
    assert (await cache.stat("s")).checksum == expected_checksum(data)


# -- keys ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", BAD_KEYS)
async def test_invalid_keys_refused_everywhere(cache: Backend, key: str, tmp_path: Path) -> None:
    """Every operation refuses an invalid key with InvalidKeyError (a ValueError), and nothing is
    written anywhere."""
    src = tmp_path / "src"
    src.write_bytes(b"x")
    calls = [
        lambda: cache.put(key, b"x"),
        lambda: cache.get(key),
        lambda: cache.contains(key),
        lambda: cache.delete(key),
        lambda: cache.stat(key),
        lambda: cache.get_range(key, 0, 1),
        lambda: cache.put_file(key, src),
        lambda: cache.get_file(key, tmp_path / "dst"),
        lambda: cache.put_stream(key, [b"x"]),
    ]
    for call in calls:
        with pytest.raises(InvalidKeyError):
            await call()
    with pytest.raises(ValueError, match="key"):
        cache.open_write(key)
    with pytest.raises(InvalidKeyError):
        cache.stream(key)
    if key != "" and "\x00" not in key:
        with pytest.raises(InvalidKeyError):
            cache.group(key)
    assert [k async for k in cache] == []
    assert [g async for g in cache.groups()] == []
    assert not (tmp_path / "dst").exists()


async def test_non_string_key_is_invalid(cache: Backend) -> None:
    """A key that is not a str is refused."""
    with pytest.raises(InvalidKeyError):
        await cache.put(b"bytes-key", b"x")  # type: ignore[arg-type]


async def test_key_length_limit_counts_group_prefix(cache_factory: BackendFactory) -> None:
    """The full key, group prefix included, may be 1024 UTF-8 bytes, not 1025 (less the room
    an object store's prefix takes, see the next test)."""
    prefix = cache_factory.prefix
    room = 1024 - (len(prefix.encode()) + 1 if prefix else 0)
    async with cache_factory.make() as cache:
        await cache.put("k" * room, b"max")
        assert await cache.get("k" * room) == b"max"
        group = cache.group("g" * 100)
        await group.put("v" * (room - 101), b"ok")  # 100 + 1 + (room - 101) = room
        assert await group.get("v" * (room - 101)) == b"ok"
        with pytest.raises(InvalidKeyError):
            await group.put("v" * (room - 100), b"too long")
        await cache.put("é" * (room // 2), b"two-byte chars")  # room bytes, or one less
        assert [k async for k in cache] == sorted(["k" * room, "é" * (room // 2)])


async def test_key_room_left_by_the_backend_prefix(cache_factory: BackendFactory) -> None:
    """Object names (prefix, '/', full key) are at most 1024 UTF-8 bytes on object stores: with a
    prefix, a key of exactly the room left (1024 minus the prefix and its '/') round-trips, and
    one byte more is InvalidKeyError before any I/O, from every operation, through groups too,
    with a message that says how much room the prefix leaves. Nothing is written. Without a
    prefix the room is the whole 1024 bytes."""
    prefix = cache_factory.prefix
    room = 1024 - (len(prefix.encode()) + 1 if prefix else 0)
    fits, too_long = "g/" + "é" * ((room - 2) // 2), "g/" + "k" * (room - 1)
    if (room - 2) % 2:
        fits += "k"
    assert len(fits.encode()) == room
    assert len(too_long.encode()) == room + 1
    async with cache_factory.make() as cache:
        await cache.put(fits, b"fits")
        assert await cache.get(fits) == b"fits"
        assert await cache.group("g").get(fits[2:]) == b"fits"
        assert await cache.contains(fits)
        message = str(room) if prefix else "1024"
        operations = [
            lambda: cache.put(too_long, b"x"),
            lambda: cache.group("g").put(too_long[2:], b"x"),
            lambda: cache.put_stream(too_long, [b"x"]),
            lambda: cache.get(too_long),
            lambda: cache.contains(too_long),
            lambda: cache.stat(too_long),
            lambda: cache.delete(too_long),
            lambda: cache.get_range(too_long, 0, 1),
        ]
        for operation in operations:
            with pytest.raises(InvalidKeyError, match=message):
                await operation()
        with pytest.raises(InvalidKeyError, match=message):
            async with cache.open_write(too_long) as w:
                await w.write(b"x")
        with pytest.raises(InvalidKeyError, match=message):
            [c async for c in cache.stream(too_long)]
        assert [k async for k in cache.group("g")] == [fits[2:]]


async def test_unicode_and_odd_but_valid_keys_roundtrip(cache: Backend) -> None:
    """Keys with spaces, %, dots, unicode, and names like '...' are ordinary keys."""
    keys = ["a b", "100%", "%25", "%", "...", ".hidden", "ñandú/🛰️", "x%l", "y%t1-2", "a.tif"]
    for i, key in enumerate(keys):
        await cache.put(key, str(i).encode())
    for i, key in enumerate(keys):
        assert await cache.get(key) == str(i).encode()
    top = sorted(k for k in keys if "/" not in k)
    assert sorted([k async for k in cache]) == top
    assert [g async for g in cache.groups()] == ["ñandú"]


# -- groups --------------------------------------------------------------------------------------
async def test_nested_group_paths_are_equivalent(cache: Backend) -> None:
    """group("a/b") is group("a").group("b"), and get("a/b/k") reaches the same value."""
    assert cache.group("a/b") == cache.group("a").group("b")
    await cache.group("a/b").put("k", b"v")
    assert await cache.group("a").group("b").get("k") == b"v"
    assert await cache.get("a/b/k") == b"v"
    assert await cache.group("a").get("b/k") == b"v"
    assert isinstance(cache.group("a"), CacheGroup)


async def test_iteration_yields_direct_keys_only(cache: Backend) -> None:
    """Iterating a group yields its direct keys: not subgroup names, not nested keys."""
    await cache.put("top", b"1")
    await cache.put("g/inner", b"2")
    await cache.put("g/deeper/x", b"3")
    await cache.put("h/y", b"4")
    assert [k async for k in cache] == ["top"]
    assert sorted([k async for k in cache.group("g")]) == ["inner"]
    assert sorted([g async for g in cache.groups()]) == ["g", "h"]
    assert [g async for g in cache.group("g").groups()] == ["deeper"]
    assert [k async for k in cache.group("nothing")] == []


async def test_name_can_be_key_and_group(cache: Backend) -> None:
    """A name may hold a value and be a group at once; neither hides or loses the other."""
    await cache.put("both", b"value")
    await cache.put("both/child", b"child")
    assert await cache.get("both") == b"value"
    assert await cache.get("both/child") == b"child"
    assert [k async for k in cache] == ["both"]
    assert [g async for g in cache.groups()] == ["both"]
    await cache.delete("both")
    assert await cache.get("both/child") == b"child"
    assert [g async for g in cache.groups()] == ["both"]


async def test_contains_of_group_only_name_is_false(cache: Backend) -> None:
    """contains() of a name that is only a group is False; get raises KeyNotFoundError."""
    await cache.put("grp/k", b"v")
    assert not await cache.contains("grp")
    with pytest.raises(KeyNotFoundError):
        await cache.get("grp")


async def test_groups_without_values_are_not_listed(cache: Backend) -> None:
    """A group whose last value was deleted no longer appears in groups()."""
    await cache.put("g/k", b"v")
    await cache.delete("g/k")
    assert [g async for g in cache.groups()] == []
    cache.group("never-written")
    assert [g async for g in cache.groups()] == []


async def test_items(cache: Backend) -> None:
    """items() yields (key, value) of the direct keys."""
    await cache.put("a", b"1")
    await cache.put("b", b"2")
    await cache.put("g/c", b"3")
    assert sorted([kv async for kv in cache.items()]) == [("a", b"1"), ("b", b"2")]


async def test_clear_removes_group_and_below_only(cache: Backend) -> None:
    """clear() removes a group and everything below it; siblings and the parent's keys stay."""
    await cache.put("keep", b"1")
    await cache.put("g", b"key named like the group")
    await cache.put("g/a", b"2")
    await cache.put("g/sub/b", b"3")
    await cache.put("other/c", b"4")
    await cache.group("g").clear()
    assert not await cache.contains("g/a")
    assert not await cache.contains("g/sub/b")
    assert await cache.get("g") == b"key named like the group"
    assert await cache.get("keep") == b"1"
    assert await cache.get("other/c") == b"4"
    assert sorted([g async for g in cache.groups()]) == ["other"]
    await cache.clear()
    assert [k async for k in cache] == []
    assert [g async for g in cache.groups()] == []
    await cache.group("never").clear()  # clearing nothing is fine


async def test_groups_cannot_escape_their_prefix(cache: Backend) -> None:
    """No key reachable through a group names anything outside it."""
    await cache.put("secret", b"s")
    job = cache.group("job-1")
    for key in ["../secret", "..", "/secret", "a/../../secret"]:
        with pytest.raises(InvalidKeyError):
            await job.get(key)
    assert [k async for k in job] == []


# -- streaming -----------------------------------------------------------------------------------
@pytest.mark.parametrize("chunk_size", [1, 7, 4096, 65536, 1 << 20])
async def test_stream_chunks_are_exact(cache: Backend, chunk_size: int) -> None:
    """stream(chunk_size=n) yields chunks of exactly n bytes but the last, in order."""
    data = os.urandom(300_001)
    await cache.put("k", data)
    chunks = [c async for c in cache.stream("k", chunk_size=chunk_size)]
    assert b"".join(chunks) == data
    assert all(len(c) == chunk_size for c in chunks[:-1])
    assert 0 < len(chunks[-1]) <= chunk_size


async def test_stream_rejects_bad_chunk_size(cache: Backend) -> None:
    """chunk_size must be a positive int."""
    await cache.put("k", b"x")
    for bad in (0, -1):
        with pytest.raises(ValueError, match="chunk_size"):
            cache.stream("k", chunk_size=bad)


async def test_get_range_is_slicing(cache: Backend) -> None:
    """get_range(key, start, end) returns data[start:end] for every kind of bound."""
    data = bytes(range(256)) * 40
    await cache.put("k", data)
    n = len(data)
    cases = [
        (0, 10), (0, n), (5, 5), (10, 5), (n - 3, n), (n - 3, n + 100), (n, n + 10),
        (n + 5, n + 10), (100, None), (-10, None), (-10, -2), (0, -1), (-n - 50, 3), (4000, 8192),
    ]  # fmt: skip
    for start, end in cases:
        assert await cache.get_range("k", start, end) == data[start:end], (start, end)


async def test_put_stream_sync_and_async_iterables(cache: Backend) -> None:
    """put_stream takes sync and async iterables of any bytes-like; returns the size."""
    parts = [b"ab", bytearray(b"cd"), memoryview(b"ef"), b"", b"g" * 100_000]

    async def agen():  # type: ignore[no-untyped-def]
        for p in parts:
            yield p

    expected = b"".join(bytes(p) for p in parts)
    assert await cache.put_stream("sync", parts) == len(expected)
    assert await cache.put_stream("gen", (p for p in parts)) == len(expected)
    assert await cache.put_stream("async", agen()) == len(expected)
    for key in ("sync", "gen", "async"):
        assert await cache.get(key) == expected


async def test_put_stream_bad_chunk_keeps_previous_value(cache: Backend) -> None:
    """A non-bytes chunk in the middle of put_stream is a TypeError; the old value stays and
    nothing partial becomes visible."""
    await cache.put("k", b"old")
    with pytest.raises(TypeError):
        await cache.put_stream("k", [b"new", "not bytes"])  # type: ignore[list-item]
    assert await cache.get("k") == b"old"
    with pytest.raises(TypeError):
        await cache.put_stream("k", b"a bytes object is not a stream")
    with pytest.raises(TypeError):
        await cache.put_stream("fresh", [b"x", 1])  # type: ignore[list-item]
    assert not await cache.contains("fresh")
    assert [k async for k in cache] == ["k"]


async def test_open_write_visible_only_after_clean_exit(cache: Backend) -> None:
    """During open_write the previous state is what readers see; after a clean exit, the new."""
    await cache.put("k", b"old")
    async with cache.open_write("k") as w:
        await w.write(b"new ")
        assert await cache.get("k") == b"old"
        await w.write(bytearray(b"value"))
        async with cache.open_write("fresh") as w2:
            await w2.write(b"x")
            assert not await cache.contains("fresh")
            assert sorted([k async for k in cache]) == ["k"]
    assert await cache.get("k") == b"new value"
    assert w.bytes_written == 9
    assert await cache.get("fresh") == b"x"


async def test_open_write_exception_discards(cache: Backend) -> None:
    """An exception inside open_write discards the write: old value kept, new key absent,
    nothing partial listed."""
    await cache.put("k", b"old")
    with pytest.raises(RuntimeError):
        async with cache.open_write("k") as w:
            await w.write(b"partial")
            raise RuntimeError("boom")
    with pytest.raises(RuntimeError):
        async with cache.group("g").open_write("new") as w:
            await w.write(b"partial")
            raise RuntimeError("boom")
    assert await cache.get("k") == b"old"
    assert [k async for k in cache] == ["k"]
    assert [g async for g in cache.groups()] == []
    with pytest.raises(RuntimeError, match="closed"):
        await w.write(b"late")


async def test_open_write_cancellation_discards(cache: Backend) -> None:
    """A task cancelled in the middle of open_write leaves the previous state."""
    await cache.put("k", b"old")
    started = asyncio.Event()

    async def writer() -> None:
        async with cache.open_write("k") as w:
            await w.write(b"x" * 100_000)
            started.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(writer())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await cache.get("k") == b"old"
    assert [k async for k in cache] == ["k"]


async def test_put_file_get_file_roundtrip(cache: Backend, tmp_path: Path) -> None:
    """put_file stores a file's bytes; get_file writes them to a path, replacing what was there."""
    data = os.urandom(3 << 20) + b"tail"
    tmp_path = tmp_path / "files"
    tmp_path.mkdir()
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    assert await cache.put_file("f", src) == len(data)
    assert await cache.get("f") == data
    dst = tmp_path / "dst.bin"
    dst.write_bytes(b"to be replaced")
    assert await cache.get_file("f", str(dst)) == len(data)
    assert dst.read_bytes() == data
    assert sorted(os.listdir(tmp_path)) == ["dst.bin", "src.bin"]
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert await cache.put_file("e", empty) == 0
    assert await cache.get("e") == b""


async def test_put_file_missing_source(cache: Backend, tmp_path: Path) -> None:
    """put_file of a missing source file raises FileNotFoundError and writes nothing."""
    with pytest.raises(FileNotFoundError):
        await cache.put_file("f", tmp_path / "does-not-exist")
    assert not await cache.contains("f")
    assert [k async for k in cache] == []


def _feed_fifo(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        for i in range(0, len(data), 50_000):
            f.write(data[i : i + 50_000])


async def test_put_file_of_a_pipe_or_procfs_file_stores_its_contents(
    cache: Backend, tmp_path: Path
) -> None:
    """put_file reads its source to the end: a named pipe (whose size is 0 to stat) stores what
    was written into it, and a /proc file (size 0 to stat, yet it has contents) stores its
    contents, the same on every backend (the local backend stored an empty value: it copied as
    many bytes as fstat reported)."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    data = os.urandom(300_000)
    async with anyio.create_task_group() as tg:
        tg.start_soon(anyio.to_thread.run_sync, _feed_fifo, fifo, data)
        assert await cache.put_file("pipe", fifo) == len(data)
    assert await cache.get("pipe") == data
    cmdline = await anyio.Path("/proc/self/cmdline").read_bytes()  # this process: any reader
    assert await cache.put_file("proc", "/proc/self/cmdline") == len(cmdline) > 0
    assert await cache.get("proc") == cmdline


# -- concurrency and lifecycle -------------------------------------------------------------------
async def test_500_concurrent_writers_into_one_group(cache: Backend) -> None:
    """500 tasks writing distinct keys into one group at once: every key listed exactly once,
    every value intact."""
    group = cache.group("concurrent")

    async def write(i: int) -> None:
        if i % 2:
            await group.put(f"k{i}", f"value {i}".encode())
        else:
            await group.put_stream(f"k{i}", [b"value ", str(i).encode()])

    await asyncio.gather(*(write(i) for i in range(500)))
    keys = [k async for k in group]
    assert len(keys) == 500
    assert sorted(keys) == sorted(f"k{i}" for i in range(500))
    values = await asyncio.gather(*(group.get(f"k{i}") for i in range(500)))
    assert values == [f"value {i}".encode() for i in range(500)]


async def test_concurrent_writers_same_key_one_wins(cache: Backend) -> None:
    """Concurrent writes to one key leave exactly one complete value of the writers'."""
    values = [bytes([i]) * 50_000 for i in range(20)]
    await asyncio.gather(*(cache.put_stream("k", [v[:100], v[100:]]) for v in values))
    assert await cache.get("k") in values
    assert [k async for k in cache] == ["k"]


async def test_reenter_and_persistence(cache_factory: BackendFactory) -> None:
    """A backend can be entered again and exiting never deletes data; a persistent backend's
    data is seen by a new instance."""
    backend = cache_factory.make()
    async with backend:
        await backend.put("k", b"v")
        async with backend:  # nested entry
            assert backend.is_open
        assert backend.is_open
    assert not backend.is_open
    async with backend:
        assert await backend.get("k") == b"v"
    if cache_factory.persistent:
        async with cache_factory.make() as other:
            assert await other.get("k") == b"v"
