"""Why the local-disk write benchmark removes each case's previous output first: on a VM that hands
freed memory back to its host, a write into pages the host took back costs far more CPU than one
into pages freed a moment before, for dd and swath alike.

    .venv/bin/python benchmarks/fresh_pages.py            # 1 GiB, 3 rounds

Each round: ``dd bs=8M conv=fdatasync`` of 1 GiB (unlinking its previous file first, as
``cache_local.py`` does), then swath's ``put_stream`` of 1 GiB over the key it wrote in the
previous round (its old file is unlinked only when the new value commits), then dd again, then
``put_stream`` with the key deleted first. Prints GB/s and CPU seconds per case and the ratio to
the dd of the same round; writes ``benchmarks/results/fresh_pages.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import MiB, write_json
from cache_local import CHUNK, chunks
from swath import LocalFileSystemCache


async def put_stream(directory: str, size: int, delete_first: bool) -> tuple[float, float]:
    async with LocalFileSystemCache(directory) as cache:
        if delete_first:
            with contextlib.suppress(KeyError):
                await cache.delete("k")
        t0, c0 = time.perf_counter(), time.process_time()
        await cache.put_stream("k", chunks(size))  # type: ignore[arg-type]
        return time.perf_counter() - t0, time.process_time() - c0


def dd(path: str, size: int) -> tuple[float, float]:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    before = os.times()
    t0 = time.perf_counter()
    argv = ["dd", "if=/dev/zero", f"of={path}", f"bs={CHUNK}", f"count={size // CHUNK}",
            "conv=fdatasync", "status=none"]  # fmt: skip
    subprocess.run(argv, check=True)
    after = os.times()
    cpu = (after.children_user + after.children_system) - (
        before.children_user + before.children_system
    )
    return time.perf_counter() - t0, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default=None, help="a directory on the filesystem to measure")
    args = parser.parse_args()
    size = args.size_mib * MiB
    work = tempfile.mkdtemp(prefix="swath-fresh-", dir=args.dir)
    rows: list[dict[str, object]] = []
    try:
        for r in range(args.rounds):
            for delete_first in (False, True):
                os.sync()
                dd_s, dd_cpu = dd(os.path.join(work, "dd.bin"), size)
                os.sync()
                s, cpu = asyncio.run(put_stream(os.path.join(work, "swath"), size, delete_first))
                x = {
                    "round": r,
                    "key_deleted_first": delete_first,
                    "dd_gb_s": size / dd_s / 1e9,
                    "dd_cpu_s": dd_cpu,
                    "put_stream_gb_s": size / s / 1e9,
                    "put_stream_cpu_s": cpu,
                }
                rows.append(x)
                print(
                    f"round {r} key deleted first: {'yes' if delete_first else 'no ':3}  "
                    f"dd {x['dd_gb_s']:.2f} GB/s ({dd_cpu:.2f} CPU s)  put_stream "
                    f"{x['put_stream_gb_s']:.2f} GB/s ({cpu:.2f} CPU s)  "
                    f"ratio {x['put_stream_gb_s'] / x['dd_gb_s']:.2f}x",
                    flush=True,
                )
    finally:
        subprocess.run(["rm", "-rf", work], check=False)
    write_json("fresh_pages", {"size_bytes": size, "rows": rows})


if __name__ == "__main__":
    main()
