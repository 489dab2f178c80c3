"""glibc's malloc told to keep the memory of large responses between requests (issue #10).

A page of 1000 rows is a few hundred KB, copied a few times on its way out (libpq's result, the
bytes handed to the response). With glibc's defaults, a block over 128 KB is its own ``mmap``,
and a thread's arena gives its free top back to the kernel above 128 KB: every page request
then maps fresh memory and the kernel zeroes it, one fault per 4 KB. Measured on a gunicorn
worker serving 1000-row pages (``/proc/<pid>/stat`` minflt): 133 faults a request by default, 1
with the thresholds below; worker CPU per page fell by 5-15 % (README "Performance").

The thresholds fix both at a few MB, so a page's buffers are reused from the heap. What a worker
keeps is bounded: at most ``TRIM_THRESHOLD`` of free memory at the top of each arena (glibc
makes at most 8 per core). An operator's own ``MALLOC_*`` or ``GLIBC_TUNABLES`` settings win:
nothing is changed when any is set. On a C library without ``mallopt`` (musl) nothing happens.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Mapping

# mallopt(3) parameter numbers (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 4 * 1024 * 1024  # blocks under this come from the heap and are reused
TRIM_THRESHOLD = 8 * 1024 * 1024  # free memory an arena keeps before giving it back

_OPERATOR_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                      "MALLOC_MMAP_MAX_", "GLIBC_TUNABLES")


def keep_large_buffers(environ: Mapping[str, str] = os.environ) -> bool:
    """Set the thresholds in this process (call it in each worker); True when they were set."""
    if any(name in environ for name in _OPERATOR_SETTINGS):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # mallopt returns 1 on success. The mmap threshold first: setting it also stops glibc from
    # moving the thresholds by itself.
    return (mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
            and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
