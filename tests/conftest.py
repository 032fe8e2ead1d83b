import importlib.util
import os
import sys
from pathlib import Path

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


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest (and do not fight other jobs for the cores) on one intra-op thread: a test module asks
    for it with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def load_script(name: str):
    """scripts/<name>.py as a module (registered in sys.modules: its dataclasses need it)."""
    path = Path(__file__).resolve().parent.parent / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"script_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def assert_help_lists_every_field(script: str, dataclass_type, capsys) -> None:
    """``scripts/<script>.py --help`` lists every field of ``dataclass_type`` with its help text (and ``--no_<name>``
    for a switch that defaults to on)."""
    import dataclasses

    cli = load_script(script)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    flat = "".join(out.split())  # argparse wraps the help text
    for f in dataclasses.fields(dataclass_type):
        assert f"--{f.name}" in out, f.name
        assert f.metadata.get("help"), f"{f.name} has no help text"
        assert "".join(f.metadata["help"].split()) in flat, f.name
        if f.default is True:
            assert f"--no_{f.name}" in out, f.name
