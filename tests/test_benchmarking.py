"""scripts/benchmark.py's data: without the real data (what a user of the package has), the SST-2 rows run on the
package's own BPE files and SST-2 sample, and the rows that need the real data say so in one line."""

import pytest

from gpt1_hf import benchmarking


@pytest.fixture
def no_data(tmp_path, monkeypatch):
    """The module as a run without ../shared/data and without GPT1_DATA_DIR sees it."""
    monkeypatch.setattr(benchmarking, "DATA_DIR", tmp_path / "no-data")
    monkeypatch.setattr(benchmarking, "BPE_DIR", benchmarking.data_path("gpt1_bpe"))
    monkeypatch.setattr(benchmarking, "SST2_DIR", benchmarking.data_path("sst2"))


def test_bundled_files_stand_in_for_missing_data(no_data, tmp_path):
    assert benchmarking.BPE_DIR == benchmarking.BUNDLED_DIR / "gpt1_bpe"
    tok = benchmarking.gpt1_tokenizer()
    assert tok is not None and len(tok) == 40482  # GPT-1's BPE: the real tokenizer, not synthetic ids
    assert len(benchmarking.sst2_sentences("dev")) == 872
    (tmp_path / "data" / "sst2").mkdir(parents=True)  # a data folder that has the task wins over the package's copy
    benchmarking.DATA_DIR = tmp_path / "data"
    assert benchmarking.data_path("sst2") == tmp_path / "data" / "sst2"
    assert benchmarking.data_path("gpt1_bpe") == benchmarking.BUNDLED_DIR / "gpt1_bpe"


def test_finetune_epoch_case_runs_on_the_bundled_sample(no_data):
    out = benchmarking.case_finetune({"mode": "grouped", "config": "tiny", "examples": 64, "batch": 32,
                                      "device": "cpu", "precision": "fp32"})
    assert out["examples"] == 64 and out["batches"] == 2 and out["epoch_s"] > 0
    assert "the package's 5,000-example sample" in out["notes"][0]


def test_tokenizer_case_without_data_says_what_it_needs(no_data):
    out = benchmarking.case_tokenizer({"per_source": 10, "repeats": 1})
    assert "GPT1_DATA_DIR" in out["missing"] and "does not exist" in out["missing"]
