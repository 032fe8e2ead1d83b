"""GPT1Tokenizer: agreement with GPT-1's original text pipeline, special-token layout, save/load, training."""

import json
import os

import pytest

from gpt1_hf.tokenization_gpt1 import GPT1Tokenizer, english_special_cases, fix_text

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
BPE_DIR = os.path.join(FIXTURES, "gpt1_bpe")
VOCAB = os.path.join(BPE_DIR, "encoder_bpe_40000.json")
MERGES = os.path.join(BPE_DIR, "vocab_40000.bpe")


def fixture_sentences():
    with open(os.path.join(FIXTURES, "tokenizer_sentences.txt"), encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip() and not line.startswith("#")]


@pytest.fixture(scope="module")
def tok():
    return GPT1Tokenizer(vocab_file=VOCAB, merges_file=MERGES)


@pytest.fixture(scope="module")
def oracle():
    pytest.importorskip("ftfy")
    pytest.importorskip("spacy")
    from oracle_tokenizer import OracleTextEncoder

    return OracleTextEncoder(VOCAB, MERGES)


# --- agreement with the original pipeline ------------------------------------------------------------------------


def test_agreement_with_original_pipeline(tok, oracle):
    sentences = fixture_sentences()
    assert len(sentences) >= 300
    ours = tok(sentences, add_special_tokens=False)["input_ids"]
    reference = oracle.encode(sentences)
    wrong = [(s, oracle.tokenize(s), tok.convert_ids_to_tokens(a)) for s, a, b in zip(sentences, ours, reference, strict=True)
             if a != b]
    agreement = 1 - len(wrong) / len(sentences)
    assert agreement >= 0.995, f"agreement {agreement:.4f}; first differences: {wrong[:3]}"


@pytest.mark.parametrize(
    "text",
    [
        "I don't think so, Mr. Smith -- it's 5:30 p.m. in the U.S. now...",
        "DON'T shout! \"Can't\" and 'cannot' aren't the same; we'll see.",
        "He paid $5.99 (about 10%) for 3kg of apples at 10am.",
        "The café's “smart quotes” — and an ellipsis… plus Â£35 and &amp; entities.",
        "Line one\nLine two\r\nthree\t\ttabs  and   spaces",
        "Visit www.Example.com or e-mail john@example.com; end.The next sentence",
        "☃ snowman, 30°C., emoji 😀 and CJK 漢字 characters",
        "''Quoted'' and ``backticks'' with y'all, gonna, o'clock, 'em, ain't, Let's, I'd've.",
        "Special token strings are plain text: <unk> _start_ _classify_ <pad>",
        # long runs of dots inside a piece (a RACE article's "table of contents") once made the Rust regex engine
        # give up ("retry-limit-in-match over" panic)
        "Jan.5" + "." * 36 + "Return May.29" + "." * 34 + "Last, Sep.11.." + "." * 60 + "Open wait.... what..?",
        "",
    ],
)
def test_hard_cases_match_the_original(tok, oracle, text):
    assert tok(text, add_special_tokens=False)["input_ids"] == oracle.encode([text])[0]


def test_unknown_characters_map_to_id_0(tok, oracle):
    text = "漢字 and ☃"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert 0 in ids and ids == oracle.encode([text])[0]


def test_special_cases_match_spacy():
    spacy = pytest.importorskip("spacy")
    rules = spacy.blank("en").tokenizer.rules
    ours = english_special_cases()
    isolated = set('-~!";?+,)(\\/*[]}{|_')
    for key, tokens in rules.items():
        if set(key) & isolated or any(c.isspace() for c in key) or "’" in key or "‘" in key or key in ("—", "ಠ︵ಠ"):
            continue  # cannot survive ftfy + text_standardize
        assert ours.get(key) == [t[65] for t in tokens], key  # 65 == spacy.symbols.ORTH
    assert set(ours) <= set(rules)


def test_fix_text_matches_ftfy():
    ftfy = pytest.importorskip("ftfy")
    for text in ["Iraqâ€™s", "India‚Äôs march", "Â£35", "cafÃ© crème", "&amp; &lt;b&gt;", "<b>&amp;</b>", "ﬁne ＡＢＣ",
                 "a\r\nb\rc", "x\x00y", "“q” ‘s’", "plain ascii"]:
        assert fix_text(text) == ftfy.fix_text(text), text


# --- special tokens ----------------------------------------------------------------------------------------------


def test_special_token_layout(tok):
    assert len(tok) == 40482 and tok.vocab_size == 40478
    assert (tok.start_token, tok.delimiter_token, tok.classify_token) == ("_start_", "_delimiter_", "_classify_")
    assert (tok.start_token_id, tok.delimiter_token_id, tok.classify_token_id, tok.pad_token_id) == (
        40478, 40479, 40480, 40481)
    assert tok.bos_token == "_start_" and tok.pad_token == "<pad>" and tok.padding_side == "right"
    assert tok.model_input_names == ["input_ids", "attention_mask"]
    a = tok("The cat sat.", add_special_tokens=False)["input_ids"]
    b = tok("A dog ran.", add_special_tokens=False)["input_ids"]
    single = tok("The cat sat.")
    # a single text is a prompt (generation continues it); a task input ends with the extract token: one call away
    assert single["input_ids"] == [40478] + a and "token_type_ids" not in single
    assert tok("The cat sat.", add_extract_token=True)["input_ids"] == [40478] + a + [40480]
    assert tok("The cat sat.", "A dog ran.")["input_ids"] == [40478] + a + [40479] + b + [40480]
    assert tok.encode("The cat sat.") == [40478] + a
    assert tok.model_max_length == 512


def test_padding_uses_the_pad_id_on_the_right(tok):
    batch = tok(["short", "a somewhat longer sentence"], padding=True)
    first, second = batch["input_ids"]
    assert len(first) == len(second)
    n = len(tok("short")["input_ids"])
    assert first[n:] == [40481] * (len(first) - n)
    assert batch["attention_mask"][0] == [1] * n + [0] * (len(first) - n)
    tensors = tok(["short", "a somewhat longer sentence"], padding="max_length", max_length=12, return_tensors="pt")
    assert tuple(tensors["input_ids"].shape) == (2, 12) and int(tensors["input_ids"][0, -1]) == 40481


def test_truncation_and_offsets_still_work(tok):
    ids = tok("one two three four five six", truncation=True, max_length=5)["input_ids"]
    assert len(ids) == 5 and ids[0] == 40478 and ids[-1] != 40480
    ids = tok("one two three four five six", truncation=True, max_length=5, add_extract_token=True)["input_ids"]
    assert len(ids) == 5 and ids[0] == 40478 and ids[-1] == 40480
    assert len(tok("word " * 600, truncation=True)["input_ids"]) == 512  # model_max_length = n_positions
    enc = tok("Hello world", return_offsets_mapping=True)
    assert enc["offset_mapping"][1] == (0, 5)
    assert tok.tokenize("Don't stop") == ["do</w>", "n't</w>", "stop</w>"]


def test_decode(tok):
    ids = tok("Hello, World! I don't know.", add_extract_token=True)["input_ids"]
    assert tok.decode(ids, skip_special_tokens=True) == "hello , world ! i do n't know ."
    assert tok.decode(ids) == "_start_ hello , world ! i do n't know . _classify_"
    assert tok.convert_tokens_to_string(["hel", "lo</w>", "world</w>"]) == "hello world"


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"add_special_tokens": False},
        {"padding": True},
        {"padding": "max_length", "max_length": 48, "truncation": True},
        {"truncation": True, "max_length": 7},
        {"padding": True, "return_tensors": "pt"},
        {"padding": True, "pad_to_multiple_of": 8, "padding_side": "left"},
        {"add_extract_token": True},
        {"add_extract_token": True, "truncation": True, "max_length": 7},
        {"return_attention_mask": False},  # last: it leaves the Rust backend without truncation for the next tests
    ],
)
def test_fast_path_matches_the_generic_path(tok, options):
    import torch

    texts = fixture_sentences()[:60] + ["", "a"]

    def both(*args, **kwargs):
        tok.fast_ids_path = False
        try:
            slow = tok(*args, **kwargs)
        finally:
            tok.fast_ids_path = True
        return tok(*args, **kwargs), slow

    cases = [both(texts, **options), both(texts[0], **options)]
    if "truncation" not in options:
        cases.append(both(texts[:30], texts[30:60], **options))
    for fast, slow in cases:
        assert set(fast) == set(slow)
        for key in fast:
            a, b = fast[key], slow[key]
            assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b, key


EDGE_TEXTS = [
    "",
    " ",
    "\n",
    "  a\n\n b\t c \r\n",
    "x\x00y",  # a NUL (fix_text removes it; _ids must not take it for the batch separator)
    "a  ** b???!! c--d ~~e~ f//g || h__i",
    "Café — naïve… ´s and “quotes”",
    "\u00a0non-breaking\u2009thin\u3000ideographic spaces",
    "Mr. Smith's U.S. trip... at 5:30 p.m.; e.g. 10km.",
    fix_text("It was 30°C. and 86 °F. outside"),  # spaCy's "°C." suffix rule spans the chunks fix_text makes
]


def test_chunk_cache_path_matches_the_rust_pipeline(tok):
    """`_ids` (Python text_standardize on the joined batch + per-chunk cache + Rust spaCy steps) gives the same ids
    as the full Rust normalizer of tokenizer.json, text by text, in one batch, and with a warm cache."""
    texts = [fix_text(t) for t in fixture_sentences()] + EDGE_TEXTS
    reference = [tok._rust_ids(t) for t in texts]
    fresh = GPT1Tokenizer(vocab_file=VOCAB, merges_file=MERGES)
    assert fresh._ids(texts) == reference  # cold cache, one batch
    assert fresh._ids(texts) == reference  # warm cache
    assert [fresh._ids([t])[0] for t in texts] == reference
    assert fresh._ids([]) == []
    assert fresh._ids(["a", "", "b"])[1] == []


def test_encode_batch_ids(tok):
    texts = ["The cat sat.", "A café — nice", "Iraqâ€™s"]
    assert tok.encode_batch_ids(texts) == tok(texts)["input_ids"]
    assert tok.encode_batch_ids([("A b.", "C d.")]) == [tok("A b.", "C d.")["input_ids"]]
    assert tok.encode_batch_ids(texts, add_special_tokens=False) == tok(texts, add_special_tokens=False)["input_ids"]
    tok.add_extract_token = True
    try:
        assert tok.encode_batch_ids(texts) == tok(texts)["input_ids"] and tok(texts)["input_ids"][0][-1] == 40480
    finally:
        tok.add_extract_token = False


# --- save / load / train -----------------------------------------------------------------------------------------


def test_save_and_load_round_trip(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    assert (tmp_path / "tokenizer.json").is_file()
    loaded = GPT1Tokenizer.from_pretrained(tmp_path)
    sentences = fixture_sentences()[:150]
    assert loaded(sentences)["input_ids"] == tok(sentences)["input_ids"]
    assert (len(loaded), loaded.classify_token_id, loaded.pad_token_id) == (40482, 40480, 40481)
    assert loaded.model_max_length == 512 and not loaded.add_extract_token
    tok.add_extract_token = True  # a single-text task folder saves the choice
    try:
        tok.save_pretrained(tmp_path / "task")
    finally:
        tok.add_extract_token = False
    loaded = GPT1Tokenizer.from_pretrained(tmp_path / "task")
    assert loaded.add_extract_token and loaded("A b.")["input_ids"][-1] == 40480
    # the saved tokenizer.json alone (no Python) reproduces the pipeline for texts that need no ftfy repair
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    ascii_sentences = [s for s in sentences if s.isascii() and "&" not in s]
    assert [e.ids for e in raw.encode_batch(ascii_sentences)] == tok(ascii_sentences)["input_ids"]


def test_loads_from_a_folder_with_the_original_files(tok, tmp_path):
    import shutil

    shutil.copy(VOCAB, tmp_path / "encoder_bpe_40000.json")
    shutil.copy(MERGES, tmp_path / "vocab_40000.bpe")
    loaded = GPT1Tokenizer.from_pretrained(tmp_path)
    assert loaded("It's a test.")["input_ids"] == tok("It's a test.")["input_ids"]


def test_missing_files_give_a_clear_error(tmp_path):
    with pytest.raises(OSError, match="missing.json"):
        GPT1Tokenizer(vocab_file=str(tmp_path / "missing.json"), merges_file=MERGES)
    with pytest.raises(OSError, match="nope.bpe"):
        GPT1Tokenizer(vocab_file=VOCAB, merges_file=str(tmp_path / "nope.bpe"))
    with pytest.raises(ValueError, match="vocab_file"):
        GPT1Tokenizer()


def test_train_new_from_iterator(tok, tmp_path):
    corpus = fixture_sentences()
    batches = [corpus[i : i + 50] for i in range(0, len(corpus), 50)]
    new = tok.train_new_from_iterator(iter(batches), vocab_size=400)
    size = new.vocab_size
    assert 100 < size <= 400 and len(new) == size + 4
    assert new.convert_tokens_to_ids("<unk>") == 0 and new.unk_token_id == 0
    assert (new.start_token_id, new.delimiter_token_id, new.classify_token_id, new.pad_token_id) == (
        size, size + 1, size + 2, size + 3)
    pieces = new.tokenize("I don't think so.")
    assert pieces[:3] == ["i</w>", "do</w>", "n't</w>"] or "".join(pieces).startswith("i</w>do")
    ids = new("I don't think so.", "Fine.")["input_ids"]
    assert ids[0] == size and size + 1 in ids and ids[-1] == size + 2
    assert new("漢", add_special_tokens=False)["input_ids"] == [0]  # unseen character -> id 0, as the original
    new.save_pretrained(tmp_path)
    again = GPT1Tokenizer.from_pretrained(tmp_path)
    assert again(corpus[:20])["input_ids"] == new(corpus[:20])["input_ids"]
    with open(tmp_path / "tokenizer.json", encoding="utf-8") as f:
        assert json.load(f)["model"]["end_of_word_suffix"] == "</w>"


def test_training_twice_gives_the_same_ids():
    """tokenizers numbers the end-of-word character tokens in hash-map order, which changes with every process
    (huggingface/tokenizers#1794): the trained tokenizer's ids are made canonical, so two runs on the same corpus agree.
    Each training runs in its own process (the hash seeds differ between processes, not within one)."""
    import subprocess
    import sys

    code = ("import json, sys; from gpt1_hf.tokenization_gpt1 import GPT1Tokenizer\n"
            "texts = open(sys.argv[1], encoding='utf-8').read().splitlines()\n"
            "tok = GPT1Tokenizer(vocab={'<unk>': 0, 'a</w>': 1}, merges=[]).train_new_from_iterator([texts], 500)\n"
            "print(json.dumps(tok.get_vocab(), sort_keys=True))")
    path = os.path.join(FIXTURES, "tokenizer_sentences.txt")
    runs = [subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, check=True).stdout
            for _ in range(3)]
    vocab = json.loads(runs[0])
    assert runs[1] == runs[0] and runs[2] == runs[0]
    assert vocab["<unk>"] == 0 and len(vocab) == 504


def test_loads_with_trust_remote_code_without_gpt1_hf(tok, tmp_path):
    import subprocess
    import sys

    GPT1Tokenizer.register_for_auto_class("AutoTokenizer")
    try:
        tok.save_pretrained(tmp_path)
    finally:
        GPT1Tokenizer._auto_class = None
    assert (tmp_path / "tokenization_gpt1.py").is_file()
    code = (
        "import sys; sys.modules['gpt1_hf'] = None\n"  # the package is not importable: only the copied file is used
        "from transformers import AutoTokenizer\n"
        f"tok = AutoTokenizer.from_pretrained({str(tmp_path)!r}, trust_remote_code=True)\n"
        "print(type(tok).__name__, tok(\"I don't know Mr. Smith.\")['input_ids'])\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[0] == "GPT1Tokenizer"
    assert out.stdout.strip().endswith(str(tok("I don't know Mr. Smith.")["input_ids"]))


def test_chunk_cache_stays_out_of_pickles_and_dataset_fingerprints(tok):
    """A used and an unused tokenizer pickle and fingerprint alike, so `datasets.map` reuses its cache files."""
    import pickle

    from datasets.fingerprint import Hasher

    fresh = GPT1Tokenizer(vocab_file=VOCAB, merges_file=MERGES)
    before = Hasher.hash(fresh)
    ids = fresh("A never-seen-before sentence, of course.")["input_ids"]
    assert fresh.cache  # the chunk cache is in use...
    assert Hasher.hash(fresh) == before  # ...and not in the fingerprint
    copy = pickle.loads(pickle.dumps(fresh))
    assert copy.cache == {} and copy("A never-seen-before sentence, of course.")["input_ids"] == ids
