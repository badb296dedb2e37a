"""The documented workflows run as users run them: the examples/ files and the README's Python
examples."""

from __future__ import annotations

import asyncio
import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]


def load_example(name: str) -> ModuleType:
    path = REPO / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def test_producer_consumer(tmp_path: Path) -> None:
    """The consumer reads exactly what the producer wrote (on a SQLite file store)."""
    example = load_example("producer_consumer")
    values, total = await example.main(f"sqlite:///{tmp_path}/jobs.db")
    assert len(values) == 5
    assert total == sum(values)


async def test_cache_groups(tmp_path: Path) -> None:
    """PrintSum, depending on ProduceRandomNumbers, sees every one of the fanned-out writes."""
    example = load_example("cache_groups")
    numbers, total = await example.main(f"sqlite:///{tmp_path}/jobs.db", n=50)
    assert len(numbers) == 50
    assert total == sum(numbers)


async def test_new_scenes_landing_start_the_ndvi_pipeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/automations.md's worked example: two scenes land in a watched folder, the storage
    trigger submits one job per scene, and each job runs the NDVI pipeline of its scene (its
    statistics are those of that scene's synthetic tiles)."""
    monkeypatch.syspath_prepend(str(REPO / "examples"))
    example = load_example("automations")
    imagery = sys.modules["imagery"]
    landing = tmp_path / "landing"
    landing.mkdir()
    stats = await asyncio.wait_for(
        example.main(
            f"sqlite:///{tmp_path}/jobs.db",
            str(tmp_path / "cache"),
            str(landing),
            scenes=("S2A_T32UNE_20260601", "S2B_T32UNE_20260604"),
        ),
        120,
    )
    assert sorted(stats) == [
        "new-scenes: S2A_T32UNE_20260601.zip",
        "new-scenes: S2B_T32UNE_20260604.zip",
    ]
    for name, values in stats.items():
        scene = name.removeprefix("new-scenes: ").removesuffix(".zip")
        assert values["scene_id"] == scene
        tile = imagery.synthetic_tile(scene, 1024, 512, 0, 0)
        assert values["min"] <= float(imagery.ndvi(tile).min())


async def test_imagery_pipeline(tmp_path: Path) -> None:
    """The imagery example computes NDVI of every pixel: its statistics match NDVI computed
    directly from the same synthetic tiles with numpy."""
    import numpy as np

    example = load_example("imagery")
    stats = await example.main(f"sqlite:///{tmp_path}/jobs.db", str(tmp_path / "cache"), size=1024)
    expected = []
    for row in range(2):
        for col in range(2):
            tile = example.synthetic_tile("S2-synthetic", 1024, 512, row, col)
            expected.append(example.ndvi(tile))
    everything = np.concatenate([e.ravel() for e in expected])
    assert stats["shape"] == [1024, 1024]
    assert stats["mean"] == pytest.approx(float(everything.mean(dtype=np.float64)), rel=1e-6)
    assert stats["min"] == pytest.approx(float(everything.min()))
    assert sum(stats["histogram"]["counts"]) == 1024 * 1024


@pytest.mark.parametrize(
    "index", range(len(re.findall(r"```python\n", (REPO / "README.md").read_text())))
)
def test_readme_python_examples_run(index: int, tmp_path: Path) -> None:
    """Each Python example of the README runs unchanged in a fresh interpreter."""
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    script = tmp_path / "example.py"
    script.write_text(blocks[index])
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    if "SumOfSquares" in blocks[index]:
        assert result.stdout.split() == ["sum", "of", "squares:", "285", "COMPLETED"]
