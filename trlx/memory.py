"""Process-level memory settings for training on CPU (`train.retain_cpu_memory`).

PyTorch's CPU allocator hands every tensor to the C library's malloc and frees it back there. glibc serves
blocks above its mmap threshold (at most 32 MB) with a fresh `mmap` and unmaps them on free, and it trims the
heap's free top back to the kernel. A PPO step allocates many such blocks anew every time (the tied embedding's
dense gradient and its sum with the LM head's, (B, R, V) logits and their log-softmax, ...), and each new one
is zero-filled by the kernel one page fault at a time. On this project's 2-core VM that was ~20% of a W1
update of SmolLM2-135M (zero-filling one 113 MB gradient took 0.19 s, against 0.1 s for the whole fused AdamW
step). Keeping freed memory in the process lets later tensors reuse pages that are already mapped (`retain`).

The price is fragmentation. Everything then lives in one heap, where a block can only reuse a free hole at
least its size, and a PPO update mixes lifetimes: activations (forward to backward), gradients (backward to
the optimizer step), temporaries, and (B, R, V) and (V, H) blocks of 48-108 MiB. A malloc trace of W1 (full
model) showed the heap growing ~0.6 GiB past its largest live set in the first two steps, mostly where a 48
or 108 MiB block found no hole large enough. `compact` is the opposite trade: every block of 1 MiB or more is
its own mapping, returned to the kernel when freed, so the heap holds only small blocks and cannot fragment;
the pages of every large tensor fault in anew (W1 full: peak RSS 3.2 instead of 3.5 GiB, ~15% slower steps).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt parameter numbers from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
GLIBC_DEFAULT_MMAP_MAX = 65536  # and glibc's default M_TRIM_THRESHOLD is 128 KiB
COMPACT_MMAP_THRESHOLD = 2**20  # below the smallest activation/gradient of a 100M+ model (a (B, T, H) block)


def _mallopt(settings: dict[int, int]) -> bool:
    """glibc `mallopt` for each (parameter, value); False off Linux/glibc (macOS, Windows, musl) or if refused."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(bool(mallopt(parameter, value)) for parameter, value in settings.items())


def retain_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse: no mmap for large blocks (M_MMAP_MAX 0), no trimming of the heap
    (M_TRIM_THRESHOLD at its maximum). Process-wide; peak RSS may grow a few percent, since freed blocks stay
    mapped. Returns whether it applied (False off Linux/glibc)."""
    return _mallopt({M_MMAP_MAX: 0, M_TRIM_THRESHOLD: 2**31 - 1})


def compact_freed_memory() -> bool:
    """Make glibc map every block of `COMPACT_MMAP_THRESHOLD` bytes or more on its own and unmap it when freed
    (a fixed mmap threshold, so glibc does not raise it as it otherwise would), keeping the heap for small
    blocks: the least fragmentation, at the cost of a page fault per page of every large tensor. Process-wide
    (undoes `retain_freed_memory`). Returns whether it applied (False off Linux/glibc)."""
    return _mallopt(
        {M_MMAP_MAX: GLIBC_DEFAULT_MMAP_MAX, M_MMAP_THRESHOLD: COMPACT_MMAP_THRESHOLD, M_TRIM_THRESHOLD: 128 * 1024}
    )
