"""``swath demo`` end to end, in a subprocess, as the README's first command runs it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def swath_command() -> str:
    found = shutil.which("swath", path=str(Path(sys.executable).parent))
    assert found is not None, "the swath console script is not installed in this environment"
    return found


def test_swath_demo_prints_its_summary(tmp_path: Path) -> None:
    """`swath demo` (default size: a 288 MiB scene) completes on the embedded defaults (a SQLite
    file and a local-disk cache in the working directory), shows progress bars and prints a
    summary with tasks, time and bytes through the cache; it removes the job's cache after."""
    env = {k: v for k, v in os.environ.items() if k != "SWATH_DATABASE_URL"}
    result = subprocess.run(
        [swath_command(), "demo"], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    for label in ("generate", "tiles", "assemble"):
        assert re.search(rf"{label}\s.*\d+/\d+", out), out
    assert re.search(r"tasks\s+│\s+45 completed", out), out
    assert re.search(r"time\s+│\s+[\d.]+ s", out), out
    moved = re.search(r"through the cache\s+│\s+([\d.]+) MiB", out)
    assert moved is not None, out
    assert float(moved.group(1)) > 900  # scene in and out, tiles in and out, the mosaic
    assert (tmp_path / "swath.db").is_file()
    job_dirs = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    assert all(not any(d.rglob("*.f32")) for d in job_dirs)


def test_swath_demo_bad_input_is_a_clear_error(tmp_path: Path) -> None:
    """A size that is not a multiple of the tile size is refused with a message, nothing run."""
    result = subprocess.run(
        [swath_command(), "demo", "--size", "1000", "--tile", "300"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "multiple of --tile" in result.stderr
    assert not (tmp_path / "swath.db").exists()
