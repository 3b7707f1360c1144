"""The trainer process keeps the memory it frees, so each step reuses it instead of faulting it in.

glibc's malloc serves each block above its mmap threshold (32 MiB at most) with a fresh `mmap`
and unmaps it when freed. A training step allocates and frees gigabytes of such blocks (logits,
activations, their gradients), so the kernel maps and zero-fills the same memory again at every
step: on SmolLM2-135M, 650,000 page faults a step, 18 of the run's 82 CPU seconds in the kernel.
With large blocks served from the heap and the heap's top never trimmed, the next step finds that
memory already mapped; the price is a higher resident peak (measured in bench/train_throughput.py).
Only the trainer process, which lives for one job, asks for this: never the API process.
"""

from __future__ import annotations

import ctypes
import platform

# mallopt(3) parameters, from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
# mallopt takes an int: the largest trim threshold it accepts (a free heap top above 2 GiB is
# still given back, which a trainer on a small model never reaches between steps).
LARGEST_TRIM_THRESHOLD = 2**31 - 1


def available() -> bool:
    """Whether this process allocates with glibc's malloc (Linux distributions but Alpine)."""
    return platform.libc_ver()[0] == "glibc"


def retain_freed_memory() -> bool:
    """Make malloc keep freed memory mapped in this process; False where it cannot."""
    if not available():
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    # Both calls return 1 on success; no mmap for large blocks, and no trimming of the heap.
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, LARGEST_TRIM_THRESHOLD))
