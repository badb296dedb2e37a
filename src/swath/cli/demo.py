"""``swath demo``: the imagery example (examples/imagery.py) on the embedded defaults, a SQLite
job store file and a local-disk cache, with a progress bar per indicator and a summary."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import click
from rich.table import Table

from swath.cache import LocalFileSystemCache
from swath.cli._common import client, console, run
from swath.cli._common import size as human
from swath.cli.jobs import follow, task_tree
from swath.store.base import JobState

#: the largest scene side the demo takes (a 65536-pixel scene is 32 GiB: beyond any demo)
MAX_SIZE = 1 << 16

_EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "imagery.py"


def load_imagery() -> ModuleType:
    """The imagery example: from the source tree when installed from a clone (editable), else
    the copy packaged into the wheel as ``swath.cli._imagery``."""
    if _EXAMPLE.is_file():
        spec = importlib.util.spec_from_file_location("swath_example_imagery", _EXAMPLE)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module("swath.cli._imagery")
    except ImportError as exc:
        raise click.ClickException(f"the imagery example is not installed: {exc}") from None


@click.command()
@click.option(
    "--size",
    default=6144,
    show_default=True,
    type=click.IntRange(1, MAX_SIZE),
    help="Scene width and height, pixels.",
)
@click.option(
    "--tile",
    default=1024,
    show_default=True,
    type=click.IntRange(1, MAX_SIZE),
    help="Tile width and height, pixels.",
)
@click.option("--cache", "cache_root", default="cache", show_default=True,
              help="Directory of the local-disk cache.")  # fmt: skip
@click.option("--concurrency", default=8, show_default=True, type=click.IntRange(min=1))
@click.option("--keep", is_flag=True, help="Keep the job's cache (scene, tiles, NDVI mosaic).")
@click.pass_context
def demo(
    ctx: click.Context, size: int, tile: int, cache_root: str, concurrency: int, keep: bool
) -> None:
    """Compute NDVI of a synthetic 4-band scene, tile by tile, on the embedded defaults."""
    try:
        imagery = load_imagery()
    except ImportError as exc:  # numpy missing
        raise click.ClickException(
            f"{exc}: install the demo extra, e.g. pip install -e '.[demo]'"
        ) from None
    if size <= 0 or tile <= 0 or size % tile:
        raise click.BadParameter(f"--size ({size}) must be a positive multiple of --tile ({tile})")
    scene_mb = 4 * 2 * size * size / 2**20
    console.print(
        f"[bold]swath demo[/]: NDVI of a synthetic {size}x{size} 4-band scene "
        f"({scene_mb:.0f} MiB) in {(size // tile) ** 2} tiles of {tile}x{tile}"
    )

    async def go() -> dict[str, Any]:
        async with client(ctx) as c:
            cache = LocalFileSystemCache(cache_root)
            console.print(f"job store: {c.store.url}   cache: {cache.url()}")
            started = time.perf_counter()
            job = await c.jobs().submit(
                "swath-demo-ndvi", imagery.ImageryPipeline("S2-synthetic", size=size, tile=tile)
            )
            runner = c.runner(imagery.TASKS, cache, max_concurrency=concurrency)
            running = asyncio.create_task(runner.run_all())
            try:
                final = await follow(
                    c.jobs(),
                    job.id,
                    0.2,
                    hide=("cache bytes",),
                    order=("generate", "tiles", "assemble"),
                )
            finally:
                if final_failed := running.done() and running.exception():
                    raise final_failed
                await running
            elapsed = time.perf_counter() - started
            tasks = await c.jobs().tasks(job.id)
            stats: dict[str, Any] = {}
            async with cache:
                job_cache = cache.group(job.id)
                if final.state == JobState.COMPLETED:
                    stats = json.loads(await job_cache.get("ndvi.json"))
                if not keep:
                    await job_cache.clear()
            moved = next((p.done for p in final.progress if p.label == "cache bytes"), 0)
            return {
                "job": final,
                "tasks": tasks,
                "elapsed": elapsed,
                "bytes": moved,
                "stats": stats,
                "where": f"{cache.url()}/{job.id}",
            }

    result = run(go())
    job = result["job"]
    if job.state != JobState.COMPLETED:
        console.print(task_tree(job, result["tasks"], tracebacks=True))
        raise click.ClickException(f"the demo job ended {job.state}")
    elapsed, moved, stats = result["elapsed"], result["bytes"], result["stats"]
    table = Table(title="summary", show_header=False)
    table.add_row("job", f"{job.id} {job.state}")
    table.add_row("tasks", f"{len(result['tasks'])} completed")
    table.add_row("time", f"{elapsed:.1f} s")
    table.add_row("through the cache", f"{human(moved)} ({human(moved / elapsed)}/s)")
    table.add_row(
        "NDVI mean / min / max", f"{stats['mean']:.3f} / {stats['min']:.3f} / {stats['max']:.3f}"
    )
    table.add_row("results", result["where"] if keep else "removed (use --keep to keep them)")
    console.print(table)
