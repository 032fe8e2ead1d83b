# Copyright 2026 The gpt1_hf authors. MIT License.
r"""GPT-1 tokenizer (Radford et al., 2018) as a fast, Rust-backed Hugging Face tokenizer.

GPT-1's original text pipeline (openai/finetune-transformer-lm, ``text_utils.py``) is::

    doc = spacy_en(text_standardize(ftfy.fix_text(text)))
    ids = [encoder.get(piece, 0) for token in doc for piece in bpe(token.text.lower()).split(" ")]

``GPT1Tokenizer`` reproduces it without ftfy or spaCy at run time. Step by step:

1. ``ftfy.fix_text`` -> `fix_text` (Python, only for texts that are not plain printable ASCII without "&", i.e.
   the texts ftfy could change): HTML entities, UTF-8 mojibake ("â€™" -> "’"), C1 controls, Latin ligatures,
   full-width forms, curly quotes, line breaks, control characters, NFC -- ftfy 6's defaults. It also surrounds
   spaCy's "other symbols" (©, °, emoji ...) with spaces, which spaCy always splits off.
2. ``text_standardize`` -> the first steps of the Rust normalizer: dashes -> "-", "…" -> "...", "´" -> "'",
   whitespace around newlines -> " \n ", other whitespace -> " ", runs of ``- ~ ! " ; ? + , ( ) \ / * [ ] { } | _``
   surrounded by spaces, strip.
3. spaCy's English tokenizer (``spacy.blank("en")``) -> normalizer steps that *insert spaces* at its split points,
   on the original case (its exceptions and period rules are case-sensitive), piece by piece like spaCy works
   chunk by chunk (`_spacy_steps`):

   - prefixes: quotes, ``$ # & % : < > =`` ..., ``...``, ``US$`` at the start of a piece, up to four;
   - special cases (spacy/lang/en/tokenizer_exceptions.py, `english_special_cases`): contractions are split
     (``don't`` -> ``do n't``, ``I'm`` -> ``I 'm``, ``cannot`` -> ``can not``, ``gonna`` -> ``gon na``, ``10am``
     -> ``10 am``, ``y'all`` -> ``y' all``), abbreviations keep their periods (``Mr.``, ``e.g.``, ``N.Y.``, ``a.``
     ... ``z.``) and ``'s``, ``'em``, ``goin'``, ``''`` ... stay whole;
   - suffixes, as spaCy strips them from the right: "." after a lower-case letter, digit, quote or punctuation or
     after two capitals, ``'s``, quotes, ``...``, units and currencies after a number (``5%`` -> ``5 %``);
   - infixes: ``...`` inside a word, ``lower.Upper`` (not in URLs), ``letter:letter`` and ``<>=``, ``^``;
   - spaCy's re-merging of special cases split by other rules (``day.Mr.`` -> ``day . Mr.``).
4. ``.lower()`` -> the normalizer's last step, ``Lowercase`` (after the case-sensitive decisions).
5. The BPE loop -> model ``BPE`` with ``end_of_word_suffix="</w>"`` on each space-separated piece (pre-tokenizer
   ``Split(" ", "removed")``); the newline piece ``\n`` becomes ``\n</w>``, the original's special case for spaCy's
   ``"\n "`` token. Pieces missing from the vocabulary get id 0 (``encoder.get(piece, 0)``): the BPE ``unk_token``
   is the vocabulary entry with id 0 (``<unk>`` in GPT-1's file) and ``fuse_unk=False``, so every unknown character
   gives one id 0, as in the original, where unknown characters never merge.

Special tokens come after the BPE vocabulary of size V: ``_start_`` = V, ``_delimiter_`` = V + 1, ``_classify_`` =
V + 2, ``<pad>`` = V + 3 (40478..40481 for GPT-1's files). ``add_special_tokens=True`` gives ``_start_ a _delimiter_
b _classify_`` for a pair (paper, section 3.3) and ``_start_ text`` for a single text (a prompt to continue), or
``_start_ text _classify_`` with ``add_extract_token=True`` (a single-text task input).

The saved ``tokenizer.json`` holds steps 2-5; used alone (raw ``tokenizers``), it skips step 1.
Plain-text calls (``tokenizer(texts)``, ``encode_batch_ids``) take a faster route to the same ids, as spaCy does: step 2
in Python over the whole batch, then a per-chunk cache of ids, steps 3-5 in Rust only for chunks not seen before
(`GPT1Tokenizer._ids`). Known differences
with the original pipeline (see docs/tokenizer.md): rare apostrophe-less contractions (``wed`` -> ``we d``, ``im``,
``youre``, ``gotta``), ftfy's mojibake heuristics beyond common sequences, spaCy's URL matcher beyond host names.
Regexes are Oniguruma patterns written for speed: each starts with a literal or a small character class (so that
the engine can skip to candidates) and uses ``\K`` or lookarounds to insert a space at the right position.

This file imports only the standard library, ``tokenizers`` and ``transformers``, so that it can be shipped next to
model weights for ``trust_remote_code`` users.
"""

from __future__ import annotations

import html
import html.entities
import json
import os
import re
import unicodedata

from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE
from tokenizers.trainers import BpeTrainer
from transformers.tokenization_utils_base import VERY_LARGE_INTEGER, BatchEncoding, TruncationStrategy
from transformers.tokenization_utils_tokenizers import TokenizersBackend
from transformers.utils import PaddingStrategy, logging

logger = logging.get_logger(__name__)

VOCAB_FILES_NAMES = {
    "vocab_file": "encoder_bpe_40000.json",
    "merges_file": "vocab_40000.bpe",
    "tokenizer_file": "tokenizer.json",
}

START_TOKEN = "_start_"
DELIMITER_TOKEN = "_delimiter_"
CLASSIFY_TOKEN = "_classify_"
PAD_TOKEN = "<pad>"
N_POSITIONS = 512  # GPT-1's context: the default model_max_length
END_OF_WORD = "</w>"


# ----------------------------------------------------------------------------------------------------------------
# Regex helpers (Oniguruma syntax, as used by `tokenizers.Regex`)
# ----------------------------------------------------------------------------------------------------------------


def _lit(text: str) -> str:
    """Escape a literal for an Oniguruma pattern."""
    return "".join("\\" + c if c in ".^$|?*+()[]{}\\/" else c for c in text)


def _cls(chars: str) -> str:
    """Escape characters for use inside a character class."""
    return "".join("\\" + c if c in "\\[]^-&" else c for c in chars)


def _placeholder(char: str) -> str:
    """Private-use stand-in (plane 16) for a character that later rules must not split on."""
    return chr(0x10FF00 + ord(char))


_PROTECTED = "'"  # "''" (a special case) becomes two placeholders so that no rule splits it
_PH = {c: _placeholder(c) for c in _PROTECTED}

# Python's str.isspace() characters (what `\s` means for the original's `re` and for spaCy).
_WS = "".join(
    chr(c)
    for c in [0x9, 0xA, 0xB, 0xC, 0xD, 0x1C, 0x1D, 0x1E, 0x1F, 0x20, 0x85, 0xA0, 0x1680]
    + list(range(0x2000, 0x200B))
    + [0x2028, 0x2029, 0x202F, 0x205F, 0x3000]
)
_WS_NO_NL = _WS.replace("\n", "")

# text_standardize: runs of these characters are surrounded by spaces. spaCy then splits every character of a run
# of the first group (they are all spaCy prefixes) and keeps a run of the second group as one token.
_ISOLATED_SINGLE = '!";?+,()*[]{}_'
_ISOLATED_RUN = "-~\\/|"

# spaCy's character classes (spacy/lang/char_classes.py), restricted to what survives ftfy + text_standardize and
# with its per-script letter lists approximated by Unicode properties.
_LOWER = r"\p{Ll}\p{Lo}"
_UPPER = r"\p{Lu}\p{Lo}"
_ALPHA = r"\p{L}"
_QUOTES_ASCII = "'\"`,"
_QUOTES_OTHER = "”“‘´’‚„»«「」『』（）〔〕【】《》〈〉〈〉⟦⟧"
_PUNCT_ASCII = ",:;!?()[]{}<>_#*&|"
_PUNCT_OTHER = "…¿؟¡。？！，、；：～·।،۔؛٪"
_CURRENCY_OTHER = "£€¥฿₽﷼₴₠₡₢₣₤₥₦₧₨₩₪₫₭₮₯₰₱₲₳₵₶₷₸₹₺₻₼₾₿"
_QUOTES = _cls(_QUOTES_ASCII + _QUOTES_OTHER)
_PUNCT = _cls(_PUNCT_ASCII + _PUNCT_OTHER)
# the same characters when protected by a placeholder: they still count as context for lookbehinds
_QUOTES_CTX = _QUOTES + _PH["'"]
_ICONS = r"\p{So}"  # spaCy's "icons" (other symbols): prefixes, suffixes and infixes, i.e. always split off
_CURRENCY = "[$" + _cls(_CURRENCY_OTHER) + r"]|US\$|C\$|A\$"
_UNITS = "|".join(
    _lit(u)
    for u in (
        "km km² km³ m m² m³ dm dm² dm³ cm cm² cm³ mm mm² mm³ ha µm nm yd in ft kg g mg µg t lb oz m/s km/h kmh mph "
        "hPa Pa mbar mb MB kb KB gb GB tb TB T G M K % км км² км³ м м² м³ дм дм² дм³ см см² см³ мм мм² мм³ нм кг г "
        "мг м/с км/ч кПа Па мбар Кб КБ кб Мб МБ мб Гб ГБ гб Тб ТБ тб"
    ).split()
)
_PREFIX_CHAR = "[§%=—–" + _PUNCT + _QUOTES + "$" + _cls(_CURRENCY_OTHER) + _ICONS + "]"
_SUFFIX_CHAR = "[" + _PUNCT + _QUOTES + _ICONS + "—–]"
# characters after which a final "." is split off (spaCy: `(?<=[0-9{al}{e}{p}(?:{q})])\.`)
_DOT_AFTER = "0-9" + _LOWER + r"%²\-\+" + _PUNCT + _QUOTES_CTX
# Pieces (spaCy's "chunks") are delimited by spaces (text_standardize's isolated characters are surrounded by spaces
# before the spaCy steps run; they are part of the boundary class anyway).
_BOUNDARY = "[" + _cls(" " + _ISOLATED_SINGLE + _ISOLATED_RUN) + "]"  # lookbehind: start of a piece
_END = "(?![^" + _cls(" " + _ISOLATED_SINGLE + _ISOLATED_RUN) + "])"  # lookahead: end of a piece
_INNER = "[^" + _cls(" " + _ISOLATED_SINGLE + _ISOLATED_RUN) + "]"  # a character inside a piece
_UNIT_STEMS = "mgt"  # one-letter units that are also special cases with a period ("m."): "5m." -> "5", "m."


def _first(ascii_chars: str, other_chars: str) -> str:
    """One character out of a set, written so that Oniguruma can skip to candidates quickly: an ASCII class plus an
    alternation of literals (a class with non-ASCII members makes Oniguruma test every position)."""
    parts = (["[" + _cls(ascii_chars) + "]"] if ascii_chars else []) + [_lit(c) for c in other_chars]
    return "(?:" + "|".join(parts) + ")"


def _suffix_pattern() -> str:
    """One spaCy suffix (its tokenizer `suffix_search` alternatives), as an Oniguruma alternation in which every
    alternative consumes its first character before any lookbehind."""
    alternatives = [
        # possessive: inside `\g<sfx>*` a greedy `\.\.+` can split a long run of dots in exponentially many ways
        # (Oniguruma's retry limit on "Jan.5..........Return"); taking every dot at once matches the same texts
        r"\.\.++",
        "'[sS]",
        _PH["'"] * 2,
        _SUFFIX_CHAR,
        r"\+(?<=[0-9]\+)",
        r"\.(?<=°[FfCcKk]\.|° [FfCcKk]\.)",
        "[" + _UNIT_STEMS + r"]\.(?<=[0-9][" + _UNIT_STEMS + r"]\.)",
        "(?<=[0-9])(?:" + _CURRENCY + "|" + _UNITS + ")",
        r"\.(?<=[" + _DOT_AFTER + r"]\.)(?<![0-9][" + _UNIT_STEMS + r"]\.)",
        r"\.(?<=[" + _UPPER + "][" + _UPPER + r"]\.)",
    ]
    return "(?:" + "|".join(alternatives) + ")"


def _define_suffix() -> str:
    r"""Defines the subexpression `\g<sfx>` (one suffix) without matching anything."""
    return "(?<sfx>" + _suffix_pattern() + "){0}"


_SUFFIXES_TO_END = r"\g<sfx>*" + _END


# ----------------------------------------------------------------------------------------------------------------
# spaCy's English tokenizer exceptions (spacy/lang/en/tokenizer_exceptions.py + spacy/lang/tokenizer_exceptions.py),
# restricted to the ones that can survive text_standardize (no `- ~ ! " ; ? + , ( ) \ / * [ ] { } | _`).
# ----------------------------------------------------------------------------------------------------------------


def english_special_cases() -> dict[str, list[str]]:
    """spaCy-en tokenizer exceptions with straight apostrophes, as ``{text: [token texts]}`` (case-sensitive)."""
    exc: dict[str, list[str]] = {}

    def both(word):
        return [word, word.title()]

    def add(orth, *tokens):
        exc[orth] = list(tokens)

    for orth in both("i"):
        add(orth + "'m", orth, "'m"), add(orth + "m", orth, "m")
        add(orth + "'ma", orth, "'m", "a"), add(orth + "ma", orth, "m", "a")
    for pron in ["i", "you", "he", "she", "it", "we", "they"]:
        for orth in both(pron):
            add(orth + "'ll", orth, "'ll"), add(orth + "ll", orth, "ll")
            add(orth + "'ll've", orth, "'ll", "'ve"), add(orth + "llve", orth, "ll", "ve")
            add(orth + "'d", orth, "'d"), add(orth + "d", orth, "d")
            add(orth + "'d've", orth, "'d", "'ve"), add(orth + "dve", orth, "d", "ve")
    for pron in ["i", "you", "we", "they"]:
        for orth in both(pron):
            add(orth + "'ve", orth, "'ve"), add(orth + "ve", orth, "ve")
    for pron in ["you", "we", "they"]:
        for orth in both(pron):
            add(orth + "'re", orth, "'re"), add(orth + "re", orth, "re")
    for pron in ["he", "she", "it"]:
        for orth in both(pron):
            add(orth + "'s", orth, "'s"), add(orth + "s", orth, "s")
    for word in ["who", "what", "when", "where", "why", "how", "there", "that", "this", "these", "those"]:
        for orth in both(word):
            if word not in ("these", "those"):
                add(orth + "'s", orth, "'s"), add(orth + "s", orth, "s")
            add(orth + "'ll", orth, "'ll"), add(orth + "ll", orth, "ll")
            add(orth + "'ll've", orth, "'ll", "'ve"), add(orth + "llve", orth, "ll", "ve")
            if word not in ("that", "this"):
                add(orth + "'re", orth, "'re"), add(orth + "re", orth, "re")
                add(orth + "'ve", orth, "'ve"), add(orth + "ve", orth, "ve")
            add(orth + "'d", orth, "'d"), add(orth + "d", orth, "d")
            add(orth + "'d've", orth, "'d", "'ve"), add(orth + "dve", orth, "d", "ve")
    modals = ["ca", "could", "do", "does", "did", "had", "may", "might", "must", "need", "ought", "sha", "should"]
    for verb in modals + ["wo", "would"]:
        for orth in both(verb):
            add(orth + "n't", orth, "n't"), add(orth + "nt", orth, "nt")
            add(orth + "n't've", orth, "n't", "'ve"), add(orth + "ntve", orth, "nt", "ve")
    for verb in ["could", "might", "must", "should", "would"]:
        for orth in both(verb):
            add(orth + "'ve", orth, "'ve"), add(orth + "ve", orth, "ve")
    for verb in ["ai", "are", "is", "was", "were", "have", "has", "dare"]:
        for orth in both(verb):
            add(orth + "n't", orth, "n't"), add(orth + "nt", orth, "nt")
    for word in ["doin", "goin", "nothin", "nuthin", "ol", "somethin"]:
        for orth in both(word):
            add(orth, orth), add(orth + "'", orth + "'")
    for word in ["em", "ll", "nuff"]:
        add(word, word), add("'" + word, "'" + word)
    for hour in range(1, 13):
        for period in ["a.m.", "am", "p.m.", "pm"]:
            add(f"{hour}{period}", str(hour), period)
    for orth, tokens in {
        "y'all": ["y'", "all"], "yall": ["y", "all"], "how'd'y": ["how", "'d", "'y"], "How'd'y": ["How", "'d", "'y"],
        "not've": ["not", "'ve"], "notve": ["not", "ve"], "Not've": ["Not", "'ve"], "Notve": ["Not", "ve"],
        "cannot": ["can", "not"], "Cannot": ["Can", "not"], "gonna": ["gon", "na"], "Gonna": ["Gon", "na"],
        "gotta": ["got", "ta"], "Gotta": ["Got", "ta"], "let's": ["let", "'s"], "Let's": ["Let", "'s"],
        "c'mon": ["c'm", "on"], "C'mon": ["C'm", "on"],
    }.items():  # fmt: skip
        add(orth, *tokens)
    single = (
        "'S 's 're 'Cause 'cause 'cos 'Cos 'coz 'Coz 'cuz 'Cuz 'bout ma'am Ma'am o'clock O'clock lovin' Lovin' lovin "
        "Lovin havin' Havin' havin Havin doin' Doin' doin Doin goin' Goin' goin Goin Mt. Ak. Ala. Apr. Ariz. Ark. Aug. "
        "Calif. Colo. Conn. Dec. Del. Feb. Fla. Ga. Ia. Id. Ill. Ind. Jan. Jul. Jun. Kan. Kans. Ky. La. Mar. Mass. "
        "Mich. Minn. Miss. N.C. N.D. N.H. N.J. N.M. N.Y. Neb. Nebr. Nev. Nov. Oct. Okla. Ore. Pa. S.C. Sep. Sept. "
        "Tenn. Va. Wash. Wis. 'd a.m. Adm. Bros. co. Co. Corp. D.C. Dr. e.g. E.g. E.G. Gen. Gov. i.e. I.e. I.E. Inc. "
        "Jr. Ltd. Md. Messrs. Mo. Mont. Mr. Mrs. Ms. p.m. Ph.D. Prof. Rep. Rev. Sen. St. vs. v.s."
    )
    for orth in single.split():
        add(orth, orth)
    for orth in "Ill ill Its its Hell hell Shell shell Shed shed were Were Well well Whore whore".split():
        exc.pop(orth, None)
    # language-independent exceptions and emoticons that text_standardize leaves intact
    for orth in ["'", "''", "<space>", "ä.", "ö.", "ü."] + [c + "." for c in "abcdefghijklmnopqrstuvwxyz"]:
        add(orth, orth)
    emoticons = (
        ":1 :P :p :O :o :0 :3 =3 :> :X :x :D =D xD XD xDD XDD 8D >.< >.> <.< v.v V.V o.O O.o O.O o.o 0.0 o.0 0.o <3 "
        "<33 <333 >:o"
    )
    for orth in emoticons.split():
        add(orth, orth)
    for unit in "cfkCFK":
        add(f"°{unit}.", "°", unit, ".")
    return exc


def _splits_final_period(text: str) -> bool:
    """Whether spaCy's suffix rules would split the final '.' of `text` (used for its special-case re-merging)."""
    if len(text) < 2 or not text.endswith(".") or text.endswith(".."):
        return False
    before = text[-2]
    if before.isdigit() or before.islower() or before in "%²-+…,:;!?¿؟¡()[]{}<>_#*&|'\"`»«":
        return True
    return len(text) >= 3 and text[-2].isupper() and text[-3].isupper()


def _trie(literals) -> str:
    """Regex matching any of the literals, factored as a trie (Oniguruma then branches on one character at a time).
    `literals` maps each literal to a tail pattern appended after it (or is an iterable of literals)."""
    entries = literals if isinstance(literals, dict) else dict.fromkeys(literals, "")
    root: dict = {}
    for literal, tail in entries.items():
        node = root
        for char in literal:
            node = node.setdefault(char, {})
        node.setdefault("", []).append(tail)

    def emit(node: dict) -> str:
        alternatives = []
        for char, child in sorted(node.items()):
            if char == "":
                alternatives += child
            else:
                alternatives.append(_lit(char) + emit(child))
        return alternatives[0] if len(alternatives) == 1 else "(?:" + "|".join(alternatives) + ")"

    return emit(root)


def _context(key: str, cases: dict[str, list[str]]) -> str:
    """What may follow a special case in its piece: suffixes only (spaCy strips them, then finds the special)."""
    if key[0] in "'`" and len(key) > 1 and key[1:] + "." in cases:
        # spaCy strips a prefix first: "'s." -> "'", "s." (the rest is itself a special case)
        return r"(?!\.)" + _SUFFIXES_TO_END
    if key.endswith(".") or key + "." in cases:
        # "Mr.." -> "Mr", ".." (spaCy's `\.\.+` suffix wins); "Id." is a special case of its own, not "Id" + "."
        return r"(?!\.)" + _SUFFIXES_TO_END
    return _SUFFIXES_TO_END


def _lookbehind(lefts: list[str], negative: bool = False) -> str:
    """Lookbehind for "a piece starts here with one of `lefts`": dispatch on the last two characters (fixed length,
    cheap) before the variable-length check."""
    by_end: dict[str, list[str]] = {}
    for left in lefts:
        by_end.setdefault(left[-2:] if len(left) > 1 else "", []).append(left)
    branches = [
        ("(?<=" + _lit(end) + ")" if len(end) == 2 else "") + "(?<=" + _BOUNDARY + _trie(group) + ")"
        for end, group in sorted(by_end.items())
    ]
    return ("(?!" if negative else "(?:") + "|".join(branches) + ")"


def _split_steps(cases: dict[str, list[str]]):
    r"""Replace steps that split special cases found as whole pieces (plus trailing suffixes): ``I|'m``,
    ``do|n't``, ``can|not``, ``10|am``, ``y'|all`` ...

    Every pattern starts by consuming a literal character (so that Oniguruma can search for it), checks the start of
    the special case with a lookbehind and the rest of the piece with a lookahead: splits before an apostrophe or an
    "n" consume that character and put a space before it; the other splits are anchored on the preceding digit or
    apostrophe and use ``\K``. Special cases that cannot be anchored that way (apostrophe-less contractions outside
    the "n" family) are matched from the start of the word when it is short (``wed``, ``id``, ``im``, ``hed``,
    ``ive``); the longer ones (``whats``, ``youre``, ``gotta`` ...) are not reproduced: they are rare, and matching
    them would cost a check at most letters of every text.
    """
    boundaries: dict[str, list[int]] = {}
    for key, tokens in cases.items():
        offset = 0
        for token in tokens[:-1]:
            offset += len(token)
            boundaries.setdefault(key, []).append(offset)

    def pass_of(key: str, cut: int) -> str | None:
        if key[cut] == "'":
            return "'"
        if key[cut] == "n":
            return "n"
        if key[cut - 1] in "0123456789'" or "'" in key[:cut]:
            return ""
        if cut <= 2 and len(boundaries[key]) == 1:
            return "word"  # "wed", "id", "im", "hed", "ive": anchored on the (short) word start
        return None  # not reproduced: longer apostrophe-less contractions ("whats", "youre", "gotta")

    def tails(rights: list[tuple[str, str]]) -> str:
        by_ctx: dict[str, list[str]] = {}
        for right, ctx in rights:
            by_ctx.setdefault(ctx, []).append(right)
        return "|".join("(?=" + _trie(r) + ctx + ")" for ctx, r in sorted(by_ctx.items()))

    def body(items: list[tuple[str, str, str]]) -> str:
        """items: (left incl. the consumed part, right, context) -> lookahead + lookbehind alternatives."""
        by_left: dict[str, list[tuple[str, str]]] = {}
        for left, right, ctx in items:
            by_left.setdefault(left, []).append((right, ctx))
        by_tails: dict[str, list[str]] = {}
        for left, rights in by_left.items():
            by_tails.setdefault(tails(rights), []).append(left)
        firsts = {right[:1] for _, right, _ in items}
        check = "" if "" in firsts else "(?=[" + _cls("".join(sorted(firsts))) + "])"
        return check + "(?:" + "|".join("(?:" + t + ")" + _lookbehind(lefts) for t, lefts in sorted(by_tails.items())) + ")"

    steps = []
    order = ["'", "n", "", "word"]  # consume "'" -> " '", consume "n" -> " n", zero-width -> " " (twice)
    for index, name in enumerate(order):
        items = []
        for key, cuts in boundaries.items():
            if any(pass_of(key, c) is None for c in cuts):
                continue
            earlier = {c for c in cuts if order.index(pass_of(key, c)) < index}
            for cut in cuts:
                if pass_of(key, cut) != name:
                    continue
                text = "".join((" " if j in earlier else "") + c for j, c in enumerate(key))
                at = cut + sum(1 for c in earlier if c <= cut)
                if name in ("'", "n"):  # consume the first character of the right part
                    items.append((text[: at + 1], text[at + 1 :], _context(key, cases)))
                else:  # consume the character before the boundary, then \K
                    items.append((text[:at], text[at:], _context(key, cases)))
        if not items:
            continue
        if name == "word":
            # the left part is consumed from the start of the word (a trie on its first characters), then \K
            entries: dict[str, list[str]] = {}
            for left, right, ctx in items:
                entries.setdefault(left, []).append("(?=" + _lit(right) + ctx + ")")
            tails_by_left = {
                left: "(?<=" + _BOUNDARY + _lit(left) + r")\K(?:" + "|".join(sorted(set(t))) + ")"
                for left, t in entries.items()
            }
            firsts = "".join(sorted({left[0] for left in tails_by_left}))
            steps.append(
                (
                    _define_suffix() + "(?=[" + _cls(firsts) + "])(?<=" + _BOUNDARY + ")" + _trie(tails_by_left),
                    " ",
                    "split contractions without apostrophe",
                )
            )
        elif name:
            steps.append((_define_suffix() + _lit(name) + "(?:" + body(items) + ")", " " + name, "split before " + name))
        else:
            by_last: dict[str, list] = {}
            for left, right, ctx in items:
                by_last.setdefault(left[-1], []).append((left, right, ctx))
            pattern = "|".join(_lit(c) + r"\K" + body(group) for c, group in sorted(by_last.items()))
            steps.append((_define_suffix() + pattern, " ", "split after digit or apostrophe"))
    return steps


def _spacy_steps(special_cases: dict[str, list[str]] | None = None):
    """(pattern, replacement, description) steps emulating spaCy's English tokenizer by inserting spaces.

    Input: standardized text with a leading space; pieces (spaCy's chunks) are separated by spaces. The steps come in
    spaCy's order: prefixes and special cases (`_prefix_steps`), suffixes (`_suffix_steps`), infixes
    (`_infix_steps`)."""
    cases = dict(english_special_cases() if special_cases is None else special_cases)
    isolated = set(_ISOLATED_SINGLE + _ISOLATED_RUN)
    cases = {
        k: v
        for k, v in cases.items()
        if k and not (set(k) & isolated) and not any(c in _WS for c in k) and not set(k) & set(":<>=^°")
    }
    # spaCy re-merges adjacent tokens that spell a special case ("im." -> "i", "m" + "." -> "i", "m."): emulate it
    # for the tokens ending a multi-token special case followed by a period, and for "Mr" + "." after an infix.
    stems = {k[:-1] for k, v in cases.items() if len(v) == 1 and _splits_final_period(k)}
    for key, tokens in list(cases.items()):
        if len(tokens) > 1 and tokens[-1] + "." in cases and key + "." not in cases:
            cases[key + "."] = tokens[:-1] + [tokens[-1] + "."]
    tokens = {t for v in cases.values() for t in v}
    lower_q, upper_q = "[" + _LOWER + _QUOTES_CTX + "]", "[" + _UPPER + _QUOTES_CTX + "]"
    alnum = "[" + _ALPHA + "0-9]"
    upper_stems = [t for t in stems if t[0].isupper()]
    alpha_stems = [t for t in stems if t[0].isalpha()]
    sfx = _define_suffix()

    ctx = dict(cases=cases, tokens=tokens, stems=stems, lower_q=lower_q, upper_q=upper_q, alnum=alnum,
               upper_stems=upper_stems, alpha_stems=alpha_stems, sfx=sfx)
    return _prefix_steps(**ctx) + _suffix_steps(**ctx) + _infix_steps(**ctx)


def _prefix_steps(cases, tokens, stems, lower_q, upper_q, alnum, upper_stems, alpha_stems, sfx):
    """S2 prefixes and S3 special cases (see `_spacy_steps`)."""
    steps = []
    # "''" is a special case that spaCy re-merges wherever two "'" tokens touch (prefixes, suffixes): the pair
    # becomes two placeholders until the end of the normalizer
    steps.append(("''(?![sS]" + _END + ")", _PH["'"] * 2, "protect ''"))
    # S2 prefixes: up to 4 one-character prefixes, ellipses and US$/C$/A$ at the start of a piece; special cases
    # that start with an apostrophe or backtick ("'s", "'em", "'cause" ...) keep it
    runs = "(?<=" + _BOUNDARY + "(?:" + _PREFIX_CHAR + "){1,4})"
    before = "(?<=[" + _cls(" " + _ISOLATED_SINGLE + _ISOLATED_RUN) + _PREFIX_CHAR[1:-1] + "].)"
    prefix_first = _first("%=:;<>#&'\"`$", "§—–" + _PUNCT_OTHER + _QUOTES_OTHER + _CURRENCY_OTHER)
    keep: dict[str, list[str]] = {}
    for key in cases:
        if key[0] in "'`" and len(key) > 1:
            keep.setdefault(_context(key, cases), []).append(key[1:])
    keep_prefix = "(?!(?<=" + _BOUNDARY + "['`])(?:" + "|".join(_trie(k) + c for c, k in sorted(keep.items())) + "))"
    steps.append(
        (
            sfx + prefix_first + before + runs + r"\K(?=" + _INNER + ")" + keep_prefix
            + r"|\$(?<=" + _BOUNDARY + r"(?:US|C|A)\$)\K(?=" + _INNER + ")"
            + "|" + _PH["'"] + "(?<=" + _BOUNDARY + _PH["'"] * 2 + r")\K(?=" + _INNER + ")"
            + r"|\.(?<=\.\.)(?<=" + _BOUNDARY + r"\.\.+)\K(?=[^.])(?=" + _INNER + ")",
            " ",
            "S2 prefixes",
        )
    )
    # S3 special cases: splits (their periods and final apostrophes are protected below, in S4 and S5)
    steps += [(p, r, "S3 " + d) for p, r, d in _split_steps(cases)]
    return steps


def _suffix_steps(cases, tokens, stems, lower_q, upper_q, alnum, upper_stems, alpha_stems, sfx):
    """S4 suffixes (see `_spacy_steps`)."""
    steps = []
    # S4 suffixes: split before each suffix of the rest of the piece (iterated from the right by spaCy: any position
    # from which the rest of the piece is a sequence of suffixes), except the final "." or "'" of special cases
    # ("Mr.", "a.m.", "goin'") and the "." that spaCy re-merges with a stem isolated by an infix ("day.Mr." ->
    # "day", ".", "Mr.").
    dotted = sorted({t[:-1] for t in tokens if t.endswith(".") and len(t) > 1})
    # final apostrophes to keep: special cases ("goin'") and the tokens of split ones ("y'" of "y'all", which is
    # followed by the rest of its special case, S3 having put a space before it)
    quoted = []
    for key, toks in cases.items():
        offset = 0
        for index, t in enumerate(toks):
            offset += len(t)
            if t.endswith("'") and len(t) > 1:
                rest = " " + " ".join(toks[index + 1 :]) if index < len(toks) - 1 else ""
                quoted.append((t, rest, _context(key, cases)))
    no_stem = (
        "(?<!" + alnum + "[:<>=]" + _trie(alpha_stems) + r"\.|" + lower_q + r"\." + _trie(upper_stems) + r"\.)"
    )
    not_special = "(?<=.)" + _lookbehind([t + "." for t in dotted], negative=True)
    period = (
        r"(?:(?=\.++" + _SUFFIXES_TO_END + r")|(?!\.)(?:(?<=°[FfCcKk]\.|° [FfCcKk]\.)|(?<=[" + _DOT_AFTER
        + r"]\.)(?<![0-9][" + _UNIT_STEMS + r"]\.)" + no_stem + "|(?<=[" + _UPPER + "][" + _UPPER + r"]\.)" + no_stem
        + ")" + not_special + "(?=" + _SUFFIXES_TO_END + "))"
    )
    steps.append((sfx + r"\.(?<=[^.]\.)(?<!" + _BOUNDARY + r"\.)" + period, " .", "S4 suffixes: ."))
    steps.append(
        (
            sfx + "'(?<!" + _BOUNDARY + "')(?:(?=[sS]" + _SUFFIXES_TO_END + ")|(?!" + "|".join(
                "(?<=" + _BOUNDARY + _lit(t) + ")" + _lit(rest) + ctx for t, rest, ctx in sorted(set(quoted))
            ) + ")(?=" + _SUFFIXES_TO_END + "))",
            " '",
            "S4 suffixes: '",
        )
    )
    steps.append(
        (
            sfx + "(?=" + _first("`:<>#&", "—–" + _PUNCT_OTHER + _QUOTES_OTHER + _PH["'"]) + ")(?<=" + _INNER
            + r")(?=\g<sfx>+" + _END + ")"
            + r"|[0-9]\K(?=(?:" + _CURRENCY + "|" + _UNITS + "|[" + _UNIT_STEMS + r"]\.)" + _SUFFIXES_TO_END + ")",
            " ",
            "S4 suffixes: others",
        )
    )
    return steps


def _infix_steps(cases, tokens, stems, lower_q, upper_q, alnum, upper_stems, alpha_stems, sfx):
    """S5 infixes (see `_spacy_steps`)."""
    steps = []
    # S5 infixes: ":<>=" between letters, "^" between digits, "..." inside a piece ...
    alpha = "[" + _ALPHA + "]"
    steps.append(
        (
            "[:<>=](?<=" + alnum + r"[:<>=])\K(?=" + alpha + r")|\^(?<=[0-9]\^)\K(?=[0-9\-])"
            r"|\.(?<=\.\.)\K(?=[^.])(?=" + _INNER + ")",
            " ",
            "S5 infixes (after)",
        )
    )
    steps.append(  # after the "after" pass: hence the optional space
        (
            r"(?=[.:<>=^])(?:(?=\.\.)(?<=[^.])(?<=" + _INNER + ")|(?=[:<>=] ?" + alpha + ")(?<=" + alnum
            + r")|(?=\^ ?[0-9\-])(?<=[0-9]))",
            " ",
            "S5 infixes (before)",
        )
    )
    # ... and "lower.Upper", case-sensitive. spaCy's URL matcher keeps "www.Example.com" whole; special cases keep
    # their periods ("Ph.D."); "Mr" + "." is re-merged ("education.Mr.Smith" -> "education", ".", "Mr.", "Smith").
    host = r"[A-Za-z0-9][A-Za-z0-9_\-]*(?:\.[A-Za-z0-9][A-Za-z0-9_\-]*)*\.[a-z]{2,63}" + _END
    inner_dots = []
    for t in tokens:
        for i in range(1, len(t) - 1):
            if t[i] == "." and (t[i - 1].islower() or t[i - 1] in "'\"") and (t[i + 1].isupper() or t[i + 1] in "'\""):
                inner_dots.append("(?<=" + _BOUNDARY + _lit(t[: i + 1]) + ")" + _lit(t[i + 1 :]) + _context(t, cases))
    not_inner = "(?!" + "|".join(inner_dots) + ")" if inner_dots else ""
    stem_before = (
        "(?<=" + _BOUNDARY + _trie(stems) + r"\.|" + alnum + "[:<>=]" + _trie(alpha_stems) + r"\.|" + lower_q
        + r"\." + _trie(upper_stems) + r"\.)"
    )
    infix = r"\.(?<=" + lower_q + r"\.)(?=" + upper_q + ")(?!" + host + ")" + not_inner
    steps.append((sfx + infix + stem_before.replace("(?<=", "(?<!", 1), " . ", "S5 infix lower.Upper"))
    steps.append((sfx + infix + stem_before, ". ", "S5 infix lower.Upper after a special case"))
    return steps


# ----------------------------------------------------------------------------------------------------------------
# ftfy.fix_text (ftfy 6 defaults), for the texts that need it (non-ASCII, "&", control characters)
# ----------------------------------------------------------------------------------------------------------------


def _byte_table(codec: str) -> dict[str, int]:
    table = {}
    for byte in range(256):
        try:
            table[bytes([byte]).decode(codec)] = byte
        except UnicodeDecodeError:
            pass
    return table


# ftfy's "sloppy-windows-1252" (undefined bytes decode to the C1 control with the same number) merged with latin-1
_SLOPPY_1252 = {**_byte_table("latin-1"), **_byte_table("cp1252")}
_MACROMAN = _byte_table("mac_roman")


def _mojibake_regex(table: dict[str, int]) -> re.Pattern:
    """The commonest UTF-8 sequences decoded as windows-1252: "Ã©" (é), "Â£" (£), "â€™" (’) ... (ftfy fixes these
    inside otherwise clean text; other leading bytes are left to the whole-segment check)."""
    cont = "[" + "".join(re.escape(c) for c, b in table.items() if 0x80 <= b <= 0xBF) + "]"
    return re.compile("[ÂÃ]" + cont + "|â" + cont + "{2}")


_EMBEDDED_MOJIBAKE = _mojibake_regex(_SLOPPY_1252)


def _decode(text: str, table: dict[str, int]) -> str | None:
    try:
        return bytes(table[c] if c in table else ord(c) if c < "\x80" else 256 for c in text).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None


def _fix_mojibake(text: str) -> str:
    """ftfy.fix_encoding, reduced: a segment that is entirely windows-1252 (or MacRoman) and decodes as UTF-8 is
    decoded; otherwise the common embedded sequences are."""
    for table in (_SLOPPY_1252, _MACROMAN):
        fixed = _decode(text, table)
        if fixed is not None and fixed != text:
            return fixed

    def embedded(match: re.Match) -> str:
        return _decode(match.group(0), _SLOPPY_1252) or match.group(0)

    return _EMBEDDED_MOJIBAKE.sub(embedded, text)


def _html_entities() -> dict[str, str]:
    entities = {}
    for name, char in html.entities.html5.items():
        if name.endswith(";"):
            entities["&" + name] = char
            if name == name.lower():  # ftfy also decodes the all-caps form of these
                upper = "&" + name.upper()
                if html.unescape(upper) == upper:
                    entities[upper] = char.upper()
    return entities


_HTML_ENTITIES = _html_entities()
_HTML_ENTITY_RE = re.compile(r"&#?[0-9A-Za-z]{1,24};")


def _unescape(match: re.Match) -> str:
    text = match.group(0)
    if text in _HTML_ENTITIES:
        return _HTML_ENTITIES[text]
    if text.startswith("&#"):
        unescaped = html.unescape(text)
        return text if ";" in unescaped else unescaped
    return text


def _c1_to_cp1252(match: re.Match) -> str:
    return bytes([ord(match.group(0))]).decode("cp1252", errors="ignore") or match.group(0)


_LIGATURES = str.maketrans(
    {"Ĳ": "IJ", "ĳ": "ij", "ŉ": "ʼn", "Ǳ": "DZ", "ǲ": "Dz", "ǳ": "dz", "Ǆ": "DŽ", "ǅ": "Dž", "ǆ": "dž", "Ǉ": "LJ",
     "ǈ": "Lj", "ǉ": "lj", "Ǌ": "NJ", "ǋ": "Nj", "ǌ": "nj", "ﬀ": "ff", "ﬁ": "fi", "ﬂ": "fl", "ﬃ": "ffi", "ﬄ": "ffl",
     "ﬅ": "ſt", "ﬆ": "st"}
)  # fmt: skip
_WIDTH = str.maketrans(
    {0x3000: " ", **{i: unicodedata.normalize("NFKC", chr(i)) for i in range(0xFF01, 0xFFF0)
                     if unicodedata.normalize("NFKC", chr(i)) != chr(i)}}
)  # fmt: skip
_CONTROL = dict.fromkeys(
    list(range(0x00, 0x09)) + [0x0B] + list(range(0x0E, 0x20)) + [0x7F] + list(range(0x206A, 0x2070)) + [0xFEFF]
    + list(range(0xFFF9, 0xFFFD))
)  # fmt: skip
_SINGLE_QUOTES = re.compile("[\u02bc\u2018-\u201b]")
_DOUBLE_QUOTES = re.compile("[\u201c-\u201f]")
_C1 = re.compile("[\x80-\x9f]")
_TERMINAL_ESCAPES = re.compile("\033\\[((?:\\d|;)*)([a-zA-Z])")
_SURROGATES = re.compile("[\ud800-\udfff]")
# spaCy splits "other symbols" (Unicode category So: ©, °, ™, emoji ...) off everywhere (they are prefixes, suffixes
# and infixes): GPT1Tokenizer surrounds them with spaces here rather than paying for it in every Rust pass.
_SYMBOLS: re.Pattern | None = None


def _symbols() -> re.Pattern:
    global _SYMBOLS
    if _SYMBOLS is None:
        ranges, start = [], None
        for i in range(0x80, 0x110001):
            inside = i < 0x110000 and unicodedata.category(chr(i)) == "So"
            if inside and start is None:
                start = i
            elif not inside and start is not None:
                ranges.append(re.escape(chr(start)) + ("-" + re.escape(chr(i - 1)) if i - 1 > start else ""))
                start = None
        _SYMBOLS = re.compile("[" + "".join(ranges) + "]")
    return _SYMBOLS


def _fix_segment(text: str, unescape: bool) -> str:
    while True:
        original = text
        if unescape and "&" in text:
            text = _HTML_ENTITY_RE.sub(_unescape, text)
        if not text.isascii():
            text = _fix_mojibake(text)
            text = _C1.sub(_c1_to_cp1252, text)
            text = text.translate(_LIGATURES).translate(_WIDTH)
            text = _DOUBLE_QUOTES.sub('"', _SINGLE_QUOTES.sub("'", text))
        text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n").replace("\u2029", "\n")
        text = text.replace("\u0085", "\n")
        if "\033" in text:
            text = _TERMINAL_ESCAPES.sub("", text)
        if _SURROGATES.search(text):
            text = _SURROGATES.sub("\ufffd", text)
        text = unicodedata.normalize("NFC", text.translate(_CONTROL))
        if text == original:
            return text


def fix_text(text: str) -> str:
    """`ftfy.fix_text` as far as GPT-1's inputs need it, plus the isolation of symbols (see `_symbols`).

    Reproduces ftfy 6's defaults: HTML entities (only while no "<" has been seen, per line), UTF-8 mojibake decoded
    with windows-1252/latin-1/MacRoman (ftfy's heuristics are reduced to "the sequence decodes as UTF-8"), C1
    controls, Latin ligatures, full-width characters, curly quotes, line breaks, terminal escapes, control
    characters, NFC. Texts that are printable ASCII without "&" are returned unchanged at once (ftfy's identity)."""
    if text.isascii() and text.isprintable() and "&" not in text:
        return text
    out = []
    unescape = True
    position = 0
    while position < len(text):  # ftfy works line by line
        end = text.find("\n", position) + 1 or len(text)
        segment = text[position:end]
        if "<" in segment:
            unescape = False  # ftfy's "auto" mode stops unescaping after the first line with a "<"
        out.append(_fix_segment(segment, unescape))
        position = end
    text = "".join(out)
    if not text.isascii():
        text = _symbols().sub(r" \g<0> ", text)
    return text


# ----------------------------------------------------------------------------------------------------------------
# The backend pipeline
# ----------------------------------------------------------------------------------------------------------------

def build_normalizer(special_cases: dict[str, list[str]] | None = None) -> normalizers.Normalizer:
    """The Rust normalizer: text_standardize + spaCy splitting + lowercase (ftfy: see `fix_text`)."""
    steps: list[normalizers.Normalizer] = []

    def replace(pattern: str, content: str):
        steps.append(normalizers.Replace(Regex(pattern), content))

    # T: text_standardize (the isolation of `- ~ ! " ...` is done by the pre-tokenizer)
    replace("—|–|―", "-")
    steps.append(normalizers.Replace("…", "..."))
    steps.append(normalizers.Replace("´", "'"))
    other_ws = _WS_NO_NL.replace(" ", "")
    replace(_first("".join(c for c in other_ws if c < "\x80"), "".join(c for c in other_ws if c >= "\x80")), " ")
    replace("\n[ \n]*", " \n ")
    iso = "[" + _cls(_ISOLATED_SINGLE) + "]"
    runs = "".join(_cls(c) for c in _ISOLATED_RUN)
    replace(  # space before: lookahead first (the first character of a run only)
        "(?=" + iso + ")(?<=[^ ])|(?=[" + runs + r"])(?<=[^ ])(?!(?<=-)-|(?<=~)~|(?<=\\)\\|(?<=/)/|(?<=\|)\|)",
        " ",
    )
    replace(  # space after: consume the character (the last one of a run), then \K
        iso + r"\K(?=[^ ])|[" + runs + r"](?:(?<=-)(?!-)|(?<=~)(?!~)|(?<=\\)(?!\\)|(?<=/)(?!/)|(?<=\|)(?!\|))\K(?=[^ ])",
        " ",
    )
    replace("  +", " ")
    steps.append(normalizers.Strip())
    steps += _chunk_steps(special_cases)
    return normalizers.Sequence(steps)


def _chunk_steps(special_cases: dict[str, list[str]] | None = None) -> list[normalizers.Normalizer]:
    """S (spaCy's English tokenizer, as spaces inserted into the text) + lowercase, on standardized text. spaCy
    tokenizes every space-separated chunk on its own, and so do these steps: their result for a text is the
    concatenation of their results for its chunks (what `build_chunk_normalizer` and `GPT1Tokenizer._ids` use)."""
    # The leading space marks the first piece's start (and keeps zero-width insertions away from position 0, where
    # tokenizers 0.2x mis-aligns them).
    steps: list[normalizers.Normalizer] = [normalizers.Prepend(" ")]
    steps += [normalizers.Replace(Regex(pattern), content) for pattern, content, _ in _spacy_steps(special_cases)]
    steps += [normalizers.Replace(placeholder, char) for char, placeholder in _PH.items()]
    # .lower(), after the (case-sensitive) splitting, like the original
    steps.append(normalizers.Lowercase())
    return steps


def build_chunk_normalizer(special_cases: dict[str, list[str]] | None = None) -> normalizers.Normalizer:
    """The spaCy + lowercase part of `build_normalizer` alone, for one chunk of standardized text (see `_ids`)."""
    return normalizers.Sequence(_chunk_steps(special_cases))


# text_standardize of the original (openai/finetune-transformer-lm, text_utils.py), in Python `re` like the original,
# applied to a whole batch at once (texts joined by NUL, which `fix_text` removes and none of these patterns touch).
# The runs of `_ISOLATED_SINGLE` characters are split character by character here (each character surrounded by
# spaces), which is what spaCy then does to them (they are all spaCy prefixes); runs of `_ISOLATED_RUN` stay whole.
_STANDARDIZE_REPLACE = (("—", "-"), ("–", "-"), ("―", "-"), ("…", "..."), ("´", "'"))
_STANDARDIZE_SINGLE = tuple((c, f" {c} ") for c in _ISOLATED_SINGLE)
_STANDARDIZE_RUN = re.compile("|".join(re.escape(c) + "+" for c in _ISOLATED_RUN))
_STANDARDIZE_NEWLINE = re.compile(r"\s*\n\s*")
_STANDARDIZE_OTHER_SPACE = re.compile(r"[^\S\n ]")  # what `[^\S\n]+` -> " " leaves to do once runs of " " are skipped
_SEPARATOR = "\x00"


def _standardize_joined(text: str) -> str:
    """`text_standardize` up to its final strip, without collapsing runs of spaces (the chunking skips them)."""
    if not text.isascii():
        for char, replacement in _STANDARDIZE_REPLACE:
            if char in text:
                text = text.replace(char, replacement)
    for char, replacement in _STANDARDIZE_SINGLE:
        if char in text:
            text = text.replace(char, replacement)
    text = _STANDARDIZE_RUN.sub(lambda match: " " + match.group() + " ", text)
    if "\n" in text:
        text = _STANDARDIZE_NEWLINE.sub(" \n ", text)
    return _STANDARDIZE_OTHER_SPACE.sub(" ", text)


def build_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    """Pieces are separated by spaces; "\\n" stays a piece (BPE turns it into "\\n</w>", like the original's
    special case for spaCy's "\\n " token)."""
    return pre_tokenizers.Split(" ", behavior="removed")


def _read_vocab(vocab) -> dict[str, int]:
    if isinstance(vocab, dict):
        return {str(k): int(v) for k, v in vocab.items()}
    if isinstance(vocab, (list, tuple)):  # list of tokens (or (token, score) pairs) in id order
        return {(t[0] if isinstance(t, (list, tuple)) else t): i for i, t in enumerate(vocab)}
    path = os.fspath(vocab)
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as error:
        raise OSError(f"GPT1Tokenizer: cannot read the vocabulary file {path!r} (encoder_bpe_40000.json): {error}") from error
    if not isinstance(data, dict) or not data:
        raise ValueError(f"GPT1Tokenizer: the vocabulary file {path!r} is not a JSON object mapping tokens to ids")
    return {str(k): int(v) for k, v in data.items()}


def _read_merges(merges) -> list[tuple[str, str]]:
    if isinstance(merges, (list, tuple)):
        pairs = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges]
    else:
        path = os.fspath(merges)
        try:
            with open(path, encoding="utf-8") as handle:
                lines = handle.read().split("\n")
        except (OSError, UnicodeDecodeError) as error:
            raise OSError(f"GPT1Tokenizer: cannot read the merges file {path!r} (vocab_40000.bpe): {error}") from error
        if lines and lines[0].startswith("#version"):
            lines = lines[1:]  # as the original: the first line is a version header...
        pairs = [tuple(line.split()) for line in lines if line.strip()]  # ...and the last line is empty
        if not pairs:
            raise ValueError(f"GPT1Tokenizer: the merges file {path!r} contains no merges")
    bad = [p for p in pairs if len(p) != 2]
    if bad:
        raise ValueError(f"GPT1Tokenizer: malformed merges (expected 'a b' pairs), e.g. {bad[0]!r}")
    return pairs


def build_backend_tokenizer(
    vocab: dict[str, int],
    merges: list[tuple[str, str]],
    unk_token: str,
    special_tokens: list[str],
    special_cases: dict[str, list[str]] | None = None,
) -> Tokenizer:
    """The complete `tokenizers.Tokenizer`: normalizer + pre-tokenizer + BPE, then the special tokens appended after
    the BPE vocabulary (in the order given: start, delimiter, classify, pad) and the GPT-1 input template."""
    if unk_token not in vocab:
        raise ValueError(f"GPT1Tokenizer: the unknown token {unk_token!r} is not in the vocabulary")
    tokenizer = Tokenizer(
        BPE(
            vocab=vocab,
            merges=merges,
            unk_token=unk_token,
            end_of_word_suffix=END_OF_WORD,
            fuse_unk=False,  # one id per unknown character, like the original's encoder.get(piece, 0)
            dropout=None,
        )
    )
    tokenizer.normalizer = build_normalizer(special_cases)
    tokenizer.pre_tokenizer = build_pre_tokenizer()
    tokenizer.decoder = decoders.BPEDecoder(suffix=END_OF_WORD)
    size = tokenizer.get_vocab_size(with_added_tokens=False)
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special_tokens])
    ids = [tokenizer.token_to_id(t) for t in special_tokens]
    if ids != list(range(size, size + len(special_tokens))):
        logger.warning(f"GPT1Tokenizer: special tokens {special_tokens} got ids {ids} (expected {size}..)")
    tokenizer.post_processor = input_template(tokenizer, special_tokens[:3], add_extract_token=False)
    return tokenizer


def input_template(tokenizer: Tokenizer, special_tokens, add_extract_token: bool) -> processors.TemplateProcessing:
    """The paper's input transformations (section 3.3) as a `TemplateProcessing`: ``_start_ a _delimiter_ b
    _classify_`` for a pair; for a single text ``_start_ text _classify_`` with `add_extract_token`, else
    ``_start_ text`` (a prompt that generation continues)."""
    start, delimiter, classify = special_tokens
    return processors.TemplateProcessing(
        single=f"{start} $A {classify}" if add_extract_token else f"{start} $A",
        pair=f"{start} $A {delimiter} $B:1 {classify}:1",
        special_tokens=[(t, tokenizer.token_to_id(t)) for t in (start, delimiter, classify)],
    )


def _map_texts(fn, texts):
    """Apply `fn` to every string of a (possibly nested, possibly pre-tokenized) text input."""
    if isinstance(texts, str):
        return fn(texts)
    if isinstance(texts, (list, tuple)):
        return [fn(t) if isinstance(t, str) else _map_texts(fn, t) for t in texts]
    return texts


class GPT1Tokenizer(TokenizersBackend):
    """GPT-1's tokenizer: ftfy + text_standardize + spaCy's English tokenizer + lowercase + BPE, Rust-backed.

    See the module docstring for how each step of the original pipeline is reproduced. Build it from the original
    files (``GPT1Tokenizer("encoder_bpe_40000.json", "vocab_40000.bpe")``), from ``vocab``/``merges`` objects, or
    with ``from_pretrained`` on a folder written by ``save_pretrained`` (``tokenizer.json``).

    ``tokenizer(a, b)`` gives ``[_start_] + a + [_delimiter_] + b + [_classify_]`` (the paper's transformation for
    pairs); ``tokenizer(text)`` gives ``[_start_] + ids``, a prompt that ``generate`` continues, and
    ``[_start_] + ids + [_classify_]`` for a single-text task with ``add_extract_token=True`` (per call, or once:
    ``tokenizer.add_extract_token = True`` / ``from_pretrained(..., add_extract_token=True)``, saved with the
    tokenizer); ``add_special_tokens=False`` gives the original ids. ``model_max_length`` defaults to GPT-1's 512
    positions (so ``truncation=True`` fits the model); set it to ``config.n_positions`` for a smaller model.
    Texts that need ftfy's repairs (non-ASCII characters, "&", control characters) go through `fix_text` in Python
    before the Rust pipeline; other texts go straight to Rust.

    Args:
        vocab_file (`str`, *optional*): GPT-1's ``encoder_bpe_40000.json`` (token -> id).
        merges_file (`str`, *optional*): GPT-1's ``vocab_40000.bpe`` (one merge per line after a version header).
        vocab (`dict[str, int]`, *optional*): the vocabulary itself (takes precedence over ``vocab_file``).
        merges (`list`, *optional*): the merges itself, as ``(a, b)`` pairs or ``"a b"`` strings.
        unk_token (`str`, *optional*): the token that unknown BPE pieces map to; defaults to the token with id 0
            (``<unk>`` in GPT-1's vocabulary), since the original maps missing pieces to id 0.
        start_token, delimiter_token, classify_token, pad_token (`str`): the special tokens appended after the
            vocabulary, in this order (ids V, V+1, V+2, V+3 for a vocabulary of size V).
        add_extract_token (`bool`, defaults to False): end a single text with ``_classify_`` too (pairs always are).
        model_max_length (`int`, defaults to 512): GPT-1's n_positions; an unset (1e30) saved value also becomes 512.
    """

    vocab_files_names = VOCAB_FILES_NAMES
    model_input_names = ["input_ids", "attention_mask"]
    padding_side = "right"
    model = BPE
    fast_ids_path = True  # see _encode_plus_fast

    def __init__(
        self,
        vocab_file: str | None = None,
        merges_file: str | None = None,
        vocab: dict[str, int] | str | None = None,
        merges: list | str | None = None,
        unk_token: str | None = None,
        start_token: str = START_TOKEN,
        delimiter_token: str = DELIMITER_TOKEN,
        classify_token: str = CLASSIFY_TOKEN,
        pad_token: str = PAD_TOKEN,
        add_extract_token: bool = False,
        **kwargs,
    ):
        tokenizer_file = kwargs.pop("tokenizer_file", None)
        # transformers' "no limit" (1e30) would make truncation=True a no-op: GPT-1 has 512 positions
        if kwargs.get("model_max_length") is None or kwargs["model_max_length"] >= VERY_LARGE_INTEGER:
            kwargs["model_max_length"] = N_POSITIONS
        kwargs.pop("tokenizer_object", None)
        # names saved by save_pretrained come back as "model specific" special tokens
        specific = kwargs.pop("model_specific_special_tokens", None) or {}
        start_token = str(specific.get("start_token", start_token))
        delimiter_token = str(specific.get("delimiter_token", delimiter_token))
        classify_token = str(specific.get("classify_token", classify_token))
        pad_token = str(pad_token)
        for name in ("bos_token", "cls_token", "sep_token"):
            kwargs.pop(name, None)  # always derived from the names above

        if vocab is None and merges is None and tokenizer_file is not None and os.path.isfile(tokenizer_file):
            with open(tokenizer_file, encoding="utf-8") as handle:
                model = json.load(handle)["model"]
            vocab, merges = model["vocab"], model["merges"]
        if vocab is None:
            vocab = vocab_file
        if merges is None:
            merges = merges_file
        if vocab is None or merges is None:
            raise ValueError(
                "GPT1Tokenizer needs GPT-1's vocabulary and merges: pass vocab_file='encoder_bpe_40000.json' and "
                "merges_file='vocab_40000.bpe' (or vocab=/merges=, or use from_pretrained on a saved folder)"
            )
        vocab = _read_vocab(vocab)
        merges = _read_merges(merges)
        if unk_token is None:
            by_id = {i: t for t, i in vocab.items()}
            unk_token = by_id.get(0, "<unk>")
        unk_token = str(unk_token)
        self._special_names = (start_token, delimiter_token, classify_token, pad_token)
        self.cache: dict[str, list[int]] = {}  # `_ids`: the ids of each chunk ("cache": what `datasets` leaves out of fingerprints)
        self._tokenizer = build_backend_tokenizer(vocab, merges, unk_token, list(self._special_names))
        self._chunk_normalizer = build_chunk_normalizer()
        kwargs.pop("post_processor", None)  # ours is rebuilt above
        # the original never reads special tokens from the text: "_start_" or "<unk>" in a text are plain text
        kwargs.setdefault("split_special_tokens", True)
        super().__init__(
            vocab_file=vocab_file if isinstance(vocab_file, str) else None,
            merges_file=merges_file if isinstance(merges_file, str) else None,
            unk_token=unk_token,
            bos_token=start_token,
            sep_token=delimiter_token,
            cls_token=classify_token,
            pad_token=pad_token,
            start_token=start_token,
            delimiter_token=delimiter_token,
            classify_token=classify_token,
            add_extract_token=add_extract_token,
            **kwargs,
        )
        self.add_extract_token = add_extract_token
        self._base_size = len(self)  # the fast path is only valid while no token has been added since


    # --- special tokens (GPT-1 paper, section 3.3) ---
    @property
    def add_extract_token(self) -> bool:
        return self._add_extract_token

    @add_extract_token.setter
    def add_extract_token(self, value: bool) -> None:
        self._add_extract_token = bool(value)
        self.init_kwargs["add_extract_token"] = self._add_extract_token  # saved in tokenizer_config.json
        self._tokenizer.post_processor = input_template(self._tokenizer, self._special_names[:3], self._add_extract_token)

    @property
    def start_token(self) -> str:
        return self._special_names[0]

    @property
    def delimiter_token(self) -> str:
        return self._special_names[1]

    @property
    def classify_token(self) -> str:
        return self._special_names[2]

    @property
    def start_token_id(self) -> int:
        return self._tokenizer.token_to_id(self._special_names[0])

    @property
    def delimiter_token_id(self) -> int:
        return self._tokenizer.token_to_id(self._special_names[1])

    @property
    def classify_token_id(self) -> int:
        return self._tokenizer.token_to_id(self._special_names[2])

    @property
    def do_lower_case(self) -> bool:
        return True

    # --- encoding: ftfy's repairs in Python for the texts that need them, everything else in Rust ---
    def _encode_plus(self, text, text_pair=None, add_extract_token: bool | None = None, **kwargs):
        if add_extract_token is not None and add_extract_token != self.add_extract_token:
            default = self.add_extract_token
            self.add_extract_token = add_extract_token  # for this call only
            try:
                return self._encode_plus(text, text_pair, **kwargs)
            finally:
                self.add_extract_token = default
        text = _map_texts(fix_text, text)
        text_pair = None if text_pair is None else _map_texts(fix_text, text_pair)
        fast = self._encode_plus_fast(text, text_pair, **kwargs)
        if fast is not None:
            return fast
        return super()._encode_plus(text=text, text_pair=text_pair, **kwargs)

    def _encode_plus_fast(
        self,
        text,
        text_pair=None,
        add_special_tokens: bool = True,
        padding_strategy: PaddingStrategy = PaddingStrategy.DO_NOT_PAD,
        truncation_strategy: TruncationStrategy = TruncationStrategy.DO_NOT_TRUNCATE,
        max_length: int | None = None,
        stride: int = 0,
        is_split_into_words: bool = False,
        pad_to_multiple_of: int | None = None,
        padding_side: str | None = None,
        return_tensors=None,
        return_token_type_ids: bool | None = None,
        return_attention_mask: bool | None = None,
        return_overflowing_tokens: bool = False,
        return_special_tokens_mask: bool = False,
        return_offsets_mapping: bool = False,
        return_length: bool = False,
        verbose: bool = True,
        split_special_tokens: bool | None = None,
        **kwargs,
    ):
        """The common case of `_encode_plus` -- plain texts or pairs, input ids and attention masks, padding,
        truncation of single texts -- through `_ids` (text_standardize per batch + a per-chunk id cache), about 4x as
        fast as the generic path; returns None for every other case (offsets, token type ids, overflow, pre-tokenized input,
        truncated pairs, special tokens read from the text ...), which the generic path then serves. Its outputs
        carry no `tokenizers.Encoding` (``.tokens()``/``.word_ids()``: use ``tokenize`` or ``return_offsets_mapping``);
        set ``fast_ids_path = False`` on the tokenizer to always use the generic path."""
        if not self.fast_ids_path or kwargs or is_split_into_words or return_overflowing_tokens:
            return None
        if len(self) != getattr(self, "_base_size", -1):  # added tokens are matched in the text: generic path
            return None
        if return_offsets_mapping or return_token_type_ids or return_special_tokens_mask or return_length:
            return None
        if not (self.split_special_tokens if split_special_tokens is None else split_special_tokens):
            return None
        batched = isinstance(text, (list, tuple))
        if batched:
            if not all(isinstance(t, str) for t in text):
                return None
            if text_pair is not None and (
                not isinstance(text_pair, (list, tuple))
                or len(text_pair) != len(text)
                or not all(isinstance(t, str) for t in text_pair)
            ):
                return None
            firsts, seconds = list(text), None if text_pair is None else list(text_pair)
        elif isinstance(text, str) and (text_pair is None or isinstance(text_pair, str)):
            firsts, seconds = [text], [text_pair] if text_pair else None
        else:
            return None
        truncate = truncation_strategy != TruncationStrategy.DO_NOT_TRUNCATE and max_length is not None
        if truncate and (seconds is not None or truncation_strategy == TruncationStrategy.ONLY_SECOND):
            return None
        start, delimiter, classify = self.start_token_id, self.delimiter_token_id, self.classify_token_id
        bodies = self._ids(firsts)
        extract = [classify] if self.add_extract_token else []
        if truncate:
            keep = max(max_length - ((1 + len(extract)) if add_special_tokens else 0), 0)
            left = self.truncation_side == "left"
            bodies = [(b[max(len(b) - keep, 0) :] if keep else []) if left else b[:keep] for b in bodies]
        if seconds is None:
            seqs = [[start, *b, *extract] for b in bodies] if add_special_tokens else bodies
        else:
            pairs = zip(bodies, self._ids(seconds), strict=True)
            seqs = [[start, *a, delimiter, *b, classify] if add_special_tokens else a + b for a, b in pairs]
        if verbose and not truncate:
            for ids in seqs:
                self._eventual_warn_about_too_long_sequence(ids, max_length, verbose)
        if return_attention_mask is None:
            return_attention_mask = "attention_mask" in self.model_input_names
        if padding_strategy != PaddingStrategy.DO_NOT_PAD:
            data = dict(
                self.pad(
                    {"input_ids": seqs},
                    padding=padding_strategy,
                    max_length=max_length,
                    pad_to_multiple_of=pad_to_multiple_of,
                    padding_side=padding_side,
                    return_attention_mask=return_attention_mask,
                    verbose=verbose,
                )
            )
        else:
            data = {"input_ids": seqs}
            if return_attention_mask:
                data["attention_mask"] = [[1] * len(ids) for ids in seqs]
        if not batched and return_tensors is None:
            data = {key: value[0] for key, value in data.items()}
        return BatchEncoding(data, tensor_type=return_tensors)

    def tokenize(self, text: str, pair: str | None = None, add_special_tokens: bool = False, **kwargs) -> list[str]:
        return super()._encode_plus(
            text=_map_texts(fix_text, text),
            text_pair=None if pair is None else _map_texts(fix_text, pair),
            add_special_tokens=add_special_tokens,
            **kwargs,
        ).tokens()

    def _ids(self, texts: list[str]) -> list[list[int]]:
        """BPE ids (no special tokens) of texts already through `fix_text`, the way spaCy works: text_standardize on
        the whole batch at once (Python `re`, as the original), then each space-separated chunk is looked up in a
        per-tokenizer cache of its ids; a chunk seen for the first time goes through the Rust spaCy steps
        (`build_chunk_normalizer`) and the BPE. Same ids as the full Rust pipeline (``tokenizer.json``), which it
        skips together with the generic `tokenizers.Encoding` machinery (they cost more than the lookups)."""
        if not texts:
            return []
        cache = self.cache
        if len(cache) > 1_000_000:
            cache.clear()
        joined = _SEPARATOR.join(texts)
        if joined.count(_SEPARATOR) != max(len(texts) - 1, 0):  # a NUL inside a text (not through fix_text)
            return [self._ids([text])[0] if _SEPARATOR not in text else self._rust_ids(text) for text in texts]
        get = cache.get
        result = []
        for original, text in zip(texts, _standardize_joined(joined).split(_SEPARATOR), strict=True):
            if "°" in original:  # the one rule that looks across chunks: "30°C." -> fix_text "30 ° C." -> "C", "."
                result.append(self._rust_ids(original))
                continue
            out: list[int] = []
            for chunk in text.strip().split(" "):
                if chunk:
                    hit = get(chunk)
                    if hit is None:
                        hit = cache[chunk] = self._rust_ids(chunk, chunk=True)
                    out += hit
            result.append(out)
        return result

    def __getstate__(self):
        """Pickles (and `datasets` fingerprints) without the chunk cache: a used and an unused tokenizer are equal."""
        state = self.__dict__.copy()
        state["cache"] = {}
        return state

    def _rust_ids(self, text: str, chunk: bool = False) -> list[int]:
        """BPE ids of one text (or one standardized chunk) through the Rust normalizer and the BPE model."""
        normalize = (self._chunk_normalizer if chunk else self._tokenizer.normalizer).normalize_str
        model = self._tokenizer.model
        return [token.id for piece in normalize(text).split(" ") if piece for token in model.tokenize(piece)]

    def encode_batch_ids(self, texts, add_special_tokens: bool = True) -> list[list[int]]:
        """Ids only (no masks, truncation or padding), for data pipelines: ``texts`` are strings or ``(a, b)``
        pairs. Same ids as ``tokenizer(texts)["input_ids"]``."""
        start, delimiter, classify = self.start_token_id, self.delimiter_token_id, self.classify_token_id
        extract = [classify] if self.add_extract_token else []
        texts = list(texts)
        if len(self) != self._base_size:  # tokens were added (and are matched in the text): generic path
            firsts = [t if isinstance(t, str) else t[0] for t in texts]
            seconds = None if all(isinstance(t, str) for t in texts) else [t[1] for t in texts]
            return self(firsts, seconds, add_special_tokens=add_special_tokens)["input_ids"]
        if all(isinstance(t, str) for t in texts):
            bodies = self._ids([fix_text(t) for t in texts])
            return [[start, *b, *extract] for b in bodies] if add_special_tokens else bodies
        result = []
        for item in texts:
            if isinstance(item, str):
                body = self._ids([fix_text(item)])[0]
                result.append([start, *body, *extract] if add_special_tokens else body)
            else:
                a, b = self._ids([fix_text(item[0]), fix_text(item[1])])
                result.append([start, *a, delimiter, *b, classify] if add_special_tokens else a + b)
        return result

    # --- decoding: join BPE pieces ("</w>" ends a word), special tokens as separate words ---
    def _decode(self, token_ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces=None, **kwargs):
        if isinstance(token_ids, int):
            token_ids = [token_ids]
        special = set(self.all_special_ids)
        parts: list[str] = []
        run: list[int] = []
        for index in list(token_ids) + [None]:
            if index is not None and int(index) not in special:
                run.append(int(index))
                continue
            if run:
                parts.append(self._tokenizer.decode(run, skip_special_tokens=False))
                run = []
            if index is not None and not skip_special_tokens:
                parts.append(self._tokenizer.id_to_token(int(index)))
        return " ".join(p for p in parts if p)

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return "".join(t.replace(END_OF_WORD, " ") if t.endswith(END_OF_WORD) else t for t in tokens).strip()

    # --- training a new BPE with the same pipeline and special tokens ---
    def train_new_from_iterator(
        self,
        text_iterator,
        vocab_size: int,
        length: int | None = None,
        new_special_tokens=None,
        special_tokens_map=None,
        **kwargs,
    ) -> GPT1Tokenizer:
        """Train a new BPE vocabulary (``vocab_size`` entries, ``<unk>`` = id 0 included) with GPT-1's pipeline;
        the four special tokens are appended after it, as for GPT-1 (so ``len(new) == vocab_size + 4``).
        ``text_iterator`` yields texts or batches (lists) of texts; ``kwargs`` go to `tokenizers.trainers.BpeTrainer`
        (e.g. ``min_frequency``, ``limit_alphabet``, ``show_progress``)."""
        names = dict(zip(("start_token", "delimiter_token", "classify_token", "pad_token"), self._special_names, strict=True))
        if special_tokens_map:
            names = {k: special_tokens_map.get(v, v) for k, v in names.items()}
        unk = "<unk>"
        kwargs.setdefault("show_progress", False)
        trainer = BpeTrainer(vocab_size=vocab_size, special_tokens=[unk], end_of_word_suffix=END_OF_WORD, **kwargs)
        backend = Tokenizer(BPE(unk_token=unk, end_of_word_suffix=END_OF_WORD, fuse_unk=False))
        backend.normalizer = build_normalizer()
        backend.pre_tokenizer = build_pre_tokenizer()

        def texts():
            for item in text_iterator:
                for text in [item] if isinstance(item, str) else item:
                    yield fix_text(text)

        backend.train_from_iterator(texts(), trainer=trainer, length=length)
        model = json.loads(backend.to_str())["model"]
        # tokenizers numbers the end-of-word character tokens in hash-map order (huggingface/tokenizers#1794), so the
        # same corpus gave other ids on every run: canonical ids (<unk> first, then sorted) make a training reproducible
        vocab = {token: i for i, token in enumerate([unk, *sorted(t for t in model["vocab"] if t != unk)])}
        new = self.__class__(vocab=vocab, merges=model["merges"], unk_token=unk, add_extract_token=self.add_extract_token,
                             model_max_length=self.model_max_length, **names)
        if new_special_tokens:
            new.add_special_tokens({"additional_special_tokens": list(new_special_tokens)})
        return new


# `save_pretrained` copies this file and writes the AutoTokenizer auto_map (remote code) without a registration call.
GPT1Tokenizer._auto_class = "AutoTokenizer"

__all__ = [
    "GPT1Tokenizer",
    "build_backend_tokenizer",
    "build_chunk_normalizer",
    "build_normalizer",
    "build_pre_tokenizer",
    "fix_text",
]
