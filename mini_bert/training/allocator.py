"""Keep freed memory in the process, so that NumPy's large temporaries stop costing page faults.

A training step allocates and frees dozens of multi-megabyte arrays (activations, their gradients, attention
weights). glibc's malloc serves a request above its mmap threshold with a fresh `mmap` and returns it to the kernel
on `free`; it also trims the top of its heap whenever more than the trim threshold lies free there. Either way the
next array of that size starts as untouched pages, and the kernel zero-fills each one on first write: about 1 ms
per 6 MB array measured here, paid again at every step. Raising both thresholds makes freed blocks stay in malloc's
free lists, where the next step's arrays reuse them.

Threads need one more setting. The trainer computes each half of the batch in its own thread, and glibc gives each
new thread its own arena: a chain of heaps of at most 64 MiB, and a heap whose blocks are all free is unmapped
whatever the thresholds say. A step's temporaries span several heaps, so one was unmapped and mapped again at every
step. Limiting malloc to one arena (`M_ARENA_MAX` = 1), which the thresholds above govern, stops that; the
threads make a few hundred allocations per step, too few to contend for the arena's lock.

Measured on the 2-core development machine:
- one thread, half of a 32 x 128 batch of the default model, forward and backward: 351 ms -> 301 ms per step;
- two threads, the whole batch (the trainer's step without the optimizer), after the thresholds: 9,856 -> 0.2
  page faults and 332 -> 316 ms per step (3 processes each way: 332, 320, 329 -> 314, 314, 319 ms).
The blocks reused are the ones the step itself freed, so the peak should stay that of one step (not measured
separately); the process simply stops handing them back to the kernel between steps, so its resident memory no
longer shrinks between them.

This changes a process-wide setting, so library code never calls it on import: the `minibert` command, the trainer
and the benchmarks do, before they start any thread (a thread keeps the arena it was first given). On anything but
glibc (macOS, Windows, musl) it does nothing and returns False.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1          # glibc <malloc.h>
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
# glibc caps the mmap threshold at 32 MiB on 64-bit systems (HEAP_MAX_SIZE / 2); requests above it are mmapped.
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024
_TRIM_THRESHOLD = 2**31 - 1     # the largest int: never trim the heap top

_done = False


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds and use one arena (once per process). Returns True if the settings
    took effect."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):          # not glibc (e.g. musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _done = (bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
             and bool(mallopt(_M_ARENA_MAX, 1)))
    return _done
