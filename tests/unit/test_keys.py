"""The key rules, checked directly on swath.cache.keys.split_key."""

from __future__ import annotations

import pytest

from swath import InvalidKeyError
from swath.cache.keys import MAX_KEY_BYTES, split_key


def test_split_valid_keys() -> None:
    """Valid keys split into their segments, under the prefix."""
    assert split_key("a") == ("a",)
    assert split_key("a/b/c") == ("a", "b", "c")
    assert split_key("x", ("job",)) == ("job", "x")
    assert split_key("...") == ("...",)
    assert split_key("ümlaut/日本") == ("ümlaut", "日本")


@pytest.mark.parametrize(
    "key", ["", "/", "a/", "/a", "a//b", ".", "..", "a/./b", "a/../b", "a\\b", "\x00", "a\x1fb",
            "\x7f", "\x9f", "\ud800"],
)  # fmt: skip
def test_invalid_keys(key: str) -> None:
    """Each broken rule is an InvalidKeyError, which is a ValueError."""
    with pytest.raises(InvalidKeyError):
        split_key(key)
    with pytest.raises(ValueError):  # noqa: PT011
        split_key(key)


def test_length_limit_is_utf8_bytes_including_prefix() -> None:
    """The limit is 1024 UTF-8 bytes of the full path, group prefix and separators included."""
    assert split_key("a" * MAX_KEY_BYTES)
    with pytest.raises(InvalidKeyError, match="1025"):
        split_key("a" * (MAX_KEY_BYTES + 1))
    with pytest.raises(InvalidKeyError):
        split_key("é" * 513)
    with pytest.raises(InvalidKeyError):
        split_key("a" * 1021, ("job",))
    assert split_key("a" * 1020, ("job",))


def test_non_str_keys() -> None:
    """Keys must be str: bytes, None and ints are refused."""
    for key in (b"a", None, 1):
        with pytest.raises(InvalidKeyError):
            split_key(key)
