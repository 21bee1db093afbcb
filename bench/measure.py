"""What the benchmark scripts measure about their own process: CPU seconds and peak memory."""

from __future__ import annotations

import resource


def peak_mb() -> float:
    """Peak resident memory of this process (VmHWM), in MiB. Not ru_maxrss: Linux carries that across fork+exec,
    so a phase would report its parent's memory."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cpu_s() -> float:
    """CPU seconds of this process (user + system): comparable across machine loads, unlike wall time."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
