"""The child side of a case: ``python -m benchmarks.peers._child MODULE FUNCTION PARAMS_JSON``
runs ``benchmarks.peers.MODULE.FUNCTION(params)`` (a coroutine function or a plain one) and
prints its result as the last line of stdout, as JSON."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import sys


def main() -> None:
    module, function, params = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    fn = getattr(importlib.import_module(f"benchmarks.peers.{module}"), function)
    result = asyncio.run(fn(params)) if inspect.iscoroutinefunction(fn) else fn(params)
    # this process's own peak RSS (the parent samples its children too, but may miss a peak)
    with open("/proc/self/status") as f:
        hwm = next(line for line in f if line.startswith("VmHWM:"))
    result["own_peak_rss"] = int(hwm.split()[1]) * 1024
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
