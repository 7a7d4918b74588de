"""Process-wide settings for a training process: glibc's malloc thresholds.

A training step allocates and frees the same large arrays every step (im2col matrices of
several MB, activations, their gradients). With glibc's default thresholds the allocator
hands freed memory above its trim threshold back to the kernel, and the next step's arrays
fault their pages in again (and have them zeroed): about 2 400 minor page faults, a quarter
to two fifths of a LeNet5 step (docs/performance.md). :func:`raise_malloc_thresholds` makes
the allocator keep that memory. It changes where memory comes from, not any value computed.
"""

from __future__ import annotations

import ctypes
import os

__all__ = ["KEEP_MALLOC_ENV", "MMAP_THRESHOLD", "TRIM_THRESHOLD", "raise_malloc_thresholds"]

#: Environment variable that, set to anything but ``""`` or ``"0"``, keeps glibc's defaults.
KEEP_MALLOC_ENV = "TUCKER_REF_KEEP_MALLOC"
#: Blocks below this size come from the heap, not from a fresh ``mmap`` (glibc's largest
#: accepted value on 64-bit systems, ``HEAP_MAX_SIZE / 2``).
MMAP_THRESHOLD = 32 * 2**20
#: Free memory at the top of the heap is returned to the kernel only above this size.
TRIM_THRESHOLD = 2**30

# mallopt parameter numbers from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def _glibc():
    """The C library of this process if it is glibc (with ``mallopt``), else ``None``."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return None
    except (AttributeError, ValueError, OSError):  # no confstr, or a libc without that name
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        libc.mallopt.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


def raise_malloc_thresholds() -> bool:
    """Make glibc's allocator keep freed memory instead of returning it to the kernel.

    Sets ``M_MMAP_THRESHOLD`` to :data:`MMAP_THRESHOLD` (32 MiB) and ``M_TRIM_THRESHOLD`` to
    :data:`TRIM_THRESHOLD` (1 GiB) with ``mallopt`` for the whole process, as the environment
    variables ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` would at start-up.
    The arrays a step frees are then reused by the next step instead of being unmapped and
    faulted in again (docs/performance.md); computed values do not change. The price is
    memory: the process keeps up to its peak heap size (plus 1 GiB) mapped after a step.

    Setting the environment variable ``TUCKER_REF_KEEP_MALLOC`` (:data:`KEEP_MALLOC_ENV`) to
    anything but ``""`` or ``"0"`` keeps the defaults: nothing is called. Idempotent; calling
    it again sets the same values.

    Returns
    -------
    bool
        ``True`` if both thresholds were set; ``False`` if opted out, if the C library is not
        glibc (``mallopt`` unavailable) or if ``mallopt`` rejected a value.
    """
    if os.environ.get(KEEP_MALLOC_ENV, "") not in ("", "0"):
        return False
    libc = _glibc()
    if libc is None:
        return False
    mmap_set = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
    trim_set = libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    return mmap_set and trim_set
