"""A training or evaluation process's CPU settings: torch's intra-op threads and how glibc's malloc returns freed memory.

Applied by `finetune`, `pretrain` and ``scripts/evaluate_checkpoint.py`` from ``--num_threads`` and
``--keep_freed_memory`` (`gpt1_hf.arguments.ExecutionArguments`).
"""

from __future__ import annotations

import ctypes
import functools
import platform

import torch

__all__ = ["apply_process_settings", "glibc_malloc", "keep_freed_memory"]

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's <malloc.h>
_NEVER_TRIM = 2**31 - 1  # mallopt takes an int: free memory at the heap's top kept up to 2 GiB


@functools.cache
def glibc_malloc() -> bool:
    """Whether this process allocates with glibc's malloc (Linux with glibc: the only place `keep_freed_memory` acts)."""
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def keep_freed_memory() -> bool:
    """Keep freed memory in the process for the next step instead of handing it back to the OS (glibc only).

    Every training step frees and allocates again the same multi-MB activation, logit and gradient buffers. glibc
    serves blocks that large with mmap and unmaps them when freed, so each step page-faults them in again and the
    kernel zeroes every page: 18% of a fine-tuning update at the results study's shape (docs/benchmarks.md).
    Serving all blocks from the heap and never trimming it turns that into reuse; the process's resident memory then
    stays near its peak. Process-wide and not undone. Returns whether glibc took the setting (False elsewhere).
    """
    if not glibc_malloc():
        return False
    libc = ctypes.CDLL(None)  # the C library the interpreter already uses
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM))


def apply_process_settings(num_threads: int | None = None, keep_memory: bool = True) -> None:
    """``--num_threads`` (None: torch's default) and ``--keep_freed_memory``."""
    if num_threads:
        torch.set_num_threads(int(num_threads))
    if keep_memory:
        keep_freed_memory()
