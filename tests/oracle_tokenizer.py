"""Test oracle: GPT-1's original text pipeline, re-implemented from openai/finetune-transformer-lm `text_utils.py`.

    ids = [encoder.get(piece, 0)
           for token in spacy_en(text_standardize(ftfy.fix_text(text)))
           for piece in bpe(token.text.lower()).split(" ")]

The only deliberate differences with the 2018 code: spaCy 3's `spacy.blank("en")` tokenizer stands in for the
spaCy 2 English model loaded with every pipe disabled (same tokenizer rules for real text), and the BPE cache is an
unbounded dict per encoder instance (as in the original). Requires `ftfy` and `spacy`; nothing else from this
project is imported, so the oracle stays independent of the implementation it checks.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable

FIXTURE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "gpt1_bpe")
DEFAULT_ENCODER_PATH = os.path.join(FIXTURE_DIR, "encoder_bpe_40000.json")
DEFAULT_BPE_PATH = os.path.join(FIXTURE_DIR, "vocab_40000.bpe")


def get_pairs(word):
    """Set of adjacent symbol pairs in a word (tuple of symbols)."""
    pairs = set()
    prev_char = word[0]
    for char in word[1:]:
        pairs.add((prev_char, char))
        prev_char = char
    return pairs


def text_standardize(text: str) -> str:
    """Verbatim copy of the original `text_standardize`."""
    text = text.replace("—", "-")
    text = text.replace("–", "-")
    text = text.replace("―", "-")
    text = text.replace("…", "...")
    text = text.replace("´", "'")
    text = re.sub(r"""(-+|~+|!+|"+|;+|\?+|\++|,+|\)+|\(+|\\+|\/+|\*+|\[+|\]+|}+|{+|\|+|_+)""", r" \1 ", text)
    text = re.sub(r"\s*\n\s*", " \n ", text)
    text = re.sub(r"[^\S\n]+", " ", text)
    return text.strip()


class OracleTextEncoder:
    """The original `TextEncoder` (spaCy + ftfy + lowercase + BPE), with `spacy.blank("en")` as the tokenizer."""

    def __init__(self, encoder_path: str = DEFAULT_ENCODER_PATH, bpe_path: str = DEFAULT_BPE_PATH):
        import ftfy
        import spacy

        self._fix_text = ftfy.fix_text
        self.nlp = spacy.blank("en")
        with open(encoder_path, encoding="utf-8") as f:
            self.encoder = json.load(f)
        self.decoder = {v: k for k, v in self.encoder.items()}
        with open(bpe_path, encoding="utf-8") as f:
            merges = f.read().split("\n")[1:-1]
        merges = [tuple(merge.split()) for merge in merges]
        self.bpe_ranks = dict(zip(merges, range(len(merges)), strict=True))
        self.cache: dict[str, str] = {}

    def bpe(self, token: str) -> str:
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        if token in self.cache:
            return self.cache[token]
        pairs = get_pairs(word)
        if not pairs:
            return token + "</w>"
        while True:
            bigram = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new_word = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                    new_word.extend(word[i:j])
                    i = j
                except ValueError:
                    new_word.extend(word[i:])
                    break
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
            if len(word) == 1:
                break
            pairs = get_pairs(word)
        word = " ".join(word)
        if word == "\n  </w>":
            word = "\n</w>"
        self.cache[token] = word
        return word

    def preprocess(self, text: str) -> str:
        """ftfy + text_standardize: the string handed to spaCy."""
        return text_standardize(self._fix_text(text))

    def spacy_tokens(self, text: str) -> list[str]:
        """Tokens (original case) as the original pipeline sees them before lowercasing and BPE."""
        return [token.text for token in self.nlp(self.preprocess(text))]

    def tokenize(self, text: str) -> list[str]:
        """BPE pieces (with `</w>`), as the original pipeline produces them."""
        pieces = []
        for token in self.spacy_tokens(text):
            pieces.extend(self.bpe(token.lower()).split(" "))
        return pieces

    def encode(self, texts: Iterable[str]) -> list[list[int]]:
        texts_tokens = []
        for text in texts:
            doc = self.nlp(self.preprocess(text))
            text_tokens = []
            for token in doc:
                text_tokens.extend(self.encoder.get(t, 0) for t in self.bpe(token.text.lower()).split(" "))
            texts_tokens.append(text_tokens)
        return texts_tokens


_DEFAULT_ORACLE: OracleTextEncoder | None = None


def get_oracle() -> OracleTextEncoder:
    """Shared oracle on the fixture BPE files (built once; keeps its BPE cache)."""
    global _DEFAULT_ORACLE
    if _DEFAULT_ORACLE is None:
        _DEFAULT_ORACLE = OracleTextEncoder()
    return _DEFAULT_ORACLE


def oracle_encode(texts: Iterable[str], encoder: OracleTextEncoder | None = None) -> list[list[int]]:
    """GPT-1's original ids (no special tokens) for each text."""
    if isinstance(texts, str):
        raise TypeError("oracle_encode expects an iterable of texts, not a single string")
    return (encoder or get_oracle()).encode(texts)
