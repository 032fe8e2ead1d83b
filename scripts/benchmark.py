"""gpt1_hf vs transformers' openai-gpt, side by side on this machine: training, inference, memory, MFU, fine-tuning
and tokenizer throughput (issue #6). Prints a markdown report; --write_docs also writes it into docs/benchmarks.md.

    python scripts/benchmark.py                # default: ~15 minutes on 2 CPU cores
    python scripts/benchmark.py --quick        # ~2-3 minutes, smaller workloads
    python scripts/benchmark.py --compile      # adds torch.compile rows (compilation takes minutes on CPU)
    python scripts/benchmark.py --write_docs   # also updates the generated part of docs/benchmarks.md
    python scripts/benchmark.py --only compile --write_docs  # only the torch.compile rows (+ the eager openai-gpt
                                               # reference they are compared to), into their own generated block

Every case runs in its own process (`gpt1_hf.benchmarking`); ours and the baseline run interleaved (ours, baseline,
ours, baseline, ...) so that load from other processes hits both; reported numbers are medians over all measured
steps/repetitions of a case, and ratios compare those medians. Both models get the same config and weights and the
same optimizer: torch.optim.AdamW(fused=True) when this torch supports it.

Data: $GPT1_DATA_DIR, else ../shared/data beside the repository. Without it, the SST-2 rows use the package's own
GPT-1 BPE files and 5,000-example SST-2 sample (the fine-tuning table's "Data path" line says which), and the tokenizer
rows, which need sentences of 8 sources, say so in one line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gpt1_hf.benchmarking import CONFIGS, flops_per_token, load_average, machine_info, run_case  # noqa: E402

DOCS = REPO / "docs" / "benchmarks.md"
BEGIN, END = "<!-- BEGIN GENERATED: scripts/benchmark.py --write_docs -->", "<!-- END GENERATED -->"
BEGIN_GPU = "<!-- BEGIN GENERATED (GPU): scripts/benchmark.py --device cuda --write_docs -->"
END_GPU = "<!-- END GENERATED (GPU) -->"
BEGIN_COMPILE = "<!-- BEGIN GENERATED (compile): scripts/benchmark.py --only compile --write_docs -->"
END_COMPILE = "<!-- END GENERATED (compile) -->"
# fast paths on by default, switched off one at a time (gpt1_hf.benchmarking.set_fast_paths); attention_recompute is off
# by default and switched on instead
ABLATION = ["fast_dropout", "dropout_attention", "fused_lm_loss", "gelu_kernel", "bf16_erf_gelu", "no_train_logits"]


def plan(args) -> dict:
    """The cases of this run, by name."""
    q, gpu = args.quick, args.device != "cpu"
    lm_batch = args.batch or (16 if gpu else 1)
    mc_batch = max(1, lm_batch // 4)
    full_lm = dict(config="full", batch=lm_batch, seq=512)
    cases = {"peak": {"case": "peak", "reps": 5 if q else 9, "ceiling": True, "batch": lm_batch},
             "peak_end": None if q else {"case": "peak", "reps": 9, "ceiling": False}}
    train = []  # (row, spec without impl, rounds)
    train.append(("LM full bf16", {**full_lm, "task": "lm", "precision": "bf16", "steps": 2 if q else 4,
                                   "warmup": 1 if q else 2}, 1 if q else 2))
    train.append(("LM full fp32", {**full_lm, "task": "lm", "precision": "fp32", "steps": 2 if q else 3,
                                   "warmup": 1}, 1 if q else 2))
    if not q:
        train.append(("MC full bf16", {"config": "full", "batch": mc_batch, "seq": 512, "choices": 4, "task": "mc",
                                       "precision": "bf16", "steps": 3, "warmup": 1}, 1))
        train.append(("MC full fp32", {"config": "full", "batch": mc_batch, "seq": 512, "choices": 4, "task": "mc",
                                       "precision": "fp32", "steps": 2, "warmup": 1}, 1))
    for precision in ("bf16",) if q else ("bf16", "fp32"):
        train.append((f"LM small {precision}", {"config": "small", "batch": 4 * lm_batch, "seq": 256, "task": "lm",
                                                "precision": precision, "steps": 3 if q else 5, "warmup": 1}, 1))
        train.append((f"MC small {precision}", {"config": "small", "batch": lm_batch, "seq": 256, "choices": 4,
                                                "task": "mc",
                                                "precision": precision, "steps": 3 if q else 5, "warmup": 1}, 1))
    cases["train"] = train
    extra = [("LM full bf16, gradient checkpointing", {**train[0][1], "impl": "ours", "grad_ckpt": True})]
    if args.compile:
        c = {**train[0][1], "compile": True, "warmup": 2, "steps": 3 if q else 5}
        extra.append(("LM full bf16, torch.compile", {**c, "impl": "ours"}))
        extra.append(("LM full bf16, torch.compile (openai-gpt)", {**c, "impl": "baseline"}))
    cases["train_extra"] = extra
    if not q:
        variants = [("all fast paths on", [])] + [(f"without {name}", [name]) for name in ABLATION]
        variants.append(("with attention_recompute", {"attention_recompute": True}))
        variants.append(("all fast paths off", ABLATION))
        cases["ablation"] = {"case": "ablation", "config": "full", "batch": lm_batch, "seq": 512, "precision": "bf16",
                             "rounds": 4, "variants": variants}
    # fp32 inference is GEMM-bound and slow on CPU: 320 sentences are enough for a stable number
    cases["classify"] = [(precision, {"case": "classify", "config": "full", "precision": precision, "batch": 32,
                                      "limit": 128 if q else (320 if precision == "fp32" and not gpu else None),
                                      "reps": 2 if q else 3})
                         for precision in (("bf16",) if q else ("fp32", "bf16"))]
    cases["generate"] = [{"case": "generate", "config": "full", "precision": "fp32", "prompt": prompt,
                          "new_tokens": 32 if q else 128} for prompt in ((32,) if q else (32, 256))]
    cases["finetune"] = [(mode, {"case": "finetune", "mode": mode, "config": "small" if q else "full",
                                 "examples": 256 if q else 768, "batch": 32})
                         for mode in (("grouped", "pad_to_max") if q else ("grouped", "random_dynamic", "pad_to_max"))]
    cases["tokenizer"] = {"case": "tokenizer", "per_source": 200 if q else 2000, "repeats": 2 if q else 3}
    for value in cases.values():  # every case runs on --device
        for spec in value if isinstance(value, list) else [value]:
            spec = spec[1] if isinstance(spec, tuple) else spec
            if isinstance(spec, dict) and spec.get("case") != "tokenizer":
                spec["device"] = args.device
    return cases


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def run_pair(spec: dict, rounds: int, log) -> tuple[dict, dict]:
    """Ours and the baseline, interleaved `rounds` times; step times pooled per model."""
    pooled = {"ours": None, "baseline": None}
    for _ in range(rounds):
        for impl in ("ours", "baseline"):
            r = run_case({"case": "train", **spec, "impl": impl})
            log(impl, spec, r)
            if pooled[impl] is None or "error" in pooled[impl]:
                pooled[impl] = r
            elif "error" not in r:
                pooled[impl]["step_s"] += r["step_s"]
                pooled[impl]["peak_mib"] = median([x for x in (pooled[impl]["peak_mib"], r["peak_mib"]) if x])
    return pooled["ours"], pooled["baseline"]


def tok_s(r):
    return r["tokens_per_step"] / median(r["step_s"]) if r and "error" not in r else float("nan")


def fmt(x, digits=0, suffix=""):
    if x is None or x != x:
        return "n/a"
    return f"{x:,.{digits}f}{suffix}"


def verdict(value, target, higher_is_better=True):
    if value != value:
        return "not measured"
    ok = value >= target if higher_is_better else value <= target
    return "met" if ok else "**gap**"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a ~2-3 minute version with smaller workloads")
    parser.add_argument("--compile", action="store_true", help="add torch.compile training rows")
    parser.add_argument("--write_docs", action="store_true", help=f"write the report into {DOCS.relative_to(REPO)}")
    parser.add_argument("--json", default=None, help="also dump every raw result to this file")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--batch", type=int, default=None,
                        help="LM batch at 512 tokens (default 1 on CPU, 16 on a GPU; multiple choice: batch // 4)")
    parser.add_argument("--peak_tflops", type=float, default=None,
                        help="bf16 peak for MFU instead of the measured one (e.g. 989 for an H100/H200 SXM, dense)")
    parser.add_argument("--only", choices=["compile", "profile", "decode"], default=None,
                        help="compile: run only the torch.compile rows (ours and openai-gpt, LM full bf16) and the "
                             "eager openai-gpt reference, and write them into their own generated block; profile: "
                             "torch.profiler of one LM full bf16 training step (ours, openai-gpt) and the batch-1 "
                             "decoding bounds, printed as markdown (docs: 'Where the time goes'); decode: only the decoding bounds")
    parser.add_argument("--compile_steps", type=int, default=3, help="timed steps per torch.compile case (--only)")
    args = parser.parse_args(argv)
    command = "python scripts/benchmark.py" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    if args.only == "compile":
        return main_compile(args, command)
    if args.only in ("profile", "decode"):
        return main_profile(args, command)
    cases = plan(args)
    raw = []
    t0 = time.perf_counter()

    def log(name, spec, r):
        raw.append(r)
        status = r.get("error", "")[:300] if "error" in r else f"{r.get('process_s', 0):.0f}s"
        print(f"[{time.perf_counter() - t0:6.0f}s] {name}: {json.dumps({k: v for k, v in spec.items() if k != 'case'})}"
              f" -> {status}", file=sys.stderr, flush=True)

    load_before = load_average()
    info = machine_info()
    peak = run_case(cases["peak"])
    log("peak", cases["peak"], peak)

    train_rows = []
    for row, spec, rounds in cases["train"]:
        ours, base = run_pair(spec, rounds, log)
        train_rows.append((row, spec, ours, base))
    extra_rows = []
    for row, spec in cases["train_extra"]:
        r = run_case({"case": "train", **spec})
        log(row, spec, r)
        extra_rows.append((row, spec, r))
    ablation = None
    if cases.get("ablation"):
        ablation = run_case(cases["ablation"])
        log("ablation", cases["ablation"], ablation)
    classify_rows = []
    for precision, spec in cases["classify"]:
        pair = {}
        for impl in ("ours", "baseline"):
            r = run_case({**spec, "impl": impl, "reps": spec["reps"] if impl == "ours" else max(1, spec["reps"] - 1)})
            log(f"classify {impl}", spec, r)
            pair[impl] = r
        classify_rows.append((precision, pair))
    gen = []
    for base_spec in cases["generate"]:
        pair = {}
        for impl in ("ours", "baseline"):
            spec = {**base_spec, "impl": impl, "reps": 3 if impl == "ours" else 1, "warmup": impl == "ours"}
            pair[impl] = run_case(spec)
            log(f"generate {impl}", spec, pair[impl])
        gen.append(pair)
    finetune = {}
    for mode, spec in cases["finetune"]:
        finetune[mode] = run_case(spec)
        log(f"finetune {mode}", spec, finetune[mode])
    tokenizer = run_case(cases["tokenizer"])
    log("tokenizer", cases["tokenizer"], tokenizer)
    peak_end = {}
    if cases["peak_end"]:
        peak_end = run_case(cases["peak_end"])
        log("peak (end)", cases["peak_end"], peak_end)
    load_after = load_average()

    if args.json:  # before rendering, so that the raw numbers survive a rendering bug
        Path(args.json).write_text(json.dumps(raw, indent=1))
    report = render(args, command, info, peak, peak_end, train_rows, extra_rows, ablation, classify_rows, gen,
                    finetune, tokenizer, load_before, load_after, time.perf_counter() - t0)
    print(report)
    if args.write_docs:
        write_docs(report, args.device)
    return 0


def main_profile(args, command) -> int:
    """Where the time of one LM full 1x512 bf16 training step goes (torch.profiler, self CPU time by op group and the
    top ops), for ours and openai-gpt; and what bounds batch-1 fp32 decoding (a weight-reading pass vs our cached step
    vs the baseline's uncached forward)."""
    t0, load_before = time.perf_counter(), load_average()
    results = {impl: run_case({"case": "profile", "impl": impl, "precision": "bf16", "device": args.device}, timeout=600)
               for impl in (("ours", "baseline") if args.only == "profile" else ())}
    decode = run_case({"case": "decode", "device": args.device}, timeout=600)
    lines = [f"Command: `{command}` ({(time.perf_counter() - t0) / 60:.1f} min); load average before "
             f"{fmt_load(load_before)}, after {fmt_load(load_average())}", ""]
    if not results:
        pass
    elif any("error" in r for r in results.values()):
        lines += [f"profile failed: {r['error'][-300:]}" for r in results.values() if "error" in r]
    else:
        names = {"ours": "gpt1_hf", "baseline": "openai-gpt"}
        lines += ["| op group (self CPU time) | " + " | ".join(f"{names[i]} ms | share" for i in results) + " |",
                  "|---|" + "---:|---:|" * len(results)]
        groups = list(dict.fromkeys(g for r in results.values() for g in r["groups_us"]))
        for g in groups:
            cells = []
            for r in results.values():
                us = r["groups_us"].get(g, 0.0)
                cells.append(f"{us / 1e3:,.0f} | {100 * us / r['self_cpu_total_us']:.0f}%")
            lines.append(f"| {g} | " + " | ".join(cells) + " |")
        lines.append("| **total self CPU** | " + " | ".join(
            f"**{r['self_cpu_total_us'] / 1e3:,.0f}** | 100%" for r in results.values()) + " |")
        lines.append("| step wall time: unprofiled (median) / profiled | " + " | ".join(
            f"{1e3 * median(r['plain_step_s']):,.0f} / {1e3 * r['profiled_step_s']:,.0f} | " for r in results.values())
            + " |")
        for impl, r in results.items():
            lines += ["", f"Top ops, {names[impl]} (self CPU ms, calls):", "",
                      ", ".join(f"`{t['op']}` {t['self_cpu_us'] / 1e3:,.0f} ({t['calls']})" for t in r["top"][:14])]
    lines.append("")
    if "error" in decode:
        lines.append(f"decode bounds failed: {decode['error'][-300:]}")
    else:
        mb = decode["weight_bytes"] / 1e6
        lines += ["| batch-1 fp32 decoding (full config) | ms | implied |", "|---|---:|---:|",
                  f"| read every weight once: x @ W for each weight matrix (embedding = LM head included, {mb:,.0f} MB "
                  f"of fp32 parameters) | {1e3 * decode['matvec_pass_s']:.1f} | "
                  f"{decode['weight_bytes'] / decode['matvec_pass_s'] / 1e9:.1f} GB/s |",
                  f"| read every weight once: p.sum() | {1e3 * decode['sum_pass_s']:.1f} | "
                  f"{decode['weight_bytes'] / decode['sum_pass_s'] / 1e9:.1f} GB/s |",
                  f"| 512 MiB tensor copy (read + write) | | {decode['copy_gbs']:.1f} GB/s |",
                  f"| gpt1_hf: one cached decoding step (1 token, prompt 32) | {1e3 * decode['decode_step_s']:.1f} | "
                  f"{1e3 / (1e3 * decode['decode_step_s']):.0f} tok/s |"]
        for length, s in decode["baseline_forward_s"].items():
            lines.append(f"| openai-gpt without cache: one forward over {length} tokens (= one new token) | "
                         f"{1e3 * s:.1f} | {s / decode['decode_step_s']:.1f}× our cached step |")
    print("\n".join(lines))
    return 0


def main_compile(args, command) -> int:
    """Only the torch.compile training rows: LM full 1x512 bf16 autocast, ours and openai-gpt compiled, plus eager
    openai-gpt (the reference of the >= 3x target) and eager ours, measured in this run (one process per case)."""
    t0 = time.perf_counter()
    raw = []

    def log(name, spec, r):
        raw.append(r)
        status = r.get("error", "")[:300] if "error" in r else f"{r.get('process_s', 0):.0f}s"
        print(f"[{time.perf_counter() - t0:6.0f}s] {name} -> {status}", file=sys.stderr, flush=True)

    load_before, info = load_average(), machine_info()
    batch = args.batch or (16 if args.device != "cpu" else 1)
    base = {"config": "full", "batch": batch, "seq": 512, "task": "lm", "precision": "bf16", "device": args.device}
    peak = run_case({"case": "peak", "reps": 5, "ceiling": False, "device": args.device})
    log("peak", {}, peak)
    rows = []
    for row, spec in (("eager", {**base, "steps": 3, "warmup": 1, "memory": False}),
                      ("torch.compile", {**base, "steps": args.compile_steps, "warmup": 2, "compile": True,
                                         "memory": False})):
        for impl in ("ours", "baseline"):
            r = run_case({"case": "train", **spec, "impl": impl}, timeout=480)
            log(f"{row} {impl}", spec, r)
            rows.append((row, impl, spec, r))
    load_after = load_average()
    if args.json:
        Path(args.json).write_text(json.dumps(raw, indent=1))
    bf16_peak = args.peak_tflops or peak.get("bf16_tflops", float("nan"))
    fpt = flops_per_token(CONFIGS["full"], 512)
    ref = next((tok_s(r) for row, impl, _, r in rows if row == "eager" and impl == "baseline"), float("nan"))
    lines = [
        f"Command: `{command}` ({(time.perf_counter() - t0) / 60:.1f} min)  ",
        f"Machine: {info['cpu']}, {info['cores']} cores (torch threads: {info['torch_threads']}, AMX-bf16: "
        f"{info['amx_bf16']}); torch {info['torch']}, transformers {info['transformers']}, python {info['python']}; "
        f"malloc: {info.get('malloc', 'default')}  ",
        f"Load average (1/5/15 min) before: {fmt_load(load_before)}, after: {fmt_load(load_after)}  ",
        f"Measured bf16 matmul peak in this run: {bf16_peak:.2f} TFLOP/s",
        "",
        f"### torch.compile training step (LM full 12×768, {batch}×512, bf16 autocast, fused AdamW not compiled)",
        "",
        "| case | model | tok/s | vs eager openai-gpt (this run) | MFU | compile + warm-up | target |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for row, impl, spec, r in rows:
        a = tok_s(r)
        who = "gpt1_hf" if impl == "ours" else "openai-gpt"
        target = f"≥ 3×: {verdict(a / ref, 3.0)}" if row == "torch.compile" and impl == "ours" else ""
        err = f" (failed: {r['error'].strip().splitlines()[-1][:160]})" if "error" in r else ""
        warm = f"{r['warmup_s']:.0f} s ({spec['warmup']} steps)" if "warmup_s" in r else ""
        lines.append(f"| {row}{err} | {who} | {fmt(a)} | {a / ref:.2f}× | {fmt(100 * a * fpt / (bf16_peak * 1e12), 1, '%')}"
                     f" | {warm} | {target} |")
    lines += ["", f"Median of {args.compile_steps} timed steps after the warm-up (compiled) / 3 (eager), one process "
              "per case; MFU as in the tables above."]
    report = "\n".join(lines)
    print(report)
    if args.write_docs:
        write_docs(report, "compile")
    return 0


def render(args, command, info, peak, peak_end, train_rows, extra_rows, ablation, classify_rows, gen,
           finetune, tokenizer, load_before, load_after, wall_s) -> str:
    """The generated block of docs/benchmarks.md: one section per measurement."""
    lines, bf16_peak, fp32_peak = _render_header(args, command, info, peak, peak_end, load_before, load_after, wall_s)
    lines += _render_training(train_rows, extra_rows, bf16_peak, fp32_peak)
    lines += _render_memory(train_rows, extra_rows)
    lines += _render_ablation(ablation)
    lines += _render_inference(classify_rows, gen)
    lines += _render_finetune(finetune)
    lines += _render_tokenizer(tokenizer)
    return "\n".join(lines)


def _render_header(args, command, info, peak, peak_end, load_before, load_after, wall_s):
    def peak_of(key):
        values = [p[key] for p in (peak, peak_end) if p and key in p]
        return max(values) if values else float("nan")

    bf16_peak, fp32_peak = args.peak_tflops or peak_of("bf16_tflops"), peak_of("fp32_tflops")
    gpu = f"; GPU: {peak['device_name']} (memory: torch.cuda.max_memory_allocated)" if peak.get("device_name") else ""
    lines = [
        f"Command: `{command}` ({'quick' if args.quick else 'default'} run, {wall_s / 60:.1f} min)  ",
        f"Machine: {info['cpu']}, {info['cores']} cores (torch threads: {info['torch_threads']}, AMX-bf16: "
        f"{info['amx_bf16']}){gpu}; torch {info['torch']}, transformers {info['transformers']}, "
        f"python {info['python']}; malloc: {info.get('malloc', 'default')}  ",
        f"Load average (1/5/15 min) before: {fmt_load(load_before)}, after: {fmt_load(load_after)}  ",
        f"Measured matmul peak (one {peak.get('bf16_n', '?')}² torch.matmul, median of repetitions, best of start/end "
        f"of run): **bf16 {bf16_peak:.2f} TFLOP/s, fp32 {fp32_peak:.3f} TFLOP/s** "
        f"(start {peak.get('bf16_tflops', float('nan')):.2f} / {peak.get('fp32_tflops', float('nan')):.3f}, "
        f"end {peak_end.get('bf16_tflops', float('nan')):.2f} / {peak_end.get('fp32_tflops', float('nan')):.3f})"
        + (f"; MFU below uses --peak_tflops {args.peak_tflops}" if args.peak_tflops else ""),
        ceiling_line(peak, bf16_peak),
        "",
        "### Training step throughput (tokens/s; forward + backward + fused AdamW step)",
        "",
        "| case | config | batch | gpt1_hf tok/s | openai-gpt tok/s | ratio | MFU gpt1_hf | MFU openai-gpt | target |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    return lines, bf16_peak, fp32_peak


def _render_training(train_rows, extra_rows, bf16_peak, fp32_peak) -> list[str]:
    lines = []
    for row, spec, ours, base in train_rows:
        task, cfg, precision = spec["task"], spec["config"], spec["precision"]
        shape = f"{spec['batch']}×{spec['choices']}×{spec['seq']}" if task == "mc" else f"{spec['batch']}×{spec['seq']}"
        fpt = flops_per_token(CONFIGS[cfg], spec["seq"])
        pk = (bf16_peak if precision == "bf16" else fp32_peak) * 1e12
        a, b = tok_s(ours), tok_s(base)
        target = ""
        if cfg == "full" and task == "lm":
            need = 2.0 if precision == "bf16" else 1.5
            target = f"≥ {need}×: {verdict(a / b, need)}"
            if precision == "bf16":
                target += f"; MFU ≥ 50%: {verdict(a * fpt / pk, 0.5)}"
        lines.append(f"| {row} | {cfg} ({CONFIGS[cfg]['n_layer']}×{CONFIGS[cfg]['n_embd']}) | {shape} | {fmt(a)} | "
                     f"{fmt(b)} | **{a / b:.2f}×** | {fmt(100 * a * fpt / pk, 1, '%')} | {fmt(100 * b * fpt / pk, 1, '%')}"
                     f" | {target} |")
    base_lm_bf16 = tok_s(train_rows[0][3])
    for row, spec, r in extra_rows:
        fpt = flops_per_token(CONFIGS[spec["config"]], spec["seq"])
        a = tok_s(r)
        target = ""
        if spec.get("compile") and spec["impl"] == "ours":
            target = f"≥ 3× eager openai-gpt: {verdict(a / base_lm_bf16, 3.0)}"
        err = f" (failed: {r['error'][:80]})" if "error" in r else ""
        who = "openai-gpt" if spec["impl"] == "baseline" else "gpt1_hf"
        lines.append(f"| {row}{err} | full | {spec['batch']}×{spec['seq']} | {fmt(a) if who == 'gpt1_hf' else ''} | "
                     f"{fmt(a) if who == 'openai-gpt' else ''} | {a / base_lm_bf16:.2f}× vs eager openai-gpt | "
                     f"{fmt(100 * a * fpt / (bf16_peak * 1e12), 1, '%')} | | {target} |")
    lines += ["", "MFU = tokens/s × (6N + 12·L·H·Q·T) / measured matmul peak of the same precision (nanoGPT's "
              "estimate_mfu; N without position embeddings).", ""]

    return lines


def _render_memory(train_rows, extra_rows) -> list[str]:
    lines = []
    lines += ["### Peak memory of one training step (MiB above weights + optimizer state; method below)", "",
              "| case | tensors: gpt1_hf | tensors: openai-gpt | ratio | RSS: gpt1_hf | RSS: openai-gpt | ratio | "
              "target ≤ 0.7× |", "|---|---:|---:|---:|---:|---:|---:|---|"]

    def mem_cells(ours, base, target):
        cells, verdicts = [], []
        for key in ("tensor_peak_mib", "peak_mib"):
            a, b = (ours or {}).get(key), (base or {}).get(key)
            ratio = a / b if a and b else float("nan")
            cells += [fmt(a), fmt(b), f"{ratio:.2f}×"]
            verdicts.append(verdict(ratio, 0.7, False))
        return " | ".join(cells) + " | " + (f"tensors {verdicts[0]}, RSS {verdicts[1]}" if target else "")

    for row, spec, ours, base in train_rows:
        lines.append(f"| {row} | {mem_cells(ours, base, spec['config'] == 'full')} |")
    for row, spec, r in extra_rows:
        if spec.get("grad_ckpt"):
            lines.append(f"| {row} ({fmt(tok_s(r))} tok/s) | {mem_cells(r, train_rows[0][3], False)} |")
    lines.append("")

    return lines


def _render_ablation(ablation) -> list[str]:
    lines = []
    if ablation and "error" not in ablation:
        spec = ablation["spec"]
        lines += [f"### What each fast path buys (gpt1_hf, LM full {spec['batch']}×{spec['seq']}, bf16 autocast; one "
                  f"switched off at a time; all variants in one process, interleaved step by step, {spec['rounds']} "
                  "rounds)", "", "| variant | tok/s | step time vs all on |", "|---|---:|---:|"]
        on = median(ablation["step_s"]["all fast paths on"])
        for name, times in ablation["step_s"].items():
            lines.append(f"| {name} | {fmt(ablation['tokens_per_step'] / median(times))} | {median(times) / on:.2f}× |")
        lines += ["", "Switches (`gpt1_hf.benchmarking.set_fast_paths`): `attn_implementation` \"gpt1_sdpa\" / \"sdpa\" "
                  "(dropout_attention), config `gelu_kernel`, `bf16_erf_gelu`, "
                  "`fast_dropout`, `fused_lm_loss`, `attention_recompute`, `train_logits` (no_train_logits); each fast "
                  "path is checked against its reference in tests/test_fast_paths.py.", ""]
    elif ablation:
        lines += [f"Ablation failed: {ablation['error'][:300]}", ""]

    return lines


def _render_inference(classify_rows, gen) -> list[str]:
    lines = []
    lines += ["### Inference", "", "| case | gpt1_hf | openai-gpt | ratio | target |", "|---|---:|---:|---:|---|"]
    for precision, pair in classify_rows:
        o, b = pair["ours"], pair["baseline"]
        a = o["examples"] / median(o["epoch_s"]) if "error" not in o else float("nan")
        c = b["examples"] / median(b["epoch_s"]) if "error" not in b else float("nan")
        what = (f"classification, {o.get('source', '?')} ({o.get('examples', '?')} sentences, mean "
                f"{o.get('mean_len', float('nan')):.1f} tokens, {o.get('tokenizer', '?')}), batch 32, dynamic padding, "
                f"{precision}")
        lines.append(f"| {what} | {fmt(a, 1)} ex/s | {fmt(c, 1)} ex/s | {a / c:.2f}× | |")
    for pair in gen:
        o, b = pair["ours"], pair["baseline"]
        a = o["new_tokens"] / median(o["gen_s"]) if "error" not in o else float("nan")
        c = b["new_tokens"] / median(b["gen_s"]) if "error" not in b else float("nan")
        same = "error" not in o and "error" not in b and o["tokens"] == b["tokens"]
        lines.append(f"| greedy generation, prompt {cases_get(o, 'prompt')} + {o.get('new_tokens', '?')} new tokens, "
                     f"batch 1, fp32; ours with KV cache, openai-gpt has none (identical tokens: {same}) | "
                     f"{fmt(a, 1)} tok/s | {fmt(c, 2)} tok/s | **{a / c:.1f}×** | ≥ 10×: {verdict(a / c, 10)} |")
    lines.append("")

    return lines


def _render_finetune(finetune) -> list[str]:
    lines = []
    lines += ["### Fine-tuning epoch (SST-2 train subsample, gpt1_hf, bf16 autocast, batch 32, fused AdamW)", "",
              "| batching | epoch time | full 67,349-example epoch (extrapolated) | padded / real tokens | "
              "speed-up vs pad-to-max | target |", "|---|---:|---:|---:|---:|---|"]
    ref = finetune.get("pad_to_max", {})
    for mode, r in finetune.items():
        if "error" in r:
            lines.append(f"| {mode} | failed: {r['error'][:100]} | | | | |")
            continue
        label = {"grouped": "length-grouped, dynamic padding", "random_dynamic": "random order, dynamic padding",
                 "pad_to_max": f"random order, every batch padded to the longest example ({r['longest']} tokens)"}[mode]
        speed = ref.get("epoch_s", float("nan")) / r["epoch_s"]
        target = f"≥ 3×: {verdict(speed, 3)}" if mode == "grouped" else ""
        lines.append(f"| {label} | {r['epoch_s']:.1f} s ({r['examples']} ex.) | "
                     f"{r['epoch_s'] * 67349 / r['examples'] / 60:.0f} min | "
                     f"{r['padded_tokens'] / r['real_tokens']:.2f} | {speed:.2f}× | {target} |")
    if finetune:
        notes = next(iter(finetune.values())).get("notes", [])
        lines += ["", f"Data path: {'; '.join(notes)}.", ""]

    return lines


def _render_tokenizer(tokenizer) -> list[str]:
    lines = []
    lines += ["### Tokenizer (batch encoding, sentences/s; scripts/tokenizer_agreement.measure)", ""]
    if "error" in tokenizer or "missing" in tokenizer:
        lines.append(f"Not measured: {tokenizer.get('missing') or tokenizer.get('error', '')[:300]}")
    else:
        lines += [f"{tokenizer['n_sentences']} real sentences ({', '.join(tokenizer['sources'])}); identical ids to "
                  f"the ftfy + spaCy oracle: **GPT1Tokenizer {100 * tokenizer['gpt1_agreement']:.2f}%**, "
                  f"OpenAIGPTTokenizer {100 * tokenizer['openai_agreement']:.2f}%.", "",
                  "| pipeline | sentences/s | vs oracle | target |", "|---|---:|---:|---|"]
        for name, rate in tokenizer["throughput"].items():
            target = ""
            if name == "GPT1Tokenizer(texts)":
                target = (f"≥ 10× at ≥ 99.5% identical: {verdict(tokenizer['speedup_vs_oracle'][name], 10)} "
                          f"(agreement {verdict(tokenizer['gpt1_agreement'], 0.995)})")
            lines.append(f"| {name} | {fmt(rate)} | {tokenizer['speedup_vs_oracle'][name]:.1f}× | {target} |")
    return lines


def ceiling_line(peak, bf16_peak) -> str:
    c = peak.get("ceiling")
    if not c:
        return ""
    rate = c["gemm_flops"] / c["gemm_s"] / 1e12
    return (f"GEMM-only ceiling: the matmuls of one full-config {peak['spec'].get('batch', 1)}×512 LM training step "
            f"({c['gemm_flops'] / 1e9:.0f} GFLOP, the same shapes, bf16) take {c['gemm_s'] * 1e3:.0f} ms alone = "
            f"{rate:.2f} TFLOP/s = **{100 * rate / bf16_peak:.0f}% of the bf16 peak**: no implementation of this step "
            "can reach a higher MFU on this machine.")


def cases_get(result, key):
    return result.get("spec", {}).get(key, "?")


def fmt_load(load):
    return "n/a" if not load else " / ".join(f"{x:.2f}" for x in load)


def write_docs(report: str, device: str = "cpu") -> None:
    """Replace the generated block of `device` (CPU, or the GPU section) in docs/benchmarks.md; the rest is kept."""
    begin, end = {"cpu": (BEGIN, END), "compile": (BEGIN_COMPILE, END_COMPILE)}.get(device, (BEGIN_GPU, END_GPU))
    block = f"{begin}\n{report}\n{end}"
    text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    if begin in text:
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1] if end in rest else ""
        text = head + block + tail
    elif device == "compile" and END in text:  # right after the main CPU block
        head, tail = text.split(END, 1)
        text = head + END + "\n\n" + block + tail
    else:
        text = text.rstrip("\n") + f"\n\n{block}\n"
    DOCS.write_text(text)
    print(f"wrote {DOCS}", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
