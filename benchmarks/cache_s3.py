"""S3 cache throughput: swath's AmazonS3Cache against boto3, s3fs and obstore on the same server,
objects and sizes, in one run.

    .venv/bin/python benchmarks/cache_s3.py                      # 1 GiB on rclone, 256 MiB on moto
    .venv/bin/python benchmarks/cache_s3.py --size-mib 256 --repeat 1 --no-moto   # quick look

Starts ``rclone serve s3`` (disk-backed, in a temporary folder) and ``moto_server`` itself. On
rclone: put and get of the whole size through every client. On moto (objects in memory, and a
ranged GET there costs time in proportion to the whole object): uploads, and downloads by one
GET only. Every case runs in its own process, so its peak RSS and CPU seconds are its own. These
are loopback servers on a small shared machine: the figures measure client overhead (and the
server's own CPU, which competes with the client's), not S3's line rate, and they are noisy.

Needs the bench extra (``pip install -e '.[bench]'``: boto3, s3fs, obstore). Prints a table,
writes benchmarks/results/cache_s3.json.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

from _common import (  # noqa: E402
    MiB,
    Result,
    best_of,
    print_table,
    report,
    rss_now,
    run_case,
    write_json,
)

CHUNK = 8 * MiB
PART = 8 * MiB
CONCURRENCY = 8
KEY = "bench/object.bin"


def env() -> tuple[str, str]:
    return os.environ["AWS_ENDPOINT_URL_S3"], os.environ["BENCH_BUCKET"]


def blocks(size: int) -> Iterator[bytes]:
    block = b"\xa5" * CHUNK  # one object reused: the source costs nothing
    for _ in range(size // CHUNK):
        yield block


class Source(io.RawIOBase):
    """A readable file of ``size`` bytes for boto3's upload_fileobj, costing no memory."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.block = b"\xa5" * CHUNK

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self.left if n is None or n < 0 else min(n, self.left)
        out = self.block[:n] if n <= CHUNK else b"\xa5" * n
        self.left -= len(out)
        return out


class Sink(io.RawIOBase):
    """A writable that counts and drops what it is given."""

    def __init__(self) -> None:
        self.n = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        n = len(memoryview(data))
        self.n += n
        return n


# -- child cases -------------------------------------------------------------------------------
async def swath_put(size: int, part: int) -> None:
    from swath.cache.s3 import AmazonS3Cache

    _, bucket = env()
    async with AmazonS3Cache(bucket, prefix="", part_size=part, max_concurrency=CONCURRENCY) as c:
        await c.put("warmup", b"x")
        base = rss_now()
        t0 = time.perf_counter()
        n = await c.put_stream(KEY, blocks(size))
        report(time.perf_counter() - t0, n, base)


async def swath_get(size: int, part: int) -> None:
    from swath.cache.s3 import AmazonS3Cache

    _, bucket = env()
    async with AmazonS3Cache(bucket, prefix="", part_size=part, max_concurrency=CONCURRENCY) as c:
        await c.get("warmup")
        base = rss_now()
        t0 = time.perf_counter()
        n = 0
        async for chunk in c.stream(KEY, chunk_size=CHUNK):
            n += len(chunk)
        report(time.perf_counter() - t0, n, base)


def boto3_client() -> Any:
    import boto3
    import botocore.config

    endpoint, _ = env()
    return boto3.client(
        "s3", endpoint_url=endpoint, config=botocore.config.Config(s3={"addressing_style": "path"})
    )


def boto3_config(tuned: bool) -> Any:
    from boto3.s3.transfer import TransferConfig

    if not tuned:
        return TransferConfig()
    return TransferConfig(
        multipart_threshold=PART, multipart_chunksize=PART, max_concurrency=CONCURRENCY
    )


def boto3_put(size: int, tuned: bool) -> None:
    client = boto3_client()
    _, bucket = env()
    base = rss_now()
    t0 = time.perf_counter()
    client.upload_fileobj(Source(size), bucket, KEY, Config=boto3_config(tuned))
    report(time.perf_counter() - t0, size, base)


def boto3_get(size: int, tuned: bool) -> None:
    client = boto3_client()
    _, bucket = env()
    sink = Sink()
    base = rss_now()
    t0 = time.perf_counter()
    client.download_fileobj(bucket, KEY, sink, Config=boto3_config(tuned))
    report(time.perf_counter() - t0, sink.n, base)


def boto3_get_one(size: int) -> None:
    """One GET, streamed (for moto)."""
    client = boto3_client()
    _, bucket = env()
    base = rss_now()
    t0 = time.perf_counter()
    n = 0
    for chunk in client.get_object(Bucket=bucket, Key=KEY)["Body"].iter_chunks(CHUNK):
        n += len(chunk)
    report(time.perf_counter() - t0, n, base)


def s3fs_fs() -> Any:
    import s3fs

    endpoint, _ = env()
    return s3fs.S3FileSystem(endpoint_url=endpoint, default_block_size=PART)


def s3fs_put(size: int) -> None:
    fs = s3fs_fs()
    _, bucket = env()
    base = rss_now()
    t0 = time.perf_counter()
    with fs.open(f"{bucket}/{KEY}", "wb", block_size=PART) as f:
        for block in blocks(size):
            f.write(block)
    report(time.perf_counter() - t0, size, base)


def s3fs_get(size: int) -> None:
    fs = s3fs_fs()
    _, bucket = env()
    base = rss_now()
    t0 = time.perf_counter()
    n = 0
    with fs.open(f"{bucket}/{KEY}", "rb", block_size=PART) as f:
        while chunk := f.read(CHUNK):
            n += len(chunk)
    report(time.perf_counter() - t0, n, base)


def obstore_store() -> Any:
    from obstore.store import S3Store

    endpoint, bucket = env()
    return S3Store(
        bucket,
        endpoint=endpoint,
        region=os.environ["AWS_DEFAULT_REGION"],
        access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
        secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        virtual_hosted_style_request=False,
        client_options={"allow_http": True},
    )


async def obstore_put(size: int) -> None:
    import obstore

    store = obstore_store()

    async def agen() -> AsyncIterator[bytes]:
        for block in blocks(size):
            yield block

    base = rss_now()
    t0 = time.perf_counter()
    await obstore.put_async(store, KEY, agen(), chunk_size=PART, max_concurrency=CONCURRENCY)
    report(time.perf_counter() - t0, size, base)


async def obstore_get(size: int) -> None:
    import obstore

    store = obstore_store()
    base = rss_now()
    t0 = time.perf_counter()
    n = 0
    result = await obstore.get_async(store, KEY)
    async for chunk in result.stream(min_chunk_size=CHUNK):
        n += len(chunk)
    report(time.perf_counter() - t0, n, base)


CASES: dict[str, Any] = {
    "swath_put": lambda s: asyncio.run(swath_put(s, PART)),
    "swath_get": lambda s: asyncio.run(swath_get(s, PART)),
    # one GET for the whole object: part_size above the object's size (passed on as it arrives)
    "swath_get_one": lambda s: asyncio.run(swath_get(s, max(PART, s))),
    "boto3_put_default": lambda s: boto3_put(s, False),
    "boto3_put_tuned": lambda s: boto3_put(s, True),
    "boto3_get_default": lambda s: boto3_get(s, False),
    "boto3_get_tuned": lambda s: boto3_get(s, True),
    "boto3_get_one": boto3_get_one,
    "s3fs_put": s3fs_put,
    "s3fs_get": s3fs_get,
    "obstore_put": lambda s: asyncio.run(obstore_put(s)),
    "obstore_get": lambda s: asyncio.run(obstore_get(s)),
}

PUTS = [
    ("swath AmazonS3Cache.put_stream", "swath_put", "8 MiB parts x 8, CRC32C (+HEAD*)"),
    ("boto3 upload_fileobj (default config)", "boto3_put_default", "8 MiB parts x 10, CRC32"),
    ("boto3 upload_fileobj (8 MiB x 8)", "boto3_put_tuned", "CRC32"),
    ("s3fs open/write", "s3fs_put", "sequential parts"),
    ("obstore put_async (async iterable)", "obstore_put", "8 MiB parts x 8"),
]
GETS = [
    ("swath AmazonS3Cache.stream", "swath_get", "8 ranged GETs, CRC32C verified"),
    ("boto3 download_fileobj (default config)", "boto3_get_default", "8 MiB ranges x 10"),
    ("boto3 download_fileobj (8 MiB x 8)", "boto3_get_tuned", ""),
    ("s3fs open/read", "s3fs_get", "sequential 8 MiB reads"),
    ("obstore get_async (stream)", "obstore_get", "one GET"),
]
ONE_GET = [
    ("swath AmazonS3Cache.stream (one GET)", "swath_get_one", "part_size >= object, verified"),
    ("boto3 get_object iter_chunks", "boto3_get_one", "one GET"),
    ("obstore get_async (stream)", "obstore_get", "one GET"),
]


def run_server(kind: str, size: int, repeat: int, puts: list, gets: list) -> list[Result]:  # type: ignore[type-arg]
    from tests.services.s3 import running

    label = f"{size // MiB} MiB" if size < 1 << 30 else f"{size >> 30} GiB"
    results: list[Result] = []
    with running(kind, disk=kind == "rclone") as server:
        bucket = server.create_bucket()
        child_env = {**server.env, "BENCH_BUCKET": bucket}
        me = os.path.abspath(__file__)
        # swath writes last, so the object read below is swath's (with its CRC32C recorded)
        put_results = [
            best_of(
                name,
                f"{kind}: put {label}",
                repeat,
                lambda c=case: run_case(me, c, str(size), env=child_env),
                note,
            )
            for name, case, note in [*puts[1:], puts[0]]
        ]
        results += [put_results[-1], *put_results[:-1]]
        # rclone computes an object's MD5 (its ETag) on first access: pay that before timing
        server.client.head_object(Bucket=bucket, Key=KEY)
        for name, case, note in gets:
            results.append(
                best_of(
                    name,
                    f"{kind}: get {label}",
                    repeat,
                    lambda c=case: run_case(me, c, str(size), env=child_env),
                    note,
                )
            )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--case")
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--moto-mib", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-moto", action="store_true")
    args, rest = parser.parse_known_args()
    if args.case:
        CASES[args.case](int(rest[0]))
        sys.stdout.flush()
        os._exit(0)  # obstore's runtime aborts the interpreter's shutdown (SIGABRT) otherwise

    results = run_server("rclone", args.size_mib * MiB, args.repeat, PUTS, GETS)
    if not args.no_moto:
        results += run_server("moto", args.moto_mib * MiB, 1, PUTS, ONE_GET)

    groups = list(dict.fromkeys(r.group for r in results))
    reference = {g: next(r.name for r in results if r.group == g) for g in groups}
    rows = print_table(
        "S3 cache (loopback servers: client overhead, not S3's line rate; noisy shared machine)",
        results,
        reference,
    )
    summary = []
    for group in groups:
        members = [r for r in results if r.group == group]
        ours = members[0]
        best = max(members[1:], key=lambda r: r.mb_per_s)
        ratio = ours.mb_per_s / best.mb_per_s
        summary.append(
            {
                "group": group,
                "swath_mb_per_s": ours.mb_per_s,
                "best_peer": best.name,
                "best_peer_mb_per_s": best.mb_per_s,
                "ratio": ratio,
                "swath_peak_rss": ours.peak_rss,
                "best_peer_peak_rss": best.peak_rss,
            }
        )
        print(
            f"{group:<22} swath / best peer ({best.name}) = {ratio:.2f}x; peak RSS "
            f"{ours.peak_rss / MiB:.0f} MiB vs {best.peak_rss / MiB:.0f} MiB"
        )
    print(
        "* on rclone and moto (not S3) swath sends a HeadObject after CompleteMultipartUpload to\n"
        "  learn whether the store kept the FULL_OBJECT CRC32C; rclone computes the object's MD5\n"
        "  on that first access (about 2 s per GiB here), which the peers leave to the next reader."
    )
    write_json("cache_s3", {"results": rows, "swath_vs_best_peer": summary, "argv": sys.argv})


if __name__ == "__main__":
    main()
