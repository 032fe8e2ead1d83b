#!/usr/bin/env python
"""The GPU check (issue #16): one script, ≤ 8 minutes on one GPU, that measures what only a GPU can tell us and writes
the GPU rows of docs/benchmarks.md.

    python scripts/gpu_check.py --write_docs                 # on a machine with a CUDA GPU
    python scripts/gpu_check.py --device cpu --config tiny   # its CPU paths (what the tests run)

1. correctness on the device: logits against CPU fp32, and against transformers' openai-gpt on the device;
2. the full config's LM and multiple-choice training steps in bf16: tokens/s and MFU (of the measured bf16 matmul
   peak), with sdpa and with flash-attention when installed, side by side with openai-gpt;
3. greedy generation with the KV cache (ours) against openai-gpt without one;
4. a short fine-tuning run through ``accelerate launch scripts/finetune.py``.

Every part runs even if an earlier one failed (its error is recorded). Results: ``--out`` (JSON) and, with
``--write_docs``, the block between ``<!-- gpu_check -->`` and ``<!-- /gpu_check -->`` in docs/benchmarks.md.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MARKERS = ("<!-- gpu_check -->", "<!-- /gpu_check -->")


@dataclass
class CheckArguments:
    device: str = field(default="cuda", metadata={"help": "cuda, or cpu to run the script's paths on a CPU"})
    config: str = field(default="full", metadata={"help": "model size (gpt1_hf.benchmarking.CONFIGS)"})
    batch: int = field(default=8, metadata={"help": "training batch (LM rows; multiple choice: questions x 4)"})
    seq: int = field(default=512, metadata={"help": "training sequence length"})
    steps: int = field(default=10, metadata={"help": "timed training steps per variant"})
    new_tokens: int = field(default=128, metadata={"help": "tokens generated after a 32-token prompt"})
    finetune_steps: int = field(default=60, metadata={"help": "updates of the accelerate-launched fine-tuning run"})
    out: str = field(default="outputs/gpu_check.json", metadata={"help": "where the JSON results go"})
    write_docs: bool = field(default=False, metadata={"help": "replace the GPU block of docs/benchmarks.md"})


def correctness(a: CheckArguments) -> dict:
    """Max |Δlogit| of the device's fp32 forward against the CPU's, and against openai-gpt on the device."""
    import torch

    from gpt1_hf.benchmarking import build_model

    ours, base = build_model("ours", "lm", a.config).eval(), build_model("baseline", "lm", a.config).eval()
    ids = torch.randint(0, 40478, (2, min(a.seq, 128)), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cpu = ours(ids).logits
        dev = ours.to(a.device)(ids.to(a.device)).logits.cpu()
        ref = base.to(a.device)(ids.to(a.device)).logits.cpu()
        with torch.autocast(torch.device(a.device).type, dtype=torch.bfloat16):
            bf16 = ours(ids.to(a.device)).logits.float().cpu()
    return {"device_vs_cpu_fp32": float((dev - cpu).abs().max()), "ours_vs_openai_gpt": float((dev - ref).abs().max()),
            "bf16_vs_fp32_rel": float((bf16 - dev).norm() / dev.norm())}


def training(a: CheckArguments, peak_tflops: float | None) -> list[dict]:
    """bf16 training steps, ours (sdpa, flash-attention when installed) and openai-gpt, LM and multiple choice."""
    from gpt1_hf.benchmarking import CONFIGS, flops_per_token, run_case

    attns = ["sdpa"] + (["flash_attention_2"] if importlib.util.find_spec("flash_attn") else [])
    rows = []
    for task in ("lm", "mc"):
        batch = a.batch if task == "lm" else max(1, a.batch // 4)
        variants = [("ours", attn) for attn in attns] + [("baseline", None)]
        for impl, attn in variants:
            spec = {"case": "train", "impl": impl, "task": task, "precision": "bf16", "device": a.device,
                    "config": a.config, "batch": batch, "seq": a.seq, "steps": a.steps, "memory": True}
            if attn:
                spec["attn"] = attn
            r = run_case(spec, timeout=300)
            row = {"task": task, "impl": impl, "attn": attn or "eager/sdpa (openai-gpt)", "error": r.get("error")}
            if "step_s" in r:
                step = sorted(r["step_s"])[len(r["step_s"]) // 2]
                tps = r["tokens_per_step"] / step
                flops = flops_per_token(CONFIGS[a.config], a.seq) * tps
                row.update(tokens_per_s=tps, peak_mib=r.get("peak_mib"),
                           mfu=flops / (peak_tflops * 1e12) if peak_tflops else None)
            rows.append(row)
    return rows


def generation(a: CheckArguments) -> dict:
    from gpt1_hf.benchmarking import run_case

    out = {}
    for impl in ("ours", "baseline"):
        r = run_case({"case": "generate", "impl": impl, "precision": "bf16", "device": a.device, "config": a.config,
                      "prompt": 32, "new_tokens": a.new_tokens, "reps": 3}, timeout=300)
        out[impl] = {"tokens_per_s": a.new_tokens / min(r["gen_s"]) if "gen_s" in r else None,
                     "tokens": r.get("tokens"), "error": r.get("error")}
    out["same_tokens"] = out["ours"]["tokens"] == out["baseline"]["tokens"] and out["ours"]["tokens"] is not None
    return out


def finetune_run(a: CheckArguments) -> dict:
    """The embedded default through ``accelerate launch`` on one device, for ``finetune_steps`` updates."""
    out_dir = REPO / "outputs" / "gpu_check_finetune"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1",
           "--mixed_precision", "bf16" if a.device == "cuda" else "no", str(REPO / "scripts" / "finetune.py"),
           "--max_train_steps", str(a.finetune_steps), "--output_dir", str(out_dir), "--overwrite_output_dir",
           "--disable_tqdm"] + (["--cpu"] if a.device == "cpu" else [])
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=400)
    result = {"returncode": proc.returncode, "wall_s": time.perf_counter() - start}
    if proc.returncode == 0:
        res = json.loads((out_dir / "results.json").read_text())
        result.update(accuracy=res["metrics"]["accuracy"], train_time_s=res["train_time_s"],
                      tokens_per_s=res["tokens_seen"] / max(res["train_time_s"], 1e-9),
                      precision=res.get("mixed_precision"))
    else:
        result["error"] = proc.stderr[-1500:]
    return result


def _guarded(name: str, fn, results: dict, *args):
    start = time.perf_counter()
    try:
        results[name] = fn(*args)
    except Exception as e:  # every part runs: a failure is a result too
        results[name] = {"error": f"{type(e).__name__}: {e}"}
    print(f"gpu_check: {name} done in {time.perf_counter() - start:.1f} s", flush=True)
    return results[name]


def render(results: dict) -> str:
    """The markdown block for docs/benchmarks.md."""
    m, c = results["machine"], results["correctness"]
    lines = [f"Measured by `python scripts/gpu_check.py --write_docs` on {m.get('device_name') or m['device']} "
             f"({results['date']}, torch {m['torch']}, bf16 matmul peak {results['peak_tflops'] or float('nan'):.0f} "
             "TFLOP/s measured in the same run).", "",
             f"- correctness: max |Δlogit| device vs CPU fp32 {c.get('device_vs_cpu_fp32', float('nan')):.2e}, "
             f"ours vs openai-gpt on the device {c.get('ours_vs_openai_gpt', float('nan')):.2e}, bf16 vs fp32 "
             f"relative {c.get('bf16_vs_fp32_rel', float('nan')):.2e}", "",
             "| training step, bf16 | attention | tokens/s | MFU | peak MiB |", "|---|---|---:|---:|---:|"]
    for r in results.get("training") if isinstance(results.get("training"), list) else []:
        name = f"{r.get('task')} {'gpt1_hf' if r.get('impl') == 'ours' else 'openai-gpt'}"
        if r.get("error") or "tokens_per_s" not in r:
            lines.append(f"| {name} | {r.get('attn')} | error | | |")
            continue
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") else "n/a"
        lines.append(f"| {name} | {r['attn']} | {r['tokens_per_s']:,.0f} | {mfu} | {r.get('peak_mib') or 0:,.0f} |")
    g, f = results.get("generation") or {}, results.get("finetune") or {}
    ours, base = (g.get("ours") or {}).get("tokens_per_s"), (g.get("baseline") or {}).get("tokens_per_s")
    if ours and base:
        lines += ["", f"- generation, {results['args']['new_tokens']} new tokens after 32: ours (KV cache) {ours:,.0f} "
                  f"tok/s, openai-gpt "
                  f"{base:,.0f} tok/s ({ours / base:.1f}x), same tokens: {g.get('same_tokens')}"]
    if f.get("returncode") == 0:
        lines.append(f"- `accelerate launch scripts/finetune.py` (embedded default, {results['args']['finetune_steps']} "
                     f"updates, {f.get('precision')}): accuracy {f['accuracy']:.4f}, {f['tokens_per_s']:,.0f} tok/s")
    return "\n".join(lines)


def write_docs(block: str, path: Path = REPO / "docs" / "benchmarks.md") -> None:
    text = path.read_text(encoding="utf-8")
    start, end = MARKERS
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + start + "\n" + block + "\n" + end + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + f"\n\n### GPU rows\n\n{start}\n{block}\n{end}\n"
    path.write_text(text, encoding="utf-8")


def main(argv=None) -> int:
    import torch
    from transformers import HfArgumentParser

    from gpt1_hf.benchmarking import run_case

    (a,) = HfArgumentParser(CheckArguments).parse_args_into_dataclasses(argv)
    if a.device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device here; run with --device cpu to exercise the script's paths", file=sys.stderr)
        return 2
    results = {"args": vars(a), "date": time.strftime("%Y-%m-%d"),
               "machine": {"device": a.device, "torch": torch.__version__,
                           "device_name": torch.cuda.get_device_name() if a.device == "cuda" else None}}
    peak = _guarded("peak", lambda: run_case({"case": "peak", "device": a.device, "ceiling": False, "reps": 3,
                                              **({} if a.device == "cuda" else {"n_bf16": 512, "n_fp32": 512})},
                                             timeout=300), results)
    results["peak_tflops"] = peak.get("bf16_tflops")
    _guarded("correctness", correctness, results, a)
    _guarded("training", training, results, a, results["peak_tflops"])
    _guarded("generation", generation, results, a)
    _guarded("finetune", finetune_run, results, a)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=2, default=str))
    block = render(results)
    print(block)
    if a.write_docs:
        write_docs(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
