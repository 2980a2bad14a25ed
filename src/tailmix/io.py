"""Atomic file writes: a file is either the old version or the new one, never half.

Files get the permissions a plain ``open`` would give them (0666 less the user's umask),
not the 0600 of a temporary file; JSON holds no bare NaN or Infinity (non-finite numbers are
written as null). A write that fails (a full disk, a read-only folder) raises ``OSError``
naming the file it was writing, and leaves no temporary file behind.

Also here: the lock that makes one process the owner of a run folder
(:func:`lock_folder`), and :func:`load_torch`, which reads a torch file safely and says what
is wrong with one it cannot read.
"""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tailmix._validation import ParameterError

TMP_SUFFIX = ".tmp"
#: The name of a run folder's lock file.
LOCK_NAME = ".lock"
# What tempfile.mkstemp makes for atomic_write_bytes: ".<name>.<8 random characters>.tmp".
_TEMPORARY = re.compile(r"^\..+\.[A-Za-z0-9_]{8}" + re.escape(TMP_SUFFIX) + "$")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    except OSError as e:
        raise _naming(e, path) from e
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise _naming(e, path) from e
        raise
    return path


def _naming(error: OSError, path: Path) -> OSError:
    """``error`` naming ``path``, the file being written, rather than its temporary file or
    nothing (a write to a full disk names no file); a folder it could not make keeps its
    own name."""
    if error.errno is None or (error.filename is not None
                               and Path(error.filename) in Path(path).parents):
        return error
    return OSError(error.errno, error.strerror, str(path))  # the errno's own subclass


#: What to do about an ``OSError`` a user can fix, by its errno.
FILE_ERROR_HINTS = {code: hint for code, hint in (
    (errno.EACCES, "check the permissions of the file or its folder"),
    (errno.EPERM, "check the permissions of the file or its folder"),
    (errno.EROFS, "choose a folder on a writable file system"),
    (errno.ENOSPC, "the disk is full: free some space or choose another folder"),
    (getattr(errno, "EDQUOT", None), "the disk quota is used up"),
    (errno.ENAMETOOLONG, "a file or folder name is limited to 255 bytes: choose a shorter "
                         "one"),
    (errno.ELOOP, "symbolic links on the way point at each other: fix or avoid them"),
    (errno.ENOENT, "a folder on the way does not exist, or this file system does not "
                   "allow it here"),
    (errno.EISDIR, "it is a folder: name a file"),
    (errno.ENOTDIR, "a file is in the way where a folder should be"),
    (errno.EEXIST, "it exists already"),
    (errno.EXDEV, "it cannot be moved to another file system")) if code is not None}



def os_error_text(error: OSError) -> str:
    """What went wrong in an ``OSError``, with what to do where :data:`FILE_ERROR_HINTS`
    knows (``"File name too long (a file or folder name is limited to 255 bytes: ...)"``)."""
    hint = FILE_ERROR_HINTS.get(error.errno)
    text = error.strerror or (os.strerror(error.errno) if error.errno else str(error))
    return text + (f" ({hint})" if hint else "")


# Spreadsheets read a cell that begins with one of these as a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """``value`` made safe for a CSV cell that a spreadsheet may open: text that begins with
    ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a leading apostrophe, so that
    it is shown as text, not run as a formula; numbers, and text that reads as a number
    (``-0.5``), are kept as they are.

    >>> [csv_cell(v) for v in ("=1+2", "@SUM(A1)", "-0.5", "cat", -1.5)]
    ["'=1+2", "'@SUM(A1)", '-0.5', 'cat', -1.5]
    """
    if not isinstance(value, str) or not value.startswith(_FORMULA_START):
        return value
    try:
        float(value)
    except ValueError:
        return "'" + value
    return value


# What a run folder holds besides its checkpoints.
RUN_FILES = ("config.yaml", "history.jsonl", "metrics.json", "margins.json")


#: The file ``tailmix report`` leaves beside the pages it writes (see
#: :data:`tailmix.tools.report.MARKER`).
REPORT_MARKER = ".tailmix-report"
# What else training or the commands that read a run may write into its folder.
RUN_EXTRAS = ("checkpoints", "tensorboard", "report.html", "report.md", "report_files",
              REPORT_MARKER, LOCK_NAME)
# A folder holding any of these holds a run's results.
RESULTS = ("metrics.json", "history.jsonl", "checkpoints")


def _run_config(path: Path) -> bool:
    """Whether ``path`` is a ``config.yaml`` that training wrote (a run's resolved config:
    its sections with the class counts), not a user's own config file."""
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(cfg, dict) and "class_counts" in cfg and isinstance(cfg.get("train"),
                                                                           dict)


def claim_run_folder(out: str | os.PathLike, *, force: bool = False, name: str = "--out",
                     log: Callable[[str], None] = print) -> Path | None:
    """Make sure a new run may write into ``out``: a new or empty folder, or one holding
    only the config a run wrote before it trained an epoch. A folder holding a run's
    results (``metrics.json``, ``history.jsonl``, checkpoints) or files training did not
    write is refused, or with ``force`` moved aside whole (to ``<out>.old-N``, beside it;
    returned) so that nothing is lost.

    Raises
    ------
    ParameterError
        Naming ``name``: what the folder holds and what to do (``--resume``, ``--force`` or
        another folder).
    """
    out = Path(out)
    if not out.is_dir():
        return None
    entries = [p for p in out.iterdir() if not _TEMPORARY.match(p.name)]
    foreign = sorted(p.name for p in entries if p.name not in (*RUN_FILES, *RUN_EXTRAS)
                     or (p.name == "config.yaml" and not _run_config(p)))
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more"
                                          if len(foreign) > 3 else "")
        what = f"files training did not write ({shown})"
    elif (out / "metrics.json").is_file():
        what = "a finished run (metrics.json)"
    elif any((out / r).exists() for r in RESULTS):
        what = "an unfinished run (`tailmix train --resume` continues it)"
    else:
        return None
    if not force:
        raise ParameterError(name, "a new or empty folder for a new run (--force moves what "
                             "the folder holds aside, to a folder beside it, and trains anew)",
                             f"{out}: it holds {what}")
    aside = set_aside(out, "old", name=name)
    log(f"{out} held {what}: moved to {aside}")
    return aside


def set_aside(folder: str | os.PathLike, label: str, *, name: str = "--out") -> Path:
    """Move ``folder`` to ``<folder>.<label>-N`` beside it (the first free N), never
    deleting anything; refused while another process trains into it (its lock)."""
    folder = Path(folder)
    lock = lock_folder(folder, name=name, log=lambda _: None)  # nobody trains into it now
    n = 1
    while (aside := folder.with_name(f"{folder.name}.{label}-{n}")).exists():
        n += 1
    try:
        folder.rename(aside)  # the lock goes with it, and is removed there
    except BaseException:
        lock.release()
        raise
    (aside / LOCK_NAME).unlink(missing_ok=True)
    return aside


def _run_file(path: Path) -> bool:
    """Whether ``path`` is one of a run folder's own files or checkpoints."""
    folder = path.parent
    if folder.name == "checkpoints" and (folder.parent / "config.yaml").is_file():
        return True
    return path.name in RUN_FILES and (folder / "checkpoints").is_dir()


def check_output(out: str | os.PathLike, *, inputs: list[str | os.PathLike],
                 ours: Callable[[Path], bool], force: bool, name: str = "--out") -> Path:
    """Refuse to write ``out`` over a file unasked: one of the command's ``inputs``, a run
    folder's own files or checkpoints, or a file that ``ours`` does not recognise as this
    command's earlier output, unless ``force`` (the user named the file and asked).

    Raises
    ------
    ParameterError
        Naming ``name``, saying what the file is and that ``--force`` writes over it.
    """
    out = Path(out)
    if out.is_dir():
        raise ParameterError(name, "a file path (not a folder)", str(out))
    if force or not out.exists():
        return out
    here = out.resolve()
    if any(Path(p).exists() and Path(p).resolve() == here for p in inputs):
        what = "one of this command's inputs"
    elif _run_file(here):
        what = "a run folder's own file"
    elif not ours(out):
        what = "a file this command did not write"
    else:
        return out
    raise ParameterError(name, f"a new file, or one this command wrote before: {out} is {what} "
                         "(name another file, or pass --force to write over it)", str(out))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def finite(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, +-inf) replaced by None, recursively."""
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def dumps_json(obj: Any, **kw: Any) -> str:
    """JSON text without NaN or Infinity (strict JSON; non-finite numbers become null)."""
    return json.dumps(finite(obj), allow_nan=False, **kw)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, dumps_json(obj, indent=2, sort_keys=False) + "\n")


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files a killed atomic write left in ``folder`` (recursively).

    Only names an atomic write makes (``.<name>.<8 characters>.tmp``) are removed; call it
    on a folder no other process is writing into (a run folder whose lock this process
    holds).
    """
    removed = []
    for tmp in Path(folder).rglob(f".*{TMP_SUFFIX}"):
        if _TEMPORARY.match(tmp.name) and tmp.is_file():
            tmp.unlink()
            removed.append(tmp)
    return removed


def write_yaml(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, yaml.safe_dump(obj, sort_keys=False))


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def save_torch(path: str | os.PathLike, obj: Any) -> Path:
    """``torch.save`` made atomic."""
    import io as _io

    import torch

    buf = _io.BytesIO()
    torch.save(obj, buf)
    return atomic_write_bytes(path, buf.getvalue())


# --------------------------------------------------------------------------- reading torch files


def load_torch(path: str | os.PathLike, *, name: str = "checkpoint",
               what: str = "a checkpoint written by tailmix", map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``, with a :class:`ParameterError` naming
    ``name`` and the file for one that cannot be read: missing, empty, truncated or
    corrupted, or holding Python objects other than tensors and plain data (tailmix never
    unpickles those: it could run code from the file). ``what`` says what was expected.

    An ``OSError`` reading the file (permissions) propagates as it is.
    """
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise ParameterError(name, f"an existing file ({what})", str(path))
    size = path.stat().st_size
    if size == 0:
        raise ParameterError(name, what, f"{path}: an empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True)
    except OSError:
        raise
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        held = f"a {found.group(1)} object" if found else "objects other than tensors"
        raise ParameterError(
            name, f"{what}, holding only tensors and plain data (tailmix does not unpickle "
            "other Python objects: that could run code from the file)",
            f"{path}: it holds {held}") from None
    except Exception:
        raise ParameterError(name, what, f"{path}: unreadable as a torch file ({size} bytes; "
                             "truncated, corrupted or another kind of file)") from None


# --------------------------------------------------------------------------- run folder lock


@dataclass
class FolderLock:
    """This process's claim on a folder: ``path`` holds ``token`` until :meth:`release`."""

    path: Path
    token: str

    def release(self) -> None:
        """Remove the lock file if it is still this claim's (never another process's)."""
        try:
            if _read_lock(self.path)[1].get("token") == self.token:
                self.path.unlink()
        except OSError:  # gone, or a folder that became unwritable: nothing to release
            pass


def _read_lock(path: Path) -> tuple[str | None, dict[str, Any]]:
    """A lock file's text (None: no file) and what it says (empty when unreadable)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, {}
    try:
        info = json.loads(text)
    except ValueError:
        info = None
    if isinstance(info, int) and not isinstance(info, bool):  # a bare pid
        info = {"pid": info}
    return text, info if isinstance(info, dict) else {}


def _holder(path: Path, info: dict[str, Any]) -> str | None:
    """Who holds a lock, in words; None when it is stale (its process is gone)."""
    pid, host = info.get("pid"), info.get("host")
    since = f" since {info['since']}" if info.get("since") else ""
    if not isinstance(pid, int) or isinstance(pid, bool):
        try:  # a lock being written right now, or a broken one
            young = time.time() - path.stat().st_mtime < 30
        except FileNotFoundError:
            return None
        return "a process that is writing it now" if young else None
    if host not in (None, socket.gethostname()):
        return f"pid {pid} on host {host}{since}"  # another machine's process: assume alive
    if pid <= 0:
        return None
    if os.name != "posix":
        return f"pid {pid}{since}"  # no safe liveness test: assume alive
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except OSError:  # it exists but belongs to another user
        pass
    return f"pid {pid}{since}"


def check_unlocked(folder: str | os.PathLike, *, name: str = "--out") -> None:
    """Raise :class:`ParameterError` naming ``name`` when a live process holds
    ``folder``'s lock (nothing is created; :func:`lock_folder` takes the lock)."""
    path = Path(folder) / LOCK_NAME
    text, info = _read_lock(path)
    if text is not None:
        who = _holder(path, info)
        if who is not None:
            raise _locked(name, Path(folder), path, who)


def _locked(name: str, folder: Path, path: Path, who: str) -> ParameterError:
    return ParameterError(name, "a run folder that no other process is training into "
                          f"(remove {path} if that process is gone)",
                          f"{folder}, held by {who}")


def lock_folder(folder: str | os.PathLike, *, name: str = "--out",
                log: Callable[[str], None] = print) -> FolderLock:
    """Make this process the one owner of ``folder`` (created if need be) until the lock is
    released: ``folder/.lock`` is created atomically (``O_CREAT | O_EXCL``) holding this
    process's pid, host and start time.

    A lock held by a live process (or by a process on another host, whose liveness cannot
    be told from here) raises :class:`ParameterError` naming ``name`` and the holder; a
    lock whose process has died is taken over, with a line to ``log``.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ParameterError(name, "a folder (the run folder to write into)",
                             f"{folder}: an existing file")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "since": time.strftime("%Y-%m-%d %H:%M:%S"), "token": uuid.uuid4().hex}
    for _ in range(10):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            text, info = _read_lock(path)
            if text is None:
                continue  # released in between: try again
            who = _holder(path, info)
            if who is not None:
                raise _locked(name, folder, path, who) from None
            if _take_over(path, text):
                was = (f"process {info['pid']} on {info.get('host') or 'this host'}"
                       if "pid" in info else "a process")
                log(f"{folder}: taking over the lock of {was}, which is no longer running "
                    "(a run that was stopped without cleaning up)")
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(me) + "\n")
        return FolderLock(path, me["token"])
    raise ParameterError(name, "a run folder that no other process is training into",
                         f"{folder}: its lock kept changing hands")


def _take_over(path: Path, text: str) -> bool:
    """Remove the stale lock ``path`` whose content is ``text``, unless another process
    replaced it meanwhile (then it is put back); whether it was removed."""
    aside = path.with_name(f"{path.name}.{uuid.uuid4().hex}.stale")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    try:
        if aside.read_text(encoding="utf-8") == text:
            return True
        try:  # a fresh lock taken in between: it goes back, unless a newer one exists
            os.link(aside, path)
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links
            if not path.exists():
                os.rename(aside, path)
        return False
    finally:
        aside.unlink(missing_ok=True)
