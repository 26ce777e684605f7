"""What machine a measurement ran on, for the records benchmarks and profiles write."""
from __future__ import annotations

import platform

CPUINFO = "/proc/cpuinfo"


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one), else what platform reports."""
    try:
        with open(CPUINFO, encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
