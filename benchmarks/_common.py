"""Small helpers shared by the benchmark scripts (timing, data lookup, table printing)."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vhi.settings import demo_data_dir


def data_dir_or_exit() -> Path:
    data = demo_data_dir()
    if not (data / "stir").is_dir():
        sys.exit(f"public bone-MRI data not found at {data}: set VHI_SHARED to the shared folder")
    return data


def best_of(fn: Callable[[], Any], repeats: int = 3) -> tuple[float, Any]:
    """Fastest wall time of ``repeats`` calls, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def median_of(fn: Callable[[], Any], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
