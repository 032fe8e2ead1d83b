"""The pretraining corpus as `datasets`: text / jsonl files or a Hub dataset read into documents, cut into
segments at spaces, tokenized and grouped into contiguous blocks of ``block_size`` tokens with ``datasets.map``
(batched, cached on disk under explicit fingerprints that do not depend on PYTHONHASHSEED); the tokenizer of a run
(`obtain_tokenizer`: given, bundled, or trained on the corpus by the main process); `corpus_blocks`, all of it for one
run, held-out split included. The data layer of `gpt1_hf.pretraining`."""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:  # annotations only: the corpus reads the data options of pretraining
    from .arguments import PretrainArguments

logger = logging.getLogger(__name__)

__all__ = ["collect_corpus_files", "load_corpus", "build_blocks", "BlockCollator", "tokenizer_fingerprint",
           "iter_texts", "digest", "TEXT_SUFFIXES", "JSON_SUFFIXES", "TRAINED_TOKENIZER_DIR", "main_process_first",
           "obtain_tokenizer", "corpus_blocks"]

TEXT_SUFFIXES = (".txt", ".text")
JSON_SUFFIXES = (".jsonl", ".json")
#: Bumped when the tokenization / block-building code changes in a way that changes its output (cache key).
_BLOCKS_VERSION = "1"


def collect_corpus_files(paths: list[str] | tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(text files, jsonl files) from files and folders (searched recursively for *.txt/*.text and *.jsonl/*.json)."""
    text, js = [], []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found = sorted(f for f in path.rglob("*") if f.is_file() and not f.name.startswith("."))
            text += [str(f) for f in found if f.suffix.lower() in TEXT_SUFFIXES]
            js += [str(f) for f in found if f.suffix.lower() in JSON_SUFFIXES]
        elif path.is_file():
            (js if path.suffix.lower() in JSON_SUFFIXES else text).append(str(path))
        else:
            raise FileNotFoundError(f"corpus path {p} does not exist")
    return text, js


def _is_blank_file(path: str, chunk: int = 1 << 20) -> bool:
    """Whether a file holds only whitespace (0 bytes included); reads only until the first non-blank byte."""
    with open(path, "rb") as f:
        while True:
            data = f.read(chunk)
            if not data:
                return True
            if data.strip():
                return False


def load_corpus(files: list[str], args: PretrainArguments, split_name: str = "train"):
    """A `datasets.Dataset` with one ``text`` column (one row per document), from local files or the Hub."""
    import datasets

    if files:
        text_files, json_files = collect_corpus_files(files)
        if not text_files and not json_files:
            raise ValueError(f"the corpus is empty: no .txt/.jsonl files under {files}")
        # `datasets`' json builder fails on a blank file (0 bytes: a bare StopIteration; whitespace only: "corresponds
        # to no data"): such files hold no document, so they are left out, and a corpus of only them is empty.
        blank = [f for f in json_files if _is_blank_file(f)]
        if blank:
            json_files = [f for f in json_files if f not in blank]
            if not text_files and not json_files:
                raise ValueError(f"the {split_name} corpus is empty: {', '.join(blank)} "
                                 f"{'is an empty file' if len(blank) == 1 else 'are empty files'} (no JSON record)")
            logger.warning("skipping empty corpus file(s) %s", ", ".join(blank))
        parts = []
        if text_files:
            parts.append(datasets.load_dataset(
                "text", data_files=text_files, sample_by="document" if args.document_per == "file" else "line",
                encoding="utf-8-sig", cache_dir=args.cache_dir, split="train"))
        if json_files:
            ds = datasets.load_dataset("json", data_files=json_files, cache_dir=args.cache_dir, split="train")
            if args.text_column not in ds.column_names:
                raise ValueError(f"{json_files[0]}: no {args.text_column!r} field (columns {ds.column_names}); set "
                                 "--text_column")
            parts.append(ds.select_columns([args.text_column]).rename_column(args.text_column, "text")
                         if args.text_column != "text" else ds.select_columns(["text"]))
        ds = datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    elif args.dataset_name:
        ds = datasets.load_dataset(args.dataset_name, args.dataset_config_name, split=args.dataset_split,
                                   cache_dir=args.cache_dir)
        if args.text_column not in ds.column_names:
            raise ValueError(f"{args.dataset_name}: no {args.text_column!r} column (columns {ds.column_names})")
        ds = ds.select_columns([args.text_column])
        if args.text_column != "text":
            ds = ds.rename_column(args.text_column, "text")
    else:
        raise ValueError("no corpus: pass train files/folders (--train_files) or a Hub dataset (--dataset_name)")
    if args.max_documents is not None:
        ds = ds.select(range(min(args.max_documents, len(ds))))
    ds = ds.filter(lambda b: [bool(t and t.strip()) for t in b["text"]], batched=True,
                   num_proc=args.preprocessing_num_workers,
                   desc=f"dropping empty {split_name} documents")
    if len(ds) == 0:
        raise ValueError(f"the {split_name} corpus is empty (no non-blank document in {files or args.dataset_name})")
    return ds


def _safe_cut(text: str, start: int, end: int) -> int:
    """The last position in (start, end) just after a space that has non-whitespace on both sides: splitting there
    leaves the tokenization unchanged (GPT-1's pipeline treats such a space as a plain boundary; a newline would be
    stripped at a segment edge and lose its token). Falls back to ``end``."""
    pos = end
    while True:
        i = text.rfind(" ", start + 1, pos)
        if i <= start:
            return end
        if i + 1 < len(text) and not text[i - 1].isspace() and not text[i + 1].isspace():
            return i + 1
        pos = i


def _segment(batch, max_chars: int):
    """Cut documents into segments of at most about ``max_chars`` characters at spaces inside lines (order kept), so
    that long books tokenize in parallel and in bounded memory with the same token stream as the whole document."""
    out = []
    for text in batch["text"]:
        start = 0
        n = len(text)
        while start < n:
            end = n if n - start <= max_chars else _safe_cut(text, start, start + max_chars)
            out.append(text[start:end])
            start = end
    return {"text": out}


def _tokenize(batch, tokenizer):
    ids = tokenizer(batch["text"], add_special_tokens=False, verbose=False)["input_ids"]
    return {"input_ids": ids, "n_tokens": [len(x) for x in ids]}


def _group(batch, block_size: int):
    ids = [t for seq in batch["input_ids"] for t in seq]
    n = (len(ids) // block_size) * block_size
    return {"input_ids": [ids[i:i + block_size] for i in range(0, n, block_size)]}


def digest(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        data = part if isinstance(part, bytes) else json.dumps(part, sort_keys=True, ensure_ascii=False,
                                                                default=str).encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    """A hex digest that identifies what `tokenizer` does, the same in every process and run (unlike the pickle
    hash `datasets` takes of the object, which depends on PYTHONHASHSEED and on the tokenizer's internal caches).

    It covers the tokenizer class and the source file that defines it (GPT-1's Python pipeline), the vocabulary,
    merges and added tokens of its Rust backend (or ``get_vocab()`` for a Python tokenizer), its special tokens and
    size. The normalizer and pre-tokenizer of a GPT1Tokenizer are built by that source file from constants (their
    serialised regexes list alternatives in set order, which varies with PYTHONHASHSEED), so for it they are
    covered by the source file; for other tokenizers their serialisation is included."""
    cls = type(tokenizer)
    parts: list[Any] = [f"{cls.__module__}.{cls.__qualname__}"]
    try:
        source = inspect.getsourcefile(cls)
        parts.append(Path(source).read_bytes() if source else b"")
    except (OSError, TypeError):
        parts.append(b"")
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        state = json.loads(backend.to_str())
        from .tokenization_gpt1 import GPT1Tokenizer

        if isinstance(tokenizer, GPT1Tokenizer):
            state.pop("normalizer", None)
            state.pop("pre_tokenizer", None)
        parts.append(state)
    else:
        parts.append(sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1]))
        ranks = getattr(tokenizer, "bpe_ranks", None)
        if ranks:
            parts.append(sorted(([list(k), v] for k, v in ranks.items()), key=lambda kv: kv[1]))
    parts.append(len(tokenizer))
    parts.append(sorted((str(k), str(v)) for k, v in tokenizer.special_tokens_map.items()))
    parts.append(sorted(tokenizer.get_added_vocab().items(), key=lambda kv: kv[1]))
    parts.append([getattr(tokenizer, a, None) for a in ("do_lower_case", "split_special_tokens")])
    return digest(*parts)


def build_blocks(texts, tokenizer, block_size: int, num_proc: int | None = None, segment_chars: int = 20000,
                 map_batch_size: int = 1000, name: str = "train"):
    """Documents -> contiguous blocks of ``block_size`` token ids, with three cached, batched `datasets.map` passes.
    Returns (blocks dataset, number of tokens in the corpus).

    The tokenizing and grouping passes get explicit fingerprints (cache keys): the corpus' fingerprint, the
    segmenting settings, `tokenizer_fingerprint` and the block settings, so that a second run with the same corpus,
    tokenizer and settings reuses the cache in any process, whatever PYTHONHASHSEED."""
    seg = texts.map(_segment, batched=True, batch_size=64, fn_kwargs={"max_chars": segment_chars},
                    remove_columns=texts.column_names, num_proc=num_proc, desc=f"segmenting {name}",
                    new_fingerprint=digest("segment", _BLOCKS_VERSION, texts._fingerprint, segment_chars)[:32])
    tok_fp = digest("tokenize", _BLOCKS_VERSION, seg._fingerprint, tokenizer_fingerprint(tokenizer))[:32]
    tok = seg.map(_tokenize, batched=True, fn_kwargs={"tokenizer": tokenizer}, remove_columns=["text"],
                  num_proc=num_proc, desc=f"tokenizing {name}", new_fingerprint=tok_fp)
    n_tokens = int(sum(tok["n_tokens"]))
    tok = tok.remove_columns("n_tokens", new_fingerprint=digest("drop-n_tokens", tok_fp)[:32])
    if n_tokens == 0:
        raise ValueError(f"the {name} corpus is empty after tokenization")
    if n_tokens < block_size:
        raise ValueError(
            f"the {name} corpus has {n_tokens} tokens, shorter than one block of --block_size {block_size} tokens: add text "
            "or lower --block_size."
        )
    blocks = tok.map(_group, batched=True, batch_size=map_batch_size, fn_kwargs={"block_size": block_size},
                     remove_columns=tok.column_names, num_proc=num_proc, desc=f"grouping {name} into blocks",
                     new_fingerprint=digest("group", _BLOCKS_VERSION, tok._fingerprint, block_size,
                                             map_batch_size)[:32])
    if len(blocks) == 0:  # every map batch was shorter than a block: group everything at once
        blocks = tok.map(_group, batched=True, batch_size=None, fn_kwargs={"block_size": block_size},
                         remove_columns=tok.column_names, desc=f"grouping {name} into blocks",
                         new_fingerprint=digest("group-all", _BLOCKS_VERSION, tok._fingerprint, block_size)[:32])
    blocks = blocks.with_format("torch")
    return blocks, n_tokens


class BlockCollator:
    """Stack equal-length blocks: input_ids = labels (the model shifts), attention over every token."""

    def __call__(self, features):
        ids = torch.stack([torch.as_tensor(f["input_ids"], dtype=torch.long) for f in features])
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


# ======================================================================================================================
# Tokenizer and model
# ======================================================================================================================


def iter_texts(ds, batch_size: int = 256):
    for i in range(0, len(ds), batch_size):
        yield ds[i:i + batch_size]["text"]


# ---- the run's tokenizer and blocks -----------------------------------------------------------------------------------

#: ``<output_dir>/trained_tokenizer``: the tokenizer ``--train_tokenizer`` trained on the main process, which the
#: other processes load (BPE training is not deterministic: every process must use this one).
TRAINED_TOKENIZER_DIR = "trained_tokenizer"


def _make_tokenizer(args: PretrainArguments, corpus):
    from .task_models import load_tokenizer

    if args.train_tokenizer:
        base = load_tokenizer(args.tokenizer_name, None)
        logger.info("training a %d-entry BPE vocabulary on the corpus", args.vocab_size)
        return base.train_new_from_iterator(iter_texts(corpus), args.vocab_size)
    return load_tokenizer(args.tokenizer_name, args.model_name_or_path)


@contextlib.contextmanager
def main_process_first(state):
    """Like `accelerate.PartialState.main_process_first`: the main process runs the block first, the others wait for
    it and then run it (reading what it wrote: the trained tokenizer, the `datasets` cache). Unlike Accelerate's, the
    main process also reaches the barrier when the block raises, so that the others do not hang: they run the block
    themselves and meet the same error (or a clear one)."""
    if not state.is_main_process:
        state.wait_for_everyone()
    try:
        yield
    finally:
        if state.is_main_process:
            state.wait_for_everyone()


def obtain_tokenizer(args: PretrainArguments, corpus, state, resume_checkpoint: Path | None = None):
    """The tokenizer of this run, the same in every process. Call it inside ``main_process_first(state)``.

    - resuming a run that trained its tokenizer: the tokenizer saved in the checkpoint (a trained vocabulary must
      not change);
    - ``train_tokenizer``: the main process trains it and saves it into ``<output_dir>/trained_tokenizer``; every
      process (the main one included) then uses that saved tokenizer. BPE training is not deterministic, so the other
      processes must not train their own (they would tokenize the corpus differently from the saved tokenizer);
    - otherwise: the given / bundled tokenizer, loaded from files by every process.

    `state`: anything with ``is_main_process`` (an `accelerate.Accelerator` or `PartialState`)."""
    from .task_models import load_tokenizer

    if resume_checkpoint is not None and args.train_tokenizer:
        return load_tokenizer(str(resume_checkpoint), None)
    if not args.train_tokenizer:
        return _make_tokenizer(args, corpus)
    saved = Path(args.output_dir) / TRAINED_TOKENIZER_DIR
    if state.is_main_process:
        from .durable import save_directory_atomically

        save_directory_atomically(saved, _make_tokenizer(args, corpus).save_pretrained)
    elif not (saved / "tokenizer_config.json").is_file():
        raise FileNotFoundError(
            f"{saved}: the tokenizer trained by the main process is not there; with --train_tokenizer every process "
            "reads it from --output_dir, which must be on a file system all processes share."
        )
    return load_tokenizer(str(saved), None)


def corpus_blocks(args: PretrainArguments, accelerator, resume_ckpt) -> dict[str, Any]:
    """Tokenizer, training blocks and held-out blocks (``--validation_files``, else a seeded slice)."""
    with main_process_first(accelerator):
        corpus = load_corpus(args.train_files, args, "train")
        tokenizer = obtain_tokenizer(args, corpus, accelerator, resume_ckpt)
        blocks, n_tokens = build_blocks(corpus, tokenizer, args.block_size, args.preprocessing_num_workers,
                                        args.segment_chars, args.block_map_batch_size, "train")
        if args.validation_files:
            val_corpus = load_corpus(args.validation_files, args, "validation")
            heldout, n_val_tokens = build_blocks(val_corpus, tokenizer, args.block_size, args.preprocessing_num_workers,
                                                 args.segment_chars, args.block_map_batch_size, "validation")
            train_blocks = blocks
        else:
            if len(blocks) < 2:
                raise ValueError(f"the corpus gives {len(blocks)} block of --block_size {args.block_size} tokens; at "
                                 "least 2 are needed to hold one out for evaluation (add text, lower --block_size or "
                                 "pass --validation_files).")
            n_val = min(len(blocks) - 1, max(1, int(round(args.validation_split_percentage / 100 * len(blocks)))))
            split = blocks.train_test_split(test_size=n_val, seed=args.seed, shuffle=True)
            train_blocks, heldout = split["train"], split["test"]
            n_val_tokens = len(heldout) * args.block_size
    return {"corpus": corpus, "tokenizer": tokenizer, "train": train_blocks, "heldout": heldout,
            "tokens": n_tokens, "heldout_tokens": n_val_tokens}
