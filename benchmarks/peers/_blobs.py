"""The blobs of W2 and W3, the same bytes for every system: blob ``i`` is made of 1 MiB chunks,
chunk ``j`` being ``(i, j)`` packed into its first 16 bytes followed by a fixed random
pattern (so making a blob costs one copy, not a random number generator). The consumer checks
a CRC32C over every blob in order."""

from __future__ import annotations

import os
import random
import struct
import urllib.request
import uuid
from collections.abc import Iterator

import crc32c

CHUNK = 1 << 20
PATTERN = random.Random(7).randbytes(CHUNK)


def chunk(i: int, j: int) -> bytes:
    return struct.pack("<QQ", i, j) + PATTERN[16:]


def chunks(i: int, mib: int) -> Iterator[bytes]:
    for j in range(mib):
        yield chunk(i, j)


def blob(i: int, mib: int) -> bytes:
    return b"".join(chunks(i, mib))


def expected_digest(n: int, mib: int) -> int:
    crc = 0
    for i in range(n):
        for c in chunks(i, mib):
            crc = crc32c.crc32c(c, crc)
    return crc


def update(crc: int, data: bytes | memoryview) -> int:
    return int(crc32c.crc32c(data, crc))


def s3_bucket() -> str:
    import boto3  # type: ignore[import-untyped]

    name = f"peers-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=os.environ["PEERS_S3_ENDPOINT"]).create_bucket(Bucket=name)
    return name


def gcs_bucket() -> str:
    import json

    name = f"peers-{uuid.uuid4().hex[:12]}"
    req = urllib.request.Request(
        os.environ["STORAGE_EMULATOR_HOST"] + "/storage/v1/b?project=test",
        data=json.dumps({"name": name}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60):
        pass
    return name


def swath_cache(backend: str, scratch: str, **options: int) -> object:
    """A swath cache on ``backend`` (memory, local, s3, gcs) for a case."""
    from swath import InMemoryCache, LocalFileSystemCache

    if backend == "memory":
        return InMemoryCache()
    if backend == "local":
        return LocalFileSystemCache(os.path.join(scratch, "cache"))
    if backend == "s3":
        from swath.cache.s3 import AmazonS3Cache

        return AmazonS3Cache(s3_bucket(), endpoint_url=os.environ["PEERS_S3_ENDPOINT"], **options)
    if backend == "gcs":
        from swath.cache.gcs import GoogleStorageCache

        return GoogleStorageCache(gcs_bucket(), **options)
    raise ValueError(backend)


def tilebox_cache(backend: str, scratch: str) -> object:
    """Tilebox Workflows' cache classes: InMemoryCache, LocalFileSystemCache, and for S3 its
    ``ObstoreCache`` on an obstore ``S3Store`` (what its ``AmazonS3Cache`` builds, pointed at
    the emulator, which ``AmazonS3Cache`` itself cannot be)."""
    from tilebox.workflows import cache as tb

    if backend == "memory":
        return tb.InMemoryCache()
    if backend == "local":
        return tb.LocalFileSystemCache(os.path.join(scratch, "tilebox-cache"))
    if backend == "s3":
        from obstore.store import S3Store

        store = S3Store(
            s3_bucket(),
            endpoint=os.environ["PEERS_S3_ENDPOINT"],
            region=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
            access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
            secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
            client_options={"allow_http": True},
            virtual_hosted_style_request=False,
        )
        return tb.ObstoreCache(store, prefix="jobs")
    raise ValueError(backend)
