"""The plan of a GCS composite upload's compose tree (``compose_groups``), level by level."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from swath.cache.gcs import MAX_COMPOSE, compose_groups


def compose_all(sources: list[object]) -> tuple[list[object], int, int]:
    """Run the plan as _GcsUpload._compose_tree does, on nested lists instead of objects:
    returns the final compose's sources, the number of levels and the sources merged in all."""
    levels = merged = 0
    while len(sources) > MAX_COMPOSE:
        groups = compose_groups(len(sources))
        out: list[object] = []
        done = 0
        for start, end in groups:
            assert done <= start < end <= len(sources)
            assert 2 <= end - start <= MAX_COMPOSE
            out += sources[done:start]
            out.append(sources[start:end])
            merged += end - start
            done = end
        sources = out + sources[done:]
        levels += 1
    return sources, levels, merged


def flatten(x: object) -> list[object]:
    return [y for item in x for y in flatten(item)] if isinstance(x, list) else [x]


@given(st.integers(min_value=1, max_value=40_000))
def test_the_tree_keeps_the_order_and_ends_in_one_compose(count: int) -> None:
    """Whatever the number of parts, every compose takes 2 to 32 sources, the final one at most
    32, and the value's bytes stay in order (the leaves, read left to right, are the parts)."""
    final, _, _ = compose_all(list(range(count)))
    assert len(final) <= MAX_COMPOSE
    assert flatten(final) == list(range(count))


@given(st.integers(min_value=MAX_COMPOSE + 1, max_value=MAX_COMPOSE * MAX_COMPOSE))
def test_up_to_1024_parts_one_level_merges_the_fewest_parts(count: int) -> None:
    """Up to 32 x 32 parts one level of intermediates is enough, and it merges the fewest parts
    possible: a group of g sources removes g - 1 <= 31, so k = ceil((count - 32) / 31) groups
    are needed and they merge (count - 32) + k parts. Every compose copies its sources (the
    emulator copies their bytes), so each part merged needlessly is copied twice."""
    _, levels, merged = compose_all(list(range(count)))
    excess = count - MAX_COMPOSE
    k = -(-excess // (MAX_COMPOSE - 1))
    assert levels == 1
    assert merged == excess + k


def test_64_parts_merge_34_in_two_even_groups() -> None:
    """The benchmark's shape (512 MiB in 8 MiB parts): two groups of 17, composed at once, then
    the final compose of 2 intermediates and 30 parts (before: two groups of 32, all 64 parts
    copied twice)."""
    assert compose_groups(64) == [(0, 17), (17, 34)]
    assert compose_groups(32) == []
