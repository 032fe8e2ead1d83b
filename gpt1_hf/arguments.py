"""Every command-line option of fine-tuning and pretraining, declared once, read with `transformers.HfArgumentParser`.

Flag names are those of transformers' ``run_glue_no_trainer.py`` / ``run_clm_no_trainer.py`` wherever one exists
(``--task_name --per_device_train_batch_size --max_train_steps --num_warmup_steps --checkpointing_steps
--with_tracking --report_to`` ...); GPT-1's own options keep descriptive names (``--aux_lm_weight``,
``--transfer_layers``, ``--lora``, ``--model_config``, the budgets). A field left at ``None`` takes the recipe's
value (`FINETUNE_PAPER_DEFAULTS`, `FINETUNE_EMBEDDED_DEFAULTS`, `PRETRAIN_DEFAULTS`), resolved by ``resolved()``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "ExecutionArguments",
    "RunArguments",
    "DataArguments",
    "FinetuneArguments",
    "PretrainArguments",
    "FINETUNE_PAPER_DEFAULTS",
    "FINETUNE_EMBEDDED_DEFAULTS",
    "EMBEDDED_MODEL_CONFIG",
    "PRETRAIN_DEFAULTS",
    "parse_cli",
]


def _opt(default: Any = None, help: str = "", **extra) -> Any:
    """A dataclass field with its help text (what HfArgumentParser shows under --help)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **extra})
    return field(default=default, metadata={"help": help, **extra})


@dataclass
class ExecutionArguments:
    """Where and how a model runs: shared by training (`RunArguments`) and ``scripts/evaluate_checkpoint.py``."""

    output_dir: str | None = _opt(None, "where checkpoints/, best/, the final model, results.json and runs/ go")
    seed: int = _opt(42, "seed of initialisation, data order and dropout")
    per_device_eval_batch_size: int | None = _opt(None, "examples per process per evaluation batch "
                                                  "(default: the training one)")
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] | None = _opt(
        None, "auto: bf16 where it is fast (a GPU with bf16, a CPU with AMX / AVX512-BF16), else fp32; "
        "default: the accelerate config's (else no); the embedded default uses auto")
    bf16_implementation: Literal["auto", "autocast", "master_weights"] = _opt(
        "auto", "how bf16 trains: autocast (fp32 weights cast at every use) or master_weights (a bf16 model, fp32 "
        "master weights in the optimizer, one cast per step: gpt1_hf.precision); auto: autocast (master weights "
        "measured no faster on CPUs: docs/benchmarks.md)")
    cpu: bool = _opt(False, "run on the CPU even when a GPU is present")
    num_threads: int | None = _opt(None, "torch intra-op threads (default: torch's; on a shared CPU, the free cores)")
    keep_freed_memory: bool = _opt(True, "Linux: glibc keeps freed memory for the next step instead of returning it "
                                   "to the OS (a CPU fine-tuning update at the study's shape: 92 -> 75 ms); "
                                   "resident memory stays near its peak. gpt1_hf.process_settings")


@dataclass
class RunArguments(ExecutionArguments):
    """The training loop's options (`gpt1_hf.training.TrainingLoop`), shared by fine-tuning and pretraining."""

    overwrite_output_dir: bool | None = _opt(
        None, "replace a finished or different run in --output_dir (default: refuse; the embedded default: replace)",
        nargs="?", const=True)  # a switch: HfArgumentParser makes a bool defaulting to None take a value
    per_device_train_batch_size: int | None = _opt(None, "examples per process per micro-batch (default: derived "
                                                   "from --global_batch_size)")
    global_batch_size: int | None = _opt(None, "examples per optimizer update over all processes and accumulation "
                                         "steps (paper: 32 fine-tuning, 64 pretraining)")
    gradient_accumulation_steps: int | None = _opt(None, "micro-batches per update (default: derived)")
    learning_rate: float | None = _opt(None, "peak learning rate (paper: 6.25e-5 fine-tuning, 2.5e-4 pretraining)")
    weight_decay: float | None = _opt(None, "decoupled AdamW weight decay on matrices and embeddings (paper 0.01)")
    adam_beta1: float = _opt(0.9, "AdamW beta1")
    adam_beta2: float = _opt(0.999, "AdamW beta2")
    adam_epsilon: float = _opt(1e-8, "AdamW epsilon")
    max_grad_norm: float | None = _opt(None, "gradient clipping norm (paper 1.0; 0 = off)")
    lr_scheduler_type: str | None = _opt(None, "transformers.SchedulerType (paper: linear fine-tuning, cosine "
                                         "pretraining)")
    num_warmup_steps: int | None = _opt(None, "linear warmup updates (overrides --warmup_ratio)")
    warmup_ratio: float | None = _opt(None, "warmup as a fraction of the updates (paper fine-tuning: 0.002)")
    num_train_epochs: int | None = _opt(None, "epochs (paper: 3 fine-tuning, 100 pretraining)")
    max_train_steps: int | None = _opt(None, "budget in optimizer updates; sets the schedule length")
    max_train_tokens: int | None = _opt(None, "budget in non-padding tokens seen by all processes")
    max_time: float | None = _opt(None, "budget in seconds of this invocation (then save and stop; resume continues)")
    checkpointing_steps: str | None = _opt(None, "save a checkpoint every N updates, or 'epoch' (default: "
                                           "fine-tuning 'epoch', pretraining 1000)")
    save_total_limit: int | None = _opt(2, "step checkpoints kept (best/ is kept apart)")
    resume_from_checkpoint: str | None = _opt(None, "'latest', 'auto' (latest if any, else fresh) or a checkpoint "
                                              "folder")
    eval_steps: int | None = _opt(None, "evaluate every N updates (default: every epoch)")
    logging_steps: int = _opt(10, "updates between log entries")
    with_tracking: bool = _opt(False, "log to the trackers of --report_to (L3, L1 lm_loss, L2 clf_loss, lr, "
                               "gradient norm, tokens/s, evaluation metrics)")
    report_to: str = _opt("tensorboard", "tracker(s) for --with_tracking: tensorboard, wandb, comet_ml, mlflow, "
                          "clearml, dvclive, aim, trackio, swanlab or 'all' (comma-separated); written under "
                          "<output_dir>/runs")
    on_nonfinite: Literal["stop", "skip"] = _opt("stop", "a NaN/inf loss or gradient norm: stop the run (the last "
                                                 "checkpoint stays the resume point) or skip that update")
    group_by_length: bool = _opt(False, "batches of similar lengths (less padding; transformers' "
                                 "LengthGroupedSampler)")
    gradient_checkpointing: bool = _opt(False, "recompute activations in the backward pass (less memory)")
    torch_compile: bool = _opt(False, "torch.compile the model")
    dataloader_num_workers: int = _opt(0, "DataLoader worker processes")
    disable_tqdm: bool = _opt(False, "no progress bar")
    push_to_hub: bool = _opt(False, "upload the final model (card, results, predictions) to the Hub; access is "
                             "checked before training")
    hub_model_id: str | None = _opt(None, "Hub repository (default: the output folder's name)")
    hub_token: str | None = _opt(None, "Hub token (default: HF_TOKEN or the cached login)")
    hub_private_repo: bool = _opt(False, "create the Hub repository private")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("hub_token", None)  # never written into results.json or a card
        return d

    def __post_init__(self):
        from transformers import SchedulerType

        # a bad choice fails here, before any model or data is loaded
        known = [t.value for t in SchedulerType]
        if self.lr_scheduler_type is not None and self.lr_scheduler_type not in known:
            raise ValueError(f"--lr_scheduler_type {self.lr_scheduler_type!r} is not one of transformers' "
                             f"SchedulerType values: {', '.join(known)}")
        steps = self.checkpointing_steps
        if steps not in (None, "", "epoch") and not str(steps).isdigit():
            raise ValueError(f"--checkpointing_steps must be a number of updates or 'epoch', got {steps!r}")

    def _filled(self, defaults: dict[str, Any], **forced) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for key, value in defaults.items():
            if key == "global_batch_size" and values.get("per_device_train_batch_size") is not None \
                    and values.get("gradient_accumulation_steps") is not None:
                continue  # the layout given in full (run_glue_no_trainer's flags) defines the global batch
            if values.get(key) is None:
                values[key] = value
        values.update(forced)
        return values


# ----------------------------------------------------------------------------------------------------------------------
# Fine-tuning
# ----------------------------------------------------------------------------------------------------------------------

#: The paper's fine-tuning hyperparameters (§4.1 "Fine-tuning details").
FINETUNE_PAPER_DEFAULTS: dict[str, Any] = dict(
    learning_rate=6.25e-5, global_batch_size=32, num_train_epochs=3, lr_scheduler_type="linear", warmup_ratio=0.002,
    aux_lm_weight=0.5, clf_pdrop=0.1, weight_decay=0.01, max_grad_norm=1.0, max_length=512,
    checkpointing_steps="epoch", overwrite_output_dir=False,
)

#: The tiny GPT-1 of the embedded default (trained from scratch, GPT-1's real BPE vocabulary).
EMBEDDED_MODEL_CONFIG: dict[str, Any] = dict(n_positions=64, n_embd=128, n_layer=2, n_head=4, n_inner=512)

#: What runs with no model (``python scripts/finetune.py`` with no arguments).
FINETUNE_EMBEDDED_DEFAULTS: dict[str, Any] = dict(
    task_name="sst2", learning_rate=1e-3, global_batch_size=32, num_train_epochs=3, lr_scheduler_type="linear",
    warmup_ratio=0.05, aux_lm_weight=0.0, clf_pdrop=0.1, weight_decay=0.01, max_grad_norm=1.0, max_length=64,
    mixed_precision="auto",  # bf16 where the CPU has it natively (AMX / AVX512-BF16), else fp32 (10x faster there)
    num_threads=1,  # tiny matrices: one intra-op thread is faster, and does not spin against other jobs
    output_dir="outputs/finetune-embedded-sst2", checkpointing_steps="epoch",
    overwrite_output_dir=True,  # the README's main command runs again into its default folder (not a given one)
)


@dataclass
class DataArguments:
    """The task and its data: shared by fine-tuning (`FinetuneArguments`) and ``scripts/evaluate_checkpoint.py``."""

    task_name: str | None = _opt(None, "a task of the paper (gpt1_hf.tasks; default with no model and no data: "
                                 "sst2); with --train_file / --dataset_name, a preset of kind, columns and metric")
    data_dir: str | None = _opt(None, "local task folder (or a root holding <task>/); default: the Hub")
    dataset_name: str | None = _opt(None, "your data: a Hugging Face Hub dataset (datasets.load_dataset)")
    dataset_config_name: str | None = _opt(None, "the Hub dataset's configuration")
    train_file: str | None = _opt(None, "your data: training file (csv, tsv, json, jsonl or parquet)")
    validation_file: str | None = _opt(None, "your data: evaluation file")
    test_file: str | None = _opt(None, "your data: file to predict (labels optional)")
    task_type: Literal["classification", "similarity", "multiple_choice"] | None = _opt(
        None, "your data: classification (1 text, or a pair: the entailment transformation), similarity (both "
        "orderings) or multiple_choice (one sequence per choice); float labels mean regression")
    text_columns: list[str] | None = _opt(None, "your data: 1 or 2 text columns (multiple_choice: context "
                                          "[question]); default: sentence1/sentence2, else the non-label columns")
    choice_columns: list[str] | None = _opt(None, "your data, multiple_choice: one column per choice")
    choices_column: str | None = _opt(None, "your data, multiple_choice: one list-valued column of choices")
    label_column: str | None = _opt(None, "your data: the label column (default: label)")
    label_names: list[str] | None = _opt(None, "your data: the classes in order (default: the sorted labels of "
                                         "the training data); stored as the config's id2label")
    metric: list[str] | None = _opt(None, "your data: metrics (accuracy, f1, f1_macro, matthews_correlation, "
                                    "pearson, spearmanr); default: accuracy, or pearson and spearmanr for regression")
    max_length: int | None = _opt(None, "tokens per sequence (paper: 512; capped at the model's n_positions)")
    max_eval_samples: int | None = _opt(None, "random subset of the evaluation split")
    pad_to_multiple_of: int | None = _opt(None, "round each batch's padded length up to a multiple of this (GPU "
                                          "tensor cores: 8, as run_glue_no_trainer.py does under mixed precision; "
                                          "default: none, measured slower on CPUs: docs/benchmarks.md)")
    model_name_or_path: str | None = _opt(None, "gpt1 folder / Hub id, transformers openai-gpt checkpoint or "
                                          "OpenAI's original release (default: the embedded tiny model)")
    tokenizer_name: str | None = _opt(None, "tokenizer folder / Hub id (default: the model's, else the bundled "
                                      "GPT-1 BPE)")


@dataclass
class FinetuneArguments(RunArguments, DataArguments):
    """`gpt1_hf.finetuning.finetune`'s arguments (``scripts/finetune.py``). See docs/finetuning.md for the table."""

    pad_to_max_length: bool = _opt(False, "pad every batch to --max_length (default: to the longest in the batch)")
    max_train_samples: int | None = _opt(None, "random subset of the training split")
    train_split: str = _opt("train", "training split name")
    eval_split: str = _opt("validation", "evaluation split name")
    predict_splits: list[str] | None = _opt(None, "splits to write predictions for (default: test when available; "
                                            "'none' for none)")
    from_scratch: bool = _opt(False, "random init with the model's config (ablation)")
    transfer_layers: int | None = _opt(None, "keep the embeddings and the first K pretrained blocks, re-initialise "
                                       "the rest (Figure 2, left)")
    reinit_head: bool = _opt(False, "train a new head on a fine-tuned checkpoint")
    aux_lm_weight: float | None = _opt(None, "λ of L3 = L2 + λ·L1 (paper 0.5; 0 = the no-aux-LM ablation)")
    clf_pdrop: float | None = _opt(None, "classifier dropout (paper 0.1)")
    model_config: str | None = _opt(None, "JSON overrides of the model config, e.g. '{\"n_layer\": 4}' "
                                    "(from-scratch models)")
    lora: bool = _opt(False, "train LoRA adapters (+ head and special-token rows) only (gpt1_hf.lora)")
    lora_r: int = _opt(8, "LoRA rank")
    lora_alpha: int = _opt(16, "LoRA alpha")
    lora_dropout: float = _opt(0.05, "LoRA dropout")
    lora_target_modules: list[str] | None = _opt(None, "module names (default: c_attn c_proj c_fc)")
    save_model: bool = _opt(True, "write the final model into --output_dir (--no_save_model: only results)")
    hub_base_model: str | None = _opt(None, "with --lora: the base model's Hub id for the adapter's card")

    def resolved(self) -> FinetuneArguments:
        """Unset fields filled: the paper's recipe when a model is given, the embedded default when none is."""
        from .tasks import get_task
        from .user_data import DataOptions, check_data_options, has_user_data

        embedded = self.model_name_or_path is None
        user_data = has_user_data(DataOptions.from_args(self))
        defaults = FINETUNE_EMBEDDED_DEFAULTS if embedded else FINETUNE_PAPER_DEFAULTS
        if user_data:  # your data: no paper task unless named, no bundled SST-2 sample
            check_data_options(DataOptions.from_args(self))
            defaults = {**defaults, "task_name": None, "output_dir": None, "overwrite_output_dir": False}
        if embedded and self.output_dir is not None:  # replacing is for the default folder only, never a given one
            defaults = {**defaults, "overwrite_output_dir": False}
        values = self._filled(defaults)
        if values["task_name"] is None and not user_data:
            raise ValueError("--task_name is required when a model is given (e.g. --task_name sst2; known tasks: "
                             "see gpt1_hf.tasks), or your own data with --train_file / --dataset_name")
        if embedded:
            values["from_scratch"] = True
            values["model_config"] = json.dumps({**EMBEDDED_MODEL_CONFIG, **self.model_config_overrides()})
            if values["data_dir"] is None and not user_data:
                if get_task(values["task_name"]).name != "sst2":
                    raise ValueError("without --model_name_or_path the embedded default trains a tiny model from "
                                     "scratch on the bundled SST-2 sample only; give --data_dir for other tasks "
                                     "(or a model to fine-tune).")
                from .task_models import bundled_data_path

                values["data_dir"] = str(bundled_data_path("sst2"))
        if values["output_dir"] is None:
            name = get_task(values["task_name"]).name if values["task_name"] else Path(
                values["train_file"] or values["dataset_name"] or "data").stem.replace("/", "_")
            values["output_dir"] = f"outputs/finetune-{name}"
        if values["predict_splits"] is not None and [s.lower() for s in values["predict_splits"]] == ["none"]:
            values["predict_splits"] = []
        return replace(self, **values)

    def model_config_overrides(self) -> dict[str, Any]:
        if self.model_config is None or isinstance(self.model_config, dict):
            return dict(self.model_config or {})
        try:
            value = json.loads(self.model_config)
        except json.JSONDecodeError as e:
            raise ValueError(f"--model_config is not valid JSON ({e}): {self.model_config!r}") from e
        if not isinstance(value, dict):
            raise ValueError(f"--model_config must be a JSON object, got {self.model_config!r}")
        return value


# ----------------------------------------------------------------------------------------------------------------------
# Pretraining
# ----------------------------------------------------------------------------------------------------------------------

#: The paper's pretraining recipe (§4.1 "Model specifications").
PRETRAIN_DEFAULTS: dict[str, Any] = dict(
    learning_rate=2.5e-4, lr_scheduler_type="cosine", weight_decay=0.01, max_grad_norm=1.0, global_batch_size=64,
    num_train_epochs=100, output_dir="outputs/pretrain", checkpointing_steps="1000", overwrite_output_dir=False,
)


@dataclass
class PretrainArguments(RunArguments):
    """`gpt1_hf.pretraining.pretrain`'s arguments (``scripts/pretrain.py``). See docs/pretraining.md."""

    train_files: list[str] = _opt([], "text / jsonl files or folders")
    validation_files: list[str] = _opt([], "held-out files (default: a slice of the blocks)")
    dataset_name: str | None = _opt(None, "Hub dataset (instead of files)")
    dataset_config_name: str | None = _opt(None, "the Hub dataset's configuration")
    dataset_split: str = _opt("train", "the Hub dataset's split")
    text_column: str = _opt("text", "text column of jsonl files / the Hub dataset")
    document_per: Literal["file", "line"] = _opt("file", "text files: one document per file (books) or per line")
    validation_split_percentage: float = _opt(1.0, "held-out share of the blocks, in percent")
    max_documents: int | None = _opt(None, "read at most this many documents")
    preprocessing_num_workers: int | None = _opt(None, "datasets.map workers")
    cache_dir: str | None = _opt(None, "datasets cache (default: the HF datasets cache)")
    segment_chars: int = _opt(20000, "documents are tokenized in segments of about this many characters")
    block_map_batch_size: int = _opt(1000, "segments per datasets.map batch when cutting blocks")
    tokenizer_name: str | None = _opt(None, "existing GPT-1 tokenizer (default: the bundled GPT-1 BPE files)")
    train_tokenizer: bool = _opt(False, "train a new BPE vocabulary on the corpus (main process; saved with the "
                                 "model)")
    vocab_size: int = _opt(40000, "BPE vocabulary of --train_tokenizer")
    model_name_or_path: str | None = _opt(None, "continue pretraining this checkpoint")
    block_size: int = _opt(512, "tokens per training sequence (n_positions of a new model)")
    n_embd: int = _opt(768, "width of a new model")
    n_layer: int = _opt(12, "blocks of a new model")
    n_head: int = _opt(12, "attention heads of a new model")
    n_inner: int | None = _opt(None, "feed-forward width of a new model (default: 4 x n_embd)")
    dropout: float = _opt(0.1, "residual, embedding and attention dropout of a new model")
    plot: bool = _opt(True, "write heldout_perplexity.png (matplotlib)")

    def resolved(self) -> PretrainArguments:
        return replace(self, **self._filled(PRETRAIN_DEFAULTS))


def parse_cli(dataclass_type, argv: list[str] | None = None):
    """One dataclass from the command line (or from a single ``.json`` file argument, as transformers' examples)."""
    import sys

    from transformers import HfArgumentParser

    parser = HfArgumentParser(dataclass_type)
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) == 1 and argv[0].endswith(".json"):
        (args,) = parser.parse_json_file(argv[0])
    else:
        (args,) = parser.parse_args_into_dataclasses(argv)
    return args
