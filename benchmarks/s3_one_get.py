"""Where the time of a one-GET S3 read goes: the same object read by one GET through each layer
of the stack, in one process, rounds interleaved, against moto on loopback.

    .venv/bin/python benchmarks/s3_one_get.py            # 512 MiB, 4 rounds

Readers: aiohttp alone (a presigned URL, ``readchunk()`` and discard), aiobotocore's
``get_object`` body read the same way, boto3's ``iter_chunks(8 MiB)``, aiobotocore's pieces
gathered into 8 MiB ``bytes`` (swath's ``rechunk``), the same with CRC32C on the loop's thread,
and swath's ``AmazonS3Cache.stream`` with ``part_size`` above the object's size. Prints MB/s per
reader and round; writes ``benchmarks/results/s3_one_get.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import MiB, write_json

CHUNK = 8 * MiB
KEY = "one-get.bin"


async def drain(pieces: AsyncIterator[bytes]) -> int:
    return sum([len(piece) async for piece in pieces])


async def rounds(server: Any, bucket: str, size: int, count: int) -> dict[str, list[float]]:
    import aiohttp

    from swath.cache import _checksum
    from swath.cache._base import rechunk
    from swath.cache._transfer import received as readchunks
    from swath.cache.s3 import AmazonS3Cache

    url = server.client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": KEY})
    options: dict[str, Any] = {"prefix": "", "endpoint_url": server.endpoint}
    async with AmazonS3Cache(bucket, part_size=2 * size, **options) as cache:
        client = cache._client

        async def aiohttp_alone() -> int:
            async with aiohttp.ClientSession() as session, session.get(url) as response:
                return await drain(readchunks(response.content))

        async def body() -> Any:
            return (await client.get_object(Bucket=bucket, Key=KEY))["Body"].raw_stream.content

        async def aiobotocore_alone() -> int:
            return await drain(readchunks(await body()))

        async def boto3_chunks() -> int:
            def read() -> int:
                answer = server.client.get_object(Bucket=bucket, Key=KEY)
                return sum(len(c) for c in answer["Body"].iter_chunks(CHUNK))

            return read()  # blocking, as boto3 is: nothing else runs meanwhile

        async def gathered() -> int:
            return await drain(rechunk(readchunks(await body()), CHUNK))

        async def gathered_crc() -> int:
            crc, n = 0, 0
            async for chunk in rechunk(readchunks(await body()), CHUNK):
                crc = _checksum.update(crc, chunk)
                n += len(chunk)
            return n

        async def swath_stream() -> int:
            return await drain(cache.stream(KEY, chunk_size=CHUNK))

        readers: dict[str, Callable[[], Any]] = {
            "aiohttp alone, readchunk": aiohttp_alone,
            "aiobotocore get_object, readchunk": aiobotocore_alone,
            "boto3 iter_chunks(8 MiB)": boto3_chunks,
            "pieces gathered into 8 MiB bytes": gathered,
            "gathered + CRC32C on the loop": gathered_crc,
            "swath AmazonS3Cache.stream": swath_stream,
        }
        results: dict[str, list[float]] = {name: [] for name in readers}
        for _ in range(count):
            for name, reader in readers.items():
                t0 = time.perf_counter()
                got = await reader()
                assert got == size, (name, got)
                results[name].append(size / (time.perf_counter() - t0) / 1e6)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    from tests.services.s3 import ACCESS_KEY, REGION, SECRET_KEY, running

    os.environ.update(
        AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_DEFAULT_REGION=REGION
    )
    size = args.size_mib * MiB
    with running("moto") as server:
        bucket = server.create_bucket()
        server.client.put_object(Bucket=bucket, Key=KEY, Body=b"\xa5" * size)
        results = asyncio.run(rounds(server, bucket, size, args.rounds))
    print(f"one GET of {args.size_mib} MiB from moto, MB/s per round")
    for name, speeds in results.items():
        print(f"{name:<36} " + "  ".join(f"{v:6.0f}" for v in speeds))
    write_json("s3_one_get", {"size": size, "mb_per_s": results})


if __name__ == "__main__":
    main()
