"""Hugging Face Hub export: the folder that ``--push_to_hub`` uploads, and the upload itself.

`build_hub_folder(model_dir, folder, repo_id, results)` assembles, from a saved gpt1 model folder (the output of
``scripts/finetune.py`` or ``scripts/pretrain.py``):

* the weights (safetensors) and ``config.json`` with the full ``auto_map`` (every gpt1 Auto class -> remote code);
* the Hub-portable code files ``configuration_gpt1.py``, ``modeling_gpt1.py`` (copied by the model's
  `save_pretrained`) and ``tokenization_gpt1.py`` (copied by the tokenizer's), taken from the package when missing;
* the tokenizer files (``tokenizer_config.json`` with an ``auto_map`` for AutoTokenizer);
* ``README.md``: the model card rendered from the repository template ``model_card.md`` (placeholders
  ``{{ yaml_metadata }}``, ``{{ model_name }}``, ``{{ architecture }}`` (depth etc. from the checkpoint's config),
  ``{{ description }}``, ``{{ auto_class }}``, ``{{ repo_id }}``, ``{{ training }}``, ``{{ results }}``) with YAML
  metadata: license, language, tags, ``library_name: transformers``, ``pipeline_tag``, datasets and a
  ``model-index`` (task, dataset, metrics) built with `huggingface_hub`'s ``ModelCardData``/``EvalResult``. The
  model-index split is the task's Hub split name (``mnli_mm``'s validation is ``validation_mismatched``); data read
  from local files is described as such (``results["data"]``): a partial file, a split carved out of another local
  split (QQP, SciTail, Story Cloze) -- then the model-index names that local data, not a Hub split it was not
  scored on -- and rows dropped without a gold label.

The folder is built from an ALLOW-LIST: weights (``*.safetensors`` and their index), ``config.json``,
``generation_config.json``, the code files the auto_maps load with their relative imports (as `save_pretrained`
copies them: ``modeling_gpt1.py`` brings ``configuration_gpt1.py`` and ``kernels_gpt1.py``), the tokenizer files, the
adapter files, the rendered ``README.md``, ``results.json`` and ``predictions/``. Logs, notes, the run lock,
``checkpoints/``, ``best/``, ``runs/`` and any other file of the output folder stay local.

The folder loads with ``trust_remote_code=True`` where `gpt1_hf` is not installed. `push_to_hub` builds it and calls
``HfApi().create_repo`` + ``upload_folder`` (the only network step). `check_hub_access`, called before training when
``--push_to_hub`` is given, checks the token (and that it may write the repository's namespace), reaches the Hub and
creates the repository, or raises `HubAccessError` with one line within seconds (offline included).

A LoRA adapter folder (``finetune(lora=True)``: ``adapter_config.json`` + ``adapter_model.safetensors``, no
``config.json``) is exported the same way, minus the base model, which is *not* uploaded:

* the adapter files, the tokenizer files and ``tokenization_gpt1.py`` (so ``AutoTokenizer`` and PEFT's
  ``AutoPeftModel...``, which loads the adapter repo's tokenizer, work with ``trust_remote_code=True``);
* ``adapter_config.json`` with ``base_model_name_or_path`` set to the base model's Hub id (``base_model=`` argument,
  else the run's ``model_name_or_path`` when that is a Hub id); a base that is a local folder is kept as is and the
  card says that the base has to be uploaded and named by the user;
* ``README.md`` from the same template, with ``library_name: peft``, ``base_model``, tags ``peft``/``lora`` and the
  same ``model-index``; its "How to use" code block shows ``PeftModel.from_pretrained`` on the gpt1 head (and
  ``AutoPeftModelForSequenceClassification`` for a sequence-classification adapter). When fine-tuning converted the
  base on load (a transformers ``openai-gpt`` checkpoint: ``results["model"]["converted"]``), the code rebuilds it
  with ``gpt1_hf.convert.load_as_gpt1`` (which adds the special-token rows) instead, and has no ``AutoPeftModel`` line.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "CODE_FILES",
    "load_model_card_template",
    "build_card_data",
    "render_model_card",
    "build_hub_folder",
    "push_to_hub",
    "write_model_card",
    "HubAccessError",
    "check_hub_access",
]

CODE_FILES = ("configuration_gpt1.py", "modeling_gpt1.py", "tokenization_gpt1.py")
#: the ALLOW-LIST of an upload: weights, configs, tokenizer files, the run's results and predictions/; plus the code
#: files the auto_maps load (`_code_files`) and the rendered README.md. Anything else of an output folder (logs, notes,
#: the run lock, checkpoints/, best/, runs/ ...) is never uploaded.
_WEIGHT_GLOBS = ("*.safetensors", "*.safetensors.index.json")
_UPLOADED_FILES = ("config.json", "generation_config.json", "adapter_config.json", "tokenizer.json",
                   "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "chat_template.jinja",
                   "chat_template.json", "results.json", "task_config.json")
_UPLOADED_FOLDERS = ("predictions",)
_AUTO_CLASS = {
    "GPT1ForSequenceClassification": "AutoModelForSequenceClassification",
    "GPT1ForMultipleChoice": "AutoModelForMultipleChoice",
    "GPT1LMHeadModel": "AutoModelForCausalLM",
    "GPT1Model": "AutoModel",
}
_PIPELINE = {
    "AutoModelForSequenceClassification": "text-classification",
    "AutoModelForMultipleChoice": "multiple-choice",
    "AutoModelForCausalLM": "text-generation",
    "AutoModel": "feature-extraction",
}
_DEFAULT_TEMPLATE = """---
{{ yaml_metadata }}
---

# {{ model_name }}

{{ description }}

## How to use

```python
from transformers import AutoTokenizer, {{ auto_class }}

tokenizer = AutoTokenizer.from_pretrained("{{ repo_id }}", trust_remote_code=True)
model = {{ auto_class }}.from_pretrained("{{ repo_id }}", trust_remote_code=True)
```

## Training

{{ training }}

## Results

{{ results }}
"""


def load_model_card_template() -> str:
    """The model card template: ``gpt1_hf/model_card.md`` (package data), else ``model_card.md`` at the repository
    root, else a minimal built-in template."""
    try:
        res = resources.files("gpt1_hf").joinpath("model_card.md")
        if res.is_file():
            return res.read_text(encoding="utf-8")
    except (FileNotFoundError, ModuleNotFoundError):
        pass
    root = Path(__file__).resolve().parent.parent / "model_card.md"
    if root.is_file():
        return root.read_text(encoding="utf-8")
    return _DEFAULT_TEMPLATE


def _metric_display(name: str) -> str:
    return {"accuracy": "Accuracy", "f1": "F1", "matthews_correlation": "Matthews correlation",
            "pearson": "Pearson correlation", "spearmanr": "Spearman correlation", "loss": "Loss",
            "perplexity": "Perplexity"}.get(name, name.replace("_", " ").capitalize())


def _split_info(results: dict, split: str) -> dict | None:
    """The load info of ``split`` recorded by `gpt1_hf.finetuning.finetune` (``results["data"]``), if any."""
    return ((results or {}).get("data") or {}).get(split)


def _is_random_subset(info: dict | None) -> bool:
    """The split's examples are a random ``max_examples`` subset of the rows read."""
    return bool(info) and info.get("max_examples") is not None and (
        (info.get("num_examples") or 0) < (info.get("num_rows_read") or 0))


def _model_index_split(spec, split: str, info: dict | None) -> tuple[str, str | None]:
    """(model-index ``dataset.split``, note for the dataset name) of the evaluated split: the task's Hub split name
    (``mnli_mm`` "validation" -> "validation_mismatched") when the examples are that split's, else a description of
    the local data they were cut from (a split substitution: QQP's validation held out from the local train file,
    SciTail's from test, Story Cloze's 374 stories) -- never a Hub split the model was not scored on."""
    hub_name = spec.hub_split(split)
    if not info:
        return hub_name, None
    if info.get("substituted"):
        source = spec.hub_split(info.get("source_split") or "?")
        part = info.get("substitution_part") or "part"
        desc = f"{part} {info.get('substitution_examples')} of {info.get('source_examples')} examples of local {source}"
        if info.get("partial"):
            desc += " (partial file)"
        return desc, "local split, not the official one"
    if info.get("source") == "local" and info.get("partial"):
        return f"{hub_name} (local partial file)", "local partial file"
    if _is_random_subset(info):
        return f"{hub_name} (random {info.get('num_examples')} of {info.get('num_rows_read')})", "random subset"
    return hub_name, None


def _describe_split_data(spec, split: str, info: dict) -> str:
    """One sentence on where a split's examples came from and what was done to them (for the card)."""
    n = info.get("num_examples")
    if info.get("source") == "hub":
        where = f"the Hub dataset `{info.get('hub_path')}` (config `{info.get('hub_config')}`, split " \
                f"`{info.get('hub_split')}`)"
    else:
        files = ", ".join(f"`{Path(f).name}`" for f in (info.get("files") or [])[:3])
        if len(info.get("files") or []) > 3:
            files += f" and {len(info['files']) - 3} more files"
        where = f"local files ({files})" if files else "local files"
    text = f"**{split}**: {n} examples from {where}"
    notes = []
    if info.get("partial"):
        notes.append("a *partial* file: a random sample of the official split, not all of it")
    if info.get("substituted"):
        source = info.get("source_split")
        taken = (f"the {info.get('substitution_part')} {info.get('substitution_examples')} of the "
                 f"{info.get('source_examples')} examples of the local `{source}` split (seed "
                 f"{_substitution_seed(spec, split)})")
        if source != split:
            notes.append(f"*substituted*: this split has no local file; it is {taken}, so it is not the official "
                         f"`{spec.hub_split(split)}` split")
        else:
            notes.append(f"*substituted*: {taken}, the others being held out as another split: a subset of the "
                         "official split")
    if info.get("num_dropped_no_gold"):
        notes.append(f"{info['num_dropped_no_gold']} rows without a gold label (\"-\") dropped")
    if _is_random_subset(info) and not info.get("substituted"):
        notes.append(f"a random subset (max_examples={info['max_examples']}, seed {info.get('seed')})")
    if info.get("unlabeled"):
        notes.append("unlabeled")
    return text + ("; " + "; ".join(notes) if notes else "") + "."


def _substitution_seed(spec, split: str):
    for sub in spec.substitutions:
        if split in (sub.holdout_split, sub.rest_split):
            return sub.seed
    return "?"


def _data_section(results: dict) -> str:
    """The card's account of the data of each split (``results["data"]``), empty when not recorded."""
    data = (results or {}).get("data") or {}
    if not data or not results.get("task"):
        return ""
    from .tasks import task_of_results

    spec = task_of_results(results)
    return "\n\nData:\n\n" + "\n".join(f"- {_describe_split_data(spec, split, info)}" for split, info in data.items())


def _architecture(cfg: dict | None) -> str:
    """"a 12-layer post-LN decoder-only transformer" with the checkpoint's own depth (from its config)."""
    cfg = cfg or {}
    n_layer = cfg.get("n_layer")
    head = f"a {n_layer}-layer" if n_layer else "a"
    dims = []
    if cfg.get("n_embd"):
        dims.append(f"{cfg['n_embd']}-dimensional states")
    if cfg.get("n_head"):
        dims.append(f"{cfg['n_head']} heads")
    return f"{head} post-LN decoder-only transformer" + (f" ({', '.join(dims)})" if dims else "")


def build_card_data(auto_class: str, results: dict | None, model_name: str, base_model: str | None = None):
    """`huggingface_hub.ModelCardData` with license, tags, pipeline tag and -- for a fine-tuning run -- a model-index
    entry per metric of the task (dataset = the task's Hub dataset, split = the evaluated split)."""
    from huggingface_hub import EvalResult, ModelCardData

    tags = ["gpt1", "gpt-1", "openai-gpt", "custom_code"]
    eval_results = []
    datasets = None
    results = results or {}
    task_name = results.get("task")
    if task_name and results.get("metrics"):
        from .tasks import task_of_results

        spec = task_of_results(results)
        tags.append(spec.name)
        hub_path = spec.hub.path if spec.hub else spec.name
        hub_config = spec.hub.config if spec.hub else None
        # your own files are no Hub dataset: the card names none (the model-index still names the task)
        datasets = [hub_path] if spec.hub or not results.get("task_spec") else None
        task_type = "multiple-choice" if spec.kind == "multiple_choice" else "text-classification"
        if spec.is_regression:
            task_type = "text-classification"
        eval_split = results.get("eval_split", "validation")
        dataset_split, local_note = _model_index_split(spec, eval_split, _split_info(results, eval_split))
        dataset_name = spec.description.split(":")[0].split(" (")[0] or spec.name
        if local_note:
            dataset_name += f" ({local_note})"
        for metric, value in results["metrics"].items():
            if value is None:
                continue
            eval_results.append(EvalResult(
                task_type=task_type,
                task_name=task_type.replace("-", " ").title(),
                dataset_type=hub_path,
                dataset_name=dataset_name,
                dataset_config=hub_config,
                dataset_split=dataset_split,
                metric_type=metric.split("_")[0] if metric.startswith("accuracy_") else metric,
                metric_name=_metric_display(metric),
                metric_value=round(float(value), 6),
                metric_config=metric.split("_", 1)[1] if metric.startswith("accuracy_") else None,
            ))
    elif results.get("final_heldout"):  # pretraining run
        tags.append("pretraining")
    return ModelCardData(
        language="en",
        license="mit",
        library_name="transformers",
        pipeline_tag=_PIPELINE.get(auto_class, "text-classification"),
        tags=tags,
        datasets=datasets,
        base_model=base_model,
        model_name=model_name,
        eval_results=eval_results or None,
    )


def _training_section(results: dict) -> str:
    if not results:
        return "No training information was recorded."
    cfg = results.get("config", {})
    if results.get("task"):
        rows = [
            ("task", results["task"]),
            ("initialisation", (results.get("model") or {}).get("init") or "pretrained"),
            ("base model", cfg.get("model_name_or_path") or "none (trained from scratch)"),
            ("learning rate", cfg.get("learning_rate")),
            ("schedule", f"{cfg.get('lr_scheduler_type')} with warmup {results.get('warmup_steps')} of "
                         f"{results.get('total_steps')} updates"),
            ("batch size (global)", (results.get("batch") or {}).get("global")),
            ("epochs", cfg.get("num_train_epochs")),
            ("aux LM weight", cfg.get("aux_lm_weight")),
            ("classifier dropout", cfg.get("clf_pdrop")),
            ("weight decay", cfg.get("weight_decay")),
            ("max length", results.get("max_length")),
            ("mixed precision", results.get("mixed_precision") or cfg.get("mixed_precision")),
            ("seed", results.get("seed")),
            ("train / eval examples", " / ".join(str((results.get("sizes") or {}).get(k, "?"))
                                                 for k in ("train", results.get("eval_split", "validation")))),
            ("training time (s)", round(results.get("train_time_s") or 0.0, 1)),
        ]
    else:
        corpus = results.get("corpus") or {}
        rows = [
            ("corpus tokens", corpus.get("tokens")),
            ("context (block_size)", corpus.get("block_size", corpus.get("n_ctx"))),
            ("learning rate", cfg.get("learning_rate")),
            ("schedule", f"{cfg.get('lr_scheduler_type')} with warmup {results.get('warmup_steps')} of "
                         f"{results.get('total_steps')} updates"),
            ("batch (sequences)", (results.get("batch") or {}).get("global")),
            ("tokens seen", results.get("tokens_seen")),
            ("training time (s)", round(results.get("train_time_s") or 0.0, 1)),
            ("seed", results.get("seed")),
        ]
    lines = ["| setting | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    return "Trained with [gpt1-hf](https://github.com/gpt1-hf/gpt1-hf)'s training loop (Accelerate).\n\n" + "\n".join(
        lines) + _data_section(results)


def _results_section(results: dict) -> str:
    if not results:
        return "No evaluation results were recorded."
    if results.get("task") and results.get("metrics"):
        lines = ["| metric | value |", "|---|---|"]
        lines += [f"| {_metric_display(k)} | {v:.4f} |" for k, v in results["metrics"].items() if v is not None]
        sizes = results.get("sizes") or {}
        split = results.get("eval_split", "validation")
        from .tasks import task_of_results

        spec = task_of_results(results)
        info = _split_info(results, split)
        n = sizes.get(split, "?")
        hub_name = spec.hub_split(split)
        named = f"`{split}`" + (f" (`{hub_name}` on the Hub)" if hub_name != split else "")
        if info and info.get("substituted"):
            note = (f"\n\nOn a {split} set of {results['task']} cut from local data ({n} examples: the "
                    f"{info.get('substitution_part')} {info.get('substitution_examples')} of the "
                    f"{info.get('source_examples')} examples of the local `{info.get('source_split')}` split, "
                    f"seed {_substitution_seed(spec, split)}), not on the official `{hub_name}` split: the scores "
                    "are not comparable to results on that split.")
        elif info and info.get("source") == "local":
            note = f"\n\nOn the {named} split of {results['task']} read from local files ({n} examples)."
            if info.get("partial"):
                note += " The file is a partial (random) sample of that split."
        else:
            note = f"\n\nOn the {named} split of {results['task']} ({n} examples)."
        if _is_random_subset(info) and not info.get("substituted"):
            note += f" A random subset of {info.get('num_examples')} of its {info.get('num_rows_read')} examples."
        if results.get("paper_score") is not None:
            note += f" The GPT-1 paper reports {results['paper_score']} on this task with the full 12-layer model."
        return "\n".join(lines) + note
    final = results.get("final_heldout") or {}
    if final:
        return f"Held-out loss {final.get('loss', float('nan')):.4f}, perplexity {final.get('perplexity', float('nan')):.2f}."
    return "No evaluation results were recorded."


def render_model_card(template: str | None = None, **values: Any) -> str:
    """Replace each ``{{ name }}`` of the template (`load_model_card_template` by default)."""
    text = template if template is not None else load_model_card_template()
    for key, value in values.items():
        for pattern in ("{{ " + key + " }}", "{{" + key + "}}"):
            text = text.replace(pattern, str(value))
    return text


def _ensure_auto_maps(folder: Path) -> None:
    from .modeling_gpt1 import GPT1_AUTO_MAP

    cfg_path = folder / "config.json"
    if cfg_path.is_file():  # an adapter folder has none
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        cfg["auto_map"] = {**(cfg.get("auto_map") or {}), **GPT1_AUTO_MAP}
        cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tok_path = folder / "tokenizer_config.json"
    if tok_path.is_file():
        tok = json.loads(tok_path.read_text(encoding="utf-8"))
        auto = tok.get("auto_map") or {}
        if "AutoTokenizer" not in auto:
            auto["AutoTokenizer"] = ["tokenization_gpt1.GPT1Tokenizer", "tokenization_gpt1.GPT1Tokenizer"]
            tok["auto_map"] = auto
            tok_path.write_text(json.dumps(tok, indent=2) + "\n", encoding="utf-8")


def build_hub_folder(
    model_dir: str | Path,
    folder: str | Path,
    repo_id: str,
    results: dict | None = None,
    description: str | None = None,
    template: str | None = None,
    base_model: str | None = None,
    copy=shutil.copy2,
) -> Path:
    """Assemble the upload folder (see module docstring) from a saved model folder or a LoRA adapter folder; returns
    ``folder``. ``base_model``: the Hub id of the base model to name in the card's metadata (and, for an adapter, in
    ``adapter_config.json``); default: the run's ``model_name_or_path`` when that is a Hub id."""
    model_dir, folder = Path(model_dir), Path(folder)
    if not (model_dir / "config.json").is_file() and (model_dir / "adapter_config.json").is_file():
        return _build_adapter_folder(model_dir, folder, repo_id, results, description, template, base_model, copy)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir} has no config.json: not a saved model folder")
    if not any(model_dir.glob("*.safetensors")):
        raise FileNotFoundError(f"{model_dir} has no safetensors weights")
    results = _copy_run_folder(model_dir, folder, results, copy=copy)
    _ensure_auto_maps(folder)

    cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    arch = (cfg.get("architectures") or ["GPT1Model"])[0]
    auto_class = _AUTO_CLASS.get(arch, "AutoModel")
    model_name = repo_id.split("/")[-1]
    if base_model is None:
        base_model = (results.get("config") or {}).get("model_name_or_path")
        if base_model and not _is_hub_id(base_model):
            base_model = None  # a local folder is not a Hub reference
    card_data = build_card_data(auto_class, results, model_name, base_model=base_model)
    if description is None:
        if results.get("task"):
            description = (f"GPT-1 fine-tuned on **{results['task']}** ({results.get('task_kind')} task) with the "
                           "paper's recipe: the task input transformation of §3.3, a linear head on the final state "
                           "of the extract token, and L3 = L2 + λ·L1.")
        else:
            description = "GPT-1 language model (unsupervised pretraining, L1 of the paper)."
        description += (
            f"\n\nThis checkpoint: {cfg.get('n_layer')} layers, {cfg.get('n_embd')}-dimensional states, "
            f"{cfg.get('n_head')} heads, {cfg.get('n_positions')} positions, a vocabulary of {cfg.get('vocab_size')} "
            "tokens (BPE + `_start_`, `_delimiter_`, `_classify_`, `<pad>`)."
        )
    card = render_model_card(
        template,
        yaml_metadata=card_data.to_yaml(),
        model_name=model_name,
        architecture=_architecture(cfg),
        description=description,
        auto_class=auto_class,
        repo_id=repo_id,
        training=_training_section(results),
        results=_results_section(results),
    )
    (folder / "README.md").write_text(card, encoding="utf-8")
    return folder


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
_USAGE_BLOCK = re.compile(r"(## How to use[^\n]*\n\s*)```python\n.*?\n```", re.DOTALL)


def _is_hub_id(name: str | None) -> bool:
    """``owner/name`` (or ``name``) that is not an existing local path."""
    name = str(name or "")
    return bool(_HUB_ID.fullmatch(name)) and not Path(name).exists() and ".." not in name


def _adapter_head(adapter_cfg: dict, results: dict) -> str:
    """The gpt1 head class the adapter was trained on: PEFT records SEQ_CLS; multiple choice has no task type."""
    if adapter_cfg.get("task_type") == "SEQ_CLS":
        return "GPT1ForSequenceClassification"
    if results.get("task"):
        from .tasks import task_of_results

        if task_of_results(results).kind != "multiple_choice":
            return "GPT1ForSequenceClassification"
    return "GPT1ForMultipleChoice"


def _adapter_num_labels(folder: Path) -> int | None:
    """Rows of the saved ``score`` layer (the head is saved in full: ``modules_to_save``)."""
    from safetensors import safe_open

    path = folder / "adapter_model.safetensors"
    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():
            if key.endswith("score.weight"):
                return int(f.get_slice(key).get_shape()[0])
    return None


def _adapter_usage(head: str, repo_id: str, base: str, num_labels: int | None, converted: bool = False,
                   seed: int | None = None) -> str:
    """The card's "How to use" code. ``converted``: the base was not a gpt1 checkpoint (a transformers ``openai-gpt``
    one, e.g. ``openai-community/openai-gpt``) and fine-tuning converted it on load, adding the four special-token
    rows: ``AutoModel...from_pretrained(base)`` would load OpenAIGPT without them, so the code rebuilds the base with
    `gpt1_hf.convert.load_as_gpt1` (same seed) and there is no ``AutoPeftModel...`` one-liner."""
    auto_head = _AUTO_CLASS[head]
    labels = f", num_labels={num_labels}" if head == "GPT1ForSequenceClassification" and num_labels else ""
    if converted:
        return "\n".join([
            "```python",
            "from peft import PeftModel",
            "from transformers import AutoTokenizer",
            "",
            f"from gpt1_hf import {head}  # pip install gpt1-hf",
            "from gpt1_hf.convert import load_as_gpt1",
            "",
            f'base = "{base}"  # a transformers openai-gpt checkpoint (not part of this repository)',
            f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}", trust_remote_code=True)',
            "# converted to gpt1 on load; its special-token rows are added from the fine-tuning seed, as in training",
            f"model = load_as_gpt1(base, {head}, seed={seed if seed is not None else 0}{labels})",
            f'model = PeftModel.from_pretrained(model, "{repo_id}")',
            "merged = model.merge_and_unload()  # optional: a plain gpt1 model with the adapters merged in",
            "```",
        ])
    lines = [
        "```python",
        f"from peft import PeftModel{', AutoPeftModelForSequenceClassification' if auto_head.endswith('Classification') else ''}",
        f"from transformers import AutoTokenizer, {auto_head}",
        "",
        f'base = "{base}"  # the base GPT-1 model (not part of this repository)',
        f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}", trust_remote_code=True)',
        f"# the gpt1 head on the base model (with gpt1-hf installed: gpt1_hf.{head}.from_pretrained(base{labels}))",
        f"model = {auto_head}.from_pretrained(base, trust_remote_code=True{labels})",
        f'model = PeftModel.from_pretrained(model, "{repo_id}")',
        "merged = model.merge_and_unload()  # optional: a plain gpt1 model with the adapters merged in",
    ]
    if auto_head.endswith("Classification"):
        lines += [
            "",
            "# or in one call (reads the base from adapter_config.json's base_model_name_or_path)",
            f'model = AutoPeftModelForSequenceClassification.from_pretrained("{repo_id}", trust_remote_code=True{labels})',
        ]
    return "\n".join(lines + ["```"])


def _uploaded(name: str, tokenizer_files: set[str]) -> bool:
    """A top-level file of a run folder that the allow-list uploads."""
    from fnmatch import fnmatch

    return not name.startswith(".") and (
        name in _UPLOADED_FILES or name in tokenizer_files or any(fnmatch(name, g) for g in _WEIGHT_GLOBS))


def _auto_map_modules(config_path: Path) -> list[str]:
    """Modules named by a config's ``auto_map`` (``"modeling_gpt1.GPT1Model"``, ``["tokenization_gpt1.X", None]``,
    ``"repo--module.Class"``)."""
    if not config_path.is_file():
        return []
    auto_map = json.loads(config_path.read_text(encoding="utf-8")).get("auto_map") or {}
    refs = [r for v in auto_map.values() for r in (v if isinstance(v, (list, tuple)) else [v]) if isinstance(r, str)]
    return [ref.split("--")[-1].rsplit(".", 1)[0] for ref in refs if "." in ref]


def _code_files(model_dir: Path, adapter: bool) -> dict[str, Path]:
    """name -> source of every code file the upload's auto_maps load, with their relative imports followed as
    transformers' `save_pretrained` does (e.g. modeling_gpt1.py -> configuration_gpt1.py, kernels_gpt1.py): the run's
    own copy when it has one, else the package's. An adapter needs only the tokenizer's code."""
    from transformers.dynamic_module_utils import get_relative_imports

    package = Path(__file__).resolve().parent
    todo = ["tokenization_gpt1"] if adapter else [Path(name).stem for name in CODE_FILES]
    todo += _auto_map_modules(model_dir / "config.json") + _auto_map_modules(model_dir / "tokenizer_config.json")
    found: dict[str, Path] = {}
    while todo:
        name = f"{todo.pop()}.py"
        if name in found:
            continue
        source = model_dir / name if (model_dir / name).is_file() else package / name
        if not source.is_file():
            raise FileNotFoundError(f"{model_dir}: its auto_map (or a relative import) needs {name}, which is neither "
                                    "in the folder nor in gpt1_hf; save the model again with save_pretrained")
        found[name] = source
        todo += get_relative_imports(source)
    return found


def _link_or_copy(source, target) -> None:
    """Weights as hard links where the file system allows (rendering a card must not copy them; they are never
    written to), everything else copied (the upload folder rewrites some files, which must not reach the run's)."""
    if str(source).endswith(".safetensors"):
        try:
            os.link(source, target)
            return
        except OSError:
            pass
    shutil.copy2(source, target)


def _copy_run_folder(model_dir: Path, folder: Path, results: dict | None, adapter: bool = False,
                     copy=shutil.copy2) -> dict:
    """Copy the allow-listed part of a saved run (model or adapter + tokenizer, results, predictions/, the code files)
    into ``folder``; return ``results`` or the run's results.json."""
    from .tokenization_gpt1 import GPT1Tokenizer

    if not (model_dir / "tokenizer_config.json").is_file():
        raise FileNotFoundError(f"{model_dir} has no tokenizer (tokenizer_config.json); save the tokenizer with it")
    if results is None and (model_dir / "results.json").is_file():
        results = json.loads((model_dir / "results.json").read_text(encoding="utf-8"))
    results = results or {}
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer_files = set(GPT1Tokenizer.vocab_files_names.values())
    for item in model_dir.iterdir():
        if item.is_file() and _uploaded(item.name, tokenizer_files):
            copy(item, folder / item.name)
        elif item.is_dir() and item.name in _UPLOADED_FOLDERS:
            shutil.copytree(item, folder / item.name, dirs_exist_ok=True, copy_function=copy)
    for name, source in _code_files(model_dir, adapter).items():
        if not (folder / name).exists():
            copy(source, folder / name)
    return results


def _adapter_description(results: dict, adapter_cfg: dict, head: str, num_labels: int | None,
                         base_model: str | None, trained_on: str | None, converted: bool) -> str:
    """The adapter card's description: what it was trained on, its LoRA settings and how its base is loaded."""
    if results.get("task"):
        description = (f"A LoRA adapter ([PEFT](https://github.com/huggingface/peft)) for GPT-1 fine-tuned on "
                       f"**{results['task']}** ({results.get('task_kind')} task) with the paper's recipe (§3.3 "
                       "input transformation, a linear head on the extract token's final state, "
                       "L3 = L2 + λ·L1).")
    else:
        description = "A LoRA adapter ([PEFT](https://github.com/huggingface/peft)) for a GPT-1 head."
    description += " Loading it needs `peft` (`pip install peft`) on top of `transformers`."
    lora = (results.get("model") or {}).get("lora") or {}
    rows = [
        ("head", f"`{head}`" + (f" ({num_labels} labels)" if head.endswith("Classification") else "")),
        ("rank r / alpha / dropout", f"{adapter_cfg.get('r')} / {adapter_cfg.get('lora_alpha')} / "
                                     f"{adapter_cfg.get('lora_dropout')}"),
        ("target modules", ", ".join(f"`{t}`" for t in (adapter_cfg.get("target_modules") or []))
         if not isinstance(adapter_cfg.get("target_modules"), str) else f"`{adapter_cfg['target_modules']}`"),
        ("trained in full", "`score` (modules_to_save)"),
        ("trainable token rows", ", ".join(str(i) for ids in (adapter_cfg.get("trainable_token_indices") or {})
                                           .values() for i in ids) or "none"),
    ]
    if lora.get("trainable_parameters"):
        rows.append(("trainable / total parameters",
                     f"{lora['trainable_parameters']:,} / {lora['total_parameters']:,}"))
    description += "\n\n" + "\n".join(["| adapter | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows])
    if base_model is not None:
        description += (f"\n\nThis repository holds only the adapter; the base model is "
                        f"[{base_model}](https://huggingface.co/{base_model})"
                        + ("." if converted else ", loaded with `trust_remote_code=True`."))
        if converted:
            description += (" It is not a gpt1-format checkpoint: fine-tuning converted it on load with "
                            f"`gpt1_hf.convert.load_as_gpt1(base, {head}, seed={results.get('seed')})`, which "
                            "adds the four special-token rows (initialised from that seed), so the code below "
                            "rebuilds the base with that call (`pip install gpt1-hf`) and then applies the "
                            "adapter with `PeftModel.from_pretrained`; `AutoPeftModel...` and "
                            "`AutoModel...from_pretrained(base)` would load it without those rows.")
        elif results.get("task"):
            description += (f" Fine-tuning loaded it with `gpt1_hf.convert.load_as_gpt1(base, {head}, "
                            f"seed={results.get('seed')})`: for a gpt1-format repository that is the "
                            "`from_pretrained` below; for a transformers `openai-gpt` checkpoint (such as "
                            "`openai-community/openai-gpt`) it is a conversion whose four special-token rows are "
                            "initialised from that seed, so load the base with that call (`pip install gpt1-hf`) "
                            "and then `PeftModel.from_pretrained(model, repo)`.")
    else:
        description += (f"\n\nThis repository holds only the adapter. The base model was a **local folder** "
                        f"(`{trained_on}`), not a Hub model: upload it (a gpt1 model folder with `push_to_hub`) "
                        "and use its id as `base` below (and as `base_model_name_or_path` in "
                        "`adapter_config.json` for `AutoPeftModel...`).")
    mcfg = (results.get("model") or {}).get("config") or {}
    if mcfg:
        description += (f"\n\nBase architecture: {mcfg.get('n_layer')} layers, {mcfg.get('n_embd')}-dimensional "
                        f"states, {mcfg.get('n_head')} heads, {mcfg.get('n_positions')} positions, a vocabulary "
                        f"of {mcfg.get('vocab_size')} tokens (BPE + `_start_`, `_delimiter_`, `_classify_`, "
                        "`<pad>`).")
    return description


def _build_adapter_folder(model_dir: Path, folder: Path, repo_id: str, results: dict | None,
                          description: str | None, template: str | None, base_model: str | None,
                          copy=shutil.copy2) -> Path:
    """`build_hub_folder` for a PEFT LoRA adapter folder (see the module docstring)."""
    if not (model_dir / "adapter_model.safetensors").is_file():
        raise FileNotFoundError(f"{model_dir} has adapter_config.json but no adapter_model.safetensors")
    results = _copy_run_folder(model_dir, folder, results, adapter=True, copy=copy)  # + tokenization_gpt1.py
    _ensure_auto_maps(folder)

    adapter_path = folder / "adapter_config.json"
    adapter_cfg = json.loads(adapter_path.read_text(encoding="utf-8"))
    trained_on = (results.get("config") or {}).get("model_name_or_path") or adapter_cfg.get("base_model_name_or_path")
    if base_model is None and _is_hub_id(trained_on):
        base_model = trained_on
    if base_model is not None:
        if not _is_hub_id(base_model):
            raise ValueError(f"base_model={base_model!r} is not a Hub model id (owner/name)")
        adapter_cfg["base_model_name_or_path"] = base_model  # what AutoPeftModel... loads
        adapter_path.write_text(json.dumps(adapter_cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    head = _adapter_head(adapter_cfg, results)
    num_labels = _adapter_num_labels(folder)
    # fine-tuning converted the base on load (transformers openai-gpt): the usage code must convert it the same way
    converted = bool((results.get("model") or {}).get("converted"))
    model_name = repo_id.split("/")[-1]
    card_data = build_card_data(_AUTO_CLASS[head], results, model_name, base_model=base_model)
    card_data.library_name = "peft"
    card_data.tags = list(card_data.tags or []) + ["peft", "lora"]
    if description is None:
        description = _adapter_description(results, adapter_cfg, head, num_labels, base_model, trained_on, converted)
    usage = _adapter_usage(head, repo_id, base_model or "<base model Hub id>", num_labels, converted=converted,
                           seed=results.get("seed"))
    text = template if template is not None else load_model_card_template()
    if not _USAGE_BLOCK.search(text):  # a template without the usual "How to use" block: put the usage in the text
        description += "\n\n### How to use the adapter\n\n" + usage
    card = render_model_card(
        text,
        yaml_metadata=card_data.to_yaml(),
        model_name=model_name,
        architecture=_architecture((results.get("model") or {}).get("config")),
        description=description,
        auto_class=_AUTO_CLASS[head],
        repo_id=repo_id,
        training=_training_section(results),
        results=_results_section(results),
    )
    card = _USAGE_BLOCK.sub(lambda m: m.group(1) + usage, card, count=1)
    (folder / "README.md").write_text(card, encoding="utf-8")
    return folder


def write_model_card(model_dir: str | Path, results: dict | None = None, repo_id: str | None = None,
                     base_model: str | None = None) -> Path:
    """``README.md`` of a saved output folder (model or LoRA adapter): the card the Hub upload would carry, written
    when the model is saved (not only at a push). The upload folder is assembled from hard links, then dropped."""
    import uuid

    from .durable import write_text_atomically

    model_dir = Path(model_dir)
    tmp = model_dir / f".tmp-card-{uuid.uuid4().hex[:8]}"
    try:
        folder = build_hub_folder(model_dir, tmp, repo_id or model_dir.resolve().name, results=results,
                                  base_model=base_model, copy=_link_or_copy)
        write_text_atomically(model_dir / "README.md", (folder / "README.md").read_text(encoding="utf-8"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return model_dir / "README.md"


def push_to_hub(
    model_dir: str | Path,
    repo_id: str,
    results: dict | None = None,
    private: bool = False,
    token: str | None = None,
    commit_message: str = "Upload GPT-1 model (gpt1-hf)",
    description: str | None = None,
    base_model: str | None = None,
) -> str:
    """Build the upload folder (`build_hub_folder`: a saved model folder or a LoRA adapter folder) in a temporary
    directory and upload it to ``repo_id``; returns the repo URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_hub_folder(model_dir, Path(tmp) / "upload", repo_id, results=results, description=description,
                                  base_model=base_model)
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message=commit_message)
    return str(url)


# ---- before training: can the push happen? ---------------------------------------------------------------------------
class HubAccessError(RuntimeError):
    """``--push_to_hub`` cannot work (no token, no write access, Hub unreachable); the message is one line for the
    user, no traceback needed."""


def _push_later(model_dir: str | Path | None, repo_id: str) -> str:
    return (f"python -c \"from gpt1_hf.hub import push_to_hub; push_to_hub('{model_dir or '<output_dir>'}', "
            f"'{repo_id}')\"")


def _run_with_deadline(fn, timeout: float):
    """``fn()`` in a daemon thread: its result or exception, or TimeoutError after ``timeout`` s (the Hub client has
    no timeout of its own: a dropped connection would otherwise hang here; the thread cannot block the exit)."""
    import threading

    out: dict = {}

    def target():
        try:
            out["value"] = fn()
        except BaseException as e:  # handed to the caller
            out["error"] = e

    thread = threading.Thread(target=target, name="check_hub_access", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {timeout:g} s")
    if "error" in out:
        raise out["error"]
    return out["value"]


def _check_write_access(user: dict, repo_id: str) -> None:
    """The token may write: not a read-only token, and the repo's namespace is the user's or one of their orgs."""
    role = ((user.get("auth") or {}).get("accessToken") or {}).get("role")
    if role == "read":
        raise HubAccessError(f"--push_to_hub: the Hugging Face token is read-only, it cannot create or push {repo_id}: "
                             "use a token with write access (HF_TOKEN, --hub_token or `hf auth login`)")
    namespaces = [user.get("name")] + [org.get("name") for org in user.get("orgs") or []]
    if "/" in repo_id and repo_id.split("/")[0] not in namespaces:
        raise HubAccessError(f"--push_to_hub: {user.get('name')} cannot write to the namespace of {repo_id} (the token "
                             f"can write to {', '.join(n for n in namespaces if n)}): pick another --hub_model_id")


def _hub_error(e: BaseException, repo_id: str, model_dir) -> HubAccessError:
    """One line for a failed Hub call: what failed, for which repo, and what to do."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    later = f"drop --push_to_hub (the model is still saved) or push it later with: {_push_later(model_dir, repo_id)}"
    status = getattr(getattr(e, "response", None), "status_code", None) if isinstance(e, HfHubHTTPError) else None
    if status == 401:
        return HubAccessError(f"--push_to_hub: the Hub rejected the token (401) for {repo_id}: log in again (`hf auth "
                              "login --force`) or pass a valid HF_TOKEN / --hub_token")
    if status == 403:
        return HubAccessError(f"--push_to_hub: the token may not create or write {repo_id} (403): use a token with "
                              "write access to that namespace, or another --hub_model_id")
    if status is not None:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return HubAccessError(f"--push_to_hub: the Hub refused to create {repo_id} ({status}: {first}); {later}")
    why = "HF_HUB_OFFLINE is set" if isinstance(e, OfflineModeIsEnabled) else (
        str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
    return HubAccessError(f"--push_to_hub: the Hugging Face Hub cannot be reached ({why}), so {repo_id} cannot be "
                          f"checked or pushed; {later}")


def check_hub_access(repo_id: str, token: str | None = None, private: bool = False, *,
                     model_dir: str | Path | None = None, timeout: float = 10.0) -> str:
    """Before training with ``--push_to_hub``: a token (``token``, else HF_TOKEN or the cached login) that may write,
    a reachable Hub, and the repository created (``exist_ok``: transformers' Trainer creates it at init too). Returns
    the repo URL; raises `HubAccessError` with one line otherwise, within ``timeout`` seconds even when the network
    drops packets. ``model_dir``: the output folder, named in the "push it later" command of the message."""
    import huggingface_hub
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise HubAccessError(f"--push_to_hub: {repo_id!r} is not a Hub repository id ({e}); pass --hub_model_id "
                             "owner/name") from None
    token = token or huggingface_hub.get_token()
    if not token:
        raise HubAccessError(f"--push_to_hub needs a Hugging Face token that can write {repo_id}: run `hf auth "
                             "login`, set HF_TOKEN or pass --hub_token (or drop --push_to_hub)")
    api = huggingface_hub.HfApi(token=token)

    def check() -> str:
        _check_write_access(api.whoami(), repo_id)
        return str(api.create_repo(repo_id, private=private, exist_ok=True))

    try:
        return _run_with_deadline(check, timeout)
    except HubAccessError:
        raise
    except Exception as e:  # network, HTTP and offline errors: one line
        raise _hub_error(e, repo_id, model_dir) from None
