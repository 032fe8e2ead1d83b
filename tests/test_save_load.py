"""save_pretrained / from_pretrained: bitwise round trips, head transfer, and remote code without gpt1_hf."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMultipleChoice,
    AutoModelForSequenceClassification,
)

from gpt1_hf import (
    GPT1Config,
    GPT1ForMultipleChoice,
    GPT1ForSequenceClassification,
    GPT1LMHeadModel,
    GPT1Model,
    GPT1Tokenizer,
)
from tests.conftest import tiny_config_kwargs

HEADS = [
    (GPT1Model, AutoModel),
    (GPT1LMHeadModel, AutoModelForCausalLM),
    (GPT1ForSequenceClassification, AutoModelForSequenceClassification),
    (GPT1ForMultipleChoice, AutoModelForMultipleChoice),
]


@pytest.mark.parametrize("cls,auto", HEADS)
def test_round_trip_is_bitwise(cls, auto, tmp_path):
    model = cls(GPT1Config(**tiny_config_kwargs(num_labels=3)))
    model.save_pretrained(tmp_path)
    for loader in (cls, auto):
        loaded = loader.from_pretrained(tmp_path)
        assert type(loaded) is cls
        sd, ld = model.state_dict(), loaded.state_dict()
        assert sd.keys() == ld.keys()
        for k in sd:
            assert torch.equal(sd[k], ld[k]), k
    assert AutoConfig.from_pretrained(tmp_path).num_labels == 3
    saved = load_file(str(tmp_path / "model.safetensors"))
    assert not any(k.startswith("lm_head") for k in saved)  # tied: stored once


def test_lm_checkpoint_into_task_heads_keeps_transformer(tmp_path):
    lm = GPT1LMHeadModel(GPT1Config(**tiny_config_kwargs()))
    lm.save_pretrained(tmp_path / "lm")
    GPT1Model(lm.config).save_pretrained(tmp_path / "base")
    base_sd = GPT1Model.from_pretrained(tmp_path / "base").state_dict()
    for head in (GPT1ForSequenceClassification, GPT1ForMultipleChoice):
        model = head.from_pretrained(tmp_path / "lm", num_labels=2)
        for k, v in lm.transformer.state_dict().items():
            assert torch.equal(model.transformer.state_dict()[k], v), k
        assert model.lm_head.weight is model.transformer.tokens_embed.weight
        model = head.from_pretrained(tmp_path / "base")
        for k, v in base_sd.items():
            assert torch.equal(model.transformer.state_dict()[k], v), k


def test_tied_embeddings_survive_reload(tmp_path):
    model = GPT1ForMultipleChoice(GPT1Config(**tiny_config_kwargs()))
    with torch.no_grad():
        model.transformer.tokens_embed.weight[5] += 1.0
    model.save_pretrained(tmp_path)
    loaded = GPT1ForMultipleChoice.from_pretrained(tmp_path)
    assert torch.equal(loaded.lm_head.weight[5], model.transformer.tokens_embed.weight[5])


def test_auto_map_lists_every_head(tmp_path):
    GPT1ForSequenceClassification(GPT1Config(**tiny_config_kwargs())).save_pretrained(tmp_path)
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert set(auto_map) >= {"AutoConfig", "AutoModel", "AutoModelForCausalLM",
                             "AutoModelForSequenceClassification", "AutoModelForMultipleChoice"}
    assert (tmp_path / "modeling_gpt1.py").exists() and (tmp_path / "configuration_gpt1.py").exists()
    assert (tmp_path / "kernels_gpt1.py").exists()  # a relative import of modeling_gpt1.py, copied with it


REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys, json, torch
    sys.modules["gpt1_hf"] = None  # importing gpt1_hf is impossible in this process
    try:
        import gpt1_hf  # noqa
        raise SystemExit("gpt1_hf importable")
    except ImportError:
        pass
    from transformers import (AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForMultipleChoice,
                              AutoModelForSequenceClassification, AutoTokenizer)
    folder = sys.argv[1]
    result = {"config": type(AutoConfig.from_pretrained(folder, trust_remote_code=True)).__name__}
    ids = torch.tensor([[1, 2, 3, 102]])
    for auto in (AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoModelForMultipleChoice):
        # the multiple-choice head has one output, the saved classifier two: a fresh `score` is expected there
        extra = {"ignore_mismatched_sizes": True} if auto is AutoModelForMultipleChoice else {}
        model = auto.from_pretrained(folder, trust_remote_code=True, **extra).eval()
        assert "gpt1_hf" not in type(model).__module__, type(model).__module__
        x = ids[:, None] if auto is AutoModelForMultipleChoice else ids
        out = model(x)
        first = out.last_hidden_state if auto is AutoModel else out.logits
        result[auto.__name__] = [type(model).__name__, first.flatten()[:4].tolist()]
    tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    assert "gpt1_hf" not in type(tok).__module__
    result["AutoTokenizer"] = [type(tok).__name__, tok("I don't know.", "Yes.")["input_ids"]]
    print(json.dumps(result))
    """
)


def test_remote_code_loads_without_gpt1_hf(tmp_path):
    model = GPT1ForSequenceClassification(GPT1Config(**tiny_config_kwargs(num_labels=2))).eval()
    model.save_pretrained(tmp_path)
    fixtures = Path(__file__).parent / "fixtures" / "gpt1_bpe"
    tokenizer = GPT1Tokenizer(vocab_file=str(fixtures / "encoder_bpe_40000.json"),
                              merges_file=str(fixtures / "vocab_40000.bpe"))
    tokenizer.save_pretrained(tmp_path)
    proc = subprocess.run([sys.executable, "-c", REMOTE_SCRIPT, str(tmp_path)], capture_output=True, text=True,
                          cwd=tmp_path, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["config"] == "GPT1Config"
    assert result["AutoModel"][0] == "GPT1Model"
    assert result["AutoModelForCausalLM"][0] == "GPT1LMHeadModel"
    assert result["AutoModelForMultipleChoice"][0] == "GPT1ForMultipleChoice"
    name, logits = result["AutoModelForSequenceClassification"]
    assert name == "GPT1ForSequenceClassification"
    expected = model(torch.tensor([[1, 2, 3, 102]])).logits.flatten()[:4].tolist()
    assert logits == pytest.approx(expected, abs=1e-6)
    assert result["AutoTokenizer"] == ["GPT1Tokenizer", tokenizer("I don't know.", "Yes.")["input_ids"]]
    assert result["AutoTokenizer"][1][0] == 40478 and result["AutoTokenizer"][1][-1] == 40480
