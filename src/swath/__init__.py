"""swath: async-first workflows for data-heavy work, with a streaming per-job cache."""

from __future__ import annotations

from typing import Any

from swath.cache import (
    Cache,
    CacheGroup,
    CacheWriter,
    InMemoryCache,
    LocalFileSystemCache,
    Stat,
    cache_from_url,
)
from swath.errors import (
    CacheError,
    ChecksumMismatchError,
    InvalidKeyError,
    KeyNotFoundError,
    SwathError,
)

__version__ = "0.1.0"

__all__ = [
    "AmazonS3Cache",
    "Cache",
    "CacheError",
    "CacheGroup",
    "CacheWriter",
    "ChecksumMismatchError",
    "GoogleStorageCache",
    "InMemoryCache",
    "InvalidKeyError",
    "KeyNotFoundError",
    "LocalFileSystemCache",
    "Stat",
    "SwathError",
    "cache_from_url",
]


def __getattr__(name: str) -> Any:
    if name in ("AmazonS3Cache", "GoogleStorageCache"):
        import swath.cache

        return getattr(swath.cache, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
