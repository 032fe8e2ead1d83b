"""scripts/gpu_check.py on its CPU paths (no GPU here): correctness in-process on a tiny config, the report block and
its place in docs/benchmarks.md, and the refusal on a machine without CUDA."""

import json
from pathlib import Path

import pytest
import torch
from conftest import load_script

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def gpu_check():
    return load_script("gpu_check")


def test_correctness_on_the_cpu_path(gpu_check):
    result = gpu_check.correctness(gpu_check.CheckArguments(device="cpu", config="tiny", seq=16))
    assert result["device_vs_cpu_fp32"] == 0.0
    assert result["ours_vs_openai_gpt"] < 1e-5
    assert 0 < result["bf16_vs_fp32_rel"] < 0.05


def test_report_block_replaces_the_docs_section(gpu_check, tmp_path):
    results = {"args": {"finetune_steps": 60, "new_tokens": 128}, "date": "2026-12-05", "peak_tflops": 700.0,
               "machine": {"device": "cuda", "torch": "2.13", "device_name": "NVIDIA H100"},
               "correctness": {"device_vs_cpu_fp32": 1e-5, "ours_vs_openai_gpt": 2e-6, "bf16_vs_fp32_rel": 3e-3},
               "training": [{"task": "lm", "impl": "ours", "attn": "sdpa", "tokens_per_s": 100000.0, "mfu": 0.41,
                             "peak_mib": 9000.0, "error": None},
                            {"task": "lm", "impl": "baseline", "attn": "x", "error": "boom"}],
               "generation": {"ours": {"tokens_per_s": 900.0}, "baseline": {"tokens_per_s": 300.0},
                              "same_tokens": True},
               "finetune": {"returncode": 0, "accuracy": 0.75, "tokens_per_s": 5e4, "precision": "bf16"}}
    block = gpu_check.render(results)
    assert "NVIDIA H100" in block and "| lm gpt1_hf | sdpa | 100,000 | 41.0% | 9,000 |" in block
    assert "| lm openai-gpt | x | error | | |" in block and "(3.0x)" in block and "accuracy 0.7500" in block
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nbefore\n<!-- gpu_check -->\nold rows\n<!-- /gpu_check -->\nafter\n")
    gpu_check.write_docs(block, doc)
    text = doc.read_text()
    assert "old rows" not in text and block in text and text.endswith("after\n") and "before" in text
    json.dumps(results)  # the JSON the script writes


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine runs the real check")
def test_no_cuda_is_one_clear_line(gpu_check, capsys):
    assert gpu_check.main(["--out", "/dev/null"]) == 2
    assert "no CUDA device here; run with --device cpu" in capsys.readouterr().err
