"""What machine a bench figure came from: imported by the bench scripts (run as `python bench/X.py`,
which puts bench/ on the path)."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_model() -> str:
    """`lscpu`'s model name, from /proc/cpuinfo; platform's guess where there is none."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"
