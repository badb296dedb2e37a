"""The worked port of docs/tilebox.md runs: the Tilebox original with only its imports changed
(and the cluster created, which swath requires), and both swath versions of it."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def port_blocks() -> list[str]:
    text = (ROOT / "docs" / "tilebox.md").read_text()
    port = text[text.index("## A workflow, ported") :]
    return re.findall(r"```python\n(.*?)```", port, re.S)


def run(code: str, cwd: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_tilebox_original_runs_with_changed_imports(tmp_path: Path) -> None:
    """The Tilebox original, its imports swapped for swath's (``BlockingClient`` as
    ``Client``), runs to completion on the embedded store, sync tasks and mapping cache
    unchanged."""
    original = port_blocks()[0]
    assert "from tilebox.workflows import Client, ExecutionContext, Task" in original
    code = original.replace(
        "from tilebox.workflows import Client, ExecutionContext, Task",
        "from swath import BlockingClient as Client, ExecutionContext, Task",
    ).replace(
        "from tilebox.workflows.cache import InMemoryCache", "from swath import InMemoryCache"
    )
    code = code.replace(
        "client = Client()\n", 'client = Client()\nclient.clusters().create("dev-cluster")\n'
    )
    code += "\nprint(client.jobs().find(job).state)\nclient.close()\n"
    assert run(code, tmp_path).strip().endswith("COMPLETED")
    assert (tmp_path / "swath.db").exists()


def test_swath_ports_run(tmp_path: Path) -> None:
    """Both swath versions (sync with the typed mapping, and async) complete, with the
    progress and the execution statistics they print."""
    sync_port, async_port = port_blocks()[1:3]
    out = run(sync_port, tmp_path)
    assert out.startswith("COMPLETED [ProgressInfo(label='tiles', total=16, done=16)]")
    assert "<TaskState.COMPLETED: 'COMPLETED'>: 18" in out
    assert out.splitlines()[1].startswith("S2A_T32UNE: 0.")
    out = run(async_port, tmp_path)
    assert out.startswith("COMPLETED ")
    assert "graph TD" in out
    assert (tmp_path / "cache").is_dir()
