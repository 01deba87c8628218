"""Memory: large buffers go back to the operating system when they are freed.

At 10,000 sessions a `/metrics` body is some 14 MiB, and each scrape builds one
in an HTTP worker thread. glibc serves a request that large with `mmap` at
first, but raises its mmap threshold (up to 32 MiB) each time such a block is
freed; from then on the bodies come from the worker threads' heap arenas, which
keep what is freed. `bench/scale.py --sessions 10000` saw RSS reach 631 MiB
while polling continuously, against a 640Mi Kubernetes limit. A fixed threshold
of 1 MiB keeps large buffers in `mmap`, handed back on free (276 MiB in the same
run). An operator's own `MALLOC_MMAP_THRESHOLD_` wins; other C libraries are
left alone.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's mallopt() parameter number
MMAP_THRESHOLD_BYTES = 1024 * 1024


def return_large_buffers_to_the_os() -> bool:
    """Fix glibc's mmap threshold at 1 MiB; False where that is not done (not glibc,
    or the operator set `MALLOC_MMAP_THRESHOLD_`)."""
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    log.debug("glibc mmap threshold fixed at %d bytes: %s", MMAP_THRESHOLD_BYTES, done)
    return done
