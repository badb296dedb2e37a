"""A model-based property test on every backend: hypothesis runs random sequences of put,
delete and clear over a small space of keys whose segments stress each backend's layout (``%``
and its escape, ``%l`` and ``%t`` look-alikes, names cut into pieces on disk, names that are a
key and a group at once), and after every step each group's listing, its subgroups and the
values agree with a plain dict."""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swath import KeyNotFoundError
from swath.cache import Backend

from .backends import BackendFactory, run_examples

SEGMENTS = ["a", "a%", "%", "%25", "l%l", "x%t1", "%2", "é" * 99 + "%", "b" * 199 + "%25x"]
paths = st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=3).map(tuple)
steps = st.lists(
    st.tuples(
        st.sampled_from(["put", "put", "put", "delete", "clear"]), paths, st.binary(max_size=8)
    ),
    min_size=1,
    max_size=12,
)

Key = tuple[str, ...]


def _direct(model: dict[Key, bytes], group: Key) -> tuple[list[str], list[str]]:
    n = len(group)
    keys = sorted(k[n] for k in model if len(k) == n + 1 and k[:n] == group)
    groups = sorted({k[n] for k in model if len(k) > n + 1 and k[:n] == group})
    return keys, groups


def test_listings_agree_with_a_dict(cache_factory: BackendFactory) -> None:
    """Property: after any sequence of put/delete/clear on layout-stressing keys, every group's
    direct keys and direct subgroups, and every value, are those of a dict of full keys."""

    def check(runner: asyncio.Runner, cache: Backend) -> None:
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
        @given(ops=steps)
        def agree(ops: list[tuple[str, Key, bytes]]) -> None:
            async def go() -> None:
                await cache.clear()
                model: dict[Key, bytes] = {}
                for op, path, value in ops:
                    key = "/".join(path)
                    if op == "put":
                        await cache.put(key, value)
                        model[path] = value
                    elif op == "delete":
                        if path in model:
                            await cache.delete(key)
                            del model[path]
                        else:
                            try:
                                await cache.delete(key)
                            except KeyNotFoundError:
                                pass
                            else:
                                raise AssertionError(f"deleted missing {key!r}")
                    else:
                        await cache.group(key).clear()
                        model = {
                            k: v
                            for k, v in model.items()
                            if k[: len(path)] != path or len(k) == len(path)
                        }
                    groups_to_check = {p[:i] for p in [*model, path] for i in range(len(p))}
                    for group in groups_to_check:
                        g = cache.group("/".join(group)) if group else cache
                        keys, subgroups = _direct(model, group)
                        assert sorted([k async for k in g]) == keys, (ops, group)
                        assert sorted([s async for s in g.groups()]) == subgroups, (ops, group)
                    for k, v in model.items():
                        assert await cache.get("/".join(k)) == v
                        assert await cache.contains("/".join(k))

            runner.run(go())

        agree()

    run_examples(cache_factory, check)
