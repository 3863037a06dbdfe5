"""Process-level memory settings for training on CPU.

PyTorch's CPU allocator hands every tensor to the C library's malloc and frees it back there. glibc serves
blocks above its mmap threshold (at most 32 MB) with a fresh `mmap` and unmaps them on free, and it trims the
heap's free top back to the kernel. A PPO step allocates many such blocks anew every time (the tied embedding's
dense gradient and its sum with the LM head's, (B, R, V) logits and their log-softmax, ...), and each new one
is zero-filled by the kernel one page fault at a time. On this project's 2-core VM that was ~20% of a W1
update of SmolLM2-135M (zero-filling one 113 MB gradient took 0.19 s, against 0.1 s for the whole fused AdamW
step). Keeping freed memory in the process lets later tensors reuse pages that are already mapped.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

# mallopt parameter numbers from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


@functools.cache
def retain_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse: no mmap for large blocks (M_MMAP_MAX 0), no trimming of the heap
    (M_TRIM_THRESHOLD at its maximum). Process-wide and never undone; peak RSS may grow a few percent, since freed
    blocks stay mapped. Returns whether it applied (False off Linux/glibc, e.g. macOS, Windows or musl)."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
