"""Side-by-side benchmark of gpt1_hf against transformers' openai-gpt: the measurements behind scripts/benchmark.py.

Every case runs in its own process (`run_case` starts ``python -m gpt1_hf.benchmarking '<json spec>'``), so memory
peaks are clean and one case cannot warm up another. Our model and the baseline get the same config and the same
weights: the gpt1 model is built from a seed and the baseline is converted from it (`gpt1_hf.convert`).

Cases (``spec["case"]``):

* ``peak``: dense matmul peak (TFLOP/s) of one large square torch.matmul in bf16 and fp32 (median of repetitions).
* ``train``: tokens/s of a full training step (forward, backward, fused AdamW step, zero_grad) for the LM (batch x seq)
  or multiple choice (batch x choices x seq, aux LM loss with weight 0.5); fp32 or bf16 autocast; optional
  torch.compile and gradient checkpointing; peak memory of one step (see `step_peak_memory_mib`).
* ``classify``: inference examples/s of the sequence classifier on SST-2 dev sentences in batches (dynamic padding).
* ``generate``: greedy generation of N new tokens after a prompt: ours with the KV cache, openai-gpt without (it has
  none), tokens/s; also whether both produced the same tokens.
* ``finetune``: one SST-2 fine-tuning epoch (subsample) with `gpt1_hf.data` (GPT1Collator + LengthGroupedSampler)
  under three batching schemes: length-grouped dynamic padding, random order with dynamic padding, and padding every
  batch to the longest training example.
* ``tokenizer``: `scripts/tokenizer_agreement.measure` (GPT1Tokenizer vs the ftfy + spaCy oracle).
"""

from __future__ import annotations

import ctypes
import gc
import importlib.util
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from .process_settings import glibc_malloc, keep_freed_memory

REPO = Path(__file__).resolve().parents[1]
#: real data (GLUE tasks, the tokenizer benchmark's 8 sources): $GPT1_DATA_DIR, else ../shared/data beside the repository
DATA_DIR = Path(os.environ.get("GPT1_DATA_DIR", REPO.parent / "shared" / "data"))
BUNDLED_DIR = Path(__file__).resolve().parent / "data_files"


def data_path(*parts: str) -> Path:
    """DATA_DIR/parts, else the package's own copy (GPT-1's BPE files, a 5,000-example SST-2 sample), so that a run
    without the data still measures the SST-2 rows with the real tokenizer."""
    path = DATA_DIR.joinpath(*parts)
    return path if path.exists() else BUNDLED_DIR.joinpath(*parts)


BPE_DIR = data_path("gpt1_bpe")
SST2_DIR = data_path("sst2")

CONFIGS = {
    "full": dict(n_positions=512, n_embd=768, n_layer=12, n_head=12, n_inner=3072),  # GPT-1 (paper, section 4.1)
    "small": dict(n_positions=256, n_embd=384, n_layer=6, n_head=6, n_inner=1536),
    "tiny": dict(n_positions=64, n_embd=32, n_layer=2, n_head=4, n_inner=128),  # CPU runs of the GPU check's paths
}
RESULT_PREFIX = "BENCHMARK_RESULT "
CPU = torch.device("cpu")


# ----------------------------------------------------------------------------------------------------------------------
# Machine, FLOPs, memory
# ----------------------------------------------------------------------------------------------------------------------


def machine_info() -> dict:
    model = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        model = re.search(r"Model name:\s*(.+)", out).group(1).strip()
    except (OSError, AttributeError, subprocess.SubprocessError):
        pass
    import transformers

    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "amx_bf16": "amx_bf16" in open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else None,
        "malloc": "glibc, freed memory kept (--keep_freed_memory)" if glibc_malloc() else "default",
    }


def load_average() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except OSError:
        return None


def flops_per_token(config: dict, seq_len: int, vocab_size: int = 40482) -> float:
    """nanoGPT's estimate_mfu: 6N + 12 L H Q T, N = parameters without the position embeddings (the token embedding
    counts: it is also the LM head)."""
    e, layers, inner = config["n_embd"], config["n_layer"], config["n_inner"]
    per_block = (3 * e * e + 3 * e) + (e * e + e) + (e * inner + inner) + (inner * e + e) + 4 * e
    n = vocab_size * e + layers * per_block
    q = e // config["n_head"]
    return 6 * n + 12 * layers * config["n_head"] * q * seq_len


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+)", f.read()).group(1))


def step_peak_memory_mib(step) -> float | None:
    """Peak resident memory added by one call of `step`, in MiB (Linux).

    Free heap memory is handed back to the OS first (gc + malloc_trim), so the resident set is the live memory
    (weights, optimizer state); the kernel's high-water mark (VmHWM) is reset through /proc/self/clear_refs, one step
    runs, and the result is VmHWM - VmRSS(before): activations, gradients and every temporary of the step.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        gc.collect()
        libc.malloc_trim(0)
        before = _status_kib("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        step()
        return (_status_kib("VmHWM") - before) / 1024
    except OSError:
        return None


def step_peak_tensor_mib(step) -> float:
    """Peak of the bytes held by tensors created during one call of `step` (the tracemalloc of tensors), in MiB.

    A TorchDispatchMode sees every tensor an operator returns; a new storage adds its size, and a weakref finalizer
    subtracts it when the storage is freed. Weights, optimizer state and anything older than the step are not counted;
    activations, gradients, autocast copies and temporaries are. Unlike RSS this is independent of the allocator.
    """
    import weakref

    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class _Tracker(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.live = self.peak = 0
            self.owned: set[int] = set()

        def _release(self, key: int, nbytes: int) -> None:
            self.owned.discard(key)
            self.live -= nbytes

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            inputs = {t.untyped_storage().data_ptr() for t in tree_flatten((args, kwargs))[0] if torch.is_tensor(t)}
            for t in tree_flatten(out)[0]:
                if not torch.is_tensor(t) or t.device.type == "meta":
                    continue
                storage = t.untyped_storage()
                key, nbytes = storage.data_ptr(), storage.nbytes()
                if key in self.owned or key in inputs or nbytes == 0:  # a view or an in-place result
                    continue
                self.owned.add(key)
                self.live += nbytes
                self.peak = max(self.peak, self.live)
                weakref.finalize(storage, self._release, key, nbytes)
            return out

    tracker = _Tracker()
    with tracker:
        step()
    return tracker.peak / 2**20


# ----------------------------------------------------------------------------------------------------------------------
# Models with the same weights
# ----------------------------------------------------------------------------------------------------------------------


# The benchmark's gpt1_hf settings, by their ablation names: every fast path on except `attention_recompute`, which is
# off by default (slower; see docs/benchmarks.md for its memory saving). "gelu_kernel" is config.gelu_kernel ("gelu_new"
# as one PyTorch kernel rather than the formula written out), "bf16_erf_gelu" its erf kernel in bf16 on CPU;
# "dropout_attention" is
# attn_implementation "gpt1_sdpa" (vs "sdpa"); "no_train_logits" is config.train_logits = False.
FAST_PATHS_ON = {"fast_dropout": True, "dropout_attention": True, "attention_recompute": False, "fused_lm_loss": True,
                 "gelu_kernel": True, "bf16_erf_gelu": True, "no_train_logits": True}


def set_fast_paths(model, **switches: bool) -> None:
    """Switch fast paths of a gpt1 model on (True) or off (False) by their ablation names (`FAST_PATHS_ON`)."""
    unknown = set(switches) - set(FAST_PATHS_ON)
    if unknown:
        raise ValueError(f"Unknown fast paths {sorted(unknown)}; known: {sorted(FAST_PATHS_ON)}.")
    config = model.config
    for name, on in switches.items():
        if name in ("fast_dropout", "fused_lm_loss", "attention_recompute", "gelu_kernel", "bf16_erf_gelu"):
            setattr(config, name, on)
        elif name == "no_train_logits":
            config.train_logits = not on
        else:  # dropout_attention
            model.set_attn_implementation("gpt1_sdpa" if on else "sdpa")


def build_model(impl: str, task: str, config_name: str, seed: int = 0, num_labels: int = 2):
    """Our model for `task` ("lm", "mc", "clf") from a seed, or the baseline converted from exactly that model."""
    from transformers import OpenAIGPTDoubleHeadsModel, OpenAIGPTForSequenceClassification

    from gpt1_hf import GPT1Config, GPT1ForMultipleChoice, GPT1ForSequenceClassification, GPT1LMHeadModel
    from gpt1_hf.convert import gpt1_to_openai_gpt

    torch.manual_seed(seed)
    config = GPT1Config(**CONFIGS[config_name], num_labels=num_labels)
    cls = {"lm": GPT1LMHeadModel, "mc": GPT1ForMultipleChoice, "clf": GPT1ForSequenceClassification}[task]
    ours = cls(config)
    if impl == "ours":
        set_fast_paths(ours, **FAST_PATHS_ON)
        return ours
    lm = gpt1_to_openai_gpt(ours)  # OpenAIGPTLMHeadModel with the same backbone and tied head (specials kept)
    if task == "lm":
        return lm
    cfg = lm.config
    if task == "mc":
        cfg.summary_type, cfg.summary_use_proj, cfg.summary_proj_to_labels = "cls_index", True, True
        cfg.summary_first_dropout, cfg.summary_activation = config.clf_pdrop, None
        base = OpenAIGPTDoubleHeadsModel(cfg)
        head = base.multiple_choice_head.summary
    else:
        cfg.num_labels, cfg.pad_token_id = num_labels, config.pad_token_id
        base = OpenAIGPTForSequenceClassification(cfg)
        head = base.score
    base.transformer.load_state_dict(lm.transformer.state_dict())
    with torch.no_grad():
        head.weight.copy_(ours.score.weight)
        if head.bias is not None:
            head.bias.copy_(ours.score.bias)
    return base


def _device(spec: dict) -> torch.device:
    return torch.device(spec.get("device", "cpu"))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(precision: str, device: torch.device = CPU):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def _timed(fn, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


# ----------------------------------------------------------------------------------------------------------------------
# Cases
# ----------------------------------------------------------------------------------------------------------------------


def step_gemms(config: dict, batch: int, seq: int, vocab_size: int = 40482) -> list[tuple[int, int, int, int]]:
    """(batch, m, k, n) of every matmul of one LM training step (forward and backward), full rows, no padding."""
    e, heads, inner, rows = config["n_embd"], config["n_head"], config["n_inner"], batch * seq
    d, bh = e // heads, batch * heads
    gemms = []
    for out_features, in_features in ((3 * e, e), (e, e), (inner, e), (e, inner)):
        gemms += [(1, rows, in_features, out_features),  # forward
                  (1, rows, out_features, in_features),  # grad of the input
                  (1, out_features, rows, in_features)]  # grad of the weight
    gemms += [(bh, seq, d, seq), (bh, seq, seq, d)] * 3  # QK^T and PV, forward + two gradients each
    gemms = gemms * config["n_layer"]
    lm_rows = batch * (seq - 1)
    gemms += [(1, lm_rows, e, vocab_size), (1, lm_rows, vocab_size, e), (1, vocab_size, lm_rows, e)]
    return gemms


def gemm_ceiling(config: dict, batch: int, seq: int, reps: int = 3, device=CPU) -> dict:
    """Time the matmuls of one bf16 LM training step alone: the MFU that step could reach with zero other work."""
    shapes = step_gemms(config, batch, seq)
    operands = {key: (torch.randn(key[:3], dtype=torch.bfloat16, device=device),
                      torch.randn((key[0], key[2], key[3]), dtype=torch.bfloat16, device=device)) for key in set(shapes)}

    def run():
        for key in shapes:
            torch.bmm(*operands[key])

    times = [_timed(run, device) for _ in range(reps + 1)]
    flops = sum(2 * b * m * k * n for b, m, k, n in shapes)
    return {"gemm_s": statistics.median(times[1:]), "gemm_flops": flops}


def case_peak(spec: dict) -> dict:
    device = _device(spec)
    out = {"device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    if spec.get("ceiling", True):
        out["ceiling"] = gemm_ceiling(CONFIGS["full"], spec.get("batch", 1), 512, device=device)
    big = device.type == "cuda"
    for name, dtype, n in (("bf16", torch.bfloat16, spec.get("n_bf16", 8192 if big else 4096)),
                           ("fp32", torch.float32, spec.get("n_fp32", 8192 if big else 2048))):
        a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
        for _ in range(2):
            a @ b
        rates = [2 * n**3 / _timed(lambda a=a, b=b: a @ b, device) / 1e12 for _ in range(spec.get("reps", 7))]
        out[f"{name}_tflops"] = statistics.median(rates)
        out[f"{name}_tflops_max"] = max(rates)
        out[f"{name}_n"] = n
    return out


def _train_batch(impl: str, task: str, batch: int, seq: int, choices: int, config, device=CPU):
    clf = config.clf_token_id
    if task == "lm":
        ids = torch.randint(0, 40478, (batch, seq))
        return {"input_ids": ids.to(device), "labels": ids.to(device)}
    ids = torch.randint(0, 40478, (batch, choices, seq))
    ids[..., -1] = clf
    labels = torch.randint(0, choices, (batch,))
    if impl == "ours":  # L3 = L2 + 0.5 L1 (aux LM loss on every non-pad token)
        return {"input_ids": ids.to(device), "labels": labels.to(device)}
    # openai-gpt: mc_loss + 0.5 * lm_loss, pooled at the last position, LM loss over all positions (no padding here)
    return {"input_ids": ids.to(device), "mc_token_ids": torch.full((batch, choices), seq - 1, device=device),
            "labels": ids.to(device), "mc_labels": labels.to(device)}


def case_train(spec: dict) -> dict:
    impl, task, precision, device = spec["impl"], spec["task"], spec["precision"], _device(spec)
    batch, seq, choices = spec["batch"], spec["seq"], spec.get("choices", 4)
    torch.manual_seed(0)
    model = build_model(impl, task, spec["config"]).to(device).train()
    if spec.get("attn"):  # sdpa, flash_attention_2, ... (transformers' attention registry)
        model.set_attn_implementation(spec["attn"])
    if spec.get("grad_ckpt"):
        model.gradient_checkpointing_enable()
    if spec.get("fast_paths_off"):
        set_fast_paths(model, **{name: False for name in spec["fast_paths_off"]})
    fused = "fused" in torch.optim.AdamW.__init__.__code__.co_varnames
    optimizer = torch.optim.AdamW(model.parameters(), lr=6.25e-5, weight_decay=0.01, **({"fused": True} if fused else {}))
    forward = torch.compile(model) if spec.get("compile") else model
    inputs = _train_batch(impl, task, batch, seq, choices, build_config(spec["config"]), device)

    def loss_of(out):
        if impl == "baseline" and task == "mc":
            return out.mc_loss + 0.5 * out.loss
        return out.loss

    def step():
        with _autocast(precision, device):
            loss = loss_of(forward(**inputs))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    warmup_s = _timed(lambda: [step() for _ in range(spec.get("warmup", 2))], device)
    times = [_timed(step, device) for _ in range(spec["steps"])]
    tokens = batch * seq * (choices if task == "mc" else 1)
    memory = None
    if spec.get("memory", True) and device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        _timed(step, device)
        memory = (torch.cuda.max_memory_allocated(device) - before) / 2**20
    elif spec.get("memory", True):
        memory = step_peak_memory_mib(step)
    tensor_memory = step_peak_tensor_mib(step) if spec.get("memory", True) and not spec.get("compile") else None
    return {"step_s": times, "tokens_per_step": tokens, "warmup_s": warmup_s, "peak_mib": memory,
            "tensor_peak_mib": tensor_memory, "fused_adamw": fused}


def _lm_train_step(impl: str, spec: dict, device: torch.device, return_model: bool = False):
    """One LM training step (forward + backward + fused AdamW + zero_grad) of ``spec``'s config (default full),
    batch x seq (default 1 x 512) and precision (default bf16), as a closure over a freshly built model."""
    precision, config = spec.get("precision", "bf16"), spec.get("config", "full")
    torch.manual_seed(0)
    model = build_model(impl, "lm", config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=6.25e-5, weight_decay=0.01, fused=True)
    inputs = _train_batch(impl, "lm", spec.get("batch", 1), spec.get("seq", 512), 1, build_config(config), device)

    def step():
        with _autocast(precision, device):
            loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return (step, model) if return_model else step


def case_ablation(spec: dict) -> dict:
    """Our LM training step with fast paths switched, all variants in one process, interleaved step by step.

    A variant is (name, switches): a list of fast paths switched off, or a {fast path: on} dict (`set_fast_paths`).
    With spec["memory"], also the tensor peak of one step of each variant (`step_peak_tensor_mib`)."""
    device = _device(spec)
    step, model = _lm_train_step("ours", spec, device, return_model=True)

    def switch(changes):
        set_fast_paths(model, **FAST_PATHS_ON)
        set_fast_paths(model, **(changes if isinstance(changes, dict) else {name: False for name in changes}))

    times = {name: [] for name, _ in spec["variants"]}
    for round_ in range(spec["rounds"] + 1):  # round 0: warm-up
        for name, changes in spec["variants"]:
            switch(changes)
            elapsed = _timed(step, device)
            if round_:
                times[name].append(elapsed)
    memory = {}
    if spec.get("memory"):
        for name, changes in spec["variants"]:
            switch(changes)
            memory[name] = step_peak_tensor_mib(step)
    set_fast_paths(model, **FAST_PATHS_ON)
    return {"step_s": times, "tokens_per_step": spec["batch"] * spec["seq"], "tensor_peak_mib": memory}


def build_config(config_name: str):
    from gpt1_hf import GPT1Config

    return GPT1Config(**CONFIGS[config_name])


def sst2_sentences(split: str = "dev", limit: int | None = None) -> list[str]:
    path = SST2_DIR / f"{split}.tsv"
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f][1:]
    sentences = [r[0] for r in rows if r and r[0].strip()]
    return sentences[:limit] if limit else sentences


def gpt1_tokenizer():
    """GPT1Tokenizer on GPT-1's BPE files, or None when it (or the files) is not available."""
    try:
        from gpt1_hf.tokenization_gpt1 import GPT1Tokenizer

        return GPT1Tokenizer(str(BPE_DIR / "encoder_bpe_40000.json"), str(BPE_DIR / "vocab_40000.bpe"))
    except Exception:  # noqa: BLE001 - any failure means: fall back to synthetic lengths
        return None


def encoded_sentences(sentences: list[str]) -> tuple[list[list[int]], str]:
    """[_start_] + BPE ids + [_classify_] per sentence; synthetic ids of the same word count when no tokenizer."""
    tok = gpt1_tokenizer()
    if tok is not None:
        return tok(sentences)["input_ids"], "GPT1Tokenizer"
    g = torch.Generator().manual_seed(0)
    out = [[40478] + torch.randint(0, 40478, (max(1, round(1.2 * len(s.split()))),), generator=g).tolist() + [40480]
           for s in sentences]
    return out, "synthetic ids (1.2 x word count; GPT1Tokenizer unavailable)"


def _pad(seqs: list[list[int]], pad_id: int, length: int | None = None):
    length = length or max(len(s) for s in seqs)
    ids = torch.full((len(seqs), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), length), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return ids, mask


def case_classify(spec: dict) -> dict:
    impl, precision, batch_size, device = spec["impl"], spec["precision"], spec["batch"], _device(spec)
    sentences = sst2_sentences("dev", spec.get("limit"))
    source = "SST-2 dev"
    if not sentences:
        sentences, source = ["a synthetic sentence of about twenty words " * 3] * 256, "synthetic"
    seqs, tokenizer = encoded_sentences(sentences)
    model = build_model(impl, "clf", spec["config"]).to(device).eval()
    batches = [tuple(t.to(device) for t in _pad(seqs[i : i + batch_size], 40481))
               for i in range(0, len(seqs), batch_size)]

    def run():
        with torch.inference_mode(), _autocast(precision, device):
            for ids, mask in batches:
                model(input_ids=ids, attention_mask=mask)

    run()
    times = [_timed(run, device) for _ in range(spec.get("reps", 3))]
    lengths = [len(s) for s in seqs]
    return {"epoch_s": times, "examples": len(seqs), "mean_len": sum(lengths) / len(lengths),
            "source": source, "tokenizer": tokenizer}


def case_generate(spec: dict) -> dict:
    impl, precision, new, device = spec["impl"], spec["precision"], spec["new_tokens"], _device(spec)
    model = build_model(impl, "lm", spec["config"]).to(device).eval()
    if spec.get("fast_paths_off"):
        set_fast_paths(model, **{name: False for name in spec["fast_paths_off"]})
    prompt = torch.randint(0, 40478, (1, spec["prompt"]), generator=torch.Generator().manual_seed(1)).to(device)
    kwargs = dict(max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=40481)
    if impl == "ours":
        kwargs["use_cache"] = True

    result = {}

    def run():
        with torch.inference_mode(), _autocast(precision, device):
            result["out"] = model.generate(prompt, **kwargs)

    run() if spec.get("warmup", True) else None
    times = [_timed(run, device) for _ in range(spec.get("reps", 3))]
    out = result["out"].cpu()
    return {"gen_s": times, "new_tokens": new, "tokens": out[0, spec["prompt"] :].tolist()}


def case_finetune(spec: dict) -> dict:
    """One epoch over an SST-2 training subsample with one batching scheme (``precision``: bf16 autocast by default,
    or fp32; fused AdamW)."""
    mode, n, batch_size, device = spec["mode"], spec["examples"], spec["batch"], _device(spec)
    notes = []
    try:
        from gpt1_hf.data import GPT1Collator, LengthGroupedSampler, encode_dataset, load_task_split

        tok = gpt1_tokenizer()
        if tok is None:
            raise ImportError("GPT1Tokenizer unavailable")
        full = load_task_split("sst2", "train", data_dir=SST2_DIR)
        longest = max(len(x) for x in tok(list(full["text_a"]))["input_ids"])  # pad-to-max: the longest training example
        subset = load_task_split("sst2", "train", data_dir=SST2_DIR, max_examples=n, seed=0)
        encoded, _ = encode_dataset(subset, "sst2", tok, max_length=512)
        features = [{"input_ids": e["input_ids"], "labels": e["labels"]} for e in encoded]
        lengths = list(encoded["length"])
        pad_id = tok.pad_token_id
        dynamic, padded = GPT1Collator(pad_id), GPT1Collator(pad_id, pad_to_max_length=longest)
        grouped_order = list(iter(LengthGroupedSampler(lengths, batch_size=batch_size, seed=0)))
        notes.append("gpt1_hf.data: load_task_split, encode_dataset, GPT1Collator, LengthGroupedSampler; SST-2 from "
                     + ("the package's 5,000-example sample" if SST2_DIR.is_relative_to(BUNDLED_DIR) else str(SST2_DIR)))
    except Exception as e:  # noqa: BLE001 - gpt1_hf.data not ready: minimal padding code of our own
        sentences = sst2_sentences("train")
        labels = [0] * len(sentences)
        seqs, _ = encoded_sentences(sentences)
        longest = max(len(s) for s in seqs)
        g = torch.Generator().manual_seed(0)
        chosen = torch.randperm(len(seqs), generator=g)[:n].tolist()
        features = [{"input_ids": seqs[i], "labels": labels[i]} for i in chosen]
        lengths = [len(f["input_ids"]) for f in features]
        pad_id = 40481

        def dynamic(batch, length=None):
            ids, mask = _pad([f["input_ids"] for f in batch], pad_id, length)
            return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([f["labels"] for f in batch])}

        def padded(batch):
            return dynamic(batch, longest)

        order = sorted(range(len(features)), key=lambda i: -lengths[i])
        grouped_order = [i for k in range(0, len(order), batch_size) for i in order[k : k + batch_size]]
        notes.append(f"own minimal padding code (gpt1_hf.data unavailable: {e})")
    random_order = torch.randperm(len(features), generator=torch.Generator().manual_seed(0)).tolist()
    order, collate = {"grouped": (grouped_order, dynamic), "random_dynamic": (random_order, dynamic),
                      "pad_to_max": (random_order, padded)}[mode]
    batches = [collate([features[i] for i in order[k : k + batch_size]]) for k in range(0, len(order), batch_size)]
    batches = [{k: v.to(device) for k, v in b.items()} for b in batches]

    torch.manual_seed(0)
    model = build_model("ours", "clf", spec["config"]).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=6.25e-5, weight_decay=0.01, fused=True)

    def train_step(b):
        with _autocast(spec.get("precision", "bf16"), device):
            loss = model(**b).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    train_step(batches[0])  # warm-up (not timed)
    epoch_s = _timed(lambda: [train_step(b) for b in batches], device)
    real = sum(lengths)
    padded_tokens = sum(int(b["input_ids"].numel()) for b in batches)
    return {"epoch_s": epoch_s, "examples": len(features), "batches": len(batches), "longest": longest,
            "padded_tokens": padded_tokens, "real_tokens": real, "notes": notes}


def case_tokenizer(spec: dict) -> dict:
    path = REPO / "scripts" / "tokenizer_agreement.py"
    if not path.exists():
        return {"missing": "scripts/tokenizer_agreement.py does not exist yet"}
    if not DATA_DIR.is_dir():
        return {"missing": f"the tokenizer rows need real sentences of 8 sources: {DATA_DIR} does not exist (set "
                           "GPT1_DATA_DIR to a folder holding the GLUE tasks, SNLI and the novels)"}
    module_spec = importlib.util.spec_from_file_location("tokenizer_agreement", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    result = module.measure(per_source=spec["per_source"], repeats=spec["repeats"], data_dir=DATA_DIR,
                            bpe_dir=BPE_DIR if BPE_DIR.exists() else module.BPE_DIR, examples=0)
    return {k: result[k] for k in ("n_sentences", "sources", "gpt1_agreement", "openai_agreement", "throughput",
                                   "speedup_vs_oracle")}


PROFILE_GROUPS = (  # (group, substrings of aten op names), first match wins; the rest is "other"
    ("matmul (mm/addmm/bmm/linear)", ("mm", "matmul", "linear", "mkldnn", "baddbmm")),
    ("softmax / log-softmax / cross-entropy", ("softmax", "nll_loss", "cross_entropy", "logsumexp")),
    ("GELU", ("gelu",)),
    ("dropout (random numbers, masks)", ("dropout", "bernoulli", "random_", "uniform", "ge", "rand")),
    ("layer norm", ("layer_norm",)),
    ("copies / dtype casts", ("copy_", "_to_copy", "clone", "contiguous", "cat", "stack", "fill_", "zero_")),
    ("fused AdamW", ("adam",)),
    ("elementwise (mul/add/div/where/...)", ("mul", "add", "div", "sub", "where", "masked_fill", "sum", "neg", "exp",
                                             "tanh", "pow", "sqrt", "max", "scatter", "gather")),
)


def case_profile(spec: dict) -> dict:
    """torch.profiler of one LM training step (after warm-up): top aten ops by self CPU time, and their grouping."""
    from torch.profiler import ProfilerActivity, profile

    device = _device(spec)
    step = _lm_train_step(spec.get("impl", "ours"), spec, device)

    for _ in range(spec.get("warmup", 2)):
        step()
    plain = [_timed(step, device) for _ in range(spec.get("steps", 2))]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        wall = _timed(step, device)
    events = [e for e in prof.key_averages() if e.key.startswith("aten::") or "adam" in e.key.lower()]
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[: spec.get("top", 20)]
    groups: dict[str, float] = {}
    for e in prof.key_averages():
        name = e.key.lower().removeprefix("aten::")
        group = "other (python, autograd, small ops)"
        for label, keys in PROFILE_GROUPS:
            if any(name == k or name.startswith(k) or name.endswith(k) or f"_{k}" in name or f"{k}_" in name
                   for k in keys):
                group = label
                break
        groups[group] = groups.get(group, 0.0) + e.self_cpu_time_total
    return {"plain_step_s": plain, "profiled_step_s": wall, "self_cpu_total_us": total,
            "top": [{"op": e.key, "calls": e.count, "self_cpu_us": e.self_cpu_time_total} for e in top],
            "groups_us": dict(sorted(groups.items(), key=lambda kv: -kv[1]))}


def case_decode(spec: dict) -> dict:
    """What bounds batch-1 fp32 generation: the time of one pass that only reads every weight (a matrix-vector product
    with each weight matrix of the model, the LM head included), the memory bandwidth that implies, our per-token time
    with the KV cache, and the baseline's per-token time without one (a forward over the whole sequence, last logits
    only vs all logits) at several lengths."""
    device = _device(spec)
    torch.manual_seed(0)
    model = build_model("ours", "lm", "full").to(device).eval()
    weights = [p for p in model.parameters() if p.dim() == 2]  # token embedding (= LM head), position embedding, linears
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    vectors = {p.shape[1]: torch.randn(1, p.shape[1], device=device) for p in weights}

    def matvec_pass():
        with torch.inference_mode():
            for p in weights:
                vectors[p.shape[1]] @ p.t()

    def sum_pass():
        with torch.inference_mode():
            for p in model.parameters():
                p.sum()

    reps = spec.get("reps", 7)
    for _ in range(2):
        matvec_pass()
    matvec = statistics.median(_timed(matvec_pass, device) for _ in range(reps))
    sum_s = statistics.median(_timed(sum_pass, device) for _ in range(reps))
    big = torch.randn(2**27, device=device)  # 512 MiB, larger than any cache
    out = torch.empty_like(big)
    copy_s = statistics.median(_timed(lambda: out.copy_(big), device) for _ in range(reps))
    # ours: one cached decoding step (1 new token after a prompt), timed directly on the model
    prompt = torch.randint(0, 40478, (1, spec.get("prompt", 32)), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        past = model(prompt, use_cache=True).cache
        token = prompt[:, -1:]
        decode = []
        for _ in range(reps + 1):
            start = time.perf_counter()
            model(token, cache=past, use_cache=True)
            decode.append(time.perf_counter() - start)
            past.crop(-1)  # drop the token just added
    base = build_model("baseline", "lm", "full").to(device).eval()
    no_cache = {}
    with torch.inference_mode():
        for length in spec.get("lengths", [32, 96, 160]):
            ids = torch.randint(0, 40478, (1, length), generator=torch.Generator().manual_seed(2))
            base(ids)
            no_cache[length] = statistics.median(_timed(lambda ids=ids: base(ids), device) for _ in range(3))
    return {"weight_bytes": weight_bytes, "matvec_pass_s": matvec, "sum_pass_s": sum_s,
            "copy_gbs": 2 * big.numel() * 4 / copy_s / 1e9, "decode_step_s": statistics.median(decode[1:]),
            "baseline_forward_s": no_cache}


CASES = {"peak": case_peak, "profile": case_profile, "decode": case_decode, "train": case_train, "ablation": case_ablation, "classify": case_classify, "generate": case_generate,
         "finetune": case_finetune, "tokenizer": case_tokenizer}


def run_case(spec: dict, timeout: float = 1800, env: dict | None = None) -> dict:
    """Run one case in a fresh Python process; returns its result dict (with "error" on failure)."""
    cmd = [sys.executable, "-m", "gpt1_hf.benchmarking", json.dumps(spec)]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO,
                              env={**os.environ, "TOKENIZERS_PARALLELISM": "false", **(env or {})})
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s", "spec": spec}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            result = json.loads(line[len(RESULT_PREFIX) :])
            result["process_s"] = time.perf_counter() - start
            result["spec"] = spec
            return result
    return {"error": (proc.stderr or proc.stdout)[-2000:], "spec": spec}


def main(argv=None) -> int:
    spec = json.loads((argv or sys.argv[1:])[0])
    keep_freed_memory()  # both models run as the training CLIs run them (--keep_freed_memory)
    result = CASES[spec["case"]](spec)
    result["load_avg"] = load_average()
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
