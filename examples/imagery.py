"""An imagery workflow: NDVI of a synthetic multi-band scene, tile by tile, streaming.

1. ``GenerateRow`` tasks (one per row of tiles) make a synthetic 4-band (blue, green, red,
   near-infrared) uint16 scene with numpy, one tile at a time, and stream each row of tiles into
   the job cache as one blob, ``scene/<row>``, tile after tile (each tile's bands contiguous), so
   a tile is one ranged read. The scene is never whole in memory.
2. ``ComputeTiles`` depends on every ``GenerateRow`` and fans out one ``NdviTile`` per tile; each
   reads its tile with ``get_range``, computes NDVI = (NIR - red) / (NIR + red) as float32 and
   writes ``ndvi/<row>_<col>``.
3. ``AssembleNdvi`` depends on ``ComputeTiles`` (so on every tile), streams the mosaic
   ``ndvi.f32`` (row-major float32) into the cache one row of tiles at a time, and writes
   statistics (``ndvi.json``) and a small greyscale preview (``preview.pgm``).

Progress indicators: "generate", "tiles", "assemble" (their totals set by the root task);
"cache bytes" counts the bytes each task moved through the cache (read + written).

Run it: ``python examples/imagery.py`` or ``swath demo``.
"""

from __future__ import annotations

import asyncio
import json
import math
import zlib

import numpy as np

from swath import Client, ExecutionContext, LocalFileSystemCache, Task

BANDS = ("blue", "green", "red", "nir")
RED, NIR = 2, 3
HISTOGRAM_BINS = 20
PREVIEW_PIXELS = 256


class SceneSpec(Task):
    """Shared fields of the imagery tasks (not run on its own)."""

    scene_id: str
    size: int = 6144  # pixels per side
    tile: int = 1024  # pixels per tile side

    @property
    def tiles_per_side(self) -> int:
        return self.size // self.tile

    @property
    def tile_bytes(self) -> int:
        return len(BANDS) * self.tile * self.tile * 2

    async def execute(self, context: ExecutionContext) -> None:
        raise NotImplementedError


class ImageryPipeline(SceneSpec):
    """The root task: generate, then NDVI per tile, then assemble."""

    async def execute(self, context: ExecutionContext) -> None:
        if self.size <= 0 or self.tile <= 0 or self.size % self.tile:
            raise ValueError(
                f"size ({self.size}) must be a positive multiple of tile ({self.tile})"
            )
        context.current_task.display = f"NDVI of {self.scene_id}"
        n = self.tiles_per_side
        spec = (self.scene_id, self.size, self.tile)
        rows = context.submit_subtasks([GenerateRow(*spec, row=r) for r in range(n)])
        tiles = context.submit_subtask(ComputeTiles(*spec), depends_on=rows)
        context.submit_subtask(AssembleNdvi(*spec), depends_on=[tiles], max_retries=1)
        context.progress("generate").add(n)
        context.progress("tiles").add(n * n)
        context.progress("assemble").add(n)


def synthetic_tile(scene_id: str, size: int, tile: int, row: int, col: int) -> np.ndarray:
    """Bands x tile x tile uint16 reflectances: smooth 'fields' of vegetation plus noise,
    deterministic per scene and tile."""
    y = np.arange(row * tile, (row + 1) * tile, dtype=np.float32)[:, None]
    x = np.arange(col * tile, (col + 1) * tile, dtype=np.float32)[None, :]
    scale = size / 6.0
    vegetation = 0.5 + 0.25 * np.sin(x / (0.37 * scale)) * np.cos(y / (0.53 * scale))
    vegetation = vegetation + 0.25 * np.sin((x + y) / (0.11 * scale))  # in [0, 1]
    seed = zlib.crc32(f"{scene_id}/{row}/{col}".encode())
    noise = np.random.default_rng(seed).normal(0, 60, size=(len(BANDS), tile, tile))
    out = np.empty((len(BANDS), tile, tile), dtype=np.uint16)
    base = {
        "blue": 900 - 400 * vegetation,
        "green": 1100 + 200 * vegetation,
        "red": 2600 - 2000 * vegetation,
        "nir": 1800 + 3600 * vegetation,
    }
    for i, band in enumerate(BANDS):
        np.clip(base[band] + noise[i], 0, 10000, out=out[i], casting="unsafe")
    return out


class GenerateRow(SceneSpec):
    row: int = 0

    async def execute(self, context: ExecutionContext) -> None:
        written = 0
        async with context.job_cache.group("scene").open_write(str(self.row)) as out:
            for col in range(self.tiles_per_side):
                data = await asyncio.to_thread(
                    synthetic_tile, self.scene_id, self.size, self.tile, self.row, col
                )
                await out.write(memoryview(data).cast("B"))
                written += data.nbytes
        if self.row == 0:
            meta = {
                "scene_id": self.scene_id,
                "size": self.size,
                "tile": self.tile,
                "bands": list(BANDS),
                "dtype": "uint16",
                "layout": "scene/<row>: the row's tiles in order, each bands x tile x tile",
            }
            await context.job_cache.put("scene.json", json.dumps(meta).encode())
        context.progress("generate").done(1)
        context.progress("cache bytes").add(written)
        context.progress("cache bytes").done(written)


class ComputeTiles(SceneSpec):
    async def execute(self, context: ExecutionContext) -> None:
        n = self.tiles_per_side
        spec = (self.scene_id, self.size, self.tile)
        context.submit_subtasks(
            [NdviTile(*spec, row=r, col=c) for r in range(n) for c in range(n)], max_retries=2
        )


def ndvi(tile: np.ndarray) -> np.ndarray:
    red = tile[RED].astype(np.float32)
    nir = tile[NIR].astype(np.float32)
    total = nir + red
    out = np.zeros_like(total)
    np.divide(nir - red, total, out=out, where=total > 0)
    return out


class NdviTile(SceneSpec):
    row: int = 0
    col: int = 0

    async def execute(self, context: ExecutionContext) -> None:
        start = self.col * self.tile_bytes
        raw = await context.job_cache.group("scene").get_range(
            str(self.row), start, start + self.tile_bytes
        )
        bands = np.frombuffer(raw, dtype=np.uint16).reshape(len(BANDS), self.tile, self.tile)
        result = await asyncio.to_thread(ndvi, bands)
        await context.job_cache.group("ndvi").put(f"{self.row}_{self.col}", result)
        context.progress("tiles").done(1)
        moved = len(raw) + result.nbytes
        context.progress("cache bytes").add(moved)
        context.progress("cache bytes").done(moved)


class AssembleNdvi(SceneSpec):
    async def execute(self, context: ExecutionContext) -> None:
        n, tile = self.tiles_per_side, self.tile
        tiles = context.job_cache.group("ndvi")
        histogram = np.zeros(HISTOGRAM_BINS, dtype=np.int64)
        total, count = 0.0, 0
        low, high = math.inf, -math.inf
        step = max(1, self.size // PREVIEW_PIXELS)
        preview_rows: list[np.ndarray] = []
        moved = 0
        progress = context.progress("assemble")
        async with context.job_cache.open_write("ndvi.f32") as out:
            for row in range(n):  # one row of tiles in memory at a time
                blocks = []
                for col in range(n):
                    data = await tiles.get(f"{row}_{col}")
                    moved += len(data)
                    blocks.append(np.frombuffer(data, dtype=np.float32).reshape(tile, tile))
                strip = np.concatenate(blocks, axis=1)
                await out.write(memoryview(strip).cast("B"))
                moved += strip.nbytes
                histogram += np.histogram(strip, bins=HISTOGRAM_BINS, range=(-1.0, 1.0))[0]
                total += float(strip.sum(dtype=np.float64))
                count += strip.size
                low, high = min(low, float(strip.min())), max(high, float(strip.max()))
                preview_rows.append(strip[::step, ::step])
                progress.done(1)
        preview = np.concatenate(preview_rows, axis=0)
        pixels = np.clip((preview + 1.0) * 127.5, 0, 255).astype(np.uint8)
        header = f"P5 {pixels.shape[1]} {pixels.shape[0]} 255\n".encode()
        await context.job_cache.put("preview.pgm", header + pixels.tobytes())
        stats = {
            "scene_id": self.scene_id,
            "shape": [self.size, self.size],
            "dtype": "float32",
            "mean": total / count,
            "min": low,
            "max": high,
            "histogram": {"range": [-1.0, 1.0], "counts": histogram.tolist()},
        }
        await context.job_cache.put("ndvi.json", json.dumps(stats).encode())
        context.progress("cache bytes").add(moved)
        context.progress("cache bytes").done(moved)
        context.logger.info("assembled NDVI of %s: mean %.3f", self.scene_id, stats["mean"])


TASKS: list[type[Task]] = [ImageryPipeline, GenerateRow, ComputeTiles, NdviTile, AssembleNdvi]


async def main(
    database: str = "sqlite:///swath.db", cache_root: str = "swath-cache", size: int = 2048
) -> dict[str, object]:
    """Run the pipeline once and return the statistics it computed."""
    async with Client(database) as client:
        cache = LocalFileSystemCache(cache_root)
        job = await client.jobs().submit(
            "ndvi", ImageryPipeline("S2-synthetic", size=size, tile=512)
        )
        await client.runner(TASKS, cache, max_concurrency=8).run_all()
        async with cache:
            stats: dict[str, object] = json.loads(await cache.group(job.id).get("ndvi.json"))
        print(json.dumps(stats, indent=2))
        return stats


if __name__ == "__main__":
    asyncio.run(main())
