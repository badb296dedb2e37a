"""One runner process of a trial.

``python -m tests.faults.worker --cache DIR --records DIR [--faults SPEC] [options]`` with
``SWATH_DATABASE_URL`` in the environment (never a password on a command line). It runs the
trial's task classes (:mod:`tests.faults.tasks`) with ``run_all`` (until no runnable work is
left), stops gracefully on SIGTERM/SIGINT, and writes its records to ``DIR/exec-<pid>.log``.
``--faults`` wraps its job store in :class:`tests.faults.faultstore.FaultyStore`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from typing import cast

from swath import Client, LocalFileSystemCache
from swath.store.base import JobStore, store_from_url
from tests.faults import records
from tests.faults.faultstore import FaultyStore, parse
from tests.faults.tasks import AsyncNode, SyncNode


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cache", required=True)
    parser.add_argument("--records", required=True)
    parser.add_argument("--faults", default="", help="claim:N:before|after,complete:...,...")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--lease", type=float, default=1.5)
    parser.add_argument("--grace", type=float, default=0.3)
    parser.add_argument("--retry-delay", type=float, default=0.05)
    args = parser.parse_args()
    _die_with_parent()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    records.open_log(args.records)
    # always wrapped: without faults it still records which outcomes the store accepted
    store = cast(JobStore, FaultyStore(store_from_url(), parse(args.faults)))  # $SWATH_DATABASE_URL
    async with Client(store=store) as client:
        runner = client.runner(
            [AsyncNode, SyncNode],
            LocalFileSystemCache(args.cache),
            max_concurrency=args.concurrency,
            lease=args.lease,
            grace=args.grace,
            retry_delay=args.retry_delay,
            max_retry_delay=args.retry_delay * 4,
            poll_interval=(0.02, 0.25),
            handle_signals=True,
        )
        watch = asyncio.create_task(_watch_loop())
        try:
            await runner.run_all()
        finally:
            watch.cancel()
    print(f"runner {os.getpid()} done: {runner.stats}", file=sys.stderr)


async def _watch_loop(every: float = 0.05, late: float = 0.25) -> None:
    """Record the spans this process's event loop did not run for ``late`` seconds or more (an
    overloaded machine starves a runner as a SIGSTOP would: its heartbeats stop)."""
    while True:
        began = time.time()
        await asyncio.sleep(every)
        ended = time.time()
        if ended - began - every >= late:
            records.write("L", repr(began + every), repr(ended))


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when the harness dies (even while it is stopped), so an
    interrupted trial leaves no runner behind."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:
        sys.exit("the harness is gone")


if __name__ == "__main__":
    asyncio.run(main())
