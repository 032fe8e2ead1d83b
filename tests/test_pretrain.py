"""Pretraining (gpt1_hf.pretraining, scripts/pretrain.py) on a tiny synthetic corpus."""

import json
import random
from pathlib import Path

import pytest
import torch
from conftest import assert_help_lists_every_field, load_script

from gpt1_hf import GPT1LMHeadModel
from gpt1_hf.arguments import PretrainArguments, parse_cli
from gpt1_hf.corpus import (
    TRAINED_TOKENIZER_DIR,
    build_blocks,
    load_corpus,
    main_process_first,
    obtain_tokenizer,
    tokenizer_fingerprint,
)
from gpt1_hf.pretraining import pretrain

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "tasks"

NAMES = ["Ada", "Ben", "Cleo", "Dan", "Eve", "Finn"]
VERBS = ["found", "lost", "painted", "opened", "cleaned"]
THINGS = ["a lamp", "the map", "a red boat", "the old clock", "a small key"]
PLACES = ["near the lake", "in the garden", "at the school", "by the farm"]


pytestmark = pytest.mark.usefixtures("one_thread")


def synthetic_text(n_sentences, seed):
    rng = random.Random(seed)
    return " ".join(f"{rng.choice(NAMES)} {rng.choice(VERBS)} {rng.choice(THINGS)} {rng.choice(PLACES)}."
                    for _ in range(n_sentences))


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    """Three 'novels' written like shared/data/pretrain_corpus: UTF-8 BOM and CRLF line ends."""
    root = tmp_path_factory.mktemp("corpus")
    for i in range(3):
        paragraphs = [synthetic_text(6, seed=10 * i + j) for j in range(25)]
        (root / f"book_{i}.txt").write_bytes(b"\xef\xbb\xbf" + "\r\n".join(paragraphs).encode("utf-8") + b"\r\n")
    return root


def base_args(tmp_path, corpus_dir, **kw):
    args = dict(train_files=[str(corpus_dir)], train_tokenizer=True, vocab_size=120, block_size=32, n_embd=32,
                n_layer=2, n_head=4, global_batch_size=8, learning_rate=1e-2, max_train_steps=40, eval_steps=20,
                validation_split_percentage=10.0, output_dir=str(tmp_path / "out"), cache_dir=str(tmp_path / "cache"),
                disable_tqdm=True, plot=False, seed=0)
    args.update(kw)
    return PretrainArguments(**args)


def test_corpus_reading_strips_bom_and_crlf(corpus_dir, tmp_path):
    args = PretrainArguments(cache_dir=str(tmp_path / "cache"))
    docs = load_corpus([str(corpus_dir)], args)
    assert len(docs) == 3
    text = docs[0]["text"]
    assert not text.startswith("\ufeff") and "\r" not in text and text.count("\n") == 25
    lines = load_corpus([str(corpus_dir)], PretrainArguments(document_per="line", cache_dir=str(tmp_path / "c2")))
    assert len(lines) == 75
    jl = tmp_path / "docs.jsonl"
    jl.write_text("\n".join(json.dumps({"body": synthetic_text(3, s)}) for s in range(4)) + "\n")
    docs = load_corpus([str(jl)], PretrainArguments(text_column="body", cache_dir=str(tmp_path / "c3")))
    assert len(docs) == 4 and docs[0]["text"].endswith(".")


def test_blocks_are_contiguous_token_runs(corpus_dir, tmp_path):
    from gpt1_hf.tokenization_gpt1 import GPT1Tokenizer

    args = PretrainArguments(cache_dir=str(tmp_path / "cache"))
    docs = load_corpus([str(corpus_dir)], args)
    tok = GPT1Tokenizer(vocab={"<unk>": 0, "a</w>": 1}, merges=[]).train_new_from_iterator([docs["text"]], 150)
    blocks, n_tokens = build_blocks(docs, tok, 16, segment_chars=200)
    stream = [t for text in docs["text"] for t in tok(text, add_special_tokens=False)["input_ids"]]
    assert n_tokens == len(stream)
    flat = [t for b in blocks["input_ids"] for t in b.tolist()]
    assert all(len(b) == 16 for b in blocks["input_ids"])
    assert flat == stream[: len(flat)] and len(stream) - len(flat) < 16


def test_tiny_pretraining_run_and_output_folder(corpus_dir, tmp_path):
    results = pretrain(base_args(tmp_path, corpus_dir, plot=True))
    start, end = results["initial_heldout"]["loss"], results["final_heldout"]["loss"]
    # from ln(vocab ~113) = 4.7 to well below the corpus's unigram entropy (3.1 nats): it learned context, not only
    # token frequencies (3e-3 stopped at ~3.2 on one CPU, too close to call)
    assert start > 4.0 and end < 2.6, (start, end)
    assert results["final_heldout"]["perplexity"] == pytest.approx(torch.tensor(end).exp().item(), rel=1e-6)
    assert [h["step"] for h in results["heldout_history"]] == [0, 20, 40]
    # 40 updates of 8 blocks of 32 tokens (the last micro-batch of an epoch may be smaller)
    assert results["global_step"] == 40 and results["tokens_seen"] % 32 == 0
    assert 40 * 7 * 32 < results["tokens_seen"] <= 40 * 8 * 32
    vocab = results["tokenizer"]["vocab_size"]  # <= 120 BPE entries (a tiny corpus runs out of merges) + 4 specials
    assert results["tokenizer"]["trained"] and 60 < vocab <= 124
    assert results["train_tokens_per_s"] > 0 and results["corpus"]["documents"] == 3
    assert results["train_tokens_per_min"] == pytest.approx(60 * results["train_tokens_per_s"])
    assert results["corpus"]["block_size"] == 32 and results["batch"]["tokens_per_update"] == 8 * 32
    # the cosine schedule with a short-run warmup (1% of 40 updates -> 1)
    assert results["warmup_steps"] == 1 and results["log_history"][-1]["learning_rate"] < 1e-4
    out = tmp_path / "out"
    assert (out / "heldout_perplexity.png").stat().st_size > 1000
    saved = json.loads((out / "results.json").read_text())
    assert saved["final_heldout"] == results["final_heldout"]
    # a GPT1LMHeadModel + tokenizer folder ...
    model = GPT1LMHeadModel.from_pretrained(out)
    assert model.config.vocab_size == vocab and model.config.n_positions == 32
    # ... that scripts/finetune.py takes directly
    from gpt1_hf.finetuning import finetune

    ft = finetune(task_name="sst2", model_name_or_path=str(out), data_dir=str(FIXTURES / "sst2"),
                  output_dir=str(tmp_path / "ft"), num_train_epochs=1, global_batch_size=4, disable_tqdm=True,
                  predict_splits=[])
    assert ft["model"]["init"] == "pretrained" and "accuracy" in ft["metrics"]


def test_pretraining_resume_equivalence(corpus_dir, tmp_path, capsys):
    """Killed (here: stopped by max_time after one update) and resumed == uninterrupted. One tokenizer for both runs
    (BPE training itself is not deterministic across runs; a resumed run reuses the checkpoint's tokenizer)."""
    from gpt1_hf.tokenization_gpt1 import GPT1Tokenizer

    docs = load_corpus([str(corpus_dir)], PretrainArguments(cache_dir=str(tmp_path / "c")))
    tok = GPT1Tokenizer(vocab={"<unk>": 0, "a</w>": 1}, merges=[]).train_new_from_iterator([docs["text"]], 120)
    tok.save_pretrained(tmp_path / "tok")
    kw = dict(max_train_steps=12, eval_steps=6, train_tokenizer=False, tokenizer_name=str(tmp_path / "tok"))
    ref = pretrain(base_args(tmp_path / "ref", corpus_dir, **kw))
    first = pretrain(base_args(tmp_path / "run", corpus_dir, max_time=0.0, **kw))
    assert first["stop_reason"] == "max_time" and first["global_step"] == 1
    capsys.readouterr()
    resumed = pretrain(base_args(tmp_path / "run", corpus_dir, resume_from_checkpoint="latest", **kw))
    assert resumed["global_step"] == 12
    ckpt = tmp_path / "run" / "out" / "checkpoints" / "step-00000001"
    assert f"resumed from {ckpt} at step 1" in capsys.readouterr().out
    assert resumed["final_heldout"] == ref["final_heldout"]
    assert resumed["heldout_history"] == ref["heldout_history"]
    a = GPT1LMHeadModel.from_pretrained(tmp_path / "ref" / "out").state_dict()
    b = GPT1LMHeadModel.from_pretrained(tmp_path / "run" / "out").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_max_train_tokens_sizes_the_schedule(corpus_dir, tmp_path):
    results = pretrain(base_args(tmp_path, corpus_dir, max_train_steps=None, max_train_tokens=8 * 32 * 5,
                                 eval_steps=None))
    assert results["total_steps"] == 5 and results["global_step"] == 5
    assert results["tokens_seen"] == 8 * 32 * 5


def test_bad_corpora(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="corpus is empty"):
        pretrain(base_args(tmp_path, empty))
    (empty / "blank.txt").write_text("\n  \n")
    with pytest.raises(ValueError, match="corpus is empty"):
        pretrain(base_args(tmp_path, empty))
    short = tmp_path / "short"
    short.mkdir()
    (short / "a.txt").write_text("Ada found a lamp near the lake.\n")
    with pytest.raises(ValueError, match="shorter than one block of --block_size 32"):
        pretrain(base_args(tmp_path, short, train_tokenizer=False, tokenizer_name=None))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        pretrain(base_args(tmp_path, tmp_path / "missing"))
    # a 0-byte (or blank) .jsonl: the same clear error, naming the file (datasets alone raises a bare StopIteration)
    js = tmp_path / "js"
    js.mkdir()
    (js / "docs.jsonl").write_bytes(b"")
    with pytest.raises(ValueError, match=r"corpus is empty: .*docs\.jsonl is an empty file"):
        pretrain(base_args(tmp_path, js))
    (js / "docs.jsonl").write_text("\n \n")
    with pytest.raises(ValueError, match=r"corpus is empty: .*docs\.jsonl"):
        load_corpus([str(js / "docs.jsonl")], PretrainArguments(cache_dir=str(tmp_path / "cj")))
    # ... and one left out when other files hold documents
    (js / "more.jsonl").write_text(json.dumps({"text": "Ada found a lamp."}) + "\n")
    assert load_corpus([str(js)], PretrainArguments(cache_dir=str(tmp_path / "cj")))["text"] == ["Ada found a lamp."]
    with pytest.raises(ValueError, match="no corpus"):
        pretrain(PretrainArguments(output_dir=str(tmp_path / "o")))
    assert not (tmp_path / "out" / "results.json").exists()


def test_cli(corpus_dir, tmp_path, capsys):
    cli = load_script("pretrain")
    assert cli.main(["--train_files", str(corpus_dir), "--train_tokenizer", "--vocab_size", "120", "--block_size",
                     "32", "--n_embd", "32", "--n_layer", "1", "--n_head", "2", "--global_batch_size", "8",
                     "--max_train_steps", "3", "--output_dir", str(tmp_path / "o"), "--cache_dir", str(tmp_path / "c"),
                     "--disable_tqdm", "--no_plot"]) == 0
    out = capsys.readouterr().out
    assert "held-out loss" in out and "tokens/s" in out
    assert (tmp_path / "o" / "model.safetensors").is_file() and (tmp_path / "o" / "tokenizer.json").is_file()
    assert not (tmp_path / "o" / "heldout_perplexity.png").exists()  # --no_plot


def test_cli_accepts_run_clm_no_trainer_flags(tmp_path):
    """The flags of transformers' run_clm_no_trainer.py, read into PretrainArguments; old names are refused."""
    args = parse_cli(PretrainArguments, [
        "--dataset_name", "some/corpus", "--dataset_config_name", "raw", "--train_files", "a.txt", "b.txt",
        "--validation_files", "c.txt", "--validation_split_percentage", "5", "--model_name_or_path", "m",
        "--tokenizer_name", "t", "--block_size", "128", "--preprocessing_num_workers", "2",
        "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "8", "--gradient_accumulation_steps",
        "2", "--learning_rate", "1e-4", "--weight_decay", "0.1", "--num_train_epochs", "3", "--max_train_steps", "50",
        "--lr_scheduler_type", "linear", "--num_warmup_steps", "5", "--output_dir", str(tmp_path), "--seed", "3",
        "--checkpointing_steps", "10", "--resume_from_checkpoint", "latest", "--with_tracking", "--report_to",
        "tensorboard", "--overwrite_output_dir", "--no_plot"]).resolved()
    assert (args.dataset_name, args.dataset_config_name, args.train_files, args.validation_files) == (
        "some/corpus", "raw", ["a.txt", "b.txt"], ["c.txt"])
    assert (args.validation_split_percentage, args.block_size, args.preprocessing_num_workers) == (5.0, 128, 2)
    assert (args.per_device_train_batch_size, args.per_device_eval_batch_size, args.gradient_accumulation_steps) == (
        4, 8, 2)
    assert args.global_batch_size is None  # the layout given in full defines the batch, not the paper's 64
    assert (args.learning_rate, args.weight_decay, args.num_train_epochs, args.max_train_steps) == (1e-4, 0.1, 3, 50)
    assert (args.lr_scheduler_type, args.num_warmup_steps, args.seed, args.checkpointing_steps) == (
        "linear", 5, 3, "10")
    assert args.with_tracking and args.report_to == "tensorboard" and args.overwrite_output_dir and not args.plot
    for old in (["--n_ctx", "32"], ["--max_steps", "3"], ["--validation_ratio", "0.1"], ["--num_proc", "2"],
                ["--no_progress_bar"], ["--save_every_steps", "5"], ["--eval_every_steps", "5"]):
        with pytest.raises((SystemExit, ValueError)) as refused:
            parse_cli(PretrainArguments, old)
        if refused.type is SystemExit:
            assert refused.value.code == 2, old
        else:
            assert old[0] in str(refused.value), old


def test_help_lists_every_option_with_its_help(capsys):
    assert_help_lists_every_field("pretrain", PretrainArguments, capsys)


def test_checkpointing_steps_has_a_default(tmp_path):
    """A killed run loses at most 1000 updates with default flags (not up to an epoch)."""
    assert parse_cli(PretrainArguments, []).resolved().checkpointing_steps == "1000"
    assert PretrainArguments().resolved().checkpointing_steps == "1000"
    assert PretrainArguments(checkpointing_steps="epoch").resolved().checkpointing_steps == "epoch"


class _FakeState:
    """Stands for the accelerate state of one process among several (no process group needed)."""

    def __init__(self, is_main_process):
        self.is_main_process = is_main_process
        self.barriers = 0

    def wait_for_everyone(self):
        self.barriers += 1


def test_trained_tokenizer_comes_from_the_main_process(corpus_dir, tmp_path, monkeypatch):
    """--train_tokenizer with several processes: only the main one trains (BPE training is not deterministic); it
    saves the tokenizer into the output folder and every process uses that saved tokenizer."""
    from gpt1_hf.tokenization_gpt1 import GPT1Tokenizer

    args = base_args(tmp_path, corpus_dir)
    docs = load_corpus([str(corpus_dir)], args)
    with pytest.raises(FileNotFoundError, match="trained by the main process is not there"):
        obtain_tokenizer(args, docs, _FakeState(False))
    main = obtain_tokenizer(args, docs, _FakeState(True))
    saved = tmp_path / "out" / TRAINED_TOKENIZER_DIR
    assert (saved / "tokenizer.json").is_file() and 60 < len(main) <= 124

    def no_training(*a, **k):
        raise AssertionError("a non-main process trained a tokenizer")

    monkeypatch.setattr(GPT1Tokenizer, "train_new_from_iterator", no_training)
    other = obtain_tokenizer(args, docs, _FakeState(False))
    assert other.get_vocab() == main.get_vocab()
    assert tokenizer_fingerprint(other) == tokenizer_fingerprint(main)
    text = docs[0]["text"][:500]
    assert other(text, add_special_tokens=False)["input_ids"] == main(text, add_special_tokens=False)["input_ids"]


def test_main_process_first_reaches_the_barrier_on_errors():
    main, other = _FakeState(True), _FakeState(False)
    with main_process_first(other):
        assert other.barriers == 1  # waits for the main process before running the block
    with pytest.raises(ValueError):
        with main_process_first(main):
            assert main.barriers == 0
            raise ValueError("empty corpus")
    assert main.barriers == 1  # released the others although the block failed: they do not hang


_FINGERPRINT_SCRIPT = """
import sys
from gpt1_hf.task_models import load_tokenizer
from gpt1_hf.corpus import build_blocks, load_corpus, tokenizer_fingerprint
from gpt1_hf.pretraining import PretrainArguments
tok = load_tokenizer(None, None)
docs = load_corpus([sys.argv[1]], PretrainArguments(cache_dir=sys.argv[2]))
blocks, _ = build_blocks(docs, tok, 16, segment_chars=200)
print(tokenizer_fingerprint(tok), blocks.cache_files[0]["filename"])
"""


def test_block_cache_key_is_the_same_in_every_process(tmp_path):
    """The datasets cache of the blocks is keyed by the corpus, a content hash of the tokenizer and the block
    settings: two tokenizers built the same way share it, whatever PYTHONHASHSEED (the serialised GPT-1 normalizer
    differs between hash seeds 1 and 2, and so did `datasets`' pickle hash of the tokenizer)."""
    import os
    import subprocess
    import sys

    from gpt1_hf.tokenization_gpt1 import GPT1Tokenizer

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(3):
        (corpus / f"b{i}.txt").write_text(synthetic_text(8, seed=i))
    procs = [subprocess.Popen([sys.executable, "-c", _FINGERPRINT_SCRIPT, str(corpus), str(tmp_path / f"c{seed}")],
                              env={**os.environ, "PYTHONHASHSEED": str(seed)}, cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True) for seed in (1, 2)]
    outs = [p.communicate(timeout=300)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert outs[0][0] == outs[1][0]  # the tokenizer fingerprint
    assert Path(outs[0][1]).name == Path(outs[1][1]).name  # the cache file of the blocks

    # in one process: two tokenizers built the same way (one of them used) share the cache; another one does not
    docs = load_corpus([str(corpus)], PretrainArguments(cache_dir=str(tmp_path / "c")))
    vocab = {"<unk>": 0, "a": 1, "b</w>": 2, "ab</w>": 3, "a</w>": 4}
    a, b = GPT1Tokenizer(vocab=vocab, merges=["a b</w>"]), GPT1Tokenizer(vocab=dict(vocab), merges=["a b</w>"])
    a(["ab a ab café"], add_special_tokens=False)  # fills the tokenizer's internal caches
    assert tokenizer_fingerprint(a) == tokenizer_fingerprint(b)
    c = GPT1Tokenizer(vocab={**vocab, "b": 5}, merges=["a b</w>"])
    assert tokenizer_fingerprint(c) != tokenizer_fingerprint(a)
    first, _ = build_blocks(docs, a, 4, segment_chars=50)
    second, _ = build_blocks(docs, b, 4, segment_chars=50)
    assert first.cache_files == second.cache_files
    third, _ = build_blocks(docs, b, 8, segment_chars=50)
    assert third.cache_files != first.cache_files


def test_flag_table_in_the_docs_is_current():
    """docs/pretraining.md's flag table is the one scripts/flag_table.py generates from PretrainArguments."""
    module = load_script("flag_table")
    assert module.flag_table("pretrain") in (ROOT / "docs" / "pretraining.md").read_text(encoding="utf-8"), (
        "docs/pretraining.md's flag table is out of date: run python scripts/flag_table.py pretrain --write_docs")
