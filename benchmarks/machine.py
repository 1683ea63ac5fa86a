"""What the benchmark scripts record about the machine they ran on (imported by the scripts in this folder)."""

import platform


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (`platform.processor()` elsewhere)."""
    try:
        with open("/proc/cpuinfo") as handle:
            return next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()
