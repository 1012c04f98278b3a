"""Timing a call, for the choices CPU flags cannot settle.

bf16 flags without AMX promise no fast bf16 (an AMD EPYC ran it faster than
the alternatives, an Intel Xeon whose hypervisor hides AMX ran it slower), so
the scorer's start-up backend race and distill-train's `--precision auto`
time their candidates on a full batch and keep the faster.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def fastest_run(call: Callable[[], Any], runs: int = 3) -> float:
    """The fastest of `runs` timed calls, after one untimed call that pays for lazy initialisation."""
    call()
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        timings.append(time.perf_counter() - start)
    return min(timings)
