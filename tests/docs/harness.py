"""Runs one page's blocks in order, as a reader would: ``python harness.py STEPS.json`` in the
page's temporary directory (tests/docs/test_examples.py writes STEPS.json; tests/docs/blocks.py
says what each kind of block does). Exits 1 with the failing block's place on the first
failure."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import traceback
import types
from pathlib import Path
from typing import Any

import psutil


def newest_job_id() -> str:
    """The id of the newest job in the store the page uses (``$SWATH_DATABASE_URL`` or
    ``./swath.db``), or "" when there is none yet."""
    url = os.environ.get("SWATH_DATABASE_URL")
    if not url and not Path("swath.db").exists():
        return ""
    from swath import Client, NotFoundError
    from swath.store.base import store_from_url

    async def find() -> str:
        try:
            async with Client(store=store_from_url(url, read_only=True)) as client:
                found = await client.jobs().query(limit=1)
                return found[0].id if found else ""
        except NotFoundError:  # no swath database there yet
            return ""

    return asyncio.run(find())


def main() -> int:
    steps: list[dict[str, Any]] = json.loads(Path(sys.argv[1]).read_text())
    module = types.ModuleType("__main__")
    module.__dict__["__builtins__"] = __builtins__
    sys.modules["__main__"] = module
    sys.path.insert(0, os.getcwd())
    background: list[tuple[dict[str, Any], subprocess.Popen[bytes], Path]] = []
    failed = False
    try:
        for n, step in enumerate(steps):
            where = step["where"]
            print(f"--- {where} ({step['kind']})", flush=True)
            if step["kind"] == "file":
                target = Path(step["title"])
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(step["code"])
                continue
            if step["kind"] == "python":
                # line numbers of tracebacks are the markdown file's
                code = "\n" * step["line"] + step["code"]
                try:
                    exec(compile(code, step["page"], "exec"), module.__dict__)
                except BaseException:
                    traceback.print_exc()
                    print(f"FAILED: the python block at {where}", flush=True)
                    failed = True
                    return 1
                continue
            os.environ["JOB_ID"] = newest_job_id()
            env = dict(os.environ)
            # one terminal session: what a block exports, the next blocks see
            saved = Path(f".env-{n}")
            code = f"trap 'env -0 > {saved}' EXIT\n{step['code']}"
            argv = ["bash", "-euo", "pipefail", "-c", code]
            if step["kind"] == "background":
                log = Path(f".background-{n}.log")
                with log.open("wb") as out:
                    process = subprocess.Popen(
                        argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                    )
                background.append((step, process, log))
                continue
            result = subprocess.run(argv, env=env, timeout=step["timeout"], check=False)
            if result.returncode != 0:
                print(f"FAILED: the shell block at {where}: exit {result.returncode}", flush=True)
                failed = True
                return 1
            pairs = (item.partition("=") for item in saved.read_text().split("\0") if item)
            os.environ.clear()
            os.environ.update({k: v for k, _, v in pairs if k not in ("_", "SHLVL", "PWD")})
        return 0
    finally:
        for step, process, log in background:
            # the commands of the block get SIGTERM (as from systemd or Ctrl-C), not the shell
            # running them, which then exits with the last command's status
            if process.poll() is None:
                for child in psutil.Process(process.pid).children(recursive=True):
                    child.send_signal(signal.SIGTERM)
            try:
                code = process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                code = process.wait()
            output = log.read_text(errors="replace")
            if code != 0 and not failed:
                print(output)
                print(f"FAILED: the background block at {step['where']} exited {code}")
                sys.exit(1)
            print(f"--- output of the background block at {step['where']}:\n{output}")


if __name__ == "__main__":
    sys.exit(main())
