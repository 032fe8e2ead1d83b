"""gpt1_hf.durable: atomic files and folders, the final-model install, the run lock, leftovers of a killed run,
checked safetensors loading and disk errors."""

import errno
import json
import os
import platform
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from safetensors.torch import save_file

from gpt1_hf import durable as D
from gpt1_hf.durable import (
    FINAL_PENDING_DIR,
    DiskWriteError,
    RunInUseError,
    RunLock,
    check_finite_weights,
    disk_errors,
    install_final_model,
    load_safetensors_checked,
    recover_directory,
    remove_leftovers,
    save_directory_atomically,
    save_final_model,
    write_text_atomically,
)


def _folder(path, tag):
    """A complete stand-in for a saved model folder: three files that all carry ``tag``."""
    for name in ("config.json", "model.safetensors", "training_info.json"):
        (path / name).write_text(tag)


def _complete_tag(path):
    """The tag of a complete folder written by `_folder` (all three files agree), else None."""
    tags = {(path / n).read_text() for n in ("config.json", "model.safetensors", "training_info.json")
            if (path / n).is_file()}
    return tags.pop() if len(tags) == 1 and len(list(path.iterdir())) == 3 else None


# ---- atomic files and folders (moved from gpt1_hf.training: same behaviour) ------------------------------------------
def test_write_text_atomically(tmp_path):
    write_text_atomically(tmp_path / "latest", "step-1")
    write_text_atomically(tmp_path / "latest", "step-2")
    assert (tmp_path / "latest").read_text() == "step-2" and [p.name for p in tmp_path.iterdir()] == ["latest"]


def test_save_directory_atomically_swaps_whole_folders(tmp_path, monkeypatch):
    best = tmp_path / "best"
    save_directory_atomically(best, lambda d: _folder(d, "old"))
    with pytest.raises(OSError, match="disk full"):
        save_directory_atomically(best, lambda d: (_folder(d, "new"), (_ for _ in ()).throw(OSError("disk full"))))
    assert _complete_tag(best) == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["best"]
    if platform.system() == "Linux":  # killed right after the one-step swap: the old copy is left at the tmp name
        monkeypatch.setattr(D.shutil, "rmtree", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
        with pytest.raises(KeyboardInterrupt):
            save_directory_atomically(best, lambda d: _folder(d, "new"))
        monkeypatch.undo()
        assert _complete_tag(best) == "new"
        assert remove_leftovers(tmp_path) and sorted(p.name for p in tmp_path.iterdir()) == ["best"]
    # the fallback (no atomic exchange): a failure between the two renames puts the old folder back
    monkeypatch.setattr(D, "_exchange_directories", lambda a, b: False)
    real_replace, calls = D.os.replace, []

    def second_rename_fails(src, dst):
        calls.append(src)
        if len(calls) == 2:
            raise OSError("rename failed (simulated)")
        return real_replace(src, dst)

    monkeypatch.setattr(D.os, "replace", second_rename_fails)
    with pytest.raises(OSError, match="rename failed"):
        save_directory_atomically(best, lambda d: _folder(d, "lost"))
    monkeypatch.setattr(D.os, "replace", real_replace)
    assert _complete_tag(best) in ("new", "old") and sorted(p.name for p in tmp_path.iterdir()) == ["best"]
    tag = _complete_tag(best)
    # a hard kill between the renames: recover_directory puts the old folder back
    real_replace(best, tmp_path / ".old-best-deadbeef")
    assert recover_directory(best) == best and _complete_tag(best) == tag and not list(tmp_path.glob(".old-*"))


# ---- the final model -------------------------------------------------------------------------------------------------
class _Saver:
    """Stands in for a model / tokenizer: save_pretrained writes the given files."""

    def __init__(self, **files):
        self.files = files

    def save_pretrained(self, folder, **kw):
        for name, text in self.files.items():
            (folder / name).write_text(text)


def test_save_final_model_and_interrupted_install(tmp_path, monkeypatch):
    out = tmp_path / "run"
    save_final_model(_Saver(**{"config.json": "1", "model.safetensors": "w1", "adapter_model.safetensors": "a"}),
                     _Saver(**{"tokenizer_config.json": "t1"}), out)
    assert (out / "config.json").read_text() == "1" and not (out / FINAL_PENDING_DIR).exists()
    real_replace = D.os.replace

    def killed_at_the_weights(src, dst):  # the weights move before the anchors (config.json ...)
        if FINAL_PENDING_DIR in str(src) and os.path.basename(dst) == "model.safetensors":
            raise KeyboardInterrupt("killed (simulated)")
        return real_replace(src, dst)

    monkeypatch.setattr(D.os, "replace", killed_at_the_weights)
    with pytest.raises(KeyboardInterrupt):
        save_final_model(_Saver(**{"config.json": "2", "model.safetensors": "w2"}),
                         _Saver(**{"tokenizer_config.json": "t2"}), out)
    monkeypatch.undo()
    assert not (out / "config.json").exists() and (out / FINAL_PENDING_DIR / "config.json").is_file()
    assert install_final_model(out) and not (out / FINAL_PENDING_DIR).exists()
    assert [(out / n).read_text() for n in ("config.json", "model.safetensors", "tokenizer_config.json")] == [
        "2", "w2", "t2"]
    assert not (out / "adapter_model.safetensors").exists()  # the older run's weights do not mix in
    (out / FINAL_PENDING_DIR).mkdir()  # staged, never completed (no manifest): discarded
    assert not install_final_model(out) and not (out / FINAL_PENDING_DIR).exists()


# ---- one run per output folder ---------------------------------------------------------------------------------------
def test_run_lock_same_process(tmp_path):
    out = tmp_path / "new" / "run"
    with RunLock(out) as lock:
        assert lock.held and (out / ".run.lock").is_file()
        assert json.loads((out / ".run.lock").read_text())["pid"] == os.getpid()
        with pytest.raises(RunInUseError, match=rf"{out} is in use by another run \(pid {os.getpid()} on .*started"
                                                r".*Wait for it to finish, or pick another --output_dir"):
            RunLock(out).acquire()
    assert not lock.held
    RunLock(out).acquire().acquire().release()  # free again (acquire on a held lock object: a no-op)


_HOLDER = textwrap.dedent("""
    import sys, time
    from gpt1_hf.durable import RunLock
    RunLock(sys.argv[1]).acquire()
    print("locked", flush=True)
    time.sleep(600)
""")


def test_run_lock_other_process_and_sigkill(tmp_path):
    """Another process holding the lock refuses us at once; once it is killed with SIGKILL the lock is free."""
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        start = time.monotonic()
        with pytest.raises(RunInUseError, match=f"pid {proc.pid}"):
            RunLock(out).acquire()
        assert time.monotonic() - start < 2  # at once, no waiting
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    with RunLock(out):  # a dead holder cannot leave it stuck
        pass


# ---- what a killed run leaves ----------------------------------------------------------------------------------------
def test_remove_leftovers(tmp_path):
    out = tmp_path / "run"
    ckpts = out / "checkpoints"
    for folder in (out / "best", ckpts / "step-00000002", out / ".tmp-.final-pending-0badf00d",
                   ckpts / ".tmp-step-00000004-deadbeef", ckpts / ".tmp-step-00000004-deepspeed",
                   out / ".tmp-best-12345678", out / ".tmp-trained_tokenizer-abcdef12"):
        folder.mkdir(parents=True)
        _folder(folder, folder.name)
    (ckpts / "latest").write_text("step-00000002")
    (ckpts / ".latest.tmp-1234abcd").write_text("step-00000004")  # write_text_atomically's temporary
    (out / ".results.json.tmp-1234abcd").write_text("{")
    (out / FINAL_PENDING_DIR).mkdir()  # staged but never completed (no manifest)
    (out / ".run.lock").write_text("")
    (out / "notes.txt").write_text("mine")
    removed = remove_leftovers(out)
    assert sorted(p.name for p in removed) == sorted([
        ".tmp-.final-pending-0badf00d", ".tmp-step-00000004-deadbeef", ".tmp-step-00000004-deepspeed",
        ".tmp-best-12345678", ".tmp-trained_tokenizer-abcdef12", ".latest.tmp-1234abcd", ".results.json.tmp-1234abcd",
        FINAL_PENDING_DIR])
    assert sorted(p.name for p in out.iterdir()) == [".run.lock", "best", "checkpoints", "notes.txt"]
    assert sorted(p.name for p in ckpts.iterdir()) == ["latest", "step-00000002"]
    assert _complete_tag(out / "best") == "best" and _complete_tag(ckpts / "step-00000002") == "step-00000002"
    assert remove_leftovers(out) == [] and remove_leftovers(tmp_path / "missing") == []


def test_remove_leftovers_restores_best_and_installs_a_complete_staged_model(tmp_path):
    out = tmp_path / "run"
    (out / ".old-best-0badf00d").mkdir(parents=True)  # a fallback swap killed between its renames
    _folder(out / ".old-best-0badf00d", "old best")
    staged = out / FINAL_PENDING_DIR
    staged.mkdir()
    _folder(staged, "final")
    (staged / ".manifest.json").write_text(json.dumps(["config.json", "model.safetensors", "training_info.json"]))
    assert remove_leftovers(out) == []
    assert _complete_tag(out / "best") == "old best" and not list(out.glob(".old-*"))
    assert {p.name for p in out.iterdir()} == {"best", "config.json", "model.safetensors", "training_info.json"}
    assert (out / "config.json").read_text() == "final"


# ---- weights that load, and are finite -------------------------------------------------------------------------------
def test_load_safetensors_checked(tmp_path):
    good = {"a.weight": torch.randn(4, 3), "ids": torch.arange(3)}
    save_file(good, tmp_path / "model.safetensors")
    loaded = load_safetensors_checked(tmp_path / "model.safetensors")
    assert loaded.keys() == good.keys() and all(torch.equal(loaded[k], good[k]) for k in good)
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) - 10])  # truncated (a copy cut short)
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 3)
    for name in ("cut.safetensors", "junk.safetensors"):
        with pytest.raises(ValueError, match=rf"{tmp_path / name} is not a readable safetensors file.*corrupt or "
                                             r"truncated.*Re-save it.*download it again"):
            load_safetensors_checked(tmp_path / name)
    for bad in (float("nan"), float("inf")):
        t = torch.zeros(2, 2, dtype=torch.bfloat16)
        t[1, 0] = bad
        save_file({"ok": torch.zeros(2), "h.0.attn.weight": t}, tmp_path / "adapter_model.safetensors")
        with pytest.raises(ValueError, match=rf"non-finite values in tensor 'h.0.attn.weight' of "
                                             rf"{tmp_path / 'adapter_model.safetensors'}.*diverged"):
            load_safetensors_checked(tmp_path / "adapter_model.safetensors")


def test_check_finite_weights_every_shard(tmp_path):
    save_file({"w": torch.ones(3)}, tmp_path / "model-00001-of-00002.safetensors")
    save_file({"v": torch.ones(3)}, tmp_path / "model-00002-of-00002.safetensors")
    (tmp_path / "optimizer.pt").write_bytes(b"not checked")
    assert [p.name for p in check_finite_weights(tmp_path)] == ["model-00001-of-00002.safetensors",
                                                                "model-00002-of-00002.safetensors"]
    save_file({"v": torch.tensor([1.0, float("-inf")])}, tmp_path / "model-00002-of-00002.safetensors")
    with pytest.raises(ValueError, match="non-finite values in tensor 'v' of .*model-00002-of-00002"):
        check_finite_weights(tmp_path)


# ---- disk errors -----------------------------------------------------------------------------------------------------
def test_disk_errors_name_the_file(tmp_path, monkeypatch):
    target = tmp_path / "checkpoints" / "step-00000004" / "optimizer.pt"

    def full_disk(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(DiskWriteError, match=rf"could not write {target}: no space left on device.*previous checkpoint "
                                             r"and model are intact") as info:
        with disk_errors(target):
            torch.save({}, target)
    assert info.value.errno == errno.ENOSPC and isinstance(info.value, OSError)
    assert "[Errno" not in str(info.value).split(":")[0]
    # torch.save's own zip writer reports a full disk as a RuntimeError
    with pytest.raises(DiskWriteError, match="could not write .*the write failed"):
        with disk_errors(target, intact="the previous model is intact"):
            raise RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file "
                               "data/0: file write failed")
    with pytest.raises(DiskWriteError, match="Permission denied.*the previous model is intact"):
        with disk_errors(target, intact="the previous model is intact"):
            raise PermissionError(errno.EACCES, "Permission denied")
    with pytest.raises(KeyError):  # not a write failure: untouched
        with disk_errors(target):
            raise KeyError("x")
