"""Guards of the local-file readers (gpt1_hf.data): a labeled split without its label column, non-UTF-8 bytes,
fields over csv's default limit and csv errors are refused naming the file and the line. Tiny synthetic files only."""

import csv
import json

import pytest

from gpt1_hf.data import load_task_split


def _write(path, lines, encoding="utf-8"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding) if isinstance(lines[0], str) else b"\n".join(lines))
    return path


SST2_ROWS = ["a fine film\t1", "a dull film\t0", "charming\t1"]


@pytest.mark.parametrize("split,name", [("train", "train.tsv"), ("validation", "dev.tsv")])
def test_misspelled_label_header_is_refused(tmp_path, split, name):
    """SST-2 used to fail deep inside the model (label -1), STS-B to train on -1.0 targets with exit 0."""
    path = _write(tmp_path / "sst2" / name, ["sentence\tlabl"] + SST2_ROWS)
    with pytest.raises(ValueError) as err:
        load_task_split("sst2", split, tmp_path / "sst2")
    msg = str(err.value)
    assert str(path) in msg and "no label column" in msg and "'label'" in msg and "['sentence', 'labl']" in msg
    assert "fix the header" in msg
    path = _write(tmp_path / "stsb" / name, ["index\tsentence1\tsentence2\tsocre",
                                             "0\ta man plays\ta man plays music\t4.2"])
    with pytest.raises(ValueError, match=rf"{path}: row 2: no label column: expected 'score', the file has the "
                                         r"columns \['index', 'sentence1', 'sentence2', 'socre'\]"):
        load_task_split("stsb", split, tmp_path / "stsb")


def test_jsonl_and_multiple_choice_rows_without_labels_are_refused(tmp_path):
    rows = [json.dumps({"premise": "a cat sat", "hypothesis": "no cat sat", "lable": "neutral"})]
    path = _write(tmp_path / "mnli" / "train.jsonl", rows)
    with pytest.raises(ValueError, match=rf"{path}: row 1: no label column: expected 'label' or 'gold_label'.*'lable'"):
        load_task_split("mnli", "train", tmp_path / "mnli")
    header = ("InputStoryid\tInputSentence1\tInputSentence2\tInputSentence3\tInputSentence4\t"
              "RandomFifthSentenceQuiz1\tRandomFifthSentenceQuiz2\tAnswer")
    path = _write(tmp_path / "story_cloze" / "val_spring2016.tsv", [header, "s0\ta\tb\tc\td\te\tf\t1"])
    with pytest.raises(ValueError, match=rf"{path}: row 2: no label column: expected 'AnswerRightEnding'"):
        load_task_split("story_cloze", "validation", tmp_path / "story_cloze")
    passage = {"article": "Ada went home.", "questions": ["Where?"], "options": [["home", "school"]], "answers": [""],
               "id": "high1.txt"}
    path = _write(tmp_path / "race" / "dev_high.jsonl", [json.dumps(passage)])
    with pytest.raises(ValueError, match=rf"{path}: row 1 question 0: no answer"):
        load_task_split("race_high", "validation", tmp_path / "race")


def test_unlabeled_test_splits_still_load(tmp_path):
    _write(tmp_path / "sst2" / "test.tsv", ["index\tsentence", "0\ta fine film", "1\ta dull film"])
    ds, info = load_task_split("sst2", "test", tmp_path / "sst2", return_info=True)
    assert ds["label"] == [-1, -1] and info.unlabeled
    _write(tmp_path / "stsb" / "test.tsv", ["index\tsentence1\tsentence2", "0\ta b\tc d"])
    assert load_task_split("stsb", "test", tmp_path / "stsb")["label"] == [-1.0]


def test_non_utf8_bytes_name_the_file_and_line(tmp_path):
    lines = [b"sentence\tlabel"] + [b"a fine film\t1"] * 3000 + [b"caf\xe9 cr\xe8me\t1", b"ok\t0"]  # past a read chunk
    path = _write(tmp_path / "sst2" / "train.tsv", lines)
    with pytest.raises(ValueError, match=rf"{path} line 3002 is not valid UTF-8 \(byte 0xe9 at column 4\).*save the "
                                         "file as UTF-8"):
        load_task_split("sst2", "train", tmp_path / "sst2")
    path = _write(tmp_path / "mnli" / "train.jsonl",
                  [json.dumps({"premise": "a", "hypothesis": "b", "label": "neutral"}).encode(),
                   b'{"premise": "\xff", "hypothesis": "b", "label": "neutral"}'])
    with pytest.raises(ValueError, match=rf"{path} line 2 is not valid UTF-8 \(byte 0xff"):
        load_task_split("mnli", "train", tmp_path / "mnli")


def test_fields_over_128kb_read(tmp_path):
    csv.field_size_limit(131072)  # csv's default, as in a fresh process
    long_text = "word " * 60_000  # 300 KB
    _write(tmp_path / "sst2" / "train.tsv", ["sentence\tlabel", "short\t0", f"{long_text}\t1"])
    ds = load_task_split("sst2", "train", tmp_path / "sst2")
    assert len(ds["text_a"][1]) == len(long_text.strip()) and ds["label"] == [0, 1]
    header = "InputStoryid,InputSentence1,InputSentence2,InputSentence3,InputSentence4,RandomFifthSentenceQuiz1," \
             "RandomFifthSentenceQuiz2,AnswerRightEnding"
    _write(tmp_path / "sc" / "test_spring2016.csv", [header, f's0,"{long_text}",b,c,d,e,f,2'])  # quoted csv
    assert load_task_split("story_cloze", "test", tmp_path / "sc")["label"] == [1]


def test_csv_errors_name_the_file_and_line(tmp_path):
    """The delimited files go through the datasets csv builder: its parser's errors name the file (and the line where
    the parser says it); a short line is refused at its row for the value it lacks."""
    header = "InputStoryid,InputSentence1,InputSentence2,InputSentence3,InputSentence4,RandomFifthSentenceQuiz1," \
             "RandomFifthSentenceQuiz2,AnswerRightEnding"
    path = _write(tmp_path / "sc" / "test_spring2016.csv", [header, 's0,a,b,c,d,e,f,1', 's1,"never closed,b,c,d,e,f,2'])
    with pytest.raises(ValueError, match=rf"{path}: (row \d+: expected|unreadable CSV)"):
        load_task_split("story_cloze", "test", tmp_path / "sc")
    path = _write(tmp_path / "sst2" / "train.tsv", ["sentence\tlabel", "short\t0", "no label column here"])
    with pytest.raises(ValueError, match=rf"{path}: row 3: missing label"):
        load_task_split("sst2", "train", tmp_path / "sst2")
