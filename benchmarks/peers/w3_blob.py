"""W3 one large blob streamed in and out: swath's ``put_stream`` (1 MiB chunks in) and ``stream``
(part-size chunks out, CRC32C checked by the consumer too) on memory, local disk, S3 (rclone)
and GCS (fake-gcs-server) with part sizes of 8 and 16 MiB and 4, 8 or 16 parts in flight,
against Tilebox Workflows' cache classes, which take and return whole ``bytes``
(``cache[key] = blob``, ``cache[key]``): their write time includes joining the chunks into
one ``bytes``, the price of not streaming."""

from __future__ import annotations

import time
from typing import Any

from benchmarks.peers import _blobs
from benchmarks.peers._measure import cpu_now, cpu_since


def _result(
    p: dict[str, Any], t0: float, t1: float, t2: float, c0: Any, crc: int
) -> dict[str, Any]:
    if crc != p["expected"]:
        raise RuntimeError(f"digest mismatch: {crc:#x} != {p['expected']:#x}")
    size = p["mib"] << 20
    return {
        "bytes": size,
        "write_s": t1 - t0,
        "read_s": t2 - t1,
        "run_s": t2 - t0,
        "write_mb_per_s": size / (t1 - t0) / 1e6,
        "read_mb_per_s": size / (t2 - t1) / 1e6,
        **cpu_since(c0),
    }


async def swath(p: dict[str, Any]) -> dict[str, Any]:
    options: dict[str, int] = {}
    part = p.get("part_mib", 8) << 20
    if p["backend"] == "s3":
        options = {"part_size": part, "max_concurrency": p["concurrency"]}
    elif p["backend"] == "gcs":
        options = {"chunk_size": part, "max_concurrency": p["concurrency"]}
    cache: Any = _blobs.swath_cache(p["backend"], p["scratch"], **options)
    async with cache:
        c0 = cpu_now()
        t0 = time.perf_counter()
        await cache.put_stream("big", _blobs.chunks(0, p["mib"]))
        t1 = time.perf_counter()
        crc = 0
        async for data in cache.stream("big", chunk_size=part):
            crc = _blobs.update(crc, data)
        t2 = time.perf_counter()
    return _result(p, t0, t1, t2, c0, crc)


def tilebox(p: dict[str, Any]) -> dict[str, Any]:
    cache: Any = _blobs.tilebox_cache(p["backend"], p["scratch"])
    c0 = cpu_now()
    t0 = time.perf_counter()
    cache["big"] = _blobs.blob(0, p["mib"])
    t1 = time.perf_counter()
    crc = _blobs.update(0, cache["big"])
    t2 = time.perf_counter()
    return _result(p, t0, t1, t2, c0, crc)


def plan(smoke: bool) -> list[Any]:
    from benchmarks.peers._harness import Case

    mib = 16 if smoke else 2048
    expected = _blobs.expected_digest(1, mib)

    def case(system: str, fn: str, backend: str, part: int = 8, conc: int = 8) -> Case:
        label = (
            f"{mib:,} MiB"
            if backend in ("memory", "local") or fn == "tilebox"
            else f"{part} MiB x {conc}"
        )
        params = {"backend": backend, "mib": mib, "part_mib": part, "concurrency": conc,
                  "expected": expected}  # fmt: skip
        svc = (backend,) if backend in ("s3", "gcs") else ()
        return Case("W3", system, "tuned" if (part, conc) != (8, 8) else "default", label,
                    "w3_blob", fn, params, 30.0 if smoke else 100.0, svc, x=mib << 20)  # fmt: skip

    if smoke:
        return [
            case("swath (S3, rclone)", "swath", "s3", 8, 4),
            case("Tilebox cache (local disk)", "tilebox", "local"),
        ]
    # the defaults first (8 MiB x 8) and the whole-bytes peers beside them; then the tuned
    # part sizes and concurrencies (the run's time budget may cut the last ones)
    out = [
        case("swath (memory)", "swath", "memory"),
        case("Tilebox cache (memory)", "tilebox", "memory"),
        case("swath (local disk)", "swath", "local"),
        case("Tilebox cache (local disk)", "tilebox", "local"),
        case("swath (S3, rclone)", "swath", "s3", 8, 8),
        case("Tilebox cache (S3, rclone)", "tilebox", "s3"),
        case("swath (GCS, fake-gcs)", "swath", "gcs", 8, 8),
    ]
    out += [case("swath (S3, rclone)", "swath", "s3", part, conc)
            for part, conc in ((8, 4), (8, 16), (16, 8))]  # fmt: skip
    out.append(case("swath (GCS, fake-gcs)", "swath", "gcs", 16, 16))
    return out
