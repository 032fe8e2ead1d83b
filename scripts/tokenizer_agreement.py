"""Agreement and throughput of GPT1Tokenizer against GPT-1's original text pipeline (the test oracle).

    python scripts/tokenizer_agreement.py --data_dir ../shared/data --per_source 2000 [--race] [--repeats 5]

For N real sentences per source (default: SST-2, CoLA, STS-B, RTE, SNLI, MNLI, QNLI and lines of the public-domain
novels; --race adds RACE articles/questions/options and Story Cloze sentences), reports

- agreement: the fraction of sentences whose ids (no special tokens) are identical to the original pipeline's
  (ftfy + text_standardize + spacy.blank("en") + lowercase + GPT-1's BPE, tests/oracle_tokenizer.py), for
  GPT1Tokenizer and for transformers' OpenAIGPTTokenizer built from the same BPE files;
- throughput for batch encoding of the whole sample: the oracle (its BPE cache warmed up first),
  `GPT1Tokenizer(texts)`, `GPT1Tokenizer.encode_batch_ids(texts)`, the Rust backend's `encode_batch` and
  `OpenAIGPTTokenizer(texts)`; best of --repeats runs, interleaved; in sentences per wall-clock second (the Rust
  batch encoders use every core) and per CPU-second of the process (all threads counted: robust to other jobs on
  the machine, and the per-core cost).

`measure(...)` returns the numbers as a dict (reused by the benchmark script); `main()` prints a markdown table.
Needs ftfy and spaCy (for the oracle).
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data"
BPE_DIR = REPO / "tests" / "fixtures" / "gpt1_bpe"
DEFAULT_SOURCES = ["sst2", "cola", "stsb", "rte", "snli", "mnli", "qnli", "novels"]
EXTRA_SOURCES = ["race", "story_cloze"]


def _tsv(path: Path, columns) -> list[str]:
    csv.field_size_limit(sys.maxsize)
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    header, out = rows[0], []
    for row in rows[1:]:
        for column in columns:
            index = column if isinstance(column, int) else header.index(column) if column in header else None
            if index is not None and index < len(row):
                out.append(row[index])
    return out


def _jsonl(path: Path, keys) -> list[str]:
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            for key in keys:
                value = record.get(key)
                values = value if isinstance(value, list) else [value]
                for v in values:
                    if isinstance(v, str):
                        out.append(v)
                    elif isinstance(v, list):
                        out.extend(x for x in v if isinstance(x, str))
    return out


def load_source(name: str, data_dir: str | os.PathLike = DEFAULT_DATA_DIR) -> list[str]:
    """All texts of one source under `data_dir` (GLUE TSVs are read with quoting disabled, as the GLUE loaders)."""
    d = Path(data_dir)
    if name == "sst2":
        texts = _tsv(d / "sst2" / "train.tsv", ["sentence"]) + _tsv(d / "sst2" / "dev.tsv", ["sentence"])
    elif name == "cola":
        with open(d / "cola" / "train.tsv", encoding="utf-8", newline="") as f:
            texts = [row[3] for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if len(row) > 3]
    elif name == "stsb":
        texts = _tsv(d / "stsb" / "train.tsv", ["sentence1", "sentence2"])
    elif name == "rte":
        texts = _tsv(d / "rte" / "train.tsv", ["sentence1", "sentence2"])
    elif name == "wnli":
        texts = _tsv(d / "wnli" / "train.tsv", ["sentence1", "sentence2"])
    elif name == "qnli":
        texts = _tsv(d / "qnli" / "dev.tsv", ["question", "sentence"])
        texts += _jsonl(d / "qnli" / "train_partial.jsonl", ["question", "sentence"])
    elif name in ("snli", "mnli"):
        texts = _jsonl(d / name / "train_partial.jsonl", ["premise", "hypothesis"])
    elif name == "novels":
        texts = []
        for path in sorted(glob.glob(str(d / "pretrain_corpus" / "english_novels" / "*.txt"))):
            with open(path, encoding="utf-8") as f:
                texts += [line.strip() for line in f if line.strip()]
    elif name == "race":
        texts = _jsonl(d / "race" / "dev_high.jsonl", ["article", "questions", "options"])
        texts += _jsonl(d / "race" / "dev_middle.jsonl", ["article", "questions", "options"])
    elif name == "story_cloze":
        columns = [f"InputSentence{i}" for i in range(1, 5)] + ["RandomFifthSentenceQuiz1", "RandomFifthSentenceQuiz2"]
        texts = _tsv(d / "story_cloze" / "val_spring2016.tsv", columns)
    else:
        raise ValueError(f"unknown source {name!r}")
    return [t for t in texts if t.strip()]


def sample_sentences(per_source: int, sources=DEFAULT_SOURCES, data_dir=DEFAULT_DATA_DIR, seed: int = 0):
    """[(source, text)] with `per_source` random texts of each source."""
    rng = random.Random(seed)
    sample = []
    for name in sources:
        texts = load_source(name, data_dir)
        sample += [(name, t) for t in rng.sample(texts, min(per_source, len(texts)))]
    return sample


def _timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads) of one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(
    per_source: int = 2000,
    sources=DEFAULT_SOURCES,
    data_dir: str | os.PathLike = DEFAULT_DATA_DIR,
    repeats: int = 5,
    seed: int = 0,
    bpe_dir: str | os.PathLike = BPE_DIR,
    examples: int = 5,
) -> dict:
    """Agreement (fractions) and throughputs (sentences/s) of GPT1Tokenizer, the oracle and OpenAIGPTTokenizer."""
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "tests"))
    from oracle_tokenizer import OracleTextEncoder
    from transformers import OpenAIGPTTokenizer

    from gpt1_hf.tokenization_gpt1 import GPT1Tokenizer

    vocab_file, merges_file = str(Path(bpe_dir) / "encoder_bpe_40000.json"), str(Path(bpe_dir) / "vocab_40000.bpe")
    sample = sample_sentences(per_source, sources, data_dir, seed)
    texts = [t for _, t in sample]
    ours = GPT1Tokenizer(vocab_file=vocab_file, merges_file=merges_file)
    oracle = OracleTextEncoder(vocab_file, merges_file)
    with open(vocab_file, encoding="utf-8") as f:
        vocab = json.load(f)
    with open(merges_file, encoding="utf-8") as f:
        merges = [tuple(m.split()) for m in f.read().split("\n")[1:-1]]
    openai = OpenAIGPTTokenizer(vocab=vocab, merges=merges)

    reference = oracle.encode(texts)  # also warms the oracle's BPE cache
    got = ours(texts, add_special_tokens=False)["input_ids"]
    got_openai = openai(texts, add_special_tokens=False)["input_ids"]
    per = {}
    for (source, text), ref, a, b in zip(sample, reference, got, got_openai, strict=True):
        entry = per.setdefault(source, {"n": 0, "gpt1": 0, "openai": 0, "examples": []})
        entry["n"] += 1
        entry["gpt1"] += a == ref
        entry["openai"] += b == ref
        if a != ref and len(entry["examples"]) < examples:
            entry["examples"].append(
                {"text": text, "original": oracle.tokenize(text), "gpt1": ours.convert_ids_to_tokens(a)}
            )
    n = len(texts)
    backend = ours.backend_tokenizer
    runs = {
        "oracle (ftfy + spaCy + BPE, cached)": lambda: oracle.encode(texts),
        "GPT1Tokenizer(texts)": lambda: ours(texts),
        "GPT1Tokenizer.encode_batch_ids(texts)": lambda: ours.encode_batch_ids(texts),
        "Rust backend encode_batch (no Python pre-pass)": lambda: backend.encode_batch(texts),
        "OpenAIGPTTokenizer(texts)": lambda: openai(texts),
    }
    rates: dict[str, float] = {}
    cpu_rates: dict[str, float] = {}
    for _ in range(repeats):  # interleaved, best of `repeats`
        for name, fn in runs.items():
            wall, cpu = _timed(fn)
            rates[name] = max(rates.get(name, 0.0), n / wall)
            cpu_rates[name] = max(cpu_rates.get(name, 0.0), n / max(cpu, 1e-9))
    oracle_rate = rates["oracle (ftfy + spaCy + BPE, cached)"]
    oracle_cpu_rate = cpu_rates["oracle (ftfy + spaCy + BPE, cached)"]
    return {
        "n_sentences": n,
        "sources": list(sources),
        "per_source": {
            s: {"n": e["n"], "gpt1_agreement": e["gpt1"] / e["n"], "openai_agreement": e["openai"] / e["n"]}
            for s, e in per.items()
        },
        "gpt1_agreement": sum(e["gpt1"] for e in per.values()) / n,
        "openai_agreement": sum(e["openai"] for e in per.values()) / n,
        "throughput": rates,
        "speedup_vs_oracle": {k: v / oracle_rate for k, v in rates.items()},
        "throughput_per_cpu_second": cpu_rates,
        "cpu_speedup_vs_oracle": {k: v / oracle_cpu_rate for k, v in cpu_rates.items()},
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "disagreements": {s: e["examples"] for s, e in per.items() if e["examples"]},
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}",
    }


def markdown(result: dict) -> str:
    lines = [
        f"Sentences: {result['n_sentences']} ({', '.join(result['sources'])}); machine: {result['machine']}",
        "",
        "| source | n | GPT1Tokenizer identical ids | OpenAIGPTTokenizer identical ids |",
        "|---|---:|---:|---:|",
    ]
    for source, e in result["per_source"].items():
        lines.append(f"| {source} | {e['n']} | {100 * e['gpt1_agreement']:.2f}% | {100 * e['openai_agreement']:.2f}% |")
    lines.append(
        f"| **all** | {result['n_sentences']} | **{100 * result['gpt1_agreement']:.2f}%** | "
        f"{100 * result['openai_agreement']:.2f}% |"
    )
    load = result.get("load_average")
    lines += [
        "",
        f"Load average during the timings: {', '.join(f'{x:.2f}' for x in load) if load else 'n/a'}",
        "",
        "| batch encoding | sentences/s (wall) | vs oracle | sentences per CPU-second | vs oracle |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, rate in result["throughput"].items():
        cpu = result["throughput_per_cpu_second"][name]
        lines.append(
            f"| {name} | {rate:,.0f} | {result['speedup_vs_oracle'][name]:.1f}x | {cpu:,.0f} | "
            f"{result['cpu_speedup_vs_oracle'][name]:.1f}x |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default=str(DEFAULT_DATA_DIR))
    parser.add_argument("--per_source", type=int, default=2000)
    parser.add_argument("--sources", default=",".join(DEFAULT_SOURCES))
    parser.add_argument("--race", action="store_true", help="also RACE and Story Cloze (measurement only)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--examples", type=int, default=3, help="disagreements to print per source")
    parser.add_argument("--json", default=None, help="also write the result to this JSON file")
    args = parser.parse_args(argv)
    sources = [s for s in args.sources.split(",") if s] + (EXTRA_SOURCES if args.race else [])
    result = measure(args.per_source, sources, args.data_dir, args.repeats, args.seed, examples=args.examples)
    print(markdown(result))
    if args.examples:
        print("\nDisagreements (original tokens vs GPT1Tokenizer tokens):")
        for source, items in result["disagreements"].items():
            for item in items:
                print(f"- [{source}] {item['text'][:200]!r}")
                print(f"    original: {item['original'][:40]}")
                print(f"    gpt1:     {item['gpt1'][:40]}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1, ensure_ascii=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
