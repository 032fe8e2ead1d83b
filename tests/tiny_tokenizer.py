"""A tiny stand-in for the GPT-1 tokenizer so data tests do not depend on the real BPE tokenizer.

Word-level vocabulary (``tokenizers`` WordLevel + Whitespace pre-tokenizer, lower-cased) built over the task
fixture texts, wrapped in a transformers fast tokenizer with the GPT-1 special tokens ``_start_``,
``_delimiter_``, ``_classify_`` and ``<pad>`` and the ``start_token_id`` / ``delimiter_token_id`` /
``classify_token_id`` / ``pad_token_id`` attributes of `GPT1Tokenizer`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "tasks"
SPECIALS = ["<pad>", "<unk>", "_start_", "_delimiter_", "_classify_"]


class TinyGPT1Tokenizer(PreTrainedTokenizerFast):
    @property
    def start_token_id(self) -> int:
        return self.convert_tokens_to_ids("_start_")

    @property
    def delimiter_token_id(self) -> int:
        return self.convert_tokens_to_ids("_delimiter_")

    @property
    def classify_token_id(self) -> int:
        return self.convert_tokens_to_ids("_classify_")


def fixture_texts() -> Iterable[str]:
    for path in sorted(FIXTURES.rglob("*")):
        if path.is_file() and path.suffix in (".tsv", ".jsonl", ".csv", ".txt"):
            yield path.read_text(encoding="utf-8-sig")


def build_tiny_tokenizer(texts: Iterable[str] | None = None) -> TinyGPT1Tokenizer:
    """Tokenizer whose vocabulary covers every word of ``texts`` (default: all task fixture files)."""
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=SPECIALS, min_frequency=1)
    tok.train_from_iterator(list(texts if texts is not None else fixture_texts()), trainer)
    return TinyGPT1Tokenizer(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>",
                             additional_special_tokens=["_start_", "_delimiter_", "_classify_"])
