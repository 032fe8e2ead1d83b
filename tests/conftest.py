import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def tiny_config_kwargs(**overrides):
    """A GPT-1 small enough for unit tests: vocab 100 BPE ids + the four special tokens (ids 100..103)."""
    kwargs = dict(vocab_size=104, n_positions=32, n_embd=32, n_layer=2, n_head=4, n_inner=64)
    kwargs.update(overrides)
    return kwargs


@pytest.fixture
def tiny_config():
    from gpt1_hf import GPT1Config

    return GPT1Config(**tiny_config_kwargs())


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
