"""What the benchmarks ran on: printed with every table (the machines are shared and differ)."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo, or "unknown" where there is none."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def package_version(name: str) -> str | None:
    """The installed version of a distribution, or None where it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None
