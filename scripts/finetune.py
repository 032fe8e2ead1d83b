#!/usr/bin/env python
"""Fine-tune GPT-1 on a task of the paper with its recipe (gpt1_hf.finetuning). See docs/finetuning.md.

    # the embedded default: offline, a tiny GPT-1 from scratch on a bundled SST-2 sample, prints the dev accuracy
    python scripts/finetune.py

    # the paper's recipe on a pretrained checkpoint (gpt1 folder, Hub id, openai-gpt checkpoint or original release)
    accelerate launch scripts/finetune.py --task rte --model_name_or_path openai-community/openai-gpt \
        --data_dir ../shared/data/rte --mixed_precision bf16 --output_dir outputs/rte

Unset options take the paper's values (lr 6.25e-5, batch 32, 3 epochs, linear decay with 0.2% warmup, aux LM
weight 0.5, classifier dropout 0.1, weight decay 0.01, clipping 1.0, max length 512) when a model is given, and the
embedded default's values when none is.
"""

from __future__ import annotations

import argparse
import json
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("task and data")
    g.add_argument("--task", default=None, help="task name (gpt1_hf.tasks.TASK_NAMES); default with no model: sst2")
    g.add_argument("--data_dir", default=None, help="local task folder (or a root holding <task>/); default: the Hub")
    g.add_argument("--max_length", type=int, default=None, help="tokens per sequence (paper: 512)")
    g.add_argument("--max_train_examples", type=int, default=None, help="random subset of the training split")
    g.add_argument("--max_eval_examples", type=int, default=None, help="random subset of the evaluation split")
    g.add_argument("--train_split", default="train")
    g.add_argument("--eval_split", default="validation")
    g.add_argument("--predict_splits", default=None,
                   help="comma-separated splits to write predictions for (default: test when available; 'none')")
    g = p.add_argument_group("model")
    g.add_argument("--model_name_or_path", default=None,
                   help="gpt1 folder / Hub id, transformers openai-gpt checkpoint or original release folder "
                        "(default: the embedded tiny model from scratch)")
    g.add_argument("--tokenizer_name_or_path", default=None, help="default: the model's, else the bundled GPT-1 BPE")
    g.add_argument("--from_scratch", action="store_true", help="random init with the model's config (ablation)")
    g.add_argument("--transfer_layers", type=int, default=None,
                   help="keep the embeddings and the first K pretrained blocks, re-initialise the rest")
    g.add_argument("--reinit_head", action="store_true", help="train a new head on a fine-tuned checkpoint")
    g.add_argument("--aux_lm_weight", type=float, default=None, help="λ of L3 = L2 + λ·L1 (paper 0.5; 0 = ablation)")
    g.add_argument("--clf_pdrop", type=float, default=None, help="classifier dropout (paper 0.1)")
    g.add_argument("--model_config", default=None,
                   help='JSON overrides of the model config, e.g. \'{"n_layer": 4}\' (from-scratch models)')
    g = p.add_argument_group("PEFT / LoRA")
    g.add_argument("--lora", action="store_true", help="train LoRA adapters (+ head, special-token rows) only")
    g.add_argument("--lora_r", type=int, default=8)
    g.add_argument("--lora_alpha", type=int, default=16)
    g.add_argument("--lora_dropout", type=float, default=0.05)
    g.add_argument("--lora_target_modules", default=None,
                   help="comma-separated module names (default: c_attn,c_proj,c_fc)")
    g = p.add_argument_group("optimisation")
    g.add_argument("--learning_rate", type=float, default=None)
    g.add_argument("--per_device_batch_size", type=int, default=None)
    g.add_argument("--global_batch_size", type=int, default=None, help="= per_device x processes x accumulation")
    g.add_argument("--gradient_accumulation_steps", type=int, default=None)
    g.add_argument("--eval_batch_size", type=int, default=None)
    g.add_argument("--num_train_epochs", type=int, default=None)
    g.add_argument("--lr_scheduler_type", choices=["linear", "cosine", "constant"], default=None)
    g.add_argument("--warmup_ratio", type=float, default=None)
    g.add_argument("--warmup_steps", type=int, default=None)
    g.add_argument("--weight_decay", type=float, default=None)
    g.add_argument("--max_grad_norm", type=float, default=None)
    g.add_argument("--mixed_precision", choices=["auto", "no", "bf16", "fp16"], default=None,
                   help="auto: bf16 where it is fast (a GPU with bf16, a CPU with AMX / AVX512-BF16), else fp32; "
                        "default: auto for the embedded default, else the accelerate config's (else no)")
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--group_by_length", action="store_true")
    g.add_argument("--gradient_checkpointing", action="store_true")
    g.add_argument("--torch_compile", action="store_true")
    g.add_argument("--cpu", action="store_true", help="run on CPU even when a GPU is present")
    g.add_argument("--num_threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's; the embedded default uses 1)")
    g = p.add_argument_group("budgets and checkpoints")
    g.add_argument("--max_steps", type=int, default=None, help="optimizer updates (sets the schedule length)")
    g.add_argument("--max_train_tokens", type=int, default=None)
    g.add_argument("--max_time", type=float, default=None, help="seconds for this invocation (then save and stop)")
    g.add_argument("--eval_every_steps", type=int, default=None, help="default: every epoch")
    g.add_argument("--save_every_steps", type=int, default=None)
    g.add_argument("--save_total_limit", type=int, default=2)
    g.add_argument("--resume_from_checkpoint", default=None, help="'latest', 'auto' or a checkpoint folder")
    g.add_argument("--output_dir", default=None)
    g.add_argument("--no_save_model", action="store_true")
    g.add_argument("--no_progress_bar", action="store_true")
    g = p.add_argument_group("Hugging Face Hub")
    g.add_argument("--push_to_hub", action="store_true")
    g.add_argument("--hub_model_id", default=None)
    g.add_argument("--hub_base_model", default=None,
                   help="with --lora: the Hub id of the base model, named in the adapter's card and adapter_config.json "
                        "(default: --model_name_or_path when it is a Hub id)")
    g.add_argument("--hub_private", action="store_true")
    g.add_argument("--hub_token", default=None)
    return p


def arguments_from_cli(argv=None):
    from gpt1_hf.finetuning import FinetuneArguments

    ns = build_parser().parse_args(argv)
    predict = None
    if ns.predict_splits is not None:
        predict = [] if ns.predict_splits.lower() == "none" else [s for s in ns.predict_splits.split(",") if s]
    return FinetuneArguments(
        task=ns.task,
        model_name_or_path=ns.model_name_or_path,
        tokenizer_name_or_path=ns.tokenizer_name_or_path,
        data_dir=ns.data_dir,
        output_dir=ns.output_dir,
        max_length=ns.max_length,
        max_train_examples=ns.max_train_examples,
        max_eval_examples=ns.max_eval_examples,
        train_split=ns.train_split,
        eval_split=ns.eval_split,
        predict_splits=predict,
        learning_rate=ns.learning_rate,
        per_device_batch_size=ns.per_device_batch_size,
        global_batch_size=ns.global_batch_size,
        gradient_accumulation_steps=ns.gradient_accumulation_steps,
        eval_batch_size=ns.eval_batch_size,
        num_train_epochs=ns.num_train_epochs,
        lr_scheduler_type=ns.lr_scheduler_type,
        warmup_ratio=ns.warmup_ratio,
        warmup_steps=ns.warmup_steps,
        weight_decay=ns.weight_decay,
        max_grad_norm=ns.max_grad_norm,
        aux_lm_weight=ns.aux_lm_weight,
        clf_pdrop=ns.clf_pdrop,
        mixed_precision=ns.mixed_precision,
        seed=ns.seed,
        lora=ns.lora,
        lora_r=ns.lora_r,
        lora_alpha=ns.lora_alpha,
        lora_dropout=ns.lora_dropout,
        lora_target_modules=ns.lora_target_modules.split(",") if ns.lora_target_modules else None,
        group_by_length=ns.group_by_length,
        gradient_checkpointing=ns.gradient_checkpointing,
        torch_compile=ns.torch_compile,
        cpu=ns.cpu,
        num_threads=ns.num_threads,
        max_steps=ns.max_steps,
        max_train_tokens=ns.max_train_tokens,
        max_time=ns.max_time,
        eval_every_steps=ns.eval_every_steps,
        save_every_steps=ns.save_every_steps,
        save_total_limit=ns.save_total_limit,
        resume_from_checkpoint=ns.resume_from_checkpoint,
        transfer_layers=ns.transfer_layers,
        from_scratch=ns.from_scratch,
        reinit_head=ns.reinit_head,
        model_config_overrides=json.loads(ns.model_config) if ns.model_config else {},
        save_model=not ns.no_save_model,
        push_to_hub=ns.push_to_hub,
        hub_model_id=ns.hub_model_id,
        hub_base_model=ns.hub_base_model,
        hub_private=ns.hub_private,
        hub_token=ns.hub_token,
        progress_bar=not ns.no_progress_bar,
    )


def main(argv=None) -> int:
    from gpt1_hf.finetuning import finetune

    args = arguments_from_cli(argv)
    results = finetune(args)
    from accelerate.state import PartialState

    if PartialState().is_main_process:
        metrics = results["metrics"] or {}
        shown = ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())
        print(f"{results['task']} {results['eval_split']} ({results['sizes'].get(results['eval_split'])} examples): "
              f"{shown}")
        print(f"{results['primary_metric']}: {metrics.get(results['primary_metric'], float('nan')):.4f}  "
              f"(wall time {results['wall_time_s']:.1f} s; results in {results['config']['output_dir']}/results.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
