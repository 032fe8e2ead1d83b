"""--keep_freed_memory and --num_threads (gpt1_hf.process_settings)."""

import subprocess
import sys

import pytest
import torch

from gpt1_hf.arguments import FinetuneArguments, parse_cli
from gpt1_hf.process_settings import apply_process_settings, glibc_malloc

# page faults of 5 allocate-fill-free rounds of a 64 MiB tensor after two warm-up rounds, in a fresh process
_FAULTS = """
import resource, sys, torch
from gpt1_hf.process_settings import keep_freed_memory
assert keep_freed_memory() if sys.argv[1] == "keep" else True
def round_():
    torch.ones(16 * 2**20).sum()
round_()
round_()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    round_()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not glibc_malloc(), reason="glibc's malloc only")
def test_keep_freed_memory_reuses_blocks_instead_of_faulting_them_in_again():
    pages = 5 * 64 * 2**20 // 4096
    assert _faults("default") > pages // 2  # glibc unmaps each freed 64 MiB block: every round faults it in again
    assert _faults("keep") < pages // 20  # the heap keeps it: the rounds reuse the same pages


def test_the_flags_reach_the_process():
    assert FinetuneArguments().keep_freed_memory is True
    assert parse_cli(FinetuneArguments, ["--no_keep_freed_memory"]).keep_freed_memory is False
    n = torch.get_num_threads()
    try:
        apply_process_settings(1, keep_memory=False)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(n)
