"""Property tests of the key rules on every backend: hypothesis generates keys; valid ones
round-trip, invalid ones are refused before any I/O and nothing is written anywhere (for the
local backend: nothing inside or outside its root)."""

from __future__ import annotations

import asyncio
import os
import unicodedata
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swath import InvalidKeyError
from swath.cache import Backend

from .backends import BackendFactory, run_examples


def _segment_ok(segment: str) -> bool:
    return (
        bool(segment)
        and segment not in (".", "..")
        and not any(c == "\\" or unicodedata.category(c) == "Cc" for c in segment)
    )


def _key_ok(key: str) -> bool:
    try:
        key.encode()
    except UnicodeEncodeError:
        return False
    return len(key.encode()) <= 1024 and all(_segment_ok(s) for s in key.split("/"))


segment_chars = st.characters(blacklist_categories=["Cc", "Cs"], blacklist_characters=["/", "\\"])
valid_segment = st.text(segment_chars, min_size=1, max_size=40).filter(_segment_ok)
valid_key = st.lists(valid_segment, min_size=1, max_size=4).map("/".join).filter(_key_ok)
any_key = st.text(st.characters(), max_size=60) | st.sampled_from(
    ["..", ".", "a/../b", "/etc/passwd", "../../x", "a\\b", "a//b", "x/", "\x00"]
)
invalid_key = any_key.filter(lambda k: not _key_ok(k))


def _files_under(path: Path) -> list[str]:
    return sorted(str(p) for p in path.rglob("*")) if path.exists() else []


def test_valid_keys_roundtrip(cache_factory: BackendFactory) -> None:
    """Any valid key (unicode, odd punctuation, up to four segments) stores and returns its
    value, is listed in its group, and is deleted cleanly."""

    def check(runner: asyncio.Runner, cache: Backend) -> None:
        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
        @given(key=valid_key, value=st.binary(max_size=64))
        def roundtrip(key: str, value: bytes) -> None:
            async def go() -> None:
                await cache.put(key, value)
                assert await cache.get(key) == value
                *groups, name = key.split("/")
                group = cache.group("/".join(groups)) if groups else cache
                assert name in [k async for k in group]
                await cache.delete(key)
                assert not await cache.contains(key)

            runner.run(go())

        roundtrip()

    run_examples(cache_factory, check)


def test_invalid_keys_refused_and_nothing_written(
    cache_factory: BackendFactory, tmp_path: Path
) -> None:
    """Any invalid key is refused with InvalidKeyError by put, put_stream and group, and nothing
    at all is written: the cache stays empty and, for the local backend, no file appears inside
    or outside its root."""
    before = _files_under(tmp_path)

    def check(runner: asyncio.Runner, cache: Backend) -> None:
        @settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
        @given(key=invalid_key)
        def refused(key: str) -> None:
            async def go() -> None:
                for op in (
                    lambda: cache.put(key, b"x"),
                    lambda: cache.put_stream(key, [b"x"]),
                    lambda: cache.group("g").put(key, b"x"),
                ):
                    try:
                        await op()
                    except InvalidKeyError:
                        pass
                    else:
                        raise AssertionError(f"{key!r} was accepted")
                assert [k async for k in cache] == []
                assert [g async for g in cache.groups()] == []

            runner.run(go())

        refused()

    run_examples(cache_factory, check)
    after = _files_under(tmp_path)
    root = cache_factory.root
    if root is not None:
        assert [p for p in after if not p.startswith(str(root))] == [
            p for p in before if not p.startswith(str(root))
        ]
        assert [p for p in _files_under(root) if not os.path.isdir(p)] == []
