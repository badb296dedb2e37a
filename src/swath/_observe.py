"""Whether OpenTelemetry is in use, decided without importing it.

swath traces and counts (``swath._otel``) only in a process that uses OpenTelemetry: one that
imported ``opentelemetry.trace`` (to configure a tracer provider, or through the CLI's
``--metrics-port``) before a runner starts or a job is submitted. Everywhere else nothing of
OpenTelemetry is imported and a runner pays one dictionary lookup per run.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import ModuleType


def otel() -> ModuleType | None:
    """``swath._otel`` if this process uses OpenTelemetry (and the ``swath[otel]`` extra is
    installed), else None."""
    if "opentelemetry.trace" not in sys.modules:
        return None
    try:
        from swath import _otel
    except ImportError:  # the API without the SDK pieces swath uses: no telemetry
        return None
    return _otel
