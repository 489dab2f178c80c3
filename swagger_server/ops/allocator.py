"""glibc's malloc told to keep the memory of large responses between requests (issue #10).

A page of 1000 rows is a few hundred KB, copied a few times on its way out (libpq's result, the
bytes handed to the response). With glibc's defaults, a block over 128 KB is its own ``mmap``,
and a thread's arena gives its free top back to the kernel above 128 KB: every page request
then maps fresh memory and the kernel zeroes it, one fault per 4 KB. Measured on a gunicorn
worker serving 1000-row pages (``/proc/<pid>/stat`` minflt): 133 faults a request by default, 1
with the thresholds below; worker CPU per page fell by 5-15 % (README "Performance").

The thresholds fix both at a few MB, so a page's buffers are reused from the heap. What a worker
keeps: up to ``TRIM_THRESHOLD`` of free memory at the top of each malloc arena, and blocks under
``MMAP_THRESHOLD`` freed inside a heap stay with the process, as any heap block does. A worker's
threads (the event loop, the request threads) may each get an arena, at most 8 per core glibc
sees; a worker that served pages of a few hundred KB kept a few MB more (README "What a request
costs").

An operator's own malloc settings win: nothing is changed when any of ``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_TOP_PAD_``, ``MALLOC_MMAP_MAX_`` is set, or
``GLIBC_TUNABLES`` names one of them (they must be in the process's environment when it
starts: gunicorn's ``raw_env`` comes too late for glibc). On a C library without ``mallopt``
(musl's does nothing, macOS has none) nothing happens.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping

# mallopt(3) parameter numbers (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 4 * 1024 * 1024  # blocks under this come from the heap and are reused
TRIM_THRESHOLD = 8 * 1024 * 1024  # free memory an arena keeps before giving it back

_OPERATOR_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                       "MALLOC_MMAP_MAX_")
_OPERATOR_TUNABLES = ("glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold",
                      "glibc.malloc.top_pad", "glibc.malloc.mmap_max")


def keep_large_buffers(environ: Mapping[str, str] = os.environ) -> bool:
    """Set the thresholds in this process (call it in each worker); True when they were set."""
    if any(name in environ for name in _OPERATOR_VARIABLES):
        return False
    tunables = environ.get("GLIBC_TUNABLES", "")
    if any(name in tunables for name in _OPERATOR_TUNABLES):
        return False
    try:
        # The symbols the process already has (libc's among them): no library search.
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success (0 where the value is out of range, e.g. a 32-bit build).
    # The mmap threshold first: setting it also stops glibc from moving the thresholds itself.
    return (mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
