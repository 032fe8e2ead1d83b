"""Durable files: what keeps a run's output folder whole through kills, full disks, corrupt files and a second run.

* `write_text_atomically`, `save_directory_atomically` (+ `recover_directory`, `fsync_dir`): a reader (or the next
  run after a kill) sees the complete old or the complete new file / folder, never a part of one.
* `save_final_model` / `install_final_model`: the final model is staged whole in ``.final-pending``, then moved in
  (anchors last), so a kill never leaves a loadable mix of two models and the next start finishes the install.
* `RunLock`: one run per output folder (two would prune each other's checkpoints); an ``flock`` the kernel drops when
  the holder dies, so a killed run never leaves the folder stuck.
* `remove_leftovers`: what a killed run left behind (``.tmp-*`` copies, half-swapped ``best/``, a staged model) is
  cleaned or finished at the next start -- call it while holding the `RunLock`.
* `load_safetensors_checked` / `check_finite_weights`: a corrupt file or NaN/inf weights (a diverged run) fail at
  load naming the file and tensor, instead of giving a silent chance-level "result".
* `disk_errors`: an OSError (disk full...) inside a write names the file, and says the previous copy is intact.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

__all__ = [
    "fsync_dir", "fsync_tree", "write_text_atomically", "recover_directory", "save_directory_atomically",
    "FINAL_PENDING_DIR", "FINAL_MANIFEST", "install_final_model", "save_final_model",
    "LOCK_FILE", "RunInUseError", "RunLock", "remove_leftovers",
    "load_safetensors_checked", "check_finite_weights", "DiskWriteError", "disk_errors",
]

#: the complete new final model, staged inside the output folder while its files are moved into place
FINAL_PENDING_DIR = ".final-pending"
FINAL_MANIFEST = ".manifest.json"
#: the files that make a folder loadable as a model / adapter / tokenizer: removed first and moved in last, so a kill
#: in the middle of an install leaves a folder that does not load (and the staged copy), never a mix that does
ANCHOR_FILES = ("config.json", "adapter_config.json", "tokenizer_config.json")
WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin", "adapter_model.bin",
                   "adapter_config.json")
LOCK_FILE = ".run.lock"
_SUBFOLDERS = ("checkpoints",)  # where temporaries of a killed run can be, besides the output folder itself


# ---- atomic files and folders ----------------------------------------------------------------------------------------
def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (best effort: some filesystems refuse to fsync a folder)."""
    with contextlib.suppress(OSError):
        fd = os.open(str(path), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def fsync_tree(path: Path) -> None:
    """fsync every file and folder under ``path`` (before it is renamed into place)."""
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError), open(os.path.join(root, name), "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(Path(root))


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    """Write to a temporary sibling, fsync, then `os.replace` (readers see the old or the new file, never a part)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _exchange_directories(a: Path, b: Path) -> bool:
    """Swap two existing paths in ONE atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False where the platform or
    the filesystem cannot (the caller then falls back to two renames)."""
    if not hasattr(os, "uname") or os.uname().sysname != "Linux":
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = getattr(libc, "renameat2", None)
        if renameat2 is None:
            return False
        at_fdcwd, rename_exchange = -100, 2
        return renameat2(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), rename_exchange) == 0
    except (OSError, AttributeError, TypeError):
        return False


def _old_copies(final_dir: Path) -> list[Path]:
    return sorted(final_dir.parent.glob(f".old-{final_dir.name}-*"), key=lambda p: p.stat().st_mtime)


def recover_directory(final_dir: str | os.PathLike) -> Path | None:
    """Repair what a kill in the middle of `save_directory_atomically`'s fallback swap (two renames: the old folder
    moved aside to ``.old-<name>-*``, then the new one renamed in) can leave: when ``final_dir`` is missing, the old
    folder moved aside is renamed back; leftover old copies are deleted once ``final_dir`` exists. Returns
    ``final_dir`` when it exists afterwards."""
    final_dir = Path(final_dir)
    if not final_dir.parent.is_dir():
        return None
    old = _old_copies(final_dir)
    if not final_dir.exists() and old:
        os.replace(old.pop(), final_dir)  # the most recent complete copy
        fsync_dir(final_dir.parent)
        logger.warning("restored %s from the copy left by an interrupted save", final_dir)
    if final_dir.exists():
        for stale in old:
            shutil.rmtree(stale, ignore_errors=True)
        return final_dir
    return None


def save_directory_atomically(final_dir: str | os.PathLike, write_fn: Callable[[Path], None]) -> Path:
    """Run ``write_fn(tmp_dir)`` into a temporary sibling folder, then put it in place as ``final_dir``.

    If ``final_dir`` exists the two folders are swapped in one atomic step (``renameat2(RENAME_EXCHANGE)`` on Linux)
    and the old one, now at the temporary name, is deleted after: at every moment ``final_dir`` is the complete old
    or the complete new folder. Where the swap is not available, the old folder is moved aside to ``.old-<name>-*``
    and the new one renamed in (an error in between puts the old one back; after a kill in between,
    `recover_directory` -- called at the start of the next save -- restores it). If ``write_fn`` raises, the
    temporary folder is removed and ``final_dir`` is untouched."""
    final_dir = Path(final_dir)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    recover_directory(final_dir)
    tmp = final_dir.with_name(f".tmp-{final_dir.name}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        write_fn(tmp)
        fsync_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not final_dir.exists():
        os.replace(tmp, final_dir)
        fsync_dir(final_dir.parent)
        return final_dir
    if _exchange_directories(tmp, final_dir):  # final_dir: the new folder; tmp: the old one
        fsync_dir(final_dir.parent)
        shutil.rmtree(tmp, ignore_errors=True)
        return final_dir
    trash = final_dir.with_name(f".old-{final_dir.name}-{uuid.uuid4().hex[:8]}")
    os.replace(final_dir, trash)
    try:
        os.replace(tmp, final_dir)
    except BaseException:
        os.replace(trash, final_dir)  # the old folder back
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(final_dir.parent)
    shutil.rmtree(trash, ignore_errors=True)
    return final_dir


# ---- the final model -------------------------------------------------------------------------------------------------
def install_final_model(output_dir: str | os.PathLike) -> bool:
    """Move the staged final model (``<output_dir>/.final-pending``, complete: it was renamed into place atomically)
    into ``output_dir``: the old model's anchor files (config.json, ...) and its weight files that the new model does
    not have are removed first, the new files moved in with ``os.replace``, the anchors last, then the staged folder
    is deleted. Idempotent: after a kill, calling it again finishes the install. False when nothing is staged (a
    staged folder without its manifest, never completed, is deleted)."""
    output_dir = Path(output_dir)
    staged = output_dir / FINAL_PENDING_DIR
    manifest_path = staged / FINAL_MANIFEST
    if not manifest_path.is_file():
        if staged.exists():
            shutil.rmtree(staged, ignore_errors=True)
        return False
    new_files = set(json.loads(manifest_path.read_text(encoding="utf-8")))
    for name in ANCHOR_FILES:
        if (staged / name).is_file() or (name not in new_files and (output_dir / name).is_file()):
            (output_dir / name).unlink(missing_ok=True)
    for pattern in WEIGHT_PATTERNS:  # an older run's weights (a LoRA adapter, other shards) would mix with the new
        for stale in output_dir.glob(pattern):
            if stale.is_file() and stale.name not in new_files:
                stale.unlink()
    items = [p for p in staged.iterdir() if p.name != FINAL_MANIFEST]
    for item in sorted(items, key=lambda p: (p.name in ANCHOR_FILES, p.name)):
        target = output_dir / item.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(item, target)
    fsync_dir(output_dir)
    shutil.rmtree(staged, ignore_errors=True)
    return True


def save_final_model(model, tokenizer, output_dir: str | os.PathLike) -> None:
    """Write model + tokenizer into ``output_dir`` (checkpoints/ and best/ are left alone): the complete model is
    first written to ``.final-pending`` with `save_directory_atomically`, then installed by `install_final_model`. A
    kill while writing leaves the old model; a kill while installing leaves a folder without config.json (not
    loadable, never a mix of two models) whose install the next start finishes."""
    output_dir = Path(output_dir)
    install_final_model(output_dir)  # an install interrupted in an earlier session

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        names = sorted(p.name for p in tmp.iterdir())
        (tmp / FINAL_MANIFEST).write_text(json.dumps(names), encoding="utf-8")

    save_directory_atomically(output_dir / FINAL_PENDING_DIR, write)
    install_final_model(output_dir)


# ---- one run per output folder ---------------------------------------------------------------------------------------
class RunInUseError(RuntimeError):
    """Another live process holds the output folder's `RunLock`."""


class RunLock:
    """Exclusive ``flock`` on ``<output_dir>/.run.lock`` for the whole run (take it on the main process only).

    A second holder -- another process, or another `RunLock` in this one -- fails at once with `RunInUseError`. The
    kernel drops the lock when the holder's process ends, however it ends, so a killed run never leaves it stuck; the
    file itself stays (deleting it would let two runs lock two different files)."""

    def __init__(self, output_dir: str | os.PathLike):
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        import fcntl

        if self._fd is not None:  # already ours
            return self
        self.output_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace")
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                raise
            raise RunInUseError(self._in_use_message(holder)) from None
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime())}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode("utf-8"), 0)
        self._fd = fd
        return self

    def _in_use_message(self, holder: str) -> str:
        try:
            info = json.loads(holder)
            who = f"pid {info.get('pid')} on {info.get('host')}, started {info.get('started')}"
        except (ValueError, AttributeError):
            who = "a process that has not written its pid yet"
        return (f"{self.output_dir} is in use by another run ({who}): two runs in one output folder overwrite each "
                "other's checkpoints. Wait for it to finish, or pick another --output_dir.")

    def release(self) -> None:
        if self._fd is None:
            return
        import fcntl

        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # no stale pid for the next reader
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# ---- what a killed run leaves ----------------------------------------------------------------------------------------
def remove_leftovers(output_dir: str | os.PathLike) -> list[Path]:
    """Clean what a killed run left in ``output_dir`` (call it while holding the `RunLock`, before anything else):
    a half-swapped folder (``.old-*``: best/ put back by `recover_directory`), a staged final model (installed when
    complete, deleted when it has no manifest), and every temporary (``.tmp-*`` folders and files, ``.<name>.tmp-*``
    of `write_text_atomically`) in ``output_dir`` and ``output_dir/checkpoints``. Returns what was removed."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    folders = [output_dir] + [output_dir / s for s in _SUBFOLDERS if (output_dir / s).is_dir()]
    removed: list[Path] = []
    for folder in folders:
        for name in sorted({p.name[len(".old-"):-9] for p in folder.glob(".old-?*-????????")}):
            old = _old_copies(folder / name)  # a fallback swap killed between its two renames
            restored = old[-1] if not (folder / name).exists() else None  # what recover_directory puts back
            recover_directory(folder / name)
            removed += [p for p in old if p != restored and not p.exists()]
    staged = output_dir / FINAL_PENDING_DIR
    if staged.exists() and not (staged / FINAL_MANIFEST).is_file():
        removed.append(staged)  # never completed: install_final_model deletes it
    if install_final_model(output_dir):
        logger.warning("%s: finished installing the final model a killed run had staged", output_dir)
    for folder in folders:
        for path in sorted(set(folder.glob(".tmp-*")) | set(folder.glob(".*.tmp-*"))):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    if removed:
        logger.warning("removed %d leftovers of a killed run: %s", len(removed), ", ".join(p.name for p in removed))
    return removed


# ---- weights that load, and are finite -------------------------------------------------------------------------------
def _checked_tensors(path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """The tensors of one safetensors file, each checked for NaN/inf; read errors name the file and the fix."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            names = list(f.keys())
            for name in names:
                tensor = f.get_tensor(name)
                if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                    raise ValueError(
                        f"non-finite values in tensor '{name}' of {path}: the run that saved it most likely diverged "
                        "(learning rate too high, fp16 overflow); use an earlier checkpoint or retrain with a lower "
                        "learning rate")
                yield name, tensor
    except SafetensorError as e:
        raise ValueError(
            f"{path} is not a readable safetensors file ({e}): it is corrupt or truncated (a copy or download cut "
            "short, a disk that filled up while saving). Re-save it from the run, or download it again.") from None


def load_safetensors_checked(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """`safetensors.torch.load_file` that refuses a corrupt / truncated file and NaN/inf weights (ValueError naming
    the file, the tensor and the fix)."""
    return dict(_checked_tensors(Path(path)))


def check_finite_weights(folder: str | os.PathLike) -> list[Path]:
    """Check every ``*.safetensors`` of a model folder (model, shards, adapter) one tensor at a time; returns them."""
    paths = sorted(Path(folder).glob("*.safetensors"))
    for path in paths:
        for _ in _checked_tensors(path):
            pass
    return paths


# ---- disk errors -----------------------------------------------------------------------------------------------------
class DiskWriteError(OSError):
    """A write failed (disk full, quota, I/O error); the message names the file and what is still intact."""


_DISK_FULL_TEXT = ("no space left on device", "storagefull", "os error 28", "file write failed", "unexpected pos")


def _disk_error_reason(e: BaseException) -> str | None:
    """Why a write failed, or None when ``e`` is not a write failure (torch.save and safetensors raise RuntimeError /
    SafetensorError, not OSError, when the disk fills up)."""
    if isinstance(e, OSError):
        return "no space left on device" if e.errno == errno.ENOSPC else (e.strerror or str(e))
    text = str(e).lower()
    if any(s in text for s in _DISK_FULL_TEXT):
        full = any(t in text for t in _DISK_FULL_TEXT[:3])
        return "no space left on device" if full else "the write failed (disk full?)"
    return None


@contextlib.contextmanager
def disk_errors(path: str | os.PathLike,
                intact: str = "the previous checkpoint and model are intact (they are replaced only after a complete "
                              "write)") -> Iterator[None]:
    """Re-raise a failed write inside the block as `DiskWriteError` naming ``path``, the reason and ``intact``."""
    try:
        yield
    except DiskWriteError:
        raise
    except Exception as e:
        reason = _disk_error_reason(e)
        if reason is None:
            raise
        err = DiskWriteError(f"could not write {path}: {reason} ({type(e).__name__}: {e}). {intact}; free space (or "
                             "fix the cause) and resume with --resume_from_checkpoint latest.")
        err.errno = getattr(e, "errno", None) or (errno.ENOSPC if "space" in reason else None)
        err.path = str(path)  # not .filename: OSError would then print '[Errno N] None: path' instead of the text
        raise err from e
