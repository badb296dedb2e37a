"""New scenes landing in a bucket start the NDVI pipeline (docs/automations.md).

A storage trigger watches where scenes land (here a local folder, so the example runs anywhere;
``s3://bucket/prefix`` or ``gs://bucket/prefix`` work the same way) and submits a ``SceneLanded``
job for each new ``*.zip``. That task reads what fired it from ``context.trigger`` and starts the
NDVI pipeline of ``examples/imagery.py`` on the scene as its subtask. One runner does both here:
it evaluates the automations of its cluster (``automations=True``) and runs the jobs.

Run it: ``python examples/automations.py``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path, PurePosixPath

from swath import Client, ExecutionContext, JobState, LocalFileSystemCache, Task

sys.path.insert(0, str(Path(__file__).resolve().parent))
from imagery import TASKS, ImageryPipeline  # the NDVI pipeline, beside this file


class SceneLanded(Task):
    """Submitted by the automation for each new scene: starts its NDVI pipeline."""

    size: int = 1024  # the synthetic scene's side, pixels
    tile: int = 512

    async def execute(self, context: ExecutionContext) -> None:
        trigger = context.trigger
        if trigger is None or trigger.key is None:
            raise ValueError("SceneLanded runs when a scene lands (an automation submits it)")
        scene_id = PurePosixPath(trigger.key).name.removesuffix(".zip")
        context.current_task.display = f"landed: {trigger.key}"
        context.logger.info(
            "scene landed", url=trigger.url, size=trigger.size, checksum=trigger.checksum
        )
        context.submit_subtask(ImageryPipeline(scene_id, size=self.size, tile=self.tile))


async def main(
    database: str = "sqlite:///swath.db",
    cache_root: str = "swath-cache",
    landing: str | None = None,
    scenes: tuple[str, ...] = ("S2A_T32UNE_20260601", "S2B_T32UNE_20260604"),
) -> dict[str, dict[str, object]]:
    """Create the automation, let scenes land, and return each scene's NDVI statistics."""
    folder = Path(landing or tempfile.mkdtemp(prefix="landing-"))
    async with Client(database) as client:
        await client.automations().delete("new-scenes")  # from an earlier run, if any
        automation = await client.automations().storage_event(
            "new-scenes", str(folder), SceneLanded(size=1024, tile=512), glob="*.zip"
        )
        cache = LocalFileSystemCache(cache_root)
        runner = client.runner([SceneLanded, *TASKS], cache, automations=True)
        running = asyncio.create_task(runner.run_forever())
        for scene in scenes:  # an upload: written elsewhere, then moved in whole
            part = folder / f".{scene}.zip.part"
            part.write_bytes(f"the bytes of {scene}".encode())
            part.rename(folder / f"{scene}.zip")
        stats: dict[str, dict[str, object]] = {}
        while len(stats) < len(scenes):
            await asyncio.sleep(0.5)
            for job in await client.jobs().query():
                if job.trigger is None or job.trigger.automation_id != automation.id:
                    continue
                if job.state in (JobState.FAILED, JobState.CANCELED):
                    raise RuntimeError(f"job {job.name} {job.state}: swath jobs show {job.id}")
                if job.state == JobState.COMPLETED and job.name not in stats:
                    async with cache:
                        data = await cache.group(job.id).get("ndvi.json")
                    stats[job.name] = json.loads(data)
        runner.stop()
        await running
    for name, values in sorted(stats.items()):
        print(f"{name}: NDVI mean {values['mean']:.3f}")
    return stats


if __name__ == "__main__":
    asyncio.run(main())
