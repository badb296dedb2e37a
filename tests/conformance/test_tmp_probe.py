from swath.cache import Backend
import pytest

async def test_probe(cache: Backend) -> None:
    await cache.put("k", b"abc" * 1000)
    for cs in (2**40, 2**63 - 1, 2**64):
        got = [c async for c in cache.stream("k", chunk_size=cs)]
        assert got == [b"abc" * 1000], cs
    await cache.put("e", b"")
    assert await cache.get_range("e", 0) == b""
    assert await cache.get_range("k", 2**70) == b""
    assert await cache.get_range("k", 5, 2**70) == (b"abc" * 1000)[5:]
    assert await cache.get_range("k", -2**70, 2) == b"ab"
    await cache.put_file("f", __file__)
    async with cache.open_write("w") as w:
        pass
    assert await cache.get("w") == b""
    with pytest.raises(Exception) as ei:
        async with cache.open_write("w2") as w:
            await w.write("str")  # type: ignore
    print(type(ei.value), ei.value)
