"""The Hub export (gpt1_hf.hub): the folder push_to_hub uploads, its remote-code loading without gpt1_hf, its model
card -- everything up to the network call, which is mocked."""

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml

from gpt1_hf import GPT1Config, GPT1ForSequenceClassification, GPT1LMHeadModel
from gpt1_hf.finetuning import finetune
from gpt1_hf.hub import build_hub_folder, load_model_card_template, push_to_hub, render_model_card
from gpt1_hf.modeling_gpt1 import GPT1_AUTO_MAP

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "tasks"
REPO = "someone/gpt1-tiny-sst2"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    """A tiny model fine-tuned on the SST-2 fixture (output folder of finetune) and its results."""
    from gpt1_hf.tokenization_gpt1 import GPT1Tokenizer

    texts = [p.read_text(encoding="utf-8-sig") for p in sorted((FIXTURES / "sst2").iterdir())]
    tok = GPT1Tokenizer(vocab={"<unk>": 0, "a</w>": 1}, merges=[]).train_new_from_iterator([texts], 300)
    root = tmp_path_factory.mktemp("hub")
    torch.manual_seed(0)
    lm = GPT1LMHeadModel(GPT1Config(vocab_size=len(tok), n_positions=48, n_embd=32, n_layer=2, n_head=4, n_inner=64))
    lm.save_pretrained(root / "lm")
    tok.save_pretrained(root / "lm")
    results = finetune(task_name="sst2", model_name_or_path=str(root / "lm"), data_dir=str(FIXTURES / "sst2"),
                       output_dir=str(root / "ft"), num_train_epochs=1, global_batch_size=4, max_length=48,
                       disable_tqdm=True, predict_splits=[])
    return root, results


def front_matter(text):
    assert text.startswith("---\n")
    yaml_text, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(yaml_text), body


def test_folder_content_and_auto_maps(finetuned, tmp_path):
    root, results = finetuned
    folder = build_hub_folder(root / "ft", tmp_path / "upload", REPO)
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "configuration_gpt1.py", "modeling_gpt1.py", "tokenization_gpt1.py",
            "tokenizer.json", "tokenizer_config.json", "README.md", "results.json"} <= names
    assert not names & {"checkpoints", "best", "optimizer.pt", ".run.lock"}
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["auto_map"] == {**cfg["auto_map"], **GPT1_AUTO_MAP} and len(GPT1_AUTO_MAP) == 5
    assert cfg["architectures"] == ["GPT1ForSequenceClassification"] and cfg["model_type"] == "gpt1"
    tok_cfg = json.loads((folder / "tokenizer_config.json").read_text())
    assert "tokenization_gpt1.GPT1Tokenizer" in tok_cfg["auto_map"]["AutoTokenizer"]
    # the Hub-portable code files are the package's
    pkg = Path(__import__("gpt1_hf").__file__).parent
    for name in ("configuration_gpt1.py", "modeling_gpt1.py", "tokenization_gpt1.py"):
        assert (folder / name).read_text() == (pkg / name).read_text()


def test_model_card_yaml_and_model_index(finetuned, tmp_path):
    from huggingface_hub import ModelCard

    root, results = finetuned
    folder = build_hub_folder(root / "ft", tmp_path / "upload", REPO, results=results)
    text = (folder / "README.md").read_text()
    assert "{{" not in text and "}}" not in text
    meta, body = front_matter(text)
    assert meta["license"] == "mit" and meta["library_name"] == "transformers"
    assert meta["pipeline_tag"] == "text-classification" and "gpt1" in meta["tags"]
    index = meta["model-index"][0]
    assert index["name"] == "gpt1-tiny-sst2"
    entry = index["results"][0]
    assert entry["task"]["type"] == "text-classification"
    assert entry["dataset"]["type"] == "nyu-mll/glue" and entry["dataset"]["config"] == "sst2"
    assert entry["dataset"]["split"] == "validation"
    assert entry["metrics"][0]["type"] == "accuracy"
    assert entry["metrics"][0]["value"] == pytest.approx(results["metrics"]["accuracy"])
    assert f'from_pretrained("{REPO}", trust_remote_code=True)' in body
    assert "AutoModelForSequenceClassification" in body and "| learning rate | 6.25e-05 |" in body
    card = ModelCard.load(folder / "README.md")
    assert card.data.license == "mit" and card.data.eval_results[0].metric_type == "accuracy"
    assert card.data.eval_results[0].dataset_type == "nyu-mll/glue"
    # the repository template is the one used (its citation block is rendered)
    assert "radford2018improving" in load_model_card_template() and "radford2018improving" in text


def test_render_model_card_replaces_placeholders():
    out = render_model_card("a {{ model_name }} b {{repo_id}} c {{ missing }}", model_name="M", repo_id="r/x")
    assert out == "a M b r/x c {{ missing }}"


def test_pretrained_lm_folder_card(finetuned, tmp_path):
    root, _ = finetuned
    results = {"final_heldout": {"loss": 3.2, "perplexity": 24.5}, "corpus": {"tokens": 1000, "n_ctx": 48},
               "config": {"learning_rate": 2.5e-4, "lr_scheduler_type": "cosine"}}
    folder = build_hub_folder(root / "lm", tmp_path / "lm_upload", "someone/gpt1-tiny-lm", results=results)
    meta, body = front_matter((folder / "README.md").read_text())
    assert meta["pipeline_tag"] == "text-generation" and "model-index" not in meta
    assert "AutoModelForCausalLM" in body and "perplexity 24.50" in body


def test_remote_code_loading_without_gpt1_hf(finetuned, tmp_path):
    """The uploaded folders load with trust_remote_code=True in a process where `import gpt1_hf` is impossible, and
    give the same logits as the package."""
    root, _ = finetuned
    clf = build_hub_folder(root / "ft", tmp_path / "clf", REPO)
    lm = build_hub_folder(root / "lm", tmp_path / "lm", "someone/gpt1-tiny-lm")
    script = textwrap.dedent(f"""
        import json, sys
        sys.modules["gpt1_hf"] = None  # `import gpt1_hf` raises ImportError
        try:
            import gpt1_hf
            raise SystemExit("gpt1_hf importable")
        except ImportError:
            pass
        import torch
        from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
        tok = AutoTokenizer.from_pretrained({str(clf)!r}, trust_remote_code=True)
        model = AutoModelForSequenceClassification.from_pretrained({str(clf)!r}, trust_remote_code=True).eval()
        enc = tok(["a charming and affecting film", "dull , lifeless"], padding=True, return_tensors="pt")
        with torch.no_grad():
            logits = model(**enc).logits
        lm = AutoModelForCausalLM.from_pretrained({str(lm)!r}, trust_remote_code=True).eval()
        with torch.no_grad():
            lm_logits = lm(enc["input_ids"][:1]).logits
        print(json.dumps({{"ids": enc["input_ids"].tolist(), "logits": logits.tolist(),
                          "lm": lm_logits[0, -1, :5].tolist(), "module": type(model).__module__,
                          "tok_class": type(tok).__name__}}))
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"), "OMP_NUM_THREADS": "1",
           "TRANSFORMERS_VERBOSITY": "error"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["module"].startswith("transformers_modules") and out["tok_class"] == "GPT1Tokenizer"
    from gpt1_hf.tokenization_gpt1 import GPT1Tokenizer

    tok = GPT1Tokenizer.from_pretrained(root / "ft")
    enc = tok(["a charming and affecting film", "dull , lifeless"], padding=True, return_tensors="pt")
    assert enc["input_ids"].tolist() == out["ids"]
    model = GPT1ForSequenceClassification.from_pretrained(root / "ft").eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**enc).logits, torch.tensor(out["logits"]), rtol=1e-5, atol=1e-5)
        lm_model = GPT1LMHeadModel.from_pretrained(root / "lm").eval()
        torch.testing.assert_close(lm_model(enc["input_ids"][:1]).logits[0, -1, :5], torch.tensor(out["lm"]),
                                   rtol=1e-5, atol=1e-5)


class FakeApi:
    calls: list = []

    user = {"name": "someone", "orgs": [{"name": "an-org"}], "auth": {"accessToken": {"role": "write"}}}

    def __init__(self, token=None):
        self.token = token

    def whoami(self, token=None, **kw):
        FakeApi.calls.append(("whoami",))
        return FakeApi.user

    def create_repo(self, repo_id, private=False, exist_ok=False, **kw):
        FakeApi.calls.append(("create_repo", repo_id, private, exist_ok))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, folder_path, repo_id, commit_message=None, **kw):
        FakeApi.calls.append(("upload_folder", repo_id, sorted(p.name for p in Path(folder_path).iterdir())))


def test_push_to_hub_up_to_the_network_call(finetuned, tmp_path, monkeypatch):
    import huggingface_hub

    root, results = finetuned
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setenv("HF_TOKEN", "hf_fake")  # finetune(push_to_hub=True) checks the token before training
    FakeApi.calls = []
    url = push_to_hub(root / "ft", REPO, results=results, private=True, token="hf_fake")
    assert url == f"https://huggingface.co/{REPO}"
    assert FakeApi.calls[0] == ("create_repo", REPO, True, True)
    kind, repo, files = FakeApi.calls[1]
    assert kind == "upload_folder" and repo == REPO and "README.md" in files and "modeling_gpt1.py" in files
    # and through finetune(push_to_hub=True)
    FakeApi.calls = []
    out = finetune(task_name="sst2", model_name_or_path=str(root / "lm"), data_dir=str(FIXTURES / "sst2"),
                   output_dir=str(tmp_path / "ft"), num_train_epochs=1, global_batch_size=4, max_length=48,
                   disable_tqdm=True, predict_splits=[], push_to_hub=True, hub_model_id="someone/pushed")
    assert out["hub_url"] == "https://huggingface.co/someone/pushed"
    calls = [c[0] for c in FakeApi.calls]
    assert calls[-2:] == ["create_repo", "upload_folder"] and calls.count("whoami") <= 1  # + the check before training


def test_build_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        build_hub_folder(tmp_path, tmp_path / "x", "a/b")


def test_build_adapter_folder_errors(tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="no adapter_model.safetensors"):
        build_hub_folder(tmp_path, tmp_path / "x", "a/b")


# --- LoRA adapters (finetune(lora=True) saves a PEFT adapter folder: no config.json, no full weights) ---

@pytest.fixture(scope="module")
def lora_finetuned(finetuned):
    """`finetune(lora=True, push_to_hub=True)` on the tiny base of `finetuned`, with the Hub API faked: the adapter
    output folder, its results and the (fake) API calls of the push."""
    import huggingface_hub

    pytest.importorskip("peft")
    root, _ = finetuned
    FakeApi.calls = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(huggingface_hub, "HfApi", FakeApi)
        mp.setenv("HF_TOKEN", "hf_fake")
        results = finetune(task_name="sst2", model_name_or_path=str(root / "lm"), data_dir=str(FIXTURES / "sst2"),
                           output_dir=str(root / "lora"), num_train_epochs=1, global_batch_size=4, max_length=48,
                           learning_rate=1e-3, disable_tqdm=True, predict_splits=[], lora=True, lora_r=2,
                           push_to_hub=True, hub_model_id="someone/gpt1-tiny-sst2-lora")
    return root, results, list(FakeApi.calls)


def test_push_lora_adapter_up_to_the_network_call(lora_finetuned, tmp_path, monkeypatch):
    import huggingface_hub

    root, results, calls = lora_finetuned
    # finetune(lora=True, push_to_hub=True) got to the upload (it used to fail: "no config.json")
    assert results["hub_url"] == "https://huggingface.co/someone/gpt1-tiny-sst2-lora"
    calls = [c for c in calls if c[0] != "whoami"]
    assert calls[-2] == ("create_repo", "someone/gpt1-tiny-sst2-lora", False, True)
    kind, repo, files = calls[-1]
    assert kind == "upload_folder" and set(files) - {"predictions"} == {
        "README.md", "adapter_config.json", "adapter_model.safetensors", "tokenization_gpt1.py", "tokenizer.json",
        "tokenizer_config.json", "results.json", "task_config.json"}  # task_config.json: the head's labels
    # push_to_hub on the saved adapter folder, naming the base's Hub id
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    FakeApi.calls = []
    url = push_to_hub(root / "lora", "someone/adapter", base_model="someone/gpt1-tiny", token="hf_fake")
    assert url == "https://huggingface.co/someone/adapter"
    assert [c[0] for c in FakeApi.calls] == ["create_repo", "upload_folder"]
    assert "adapter_model.safetensors" in FakeApi.calls[1][2] and "config.json" not in FakeApi.calls[1][2]


def test_lora_adapter_card(lora_finetuned, tmp_path):
    from huggingface_hub import ModelCard

    root, results, _ = lora_finetuned
    repo = "someone/gpt1-tiny-sst2-lora"
    # a local base: no base_model in the metadata, the card says so, adapter_config.json keeps the local path
    folder = build_hub_folder(root / "lora", tmp_path / "local_base", repo)
    text = (folder / "README.md").read_text()
    assert "{{" not in text and "}}" not in text
    meta, body = front_matter(text)
    assert meta["library_name"] == "peft" and "base_model" not in meta
    assert {"peft", "lora", "gpt1", "sst2"} <= set(meta["tags"]) and meta["pipeline_tag"] == "text-classification"
    entry = meta["model-index"][0]["results"][0]
    assert entry["dataset"]["type"] == "nyu-mll/glue" and entry["dataset"]["config"] == "sst2"
    assert entry["metrics"][0]["type"] == "accuracy"
    assert entry["metrics"][0]["value"] == pytest.approx(results["metrics"]["accuracy"])
    assert f"**local folder** (`{root / 'lm'}`)" in body and '<base model Hub id>' in body
    assert f'PeftModel.from_pretrained(model, "{repo}")' in body
    assert "AutoModelForSequenceClassification.from_pretrained(base, trust_remote_code=True, num_labels=2)" in body
    assert f'AutoPeftModelForSequenceClassification.from_pretrained("{repo}", trust_remote_code=True' in body
    assert body.count("```python") == 1 and "| rank r / alpha / dropout | 2 / 16 / 0.05 |" in body
    assert "radford2018improving" in body  # the repository template
    assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == str(root / "lm")
    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "peft" and card.data.eval_results[0].metric_type == "accuracy"

    # a Hub base (argument, or the run's model_name_or_path when it is a Hub id): metadata + adapter_config.json
    for kwargs, res in (({"base_model": "someone/gpt1-tiny"}, None),
                        ({}, {**results, "config": {**results["config"], "model_name_or_path": "someone/gpt1-tiny"}})):
        out = build_hub_folder(root / "lora", tmp_path / f"hub_base{len(kwargs)}", repo, results=res, **kwargs)
        meta, body = front_matter((out / "README.md").read_text())
        assert meta["base_model"] == "someone/gpt1-tiny" and meta["library_name"] == "peft"
        assert 'base = "someone/gpt1-tiny"' in body and "local folder" not in body
        assert f"load_as_gpt1(base, GPT1ForSequenceClassification, seed={results['seed']})" in body
        assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == "someone/gpt1-tiny"
        assert ModelCard.load(out / "README.md").data.base_model == "someone/gpt1-tiny"
    with pytest.raises(ValueError, match="not a Hub model id"):
        build_hub_folder(root / "lora", tmp_path / "bad", repo, base_model=str(root / "lm"))


def test_lora_adapter_folder_loads_like_the_trained_adapter(lora_finetuned, tmp_path):
    """PeftModel.from_pretrained(head.from_pretrained(base), built folder) == the trained adapter; so do
    AutoPeftModelForSequenceClassification (base from adapter_config.json) + AutoTokenizer (remote code) and the
    merged model."""
    from peft import AutoPeftModelForSequenceClassification, PeftModel
    from transformers import AutoTokenizer

    root, _, _ = lora_finetuned
    folder = build_hub_folder(root / "lora", tmp_path / "upload", "someone/gpt1-tiny-sst2-lora")
    tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    enc = tok(["a charming and affecting film", "dull , lifeless"], padding=True, return_tensors="pt")
    trained = PeftModel.from_pretrained(GPT1ForSequenceClassification.from_pretrained(root / "lm", num_labels=2),
                                        root / "lora").eval()
    loaded = PeftModel.from_pretrained(GPT1ForSequenceClassification.from_pretrained(root / "lm", num_labels=2),
                                       folder).eval()
    auto = AutoPeftModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True, num_labels=2).eval()
    with torch.no_grad():
        ref = trained(**enc).logits
        plain = GPT1ForSequenceClassification.from_pretrained(root / "lm", num_labels=2).eval()(**enc).logits
        assert not torch.allclose(ref, plain)  # the adapter (and its trained head) matter
        torch.testing.assert_close(loaded(**enc).logits, ref)
        torch.testing.assert_close(auto(**enc).logits, ref)
        torch.testing.assert_close(loaded.merge_and_unload()(**enc).logits, ref, rtol=1e-5, atol=1e-5)


def test_multiple_choice_adapter_card_and_load(finetuned, tmp_path):
    """A multiple-choice adapter (no PEFT task type): the card shows the gpt1 multiple-choice head + PeftModel and no
    AutoPeftModel...ForSequenceClassification; the built folder loads."""
    from peft import PeftModel

    from gpt1_hf import GPT1ForMultipleChoice
    from gpt1_hf.lora import apply_lora
    from gpt1_hf.tokenization_gpt1 import GPT1Tokenizer

    root, _ = finetuned
    model = apply_lora(GPT1ForMultipleChoice.from_pretrained(root / "lm"), r=2)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_()
    model.save_pretrained(tmp_path / "mc")
    GPT1Tokenizer.from_pretrained(root / "lm").save_pretrained(tmp_path / "mc")
    folder = build_hub_folder(tmp_path / "mc", tmp_path / "upload", "someone/mc-lora", base_model="someone/gpt1-tiny")
    meta, body = front_matter((folder / "README.md").read_text())
    assert meta["library_name"] == "peft" and meta["base_model"] == "someone/gpt1-tiny" and "model-index" not in meta
    assert meta["pipeline_tag"] == "multiple-choice"
    assert "AutoModelForMultipleChoice.from_pretrained(base, trust_remote_code=True)" in body
    assert 'PeftModel.from_pretrained(model, "someone/mc-lora")' in body and "AutoPeftModel" not in body
    ids = torch.randint(0, 100, (2, 3, 8))
    ids[..., -1] = model.config.clf_token_id
    loaded = PeftModel.from_pretrained(GPT1ForMultipleChoice.from_pretrained(root / "lm"), folder).eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, model.eval()(input_ids=ids).logits)


def test_adapter_card_for_a_converted_openai_gpt_base(finetuned, tmp_path):
    """A LoRA run on a transformers openai-gpt checkpoint (converted on load, special rows added) records
    ``converted``; the card's code rebuilds the base with `load_as_gpt1` (not `AutoModel...from_pretrained(base)`, which
    would load OpenAIGPT without the added rows), has no AutoPeftModel line, and run as written (Hub ids pointed at
    the local folders) gives the trained adapter's logits."""
    import re

    from peft import PeftModel
    from transformers import OpenAIGPTConfig, OpenAIGPTLMHeadModel

    from gpt1_hf.convert import load_as_gpt1

    root, _ = finetuned
    torch.manual_seed(0)
    n_vocab = GPT1Config.from_pretrained(root / "lm").vocab_size
    src = OpenAIGPTLMHeadModel(OpenAIGPTConfig(vocab_size=n_vocab, n_positions=48, n_embd=32, n_layer=2, n_head=4))
    src.save_pretrained(tmp_path / "openai")
    out = tmp_path / "lora"
    results = finetune(task_name="sst2", model_name_or_path=str(tmp_path / "openai"), tokenizer_name=str(root / "lm"),
                       data_dir=str(FIXTURES / "sst2"), output_dir=str(out), num_train_epochs=1, global_batch_size=4,
                       max_length=48, learning_rate=1e-3, disable_tqdm=True, predict_splits=[], lora=True, lora_r=2,
                       seed=3)
    assert results["model"]["converted"] is True and results["model"]["source_format"] == "openai-gpt"
    assert results["model"]["lora"]["target_modules"] == ["c_attn", "c_proj", "c_fc"]  # the defaults, resolved

    base, repo = "someone/openai-gpt-tiny", "someone/gpt1-tiny-sst2-lora"
    folder = build_hub_folder(out, tmp_path / "upload", repo, base_model=base)  # results from results.json
    meta, body = front_matter((folder / "README.md").read_text())
    assert meta["base_model"] == base and meta["library_name"] == "peft"
    code = re.search(r"```python\n(.*?)\n```", body, re.DOTALL).group(1)
    assert "load_as_gpt1(base, GPT1ForSequenceClassification, seed=3, num_labels=2)" in code
    assert f'PeftModel.from_pretrained(model, "{repo}")' in code
    assert "AutoPeftModel" not in code and "from_pretrained(base" not in code and body.count("```python") == 1
    assert "converted it on load" in body

    namespace = {}
    exec(code.replace(f'"{base}"', repr(str(tmp_path / "openai"))).replace(f'"{repo}"', repr(str(folder))), namespace)
    trained = PeftModel.from_pretrained(
        load_as_gpt1(tmp_path / "openai", GPT1ForSequenceClassification, seed=3, num_labels=2), out).eval()
    enc = namespace["tokenizer"](["a charming and affecting film", "dull , lifeless"], padding=True,
                                 return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(namespace["model"].eval()(**enc).logits, trained(**enc).logits)


def test_card_architecture_and_data_come_from_the_run(finetuned, tmp_path):
    """The card's architecture sentence is the checkpoint's (2 layers here, not a hard-coded 12), and it says which
    data the model was trained and scored on (results["data"])."""
    root, results = finetuned
    assert results["data"]["validation"]["source"] == "local"
    folder = build_hub_folder(root / "ft", tmp_path / "upload", REPO, results=results)
    meta, body = front_matter((folder / "README.md").read_text())
    assert "a 2-layer post-LN decoder-only transformer (32-dimensional states, 4 heads)" in body
    assert "12-layer post-LN" not in body
    assert "- **train**: " in body and "`train.tsv`" in body and "- **validation**: " in body and "`dev.tsv`" in body
    assert "read from local files" in body and str(FIXTURES) not in body  # file names only, no local paths
    assert meta["model-index"][0]["results"][0]["dataset"]["split"] == "validation"
    assert "{{ architecture }}" in load_model_card_template()


def _results_for(results, task, eval_split="validation", data=None):
    return {**results, "task": task, "eval_split": eval_split, "data": data or {},
            "sizes": {"train": 10, eval_split: 4}, "metrics": {"accuracy": 0.5, "f1": 0.4} if task == "qqp"
            else {"accuracy": 0.5}}


def test_card_model_index_split_is_the_hub_split(finetuned, tmp_path):
    """mnli_mm's validation is nyu-mll/glue mnli's validation_mismatched (there is no 'validation' split there)."""
    root, results = finetuned
    res = _results_for(results, "mnli_mm")
    res["data"] = {"validation": {"task": "mnli_mm", "split": "validation", "source": "hub", "hub_path": "nyu-mll/glue",
                                  "hub_config": "mnli", "hub_split": "validation_mismatched", "num_examples": 4,
                                  "num_rows_read": 4}}
    folder = build_hub_folder(root / "ft", tmp_path / "mm", REPO, results=res)
    meta, body = front_matter((folder / "README.md").read_text())
    dataset = meta["model-index"][0]["results"][0]["dataset"]
    assert (dataset["type"], dataset["config"], dataset["split"]) == ("nyu-mll/glue", "mnli", "validation_mismatched")
    assert "(`validation_mismatched` on the Hub)" in body
    # an old results.json without "data": the split is mapped all the same
    res.pop("data")
    folder = build_hub_folder(root / "ft", tmp_path / "mm_old", REPO, results=res)
    assert front_matter((folder / "README.md").read_text())[0]["model-index"][0]["results"][0]["dataset"][
        "split"] == "validation_mismatched"


@pytest.mark.parametrize("task,source_split", [("qqp", "train"), ("scitail", "test")])
def test_card_does_not_claim_a_hub_split_for_substituted_data(finetuned, tmp_path, task, source_split):
    """QQP / SciTail scored on a slice cut from the local train / test file: the card says so and its model-index
    does not name the Hub validation split."""
    from gpt1_hf.data import load_task_split

    root, results = finetuned
    data = {}
    for split in ("train", "validation"):
        _, info = load_task_split(task, split, FIXTURES, return_info=True)
        data[split] = info.__dict__
    res = _results_for(results, task, data=data)
    res["sizes"] = {split: info["num_examples"] for split, info in data.items()}
    folder = build_hub_folder(root / "ft", tmp_path / task, REPO, results=res)
    meta, body = front_matter((folder / "README.md").read_text())
    for entry in meta["model-index"][0]["results"]:
        split = entry["dataset"]["split"]
        assert split != "validation" and f"examples of local {source_split}" in split and "held-out" in split
        assert "local split, not the official one" in entry["dataset"]["name"]
    n_val, n_src = data["validation"]["num_examples"], data["validation"]["source_examples"]
    assert (f"cut from local data ({n_val} examples: the held-out {n_val} of the {n_src} examples of the local "
            f"`{source_split}` split") in body
    assert "not on the official `validation` split" in body and "*substituted*" in body
    if task == "qqp":
        assert "*partial* file" in body  # QQP's local train file is itself a sample


# --- the allow-list: only weights, configs, code, tokenizer, card, results and predictions are uploaded ---

def test_hub_folder_is_built_from_an_allow_list(finetuned, tmp_path):
    import shutil

    root, _ = finetuned
    run = tmp_path / "run"
    shutil.copytree(root / "ft", run)
    (run / "notes.txt").write_text("private notes")
    (run / "train.log").write_text("log")
    (run / ".run.lock").write_text('{"pid": 1}')
    (run / "helper.py").write_text("import os  # a user's script: no auto_map names it")
    (run / "trainer_state.json").write_text("{}")
    (run / "optimizer.pt").write_bytes(b"x")
    (run / "generation_config.json").write_text("{}")
    for folder in ("runs/sst2", "checkpoints/step-00000005", "best", ".tmp-best-0badf00d"):
        (run / folder).mkdir(parents=True, exist_ok=True)
        (run / folder / "file").write_text("x")
    shutil.rmtree(run / "predictions", ignore_errors=True)
    (run / "predictions" / "test").mkdir(parents=True)
    (run / "predictions" / "test" / "SST-2.tsv").write_text("index\tprediction\n0\t1\n")
    folder = build_hub_folder(run, tmp_path / "upload", REPO)
    uploaded = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert uploaded == sorted([
        "README.md", "config.json", "generation_config.json", "model.safetensors", "results.json",
        "tokenizer.json", "tokenizer_config.json", "configuration_gpt1.py", "modeling_gpt1.py", "kernels_gpt1.py",
        "tokenization_gpt1.py", "predictions/test/SST-2.tsv"])


def test_code_files_follow_the_relative_imports(finetuned, tmp_path):
    """A folder without its code files gets the package's, with what they import relatively (kernels_gpt1.py from
    modeling_gpt1.py) -- the list is derived, not fixed."""
    import shutil

    from transformers.dynamic_module_utils import get_relative_imports

    root, _ = finetuned
    run = tmp_path / "run"
    shutil.copytree(root / "ft", run)
    for path in run.glob("*.py"):
        path.unlink()
    folder = build_hub_folder(run, tmp_path / "upload", REPO)
    pkg = Path(__import__("gpt1_hf").__file__).parent
    needed = {"configuration_gpt1.py", "modeling_gpt1.py", "tokenization_gpt1.py"}
    needed |= {f"{m}.py" for m in get_relative_imports(pkg / "modeling_gpt1.py")}
    assert {p.name for p in folder.glob("*.py")} == needed
    assert all((folder / n).read_bytes() == (pkg / n).read_bytes() for n in needed)


# --- check_hub_access: before training, fails fast with one line ---

def _fake_api(monkeypatch, **user):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(FakeApi, "user", {**FakeApi.user, **user})
    FakeApi.calls = []


def test_check_hub_access_creates_the_repo(monkeypatch):
    from gpt1_hf.hub import check_hub_access

    _fake_api(monkeypatch)
    assert check_hub_access("an-org/model", token="hf_fake", private=True) == "https://huggingface.co/an-org/model"
    assert FakeApi.calls == [("whoami",), ("create_repo", "an-org/model", True, True)]


def test_check_hub_access_refusals(monkeypatch):
    import huggingface_hub

    from gpt1_hf.hub import HubAccessError, check_hub_access

    _fake_api(monkeypatch)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)  # no argument, no HF_TOKEN, no cached login
    with pytest.raises(HubAccessError, match="needs a Hugging Face token that can write someone/m.*hf auth login"):
        check_hub_access("someone/m")
    with pytest.raises(HubAccessError, match="cannot write to the namespace of other/m.*someone, an-org"):
        check_hub_access("other/m", token="hf_fake")
    _fake_api(monkeypatch, auth={"accessToken": {"role": "read"}})
    with pytest.raises(HubAccessError, match="read-only"):
        check_hub_access("someone/m", token="hf_fake")
    with pytest.raises(HubAccessError, match="not a Hub repository id"):
        check_hub_access("a/b/c", token="hf_fake")
    assert not [c for c in FakeApi.calls if c[0] == "create_repo"]


def test_check_hub_access_http_errors(monkeypatch):
    from types import SimpleNamespace

    from huggingface_hub.errors import HfHubHTTPError

    from gpt1_hf.hub import HubAccessError, check_hub_access

    for status, expected in ((401, "rejected the token"), (403, "may not create or write someone/m")):
        def whoami(self, status=status, **kw):
            err = HfHubHTTPError.__new__(HfHubHTTPError)
            err.response = SimpleNamespace(status_code=status)
            raise err

        _fake_api(monkeypatch)
        monkeypatch.setattr(FakeApi, "whoami", whoami)
        with pytest.raises(HubAccessError, match=expected):
            check_hub_access("someone/m", token="hf_fake")


def test_check_hub_access_cannot_hang(monkeypatch):
    import time

    from gpt1_hf.hub import HubAccessError, check_hub_access

    _fake_api(monkeypatch)
    monkeypatch.setattr(FakeApi, "whoami", lambda self, **kw: time.sleep(60))  # a connection that never answers
    start = time.monotonic()
    with pytest.raises(HubAccessError, match=r"cannot be reached \(no answer within 1 s\), so someone/m"):
        check_hub_access("someone/m", token="hf_fake", timeout=1)
    assert time.monotonic() - start < 5


@pytest.mark.parametrize("offline", ["1", None])
def test_check_hub_access_offline_for_real(tmp_path, offline):
    """No mock: HF_HUB_OFFLINE=1, or (unset) the real network of this machine -- no Hub here (else the token is
    rejected). One line, within seconds, naming the repo and how to push later."""
    script = textwrap.dedent("""
        import time
        from gpt1_hf.hub import HubAccessError, check_hub_access
        start = time.monotonic()
        try:
            check_hub_access("someone/gpt1-run", model_dir="outputs/run")
        except HubAccessError as e:
            print(f"{time.monotonic() - start:.2f}")
            print(e)
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_TOKEN", "HF_ENDPOINT")}
    env.update({"HF_TOKEN": "hf_not_a_real_token", "HF_HOME": str(tmp_path / "hf")})
    if offline:
        env["HF_HUB_OFFLINE"] = offline
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0 and time.monotonic() - start < 60, proc.stderr[-2000:]
    seconds, message = proc.stdout.strip().split("\n")  # the message is ONE line
    assert float(seconds) < 20
    if "rejected the token" in message:  # this machine can reach the Hub after all
        return
    assert "the Hugging Face Hub cannot be reached" in message and "someone/gpt1-run" in message
    assert "HF_HUB_OFFLINE is set" in message if offline else True
    assert """push_to_hub('outputs/run', 'someone/gpt1-run')""" in message and "drop --push_to_hub" in message
