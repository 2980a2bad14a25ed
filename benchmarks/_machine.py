"""What a benchmark ran on, printed at the top of its output."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable

import torch


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (f"machine: {cpu_model()}, {os.cpu_count()} cores, torch threads "
            f"{torch.get_num_threads()}, GPU {gpu}; torch {torch.__version__}; "
            f"python {platform.python_version()}")


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int,
                   device: torch.device) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls after ``warmup``, waiting for a
    CUDA device to finish each call."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
