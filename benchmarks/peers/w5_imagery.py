"""W5 the imagery pipeline of ``swath demo`` (examples/imagery.py) at 4x its size: NDVI of a
synthetic 4-band uint16 scene of 12,288 x 12,288 pixels (1.1 GiB; the demo's is 6,144), in
tiles of 1,024: generate the scene, NDVI per tile, assemble the float32 mosaic into a file with
its mean, minimum, maximum, histogram and a preview. The same functions (``synthetic_tile``,
``ndvi``) in each system:

- swath: the example's tasks as they are (local-disk cache, SQLite store, 8 tasks at a time).
- Dask: dask.array with its default threaded scheduler (what the dask.array docs use for
  NumPy work on one machine): ``map_blocks`` to generate and compute NDVI per tile, ``da.store``
  of the mosaic into a memory-mapped file, the statistics in the same ``dask.compute``.
- Prefect: a task per tile to generate it and one to compute its NDVI (results passed in memory,
  Prefect's default), one task to assemble; the thread-pool task runner with 8 workers.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from types import ModuleType
from typing import Any

import numpy as np

from benchmarks.peers._harness import ROOT
from benchmarks.peers._measure import cpu_now, cpu_since

CONCURRENCY = 8


def imagery() -> ModuleType:
    if "peers_imagery" in sys.modules:
        return sys.modules["peers_imagery"]
    spec = importlib.util.spec_from_file_location("peers_imagery", ROOT / "examples" / "imagery.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["peers_imagery"] = module
    spec.loader.exec_module(module)
    return module


def _result(t0: float, t2: float, c0: Any, mean: float, p: dict[str, Any]) -> dict[str, Any]:
    return {"run_s": t2 - t0, "mean": mean, "size": p["size"], "tile": p["tile"], **cpu_since(c0)}


async def swath(p: dict[str, Any]) -> dict[str, Any]:
    from swath import Client, LocalFileSystemCache

    im = imagery()
    async with Client(f"sqlite:///{p['scratch']}/swath.db") as client:
        cache = LocalFileSystemCache(f"{p['scratch']}/cache")
        c0 = cpu_now()
        t0 = time.perf_counter()
        job = await client.jobs().submit(
            "ndvi", im.ImageryPipeline("S2-synthetic", size=p["size"], tile=p["tile"])
        )
        await client.runner(im.TASKS, cache, max_concurrency=CONCURRENCY).run_all()
        t2 = time.perf_counter()
        async with cache:
            stats = json.loads(await cache.group(job.id).get("ndvi.json"))
    return _result(t0, t2, c0, stats["mean"], p)


def dask(p: dict[str, Any]) -> dict[str, Any]:
    import dask
    import dask.array as da

    im = imagery()
    size, tile = p["size"], p["tile"]
    n = size // tile

    def generate(block_info: Any = None) -> np.ndarray:
        _, row, col = block_info[None]["chunk-location"]
        return im.synthetic_tile("S2-synthetic", size, tile, row, col)  # type: ignore[no-any-return]

    c0 = cpu_now()
    t0 = time.perf_counter()
    scene = da.map_blocks(generate, dtype=np.uint16, chunks=((4,), (tile,) * n, (tile,) * n))
    ndvi = da.map_blocks(im.ndvi, scene, drop_axis=0, dtype=np.float32)
    out = np.lib.format.open_memmap(f"{p['scratch']}/ndvi.npy", mode="w+", dtype=np.float32,
                                    shape=(size, size))  # fmt: skip
    step = max(1, size // im.PREVIEW_PIXELS)
    stored = da.store(ndvi, out, compute=False, lock=False)
    hist, _ = da.histogram(ndvi, bins=im.HISTOGRAM_BINS, range=(-1.0, 1.0))
    _, mean, _low, _high, _hist, _preview = dask.compute(
        stored, ndvi.mean(dtype=np.float64), ndvi.min(), ndvi.max(), hist, ndvi[::step, ::step]
    )
    out.flush()
    t2 = time.perf_counter()
    return _result(t0, t2, c0, float(mean), p)


def prefect(p: dict[str, Any]) -> dict[str, Any]:
    from prefect import flow, task
    from prefect.task_runners import ThreadPoolTaskRunner

    im = imagery()
    size, tile = p["size"], p["tile"]
    n = size // tile
    res: dict[str, Any] = {}

    @task
    def generate(row: int, col: int) -> np.ndarray:
        return im.synthetic_tile("S2-synthetic", size, tile, row, col)  # type: ignore[no-any-return]

    @task
    def ndvi(data: np.ndarray) -> np.ndarray:
        return im.ndvi(data)  # type: ignore[no-any-return]

    @task
    def assemble(tiles: list[np.ndarray]) -> float:
        hist = np.zeros(im.HISTOGRAM_BINS, dtype=np.int64)
        total = 0.0
        with open(f"{p['scratch']}/ndvi.f32", "wb") as f:
            for row in range(n):
                strip = np.concatenate(tiles[row * n : (row + 1) * n], axis=1)
                f.write(memoryview(strip).cast("B"))
                hist += np.histogram(strip, bins=im.HISTOGRAM_BINS, range=(-1.0, 1.0))[0]
                total += float(strip.sum(dtype=np.float64))
        return total / (size * size)

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=CONCURRENCY))
    def pipeline() -> None:
        res["c0"] = cpu_now()
        res["t0"] = time.perf_counter()
        rows = [r for r in range(n) for _ in range(n)]
        cols = [c for _ in range(n) for c in range(n)]
        scenes = generate.map(rows, cols)
        tiles = ndvi.map(scenes)
        res["mean"] = assemble.submit(tiles).result()
        res["t2"] = time.perf_counter()

    pipeline()
    return _result(res["t0"], res["t2"], res["c0"], res["mean"], p)


def plan(smoke: bool) -> list[Any]:
    from benchmarks.peers._harness import Case

    size, tile = (1024, 256) if smoke else (12288, 1024)
    params = {"size": size, "tile": tile}

    def case(system: str, fn: str) -> Case:
        services = ("prefect",) if fn == "prefect" else ()
        return Case("W5", system, "default", f"{size:,} px", "w5_imagery", fn, dict(params),
                    30.0 if smoke else 240.0, services, x=4 * 2 * size * size)  # fmt: skip

    systems = [case("swath", "swath"), case("Dask (dask.array)", "dask")]
    return systems if smoke else [*systems, case("Prefect", "prefect")]
